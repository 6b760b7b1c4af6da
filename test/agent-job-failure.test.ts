import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { agentConfigSchema } from '../src/agent/config.ts';
import type { JobHandler } from '../src/agent/jobs/job-context.ts';
import { nodePing } from '../src/agent/jobs/node-ping.ts';
import { startAgent } from '../src/agent/main.ts';
import { enqueueJob, getJob } from '../src/server/modules/jobs/jobs.repo.ts';
import { JOB_KINDS } from '../src/shared/contracts/jobs.ts';
import { createLogger } from '../src/shared/logger.ts';
import { testEnv } from './helpers/env.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

// Issue 10: no single request can crash a process. A job handler that throws something that is
// not an Error, throws synchronously, or rejects with undefined fails that job only: the agent
// reports it and serves the next job.
let s: TestServer;
let url: string;
let stateDir: string;
before(async () => {
  s = await createTestServer();
  url = await s.app.listen({ host: '127.0.0.1', port: 0 });
  stateDir = await fs.mkdtemp(path.join(os.tmpdir(), 'agent-fail-'));
});
after(async () => {
  await s.stop();
  await fs.rm(stateDir, { recursive: true, force: true });
});

async function finished(id: number) {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    const job = await getJob(s.db.pool, id);
    if (job && (job.status === 'succeeded' || job.status === 'dead')) return job;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`job ${id} did not finish`);
}

test('a job whose handler throws anything fails alone; the agent serves the next job', async () => {
  const { token } = await s.nodes.createEnrollment('failing-jobs', 10);
  const config = agentConfigSchema.parse({
    serverUrl: url,
    stateDir,
    enrollmentToken: token,
    adminDatabaseUrl: testEnv().adminUrl,
    logLevel: 'silent',
    pollWaitMs: 5_000,
    explorerChannel: false,
  });
  const handlers = new Map<string, JobHandler>([
    [JOB_KINDS.ping, nodePing],
    [
      'test.throws_string',
      (() => {
        throw 'a string, not an Error';
      }) as unknown as JobHandler,
    ],
    ['test.rejects_undefined', () => Promise.reject(undefined)],
    ['test.throws_null_message', async () => Promise.reject({ message: null })],
  ]);
  const agent = await startAgent(config, { log: createLogger('agent', 'silent'), handlers });
  try {
    const node = (await s.db.pool.query<{ id: string }>("SELECT id FROM nodes WHERE name = 'failing-jobs'"))
      .rows[0]!;
    for (const kind of ['test.throws_string', 'test.rejects_undefined', 'test.throws_null_message']) {
      const bad = await enqueueJob(s.db.pool, { nodeId: node.id, kind, maxAttempts: 1 });
      const done = await finished(bad.id);
      assert.equal(done.status, 'dead', kind);
      assert.ok((done.last_error ?? '').length > 0, `${kind}: the failure is reported`);
      const next = await enqueueJob(s.db.pool, { nodeId: node.id, kind: JOB_KINDS.ping, maxAttempts: 1 });
      assert.equal((await finished(next.id)).status, 'succeeded', `the agent serves the job after ${kind}`);
    }
  } finally {
    await agent.stop();
  }
});

test("a handler's malformed result fails on the agent (same contract as the server), never retried or stored", async () => {
  const { token } = await s.nodes.createEnrollment('malformed-results', 10);
  const config = agentConfigSchema.parse({
    serverUrl: url,
    stateDir: await fs.mkdtemp(path.join(stateDir, 'malformed-')),
    enrollmentToken: token,
    adminDatabaseUrl: testEnv().adminUrl,
    logLevel: 'silent',
    pollWaitMs: 5_000,
    explorerChannel: false,
  });
  const handlers = new Map<string, JobHandler>([
    [JOB_KINDS.ping, nodePing],
    // A bug: the finding kind is not in the contract.
    [JOB_KINDS.drift, async () => ({ findings: [{ kind: 'invented', object: 'x', detail: 'y' }] })],
    // A kind the contract has no result for.
    ['test.ok', async () => ({ ok: true })],
  ]);
  const agent = await startAgent(config, { log: createLogger('agent', 'silent'), handlers });
  try {
    const node = (
      await s.db.pool.query<{ id: string }>("SELECT id FROM nodes WHERE name = 'malformed-results'")
    ).rows[0]!;
    const bad = await enqueueJob(s.db.pool, { nodeId: node.id, kind: JOB_KINDS.drift, maxAttempts: 3 });
    const done = await finished(bad.id);
    assert.equal(done.status, 'dead', 'a malformed result is final');
    assert.equal(done.attempts, 1, 'not retried');
    assert.equal(done.result, null);
    assert.match(done.last_error ?? '', /this agent produced a malformed result: the result of node\.drift/);
    assert.match(done.last_error ?? '', /result\.findings\.0\.kind/);
    const odd = await enqueueJob(s.db.pool, { nodeId: node.id, kind: 'test.ok', maxAttempts: 3 });
    const oddDone = await finished(odd.id);
    assert.equal(oddDone.status, 'dead');
    assert.match(oddDone.last_error ?? '', /the job contract has no result for kind "test\.ok"/);
    const ping = await enqueueJob(s.db.pool, { nodeId: node.id, kind: JOB_KINDS.ping, maxAttempts: 1 });
    const pinged = await finished(ping.id);
    assert.equal(pinged.status, 'succeeded', 'a real result passes both sides');
    assert.deepEqual(Object.keys(pinged.result ?? {}).sort(), [
      'checked_at',
      'pg_version',
      'server_version_num',
    ]);
  } finally {
    await agent.stop();
  }
});
