import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createTestDb, type TestDb } from '../../../../test/helpers/db.ts';
import { claimJob, completeJob, enqueueJob, failJob, getJob, nextWakeAt, retryDelayMs } from './jobs.repo.ts';

let db: TestDb;
let nodeId: string;
before(async () => {
  db = await createTestDb();
  nodeId = (await db.pool.query<{ id: string }>("INSERT INTO nodes (name) VALUES ('n1') RETURNING id"))
    .rows[0]!.id;
});
after(() => db.drop());

test('two claimers never run the same job (200 jobs, 4 concurrent claim loops)', async () => {
  const ids = new Set<number>();
  for (let i = 0; i < 200; i++) ids.add((await enqueueJob(db.pool, { nodeId, kind: 'node.ping' })).id);
  const claimedBy = new Map<number, number>();
  const worker = async (w: number) => {
    for (let i = 0; i < 1000; i++) {
      const job = await claimJob(db.pool, nodeId, 60_000);
      if (!job) return;
      assert.equal(claimedBy.has(job.id), false, `job ${job.id} claimed twice`);
      claimedBy.set(job.id, w);
      assert.ok(await completeJob(db.pool, job.id, nodeId, job.attempts, { ok: true }));
    }
  };
  await Promise.all([0, 1, 2, 3].map(worker));
  assert.equal(claimedBy.size, 200);
  assert.deepEqual(new Set(claimedBy.keys()), ids);
  assert.ok(new Set(claimedBy.values()).size > 1, 'work was shared between claimers');
});

/** A moment past `t` (1 ms: a JS Date drops the database's microseconds); tests move the queue's clock, never sleep. */
const past = (t: Date | null | undefined, ms = 1) => new Date(t!.getTime() + ms);

test("a crashed agent's lease expires and the job is retried; the stale holder cannot complete it", async () => {
  const job = await enqueueJob(db.pool, { nodeId, kind: 'node.ping' });
  const first = await claimJob(db.pool, nodeId, 60_000);
  assert.equal(first?.id, job.id);
  assert.equal(await claimJob(db.pool, nodeId, 60_000), null, 'leased job is not handed out twice');
  const expiry = first!.lease_expires_at!;
  assert.deepEqual(await nextWakeAt(db.pool, nodeId), expiry, 'the lease expiry is the next wake-up');
  // The lease still holds a moment before it ends, and not after.
  assert.equal(await claimJob(db.pool, nodeId, 60_000, past(expiry, -1)), null, 'not before the lease ends');
  const second = await claimJob(db.pool, nodeId, 60_000, past(expiry));
  assert.equal(second?.id, job.id);
  assert.equal(second?.attempts, 2);
  assert.equal(await completeJob(db.pool, job.id, nodeId, 1, {}), null, 'old lease holder is refused');
  assert.equal((await completeJob(db.pool, job.id, nodeId, 2, { v: 1 }))?.status, 'succeeded');
});

test('failures retry with backoff, then land in the dead-letter state after max attempts', async () => {
  const job = await enqueueJob(db.pool, { nodeId, kind: 'node.ping', maxAttempts: 2 });
  const a1 = await claimJob(db.pool, nodeId, 60_000);
  assert.equal(a1?.id, job.id);
  const f1 = await failJob(db.pool, job.id, nodeId, 1, 'boom', true, 60_000);
  assert.equal(f1?.status, 'queued');
  const backoff = f1!.run_after.getTime() - f1!.updated_at.getTime();
  assert.ok(backoff >= 48_000 && backoff <= 72_000, `retry is scheduled one backoff later (${backoff} ms)`);
  assert.equal(await claimJob(db.pool, nodeId, 60_000), null, 'not runnable before its backoff');
  assert.equal(await claimJob(db.pool, nodeId, 60_000, past(f1!.run_after, -1)), null, 'nor a moment before');
  assert.deepEqual(await nextWakeAt(db.pool, nodeId), f1!.run_after, 'the retry is the next wake-up');
  const a2 = await claimJob(db.pool, nodeId, 60_000, past(f1!.run_after));
  assert.equal(a2?.attempts, 2);
  const f2 = await failJob(db.pool, job.id, nodeId, 2, 'boom again', true, 50);
  assert.equal(f2?.status, 'dead');
  assert.equal((await getJob(db.pool, job.id))?.last_error, 'boom again');
});

test('a permanent failure is dead at once; an expired last lease is dead-lettered', async () => {
  const j1 = await enqueueJob(db.pool, { nodeId, kind: 'node.ping' });
  await claimJob(db.pool, nodeId, 60_000);
  assert.equal((await failJob(db.pool, j1.id, nodeId, 1, 'bad input', false))?.status, 'dead');

  const j2 = await enqueueJob(db.pool, { nodeId, kind: 'node.ping', maxAttempts: 1 });
  const leased = await claimJob(db.pool, nodeId, 60_000);
  assert.equal(leased?.id, j2.id);
  assert.equal(await claimJob(db.pool, nodeId, 60_000, past(leased!.lease_expires_at)), null);
  const dead = await getJob(db.pool, j2.id);
  assert.equal(dead?.status, 'dead');
  assert.match(dead?.last_error ?? '', /lease expired/);
});

test('backoff doubles per attempt within jitter and is capped', () => {
  for (let a = 1; a <= 6; a++) {
    const d = retryDelayMs(a, 1000);
    assert.ok(d >= 0.8 * 1000 * 2 ** (a - 1) && d <= 1.2 * 1000 * 2 ** (a - 1), `attempt ${a}: ${d}`);
  }
  assert.ok(retryDelayMs(40) <= 360_000);
});

test("a database's jobs run in queue order: a retrying create is never overtaken by the delete after it", async () => {
  const dbX = '00000000-0000-4000-8000-00000000000a';
  const dbY = '00000000-0000-4000-8000-00000000000b';
  const create = await enqueueJob(db.pool, {
    nodeId,
    kind: 'database.create',
    payload: { database_id: dbX },
  });
  assert.equal((await claimJob(db.pool, nodeId, 60_000))?.id, create.id);
  const failed = await failJob(db.pool, create.id, nodeId, 1, 'transient', true, 60_000);
  assert.equal(failed?.status, 'queued');
  const del = await enqueueJob(db.pool, { nodeId, kind: 'database.delete', payload: { database_id: dbX } });
  const other = await enqueueJob(db.pool, {
    nodeId,
    kind: 'database.allowlist',
    payload: { database_id: dbY },
  });
  // The delete waits behind the create's retry; another database's job is not held up (and keeps
  // its lease past the create's backoff).
  assert.equal((await claimJob(db.pool, nodeId, 600_000))?.id, other.id);
  assert.equal(await claimJob(db.pool, nodeId, 60_000), null, 'the delete must not overtake the create');
  const wake = await nextWakeAt(db.pool, nodeId);
  assert.ok(wake && wake.getTime() - Date.now() <= 1_100, 'the poll looks again soon, without spinning');
  const retried = await claimJob(db.pool, nodeId, 60_000, past(failed!.run_after));
  assert.equal(retried?.id, create.id, 'the create runs first when its backoff ends');
  assert.equal(await claimJob(db.pool, nodeId, 60_000), null, 'still blocked while the create runs');
  await completeJob(db.pool, create.id, nodeId, 2, {});
  assert.equal((await claimJob(db.pool, nodeId, 60_000))?.id, del.id);
});
