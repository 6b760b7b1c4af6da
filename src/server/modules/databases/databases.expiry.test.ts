import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  callerFor,
  createAccount,
  enrollFakeAgent,
  type FakeAgent,
} from '../../../../test/helpers/databases.ts';
import { createTestServer, type TestServer } from '../../../../test/helpers/server.ts';
import { createLogger } from '../../../shared/logger.ts';
import { createAllowlistExpiry, type ExpiryClock, sweepExpiredAllowlists } from './databases.expiry.ts';

let s: TestServer;
let agent: FakeAgent;
let acme: string;
let sweep: Parameters<typeof sweepExpiredAllowlists>[0];
before(async () => {
  s = await createTestServer();
  sweep = { db: s.db.pool, log: createLogger('test', 'silent'), audit: s.audit };
  agent = await enrollFakeAgent(s, 'n1');
  acme = await createAccount(s, 'acme');
});
after(() => s.stop());

const stored = async (name: string) =>
  (
    await s.db.pool.query<{ allowlist: { cidr: string; expires_at: string | null }[] }>(
      'SELECT allowlist FROM databases WHERE name = $1 AND deleted_at IS NULL',
      [name],
    )
  ).rows[0]!.allowlist.map((e) => e.cidr);

/** Takes every queued job (the fake agent completes them) and returns the last allowlist job's. */
async function drainAllowlistJobs(): Promise<{ cidr: string; expires_at: string | null }[] | null> {
  let last: { cidr: string; expires_at: string | null }[] | null = null;
  for (let job = await agent.poll(); job; job = await agent.poll()) {
    if (job.kind === 'database.allowlist')
      last = job.payload.allowlist as { cidr: string; expires_at: string | null }[];
    assert.equal(await agent.complete(job.id, job.attempt, {}), 200);
  }
  return last;
}

test('a sweep removes expired entries from the stored row, queues the node update, and audits it', async () => {
  const w = callerFor(acme);
  await s.databases.create(w, { name: 'exp_a' });
  const soon = new Date(Date.now() + 60_000).toISOString();
  await s.databases.putAllowlist(w, 'exp_a', [
    { cidr: '10.0.0.1/32' },
    { cidr: '10.0.0.2/32', expires_at: soon, note: 'two hours' },
  ]);
  await drainAllowlistJobs();
  // Nothing expired yet: nothing changes.
  assert.equal(await sweepExpiredAllowlists(sweep), 0);
  assert.deepEqual(await stored('exp_a'), ['10.0.0.1/32', '10.0.0.2/32']);

  // At a time past the expiry: the row loses the entry, the node gets the new list.
  assert.equal(await sweepExpiredAllowlists(sweep, new Date(Date.now() + 61_000)), 1);
  assert.deepEqual(await stored('exp_a'), ['10.0.0.1/32']);
  assert.deepEqual(await drainAllowlistJobs(), [{ cidr: '10.0.0.1/32', expires_at: null }]);
  const audit = await s.db.pool.query(
    "SELECT details FROM audit_events WHERE action = 'database.allowlist_expired' AND details->>'name' = 'exp_a'",
  );
  assert.equal(audit.rowCount, 1);
  assert.deepEqual(
    audit.rows[0].details.removed.map((e: { cidr: string }) => e.cidr),
    ['10.0.0.2/32'],
  );
  assert.equal(await sweepExpiredAllowlists(sweep, new Date(Date.now() + 61_000)), 0, 'idempotent');
});

/** A clock the test moves by hand: timers fire only when the test fires them. */
function manualClock(start: number) {
  const timers: { at: number; fn: () => void; cancelled: boolean }[] = [];
  const clock: ExpiryClock & { t: number } = {
    t: start,
    now: () => clock.t,
    schedule(fn, ms) {
      const timer = { at: clock.t + ms, fn, cancelled: false };
      timers.push(timer);
      return () => {
        timer.cancelled = true;
      };
    },
  };
  const pending = () => timers.filter((x) => !x.cancelled);
  return { clock, pending };
}

test('the sweep is scheduled at the next expiry (not a fixed poll), re-planned on a write, and removes the entry', async () => {
  const w = callerFor(acme);
  await s.databases.create(w, { name: 'exp_c' });
  const t0 = Date.now();
  const { clock, pending } = manualClock(t0);
  const expiry = createAllowlistExpiry({ ...sweep, clock, maxWaitMs: 3_600_000 });
  try {
    await s.databases.putAllowlist(w, 'exp_c', [
      { cidr: '10.0.2.1/32' },
      { cidr: '10.0.2.2/32', expires_at: new Date(t0 + 90_000).toISOString() },
    ]);
    await expiry.start();
    assert.deepEqual(
      pending().map((x) => x.at),
      [t0 + 90_005],
      'one timer, just after the expiry',
    );
    // An earlier expiry written meanwhile: the write re-plans, the later timer is cancelled.
    await s.databases.putAllowlist(w, 'exp_c', [
      { cidr: '10.0.2.1/32' },
      { cidr: '10.0.2.2/32', expires_at: new Date(t0 + 90_000).toISOString() },
      { cidr: '10.0.2.3/32', expires_at: new Date(t0 + 30_000).toISOString() },
    ]);
    expiry.poke();
    await expiry.settled();
    assert.deepEqual(
      pending().map((x) => x.at),
      [t0 + 30_005],
    );
    assert.deepEqual(
      await stored('exp_c'),
      ['10.0.2.1/32', '10.0.2.2/32', '10.0.2.3/32'],
      'nothing before its time',
    );
    clock.t = t0 + 30_005;
    pending()[0]!.fn();
    await expiry.settled();
    assert.deepEqual(await stored('exp_c'), ['10.0.2.1/32', '10.0.2.2/32'], 'the expired entry is gone');
    assert.deepEqual(
      pending().map((x) => x.at),
      [t0 + 90_005],
      'and the next expiry is planned',
    );
    clock.t = t0 + 90_005;
    pending()[0]!.fn();
    await expiry.settled();
    assert.deepEqual(await stored('exp_c'), ['10.0.2.1/32']);
    assert.deepEqual(
      pending().map((x) => x.at),
      [t0 + 90_005 + 3_600_000],
      'with nothing left to expire, the next sweep is the periodic one',
    );
  } finally {
    await expiry.stop();
  }
  assert.deepEqual(pending(), [], 'stop cancels the timer');
});

test('the running server removes an entry on its own at its expiry (its write re-plans the sweep)', async () => {
  const w = callerFor(acme);
  await s.databases.create(w, { name: 'exp_b' });
  const t0 = Date.now();
  await s.databases.putAllowlist(w, 'exp_b', [
    { cidr: '10.0.1.1/32' },
    { cidr: '10.0.1.2/32', expires_at: new Date(t0 + 200).toISOString() },
  ]);
  const deadline = t0 + 5_000;
  while ((await stored('exp_b')).length !== 1) {
    assert.ok(Date.now() < deadline, 'expired entry removed within 5 s');
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.ok(Date.now() - t0 >= 200, 'not before its expiry');
  assert.deepEqual(
    (await s.databases.getAllowlist(w, 'exp_b')).map((e) => e.cidr),
    ['10.0.1.1/32'],
  );
});
