import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { agentConfigSchema } from '../src/agent/config.ts';
import { startAgent } from '../src/agent/main.ts';
import { enqueueJob, getJob } from '../src/server/modules/jobs/jobs.repo.ts';
import { createLogger } from '../src/shared/logger.ts';
import { type SentQuery, watchQueries } from './helpers/db.ts';
import { testEnv } from './helpers/env.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { settles, waitFor } from './helpers/wait.ts';

let s: TestServer;
let url: string;
let stateDir: string;
before(async () => {
  s = await createTestServer();
  url = await s.app.listen({ host: '127.0.0.1', port: 0 });
  stateDir = await fs.mkdtemp(path.join(os.tmpdir(), 'agent-'));
});
after(async () => {
  await s.stop();
  await fs.rm(stateDir, { recursive: true, force: true });
});

async function waitForJob(id: number, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const job = await getJob(s.db.pool, id);
    if (job && (job.status === 'succeeded' || job.status === 'dead')) return job;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`job ${id} did not finish in ${timeoutMs} ms`);
}

/**
 * Whether the node's long-poll on the server is parked in its wait: its last claim attempt
 * (`claimJob`) came back empty and it then asked when to wake (`nextWakeAt`). Read from the
 * statements the server sent on its pool; a job enqueued now can only be claimed after a wake-up.
 */
function parked(sent: readonly SentQuery[], nodeId: string): boolean {
  const last = (re: RegExp) => sent.findLastIndex((q) => re.test(q.text) && q.values[0] === nodeId);
  const wake = last(/SELECT least\(/);
  return wake >= 0 && wake > last(/WITH next AS/);
}

test('an agent enrolls once, then wakes for a new job within 100 ms (LISTEN/NOTIFY, no sleep loop)', async () => {
  const { token } = await s.nodes.createEnrollment('edge1', 10);
  const config = agentConfigSchema.parse({
    serverUrl: url,
    stateDir,
    enrollmentToken: token,
    adminDatabaseUrl: testEnv().adminUrl,
    logLevel: 'silent',
    pollWaitMs: 20_000,
  });
  const queries = watchQueries(s.db.pool);
  const agent = await startAgent(config, { log: createLogger('agent', 'silent') });
  try {
    const tokenFile = await fs.stat(path.join(stateDir, 'agent-token'));
    assert.equal(tokenFile.mode & 0o077, 0, 'agent token file is private');
    await fs.access(path.join(stateDir, 'ready'));
    await fs.access(path.join(stateDir, 'alive'));
    // The enrollment token is single use: it was deleted when redeemed.
    const left = await s.db.pool.query('SELECT count(*)::int AS n FROM node_enrollments');
    assert.equal(left.rows[0].n, 0);
    const node = (await s.db.pool.query<{ id: string }>("SELECT id FROM nodes WHERE name = 'edge1'"))
      .rows[0]!;

    // Once the agent's long-poll is parked on the server, measure wake-up latencies: enqueue
    // (created_at) → claimed by the agent (claimed_at), both on the database's clock.
    const latencies: number[] = [];
    for (let i = 0; i < 5; i++) {
      await waitFor('the long-poll to park', () => parked(queries.sent, node.id), { timeoutMs: 5_000 });
      const job = await enqueueJob(s.db.pool, { nodeId: node.id, kind: 'node.ping' });
      const done = await waitForJob(job.id, 5_000);
      assert.equal(done.status, 'succeeded');
      assert.match(String(done.result?.pg_version), /^PostgreSQL 1\d/);
      assert.ok(done.claimed_at, 'claim time recorded');
      latencies.push(done.claimed_at.getTime() - done.created_at.getTime());
    }
    latencies.sort((a, b) => a - b);
    assert.ok(latencies[2]! < 100, `median enqueue→claim ${latencies[2]} ms (all: ${latencies.join(', ')})`);

    // An unknown job kind is refused by the agent, not retried.
    const odd = await enqueueJob(s.db.pool, { nodeId: node.id, kind: 'node.format_disk' });
    const refused = await waitForJob(odd.id, 5_000);
    assert.equal(refused.status, 'dead');
    assert.match(refused.last_error ?? '', /does not run jobs of kind/);
  } finally {
    queries.stop();
    await agent.stop();
  }
  await assert.rejects(fs.access(path.join(stateDir, 'ready')), 'ready file is removed on stop');
});

test('a re-used enrollment token is refused, and a re-enrolled node loses its old token', async () => {
  const { token } = await s.nodes.createEnrollment('edge2', 10);
  const enroll = (t: string) =>
    s.app.inject({
      method: 'POST',
      url: '/v1/agent/enroll',
      payload: { enrollment_token: t, agent_version: 't' },
    });
  const first = await enroll(token);
  assert.equal(first.statusCode, 200);
  const oldAgentToken = first.json().agent_token as string;
  assert.match(oldAgentToken, /^bwa_/);
  assert.equal((await enroll(token)).statusCode, 401);
  const stored = await s.db.pool.query<{ token_hash: Buffer }>(
    "SELECT token_hash FROM nodes WHERE name = 'edge2'",
  );
  assert.equal(stored.rows[0]!.token_hash.length, 32, 'only a hash is stored');
  assert.ok(!JSON.stringify(stored.rows).includes(oldAgentToken));

  const again = await s.nodes.createEnrollment('edge2', 10);
  assert.equal((await enroll(again.token)).statusCode, 200);
  const poll = await s.app.inject({
    method: 'POST',
    url: '/v1/agent/poll',
    payload: { wait_ms: 0 },
    headers: { authorization: `Bearer ${oldAgentToken}` },
  });
  assert.equal(poll.statusCode, 401);

  const expired = await s.nodes.createEnrollment('edge3', 10);
  await s.db.pool.query("UPDATE node_enrollments SET expires_at = now() - interval '1 second'");
  assert.equal((await enroll(expired.token)).statusCode, 401);
});

test('a long-poll whose agent went away does not swallow the next job', async () => {
  const { token } = await s.nodes.createEnrollment('edge4', 10);
  const enrolled = await s.app.inject({
    method: 'POST',
    url: '/v1/agent/enroll',
    payload: { enrollment_token: token, agent_version: 't' },
  });
  const agentToken = enrolled.json().agent_token as string;
  const node = (await s.db.pool.query<{ id: string }>("SELECT id FROM nodes WHERE name = 'edge4'")).rows[0]!;
  // The server's side of each poll, watched: when it was asked, and what it returned.
  const polls: Promise<unknown>[] = [];
  const poll = s.nodes.poll;
  s.nodes.poll = (...args) => {
    const p = poll(...args);
    polls.push(p);
    return p;
  };
  const queries = watchQueries(s.db.pool);
  try {
    const gone = new AbortController();
    const request = fetch(`${url}/v1/agent/poll`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${agentToken}` },
      body: JSON.stringify({ wait_ms: 10_000 }),
      signal: gone.signal,
    }).catch(() => null);
    await waitFor('the long-poll to park', () => polls.length === 1 && parked(queries.sent, node.id));
    gone.abort();
    await request;
    const job = await enqueueJob(s.db.pool, { nodeId: node.id, kind: 'node.ping' });
    // The server's poll has ended (whether it saw the abort or the job first): nothing can claim
    // on its behalf any more.
    const answered = await settles("the abandoned poll's end", polls[0]!, 5_000);
    assert.equal(answered, null, 'the abandoned poll handed out no job');
    const row = await getJob(s.db.pool, job.id);
    assert.equal(row?.status, 'queued', 'nobody holds a lease on it');
    assert.equal(row?.attempts, 0);
  } finally {
    queries.stop();
    s.nodes.poll = poll;
  }
});
