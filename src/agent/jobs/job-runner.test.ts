import assert from 'node:assert/strict';
import { test } from 'node:test';
import type pg from 'pg';
import { BACKUP_JOB_KINDS } from '../../shared/contracts/backups.ts';
import { JOB_KINDS } from '../../shared/contracts/jobs.ts';
import { createLogger } from '../../shared/logger.ts';
import { type PolledJob, ServerError } from '../server-client.ts';
import { JOB_REPORTED, type JobHandler } from './job-context.ts';
import { createJobRunner, type JobRunnerDeps } from './job-runner.ts';

// The job loop alone, with its dependencies passed in: the server's answers are scripted, the
// clock between failed polls is a recorded `sleep`. (The loop against a real server and cluster
// is in test/agent.test.ts and test/agent-job-failure.test.ts.)

type Reported = { complete: unknown[]; fail: { error: string; retryable: boolean }[] };

function scripted(polls: (() => Promise<{ job: PolledJob | null }>)[], reported: Reported) {
  let i = 0;
  const client: JobRunnerDeps['client'] = {
    poll: async () => {
      const next = polls[i++];
      if (!next) throw new ServerError(401, 'script finished');
      return next();
    },
    complete: async (_job, result) => {
      reported.complete.push(result);
      return { status: 'succeeded' };
    },
    fail: async (_job, error, retryable) => {
      reported.fail.push({ error, retryable });
      return { status: 'queued' };
    },
    jobSecret: async () => {
      throw new Error('no secret in this test');
    },
    backupKey: async () => {
      throw new Error('no backup key in this test');
    },
    explorerResult: async () => ({ accepted: true }),
    jobStatus: async () => ({ active: true }),
  };
  return client;
}

const job = (kind: string): PolledJob => ({ id: 1, kind, payload: {}, attempt: 1, lease_expires_at: null });
const log = createLogger('job-runner-test', 'silent');
const admin = {} as pg.Pool;

test('failed polls back off 100, 200, 400 … up to the cap, reset after a good poll; a 401 stops the loop', async () => {
  const reported: Reported = { complete: [], fail: [] };
  const down = () => Promise.reject(new Error('connection refused'));
  const empty = () => Promise.resolve({ job: null });
  const slept: number[] = [];
  const runner = createJobRunner({
    client: scripted([down, down, down, down, down, empty, down], reported),
    handlers: new Map(),
    admin,
    log,
    pollWaitMs: 1_000,
    sleep: async (ms) => {
      slept.push(ms);
    },
    backoff: { initialMs: 100, maxMs: 1_000 },
  });
  await runner.run(new AbortController().signal);
  assert.deepEqual(slept, [100, 200, 400, 800, 1_000, 100]);
});

test('a result is checked against its kind before it is reported: a good one completes, a malformed one fails for good', async () => {
  const reported: Reported = { complete: [], fail: [] };
  const good: JobHandler = async () => ({
    pg_version: 'PostgreSQL 15',
    server_version_num: 150000,
    checked_at: new Date().toISOString(),
  });
  const bad: JobHandler = async () => ({ pg_version: 15 });
  for (const handler of [good, bad]) {
    const runner = createJobRunner({
      client: scripted([], reported),
      handlers: new Map([[JOB_KINDS.ping, handler]]),
      admin,
      log,
      pollWaitMs: 1_000,
      sleep: async () => {},
    });
    await runner.runJob(job(JOB_KINDS.ping), new AbortController().signal);
  }
  assert.equal(reported.complete.length, 1);
  assert.equal(reported.fail.length, 1);
  assert.match(reported.fail[0]?.error ?? '', /malformed result/);
  assert.equal(reported.fail[0]?.retryable, false);
});

test('a kind the agent does not run is failed for good (not retried)', async () => {
  const reported: Reported = { complete: [], fail: [] };
  const runner = createJobRunner({
    client: scripted([], reported),
    handlers: new Map(),
    admin,
    log,
    pollWaitMs: 1_000,
    sleep: async () => {},
  });
  await runner.runJob(job('node.unknown'), new AbortController().signal);
  assert.deepEqual(reported.fail, [
    { error: 'this agent does not run jobs of kind node.unknown', retryable: false },
  ]);
});

test('backup downloads run in their own lane (2 at a time): the loop never waits for one, a third is refused, stopping ends them', async () => {
  const reported: Reported = { complete: [], fail: [] };
  const events: string[] = [];
  let started = 0;
  // A download whose client never reads: it holds on until its signal aborts (the runner stopping).
  const download: JobHandler = async (_p, ctx) => {
    started++;
    await new Promise<void>((resolve) => {
      if (ctx.signal.aborted) resolve();
      ctx.signal.addEventListener('abort', () => resolve(), { once: true });
    });
    events.push('download ended');
    return JOB_REPORTED;
  };
  const ping: JobHandler = async () => {
    events.push(`ping ran while ${runner.laneRunning()} downloads held`);
    return { pg_version: 'PostgreSQL 15', server_version_num: 150000, checked_at: new Date().toISOString() };
  };
  const polled = (id: number, kind: string) => () =>
    Promise.resolve({ job: { id, kind, payload: {}, attempt: 1, lease_expires_at: null } });
  const runner = createJobRunner({
    client: scripted(
      [
        polled(1, BACKUP_JOB_KINDS.download),
        polled(2, BACKUP_JOB_KINDS.download),
        polled(3, BACKUP_JOB_KINDS.download),
        polled(4, JOB_KINDS.ping),
      ],
      reported,
    ),
    handlers: new Map([
      [BACKUP_JOB_KINDS.download, download],
      [JOB_KINDS.ping, ping],
    ]),
    admin,
    log,
    pollWaitMs: 1_000,
    sleep: async () => {},
  });
  // The script ends with a 401: the loop stops, and the lane's downloads are ended and awaited.
  const run = runner.run(new AbortController().signal);
  const bounded = await Promise.race([
    run.then(() => 'ended'),
    new Promise((r) => setTimeout(() => r('hung'), 5_000)),
  ]);
  assert.equal(bounded, 'ended', 'run() waits for its lane and then ends');
  assert.equal(started, 2, 'two downloads ran at once, the third was not started');
  assert.deepEqual(reported.fail, [
    {
      error: `this node is already running 2 ${BACKUP_JOB_KINDS.download} jobs; try again shortly`,
      retryable: false,
    },
  ]);
  assert.deepEqual(events, ['ping ran while 2 downloads held', 'download ended', 'download ended']);
  assert.equal(reported.complete.length, 1, 'the ping completed');
  assert.equal(runner.laneRunning(), 0);
});
