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
import { sweepExpiredAllowlists } from './databases.expiry.ts';

let s: TestServer;
let agent: FakeAgent;
let acme: string;
let sweep: Parameters<typeof sweepExpiredAllowlists>[0];
before(async () => {
  s = await createTestServer();
  sweep = { db: s.db.pool, log: createLogger('test', 'silent') };
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

test('the server removes an entry on its own at its expiry (scheduled, not a fixed poll)', async () => {
  const w = callerFor(acme);
  await s.databases.create(w, { name: 'exp_b' });
  const t0 = Date.now();
  await s.databases.putAllowlist(w, 'exp_b', [
    { cidr: '10.0.1.1/32' },
    { cidr: '10.0.1.2/32', expires_at: new Date(t0 + 400).toISOString() },
  ]);
  const deadline = t0 + 5_000;
  while ((await stored('exp_b')).length !== 1) {
    assert.ok(Date.now() < deadline, 'expired entry removed within 5 s');
    await new Promise((r) => setTimeout(r, 25));
  }
  assert.ok(Date.now() - t0 >= 400, 'not before its expiry');
  assert.deepEqual(
    (await s.databases.getAllowlist(w, 'exp_b')).map((e) => e.cidr),
    ['10.0.1.1/32'],
  );
});
