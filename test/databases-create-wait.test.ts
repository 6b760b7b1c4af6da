// `POST /v1/databases` with `wait_ms` (answer once the database is ready or failed, or the wait ran
// out) and `reveal` (the owner's password and connection info once ready, checked up front like a
// reveal and recorded in the create's audit event).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { roleNames } from '../src/shared/identifiers.ts';
import { enrollFakeAgent, type FakeAgent } from './helpers/databases.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

let s: TestServer;
let agent: FakeAgent;
let writer: TestKey;
let reader: TestKey;
before(async () => {
  s = await createTestServer();
  agent = await enrollFakeAgent(s, 'wait-node');
  writer = await createTestKey(s, { account: 'acme', level: 'write' });
  reader = await createTestKey(s, { account: 'acme', level: 'read' });
});
after(() => s.stop());

const create = (
  payload: Record<string, unknown>,
  key: TestKey = writer,
  headers: Record<string, string> = {},
) => s.app.inject({ method: 'POST', url: '/v1/databases', headers: { ...key.headers, ...headers }, payload });

/** The next job, once the (concurrent) create has committed it. */
async function nextJob(kind: string) {
  for (let i = 0; i < 200; i++) {
    const job = await agent.poll();
    if (job) {
      assert.equal(job.kind, kind);
      return job;
    }
    await sleep(25);
  }
  throw new Error(`no ${kind} job`);
}

const PHYSICAL = 'bulwark_db_0a0b0c_1111111111';
const PASSWORD = 'spare-owner-password-for-the-wait-test-000';
const warmResult = (label: string) => {
  const r = roleNames(PHYSICAL);
  return {
    name: label,
    roles: { owner: r.owner, reader: r.reader, migrator: r.migrator, explorer: r.explorer },
    physical_name: PHYSICAL,
    owner_password: PASSWORD,
    pooler_probe_ms: 1,
  };
};

const count = async (name: string) =>
  Number(
    (await s.db.pool.query<{ n: string }>('SELECT count(*) AS n FROM databases WHERE name = $1', [name]))
      .rows[0]!.n,
  );

test('ready within the wait: 201, ready, with the credentials; recorded in the create event', async () => {
  const started = Date.now();
  const answer = create({ name: 'waited', wait_ms: 20_000, reveal: true });
  const job = await nextJob('database.create');
  assert.equal(await agent.complete(job.id, job.attempt, warmResult('waited')), 200);
  const res = await answer;
  assert.ok(Date.now() - started < 10_000, 'woken at the completion, not at the end of the wait');
  assert.equal(res.statusCode, 201, res.body);
  assert.equal(res.headers['cache-control'], 'no-store');
  const body = res.json();
  assert.equal(body.name, 'waited');
  assert.equal(body.status, 'ready');
  assert.equal(body.credentials.password, PASSWORD);
  assert.equal(body.credentials.connection.database, PHYSICAL);
  assert.equal(body.credentials.connection.user, roleNames(PHYSICAL).owner);

  const events = await s.db.pool.query<{ action: string; details: Record<string, unknown> }>(
    "SELECT action, details FROM audit_events WHERE target_id = $1 AND action LIKE 'database.%' ORDER BY id",
    [body.id],
  );
  const created = events.rows.find((e) => e.action === 'database.created');
  assert.equal(created?.details.reveal, true);
  assert.ok(!events.rows.some((e) => e.action === 'database.credentials_revealed'), 'no second event');
});

test('failed within the wait: 201, failed, no credentials', async () => {
  const answer = create({ name: 'doomed', wait_ms: 20_000, reveal: true });
  const job = await nextJob('database.create');
  assert.equal(await agent.fail(job.id, job.attempt, 'disk full', false), 200);
  const res = await answer;
  assert.equal(res.statusCode, 201, res.body);
  assert.equal(res.json().status, 'failed');
  assert.equal(res.json().credentials, undefined);
});

test('the wait runs out: 201, still provisioning, no credentials', async () => {
  const res = await create({ name: 'slow', wait_ms: 300, reveal: true });
  assert.equal(res.statusCode, 201, res.body);
  assert.equal(res.json().status, 'provisioning');
  assert.equal(res.json().credentials, undefined);
  const job = await nextJob('database.create');
  assert.equal(await agent.complete(job.id, job.attempt, {}), 200);
});

test('without wait_ms the answer is as before (202, provisioning)', async () => {
  const res = await create({ name: 'quick' });
  assert.equal(res.statusCode, 202, res.body);
  assert.equal(res.json().status, 'provisioning');
  assert.equal(res.json().credentials, undefined);
  const job = await nextJob('database.create');
  assert.equal(await agent.complete(job.id, job.attempt, {}), 200);
});

test('wait_ms and reveal are validated (400, nothing created)', async () => {
  for (const extra of [
    { wait_ms: 60_001 },
    { wait_ms: -1 },
    { wait_ms: 1.5 },
    { wait_ms: '100' },
    { reveal: true },
    { reveal: true, wait_ms: 0 },
    { reveal: 'yes', wait_ms: 100 },
  ]) {
    const res = await create({ name: 'invalid_one', ...extra });
    assert.equal(res.statusCode, 400, `${JSON.stringify(extra)}: ${res.body}`);
  }
  assert.equal(await count('invalid_one'), 0);
  assert.equal(await agent.poll(), null, 'no job queued');
});

test('a key that may not reveal asking reveal is refused up front: nothing created', async () => {
  const res = await create({ name: 'not_mine', wait_ms: 1_000, reveal: true }, reader);
  assert.equal(res.statusCode, 403, res.body);
  assert.equal(await count('not_mine'), 0);
  assert.equal(await agent.poll(), null, 'no job queued');
});

test('a replay (same Idempotency-Key) never carries the password', async () => {
  const headers = { 'idempotency-key': 'create-wait-replay-1' };
  const answer = create({ name: 'replayed', wait_ms: 20_000, reveal: true }, writer, headers);
  const job = await nextJob('database.create');
  // Another physical name: the first test's database holds PHYSICAL on this node.
  const r = roleNames('bulwark_db_0a0b0c_2222222222');
  const result = {
    ...warmResult('replayed'),
    physical_name: 'bulwark_db_0a0b0c_2222222222',
    roles: { owner: r.owner, reader: r.reader, migrator: r.migrator, explorer: r.explorer },
  };
  assert.equal(await agent.complete(job.id, job.attempt, result), 200);
  const first = await answer;
  assert.equal(first.statusCode, 201, first.body);
  assert.equal(first.json().credentials.password, PASSWORD);
  const again = await create({ name: 'replayed', wait_ms: 20_000, reveal: true }, writer, headers);
  assert.equal(again.statusCode, 201, again.body);
  assert.equal(again.headers['idempotent-replayed'], 'true');
  assert.equal(again.json().credentials, undefined);
  const stored = await s.db.pool.query<{ text: string }>(
    'SELECT response_body::text AS text FROM idempotency_keys',
  );
  assert.ok(stored.rows.every((row) => !row.text.includes(PASSWORD)));
});

test('a client that goes away ends the wait', async () => {
  const { callerFor } = await import('./helpers/databases.ts');
  const started = Date.now();
  const made = await s.databases.createDatabase(
    callerFor(writer.accountId),
    { name: 'left_early' },
    { waitMs: 30_000, signal: AbortSignal.timeout(200) },
  );
  assert.ok(Date.now() - started < 5_000, 'answered when the client left');
  assert.equal(made.row.status, 'provisioning');
  assert.equal(made.credentials, null);
  const job = await nextJob('database.create');
  assert.equal(await agent.complete(job.id, job.attempt, {}), 200);
});

test('a signed-in user without a fresh proof asking reveal gets what the reveal route says: nothing created', async () => {
  const { createTestUser, signIn } = await import('./helpers/session-users.ts');
  const user = await createTestUser(s, {
    username: 'stale-owner',
    memberships: [{ accountId: writer.accountId, role: 'owner' }],
  });
  const session = await signIn(s, user);
  await s.db.pool.query("UPDATE sessions SET created_at = now() - interval '1 hour' WHERE id = $1", [
    session.session.id,
  ]);
  const asUser = (method: 'POST', url: string, payload?: Record<string, unknown>) =>
    s.app.inject({ method, url, headers: session.headers, ...(payload ? { payload } : {}) });
  const refused = await asUser('POST', '/v1/databases', {
    name: 'user_reveal',
    wait_ms: 1_000,
    reveal: true,
  });
  assert.equal(refused.statusCode, 403, refused.body);
  assert.equal(refused.json().error.code, 'reauth_required');
  assert.equal(await count('user_reveal'), 0);
  assert.equal(await agent.poll(), null, 'no job queued');
  // The reveal route says the same to this user about an existing database.
  const reveal = await asUser('POST', '/v1/databases/waited/credentials/reveal', {});
  assert.equal(reveal.statusCode, 403, reveal.body);
  assert.equal(reveal.json().error.code, 'reauth_required');
});
