/**
 * Long jobs keep their lease (issue 15): the agent's job runner renews the lease of a job while
 * its handler runs, so a backup longer than the lease is never reclaimed and run twice; without
 * renewal the same job is reclaimed (the check can fail); a lease the server gave to another run
 * stops the job. A real server (short lease), the real runner and server client over loopback HTTP.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import pino from 'pino';
import type { JobHandler } from '../src/agent/jobs/job-context.ts';
import { createJobRunner } from '../src/agent/jobs/job-runner.ts';
import { createServerClient, type PolledJob } from '../src/agent/server-client.ts';
import { sleep } from '../src/agent/sleep.ts';
import { enqueueJob } from '../src/server/modules/jobs/jobs.repo.ts';
import { enrollFakeAgent, type FakeAgent } from './helpers/databases.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

const LEASE_MS = 1_500;
let s: TestServer;
let url: string;
let agent: FakeAgent;

before(async () => {
  s = await createTestServer({ jobLeaseMs: LEASE_MS });
  url = (await s.app.listen({ host: '127.0.0.1', port: 0 })).replace('localhost', '127.0.0.1');
  agent = await enrollFakeAgent(s, 'lease-node');
});
after(async () => {
  s?.app.server.closeAllConnections();
  await s?.stop();
});

const row = async (id: number) =>
  (
    await s.db.pool.query<{ status: string; attempts: number }>(
      'SELECT status, attempts FROM jobs WHERE id = $1',
      [id],
    )
  ).rows[0]!;

/**
 * Runs a `backup.delete` job whose handler holds until released, while another poll of the same
 * node looks for a job to claim for `watchMs` (more than two leases); returns what it reclaimed.
 */
async function longJob(opts: { renew: boolean; watchMs: number; steal?: boolean }) {
  const client = createServerClient(url, () => agent.token);
  const queued = await enqueueJob(s.db.pool, {
    nodeId: agent.nodeId,
    kind: 'backup.delete',
    payload: { backup_id: randomUUID(), database_id: randomUUID() },
    maxAttempts: 3,
  });
  const { job } = await client.poll(0, AbortSignal.timeout(10_000));
  assert.equal(job?.id, queued.id);
  let release!: () => void;
  const gate = new Promise<void>((r) => {
    release = r;
  });
  let aborted = false;
  const handler: JobHandler = async (_p, ctx) => {
    await Promise.race([
      gate,
      new Promise<void>((r) =>
        ctx.signal.addEventListener(
          'abort',
          () => {
            aborted = true;
            r();
          },
          { once: true },
        ),
      ),
    ]);
    return { deleted: false };
  };
  const runner = createJobRunner({
    client: opts.renew ? client : { ...client, renewLease: undefined },
    handlers: new Map([['backup.delete', handler]]),
    admin: s.db.pool,
    log: pino({ level: 'silent' }),
    pollWaitMs: 0,
    sleep,
  });
  const running = runner.runJob(job as PolledJob, new AbortController().signal);
  let reclaimed: PolledJob | null = null;
  const until = Date.now() + opts.watchMs;
  for (let i = 0; i < 200 && Date.now() < until && !reclaimed && !aborted; i++) {
    if (opts.steal && i === 2) {
      // Another run claims it (what claimJob does after an expiry), in one statement.
      const taken = await s.db.pool.query<{ attempts: number }>(
        `UPDATE jobs SET attempts = attempts + 1, lease_expires_at = now() + interval '1 minute'
          WHERE id = $1 AND status = 'running' RETURNING attempts`,
        [queued.id],
      );
      reclaimed = { ...(job as PolledJob), attempt: taken.rows[0]!.attempts };
      break;
    }
    reclaimed = (await client.poll(0, AbortSignal.timeout(10_000))).job;
    if (!reclaimed) await sleep(200, new AbortController().signal);
  }
  // A stolen lease: the runner's next renewal learns it and stops the handler (bounded wait).
  for (let i = 0; opts.steal && !aborted && i < 50; i++) await sleep(100, new AbortController().signal);
  release();
  await running;
  return { id: queued.id, reclaimed, aborted };
}

test('a job longer than its lease is not reclaimed while its agent renews the lease; it completes once', async () => {
  const r = await longJob({ renew: true, watchMs: LEASE_MS * 3 });
  assert.equal(r.reclaimed, null, 'nobody else got the job while it ran');
  assert.equal(r.aborted, false);
  assert.deepEqual(await row(r.id), { status: 'succeeded', attempts: 1 });
});

test('without renewal the same job is reclaimed after its lease (what renewal prevents)', async () => {
  const r = await longJob({ renew: false, watchMs: LEASE_MS * 4 });
  assert.equal(r.reclaimed?.id, r.id, 'the expired lease handed the job out again');
  assert.equal(r.reclaimed?.attempt, 2);
  // The first run cannot report over the second: its lease is gone.
  const after = await row(r.id);
  assert.equal(after.attempts, 2);
  assert.equal(after.status, 'running');
  await s.db.pool.query(`UPDATE jobs SET status = 'dead', finished_at = now() WHERE id = $1`, [r.id]);
});

test('a lease the server gave to another run stops the job on its next renewal', async () => {
  const r = await longJob({ renew: true, watchMs: LEASE_MS * 4, steal: true });
  assert.equal(r.reclaimed?.id, r.id, 'the forced expiry handed the job out again');
  assert.equal(r.aborted, true, "the first run's handler was stopped");
  await s.db.pool.query(`UPDATE jobs SET status = 'dead', finished_at = now() WHERE id = $1`, [r.id]);
});

test('backup jobs take their place in their database order: a backup waits for an older rotate, a delete for an older backup', async () => {
  const node = await enrollFakeAgent(s, 'order-node');
  const dbId = randomUUID();
  const q = (kind: string, payload: Record<string, unknown>) =>
    enqueueJob(s.db.pool, { nodeId: node.nodeId, kind, payload: { database_id: dbId, ...payload } });
  const finish = (id: number) =>
    s.db.pool.query(`UPDATE jobs SET status = 'succeeded', finished_at = now() WHERE id = $1`, [id]);
  const rotate = await q('database.rotate', { name: 'ordered' });
  const backup = await q('backup.create', { backup_id: randomUUID(), name: 'ordered' });
  const del = await q('database.delete', { name: 'ordered' });
  // A download of another backup of the same database does not wait (it only reads the archive).
  const download = await q('backup.download', { backup_id: randomUUID(), stream_token: 'x'.repeat(43) });
  assert.equal((await node.poll())?.id, rotate.id);
  assert.equal((await node.poll())?.id, download.id, 'the download passes; the backup waits for the rotate');
  assert.equal(await node.poll(), null);
  await finish(rotate.id);
  assert.equal((await node.poll())?.id, backup.id);
  assert.equal(await node.poll(), null, 'the delete waits for the running backup');
  await finish(backup.id);
  assert.equal((await node.poll())?.id, del.id);
  for (const id of [del.id, download.id]) await finish(id);
});
