// Physical names (issue 16, ADRs 0034 and 0039): every new database gets a generated name on its
// node, which a warm-pool spare's own name replaces when one is handed out. The server stores it
// (`pg_name`), seals the owner's password the agent set (never keeping it in the job), names the
// database by it in every job it hands out and in the connection info, and keeps the label
// everywhere people see the database. Only an older row (`pg_name` NULL) is called by its label.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { roleNames } from '../src/shared/identifiers.ts';
import { enrollFakeAgent, type FakeAgent } from './helpers/databases.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

let s: TestServer;
let agent: FakeAgent;
let key: TestKey;
before(async () => {
  s = await createTestServer();
  agent = await enrollFakeAgent(s, 'pn-node');
  key = await createTestKey(s, { account: 'acme' });
});
after(() => s.stop());

const call = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: Record<string, unknown>) =>
  s.app.inject({ method, url, headers: key.headers, ...(payload === undefined ? {} : { payload }) });

const warmResult = (label: string, physical: string, password: string) => {
  const r = roleNames(physical);
  return {
    name: label,
    roles: { owner: r.owner, reader: r.reader, migrator: r.migrator, explorer: r.explorer },
    physical_name: physical,
    owner_password: password,
    pooler_probe_ms: 1,
  };
};

const completeRaw = (jobId: number, attempt: number, result: unknown) =>
  s.app.inject({
    method: 'POST',
    url: `/v1/agent/jobs/${jobId}/complete`,
    headers: { authorization: `Bearer ${agent.token}` },
    payload: { attempt, result },
  });

async function pollKind(kind: string) {
  const job = await agent.poll();
  assert.ok(job, `a ${kind} job is handed out`);
  assert.equal(job.kind, kind);
  return job;
}

const dbRow = async (name: string) =>
  (
    await s.db.pool.query<{
      id: string;
      pg_name: string | null;
      status: string;
      failure_reason: string | null;
    }>('SELECT id, pg_name, status, failure_reason FROM databases WHERE name = $1 AND deleted_at IS NULL', [
      name,
    ])
  ).rows[0]!;

const PHYSICAL = 'bulwark_db_ab12cd_0123456789';
const PASSWORD = 'warm-spare-owner-password-0123456789abcdef';

test('a warm create: the password is sealed, never stored in the job; names are physical for the agent', async () => {
  const made = await call('POST', '/v1/databases', { name: 'shop' });
  assert.equal(made.statusCode, 202, made.body);
  const create = await pollKind('database.create');
  assert.match(
    String(create.payload.name),
    /^bulwark_db_p_[0-9a-f]{16}$/,
    'the create carries a generated name',
  );
  assert.equal(create.payload.generated_name, true, 'which a spare may replace');
  assert.equal((await dbRow('shop')).pg_name, create.payload.name, 'stored as its name on the node');

  // Queued while the create runs (with the label): handed out later with the physical name.
  const put = await call('PUT', '/v1/databases/shop/allowlist', { entries: [{ cidr: '198.51.100.7/32' }] });
  assert.equal(put.statusCode, 200, put.body);

  assert.equal(await agent.complete(create.id, create.attempt, warmResult('shop', PHYSICAL, PASSWORD)), 200);
  const job = (
    await s.db.pool.query<{ result: Record<string, unknown>; text: string }>(
      'SELECT result, result::text AS text FROM jobs WHERE id = $1',
      [create.id],
    )
  ).rows[0]!;
  assert.equal(job.result.owner_password, undefined, 'the password is not in jobs.result');
  assert.ok(!job.text.includes(PASSWORD), 'nor anywhere in it');
  assert.equal(job.result.physical_name, PHYSICAL);
  const audit = await s.db.pool.query<{ text: string }>('SELECT details::text AS text FROM audit_events');
  assert.ok(
    audit.rows.every((r) => !r.text.includes(PASSWORD)),
    'nor in any audit event',
  );

  const row = await dbRow('shop');
  assert.equal(row.status, 'ready');
  assert.equal(row.pg_name, PHYSICAL);

  const reveal = await call('POST', '/v1/databases/shop/credentials/reveal');
  assert.equal(reveal.statusCode, 200, reveal.body);
  assert.equal(reveal.json().password, PASSWORD, "the agent's password is the owner's");

  const conn = await call('GET', '/v1/databases/shop/connection');
  assert.equal(conn.statusCode, 200, conn.body);
  assert.equal(conn.json().database, PHYSICAL);
  assert.equal(conn.json().user, roleNames(PHYSICAL).owner);
  assert.match(conn.json().uri, new RegExp(`/${PHYSICAL}\\?`));
  const shown = await call('GET', '/v1/databases/shop');
  assert.equal(shown.json().name, 'shop', 'the API name stays the label');

  const allow = await pollKind('database.allowlist');
  assert.equal(allow.payload.name, PHYSICAL, 'a job queued before the create finished names the spare');
  assert.equal(allow.payload.database_id, row.id);
  const stored = await s.db.pool.query<{ name: string }>(
    "SELECT payload->>'name' AS name FROM jobs WHERE id = $1",
    [allow.id],
  );
  assert.equal(stored.rows[0]!.name, 'shop', 'the stored job keeps the label (the account sees labels)');
  assert.equal(await agent.complete(allow.id, allow.attempt, {}), 200);

  // Jobs queued after it are handed out with the physical name too.
  const rotate = await call('POST', '/v1/databases/shop/credentials/rotate');
  assert.equal(rotate.statusCode, 202, rotate.body);
  const rot = await pollKind('database.rotate');
  assert.equal(rot.payload.name, PHYSICAL);
  assert.equal(await agent.complete(rot.id, rot.attempt, {}), 200);
  const del = await call('DELETE', '/v1/databases/shop', { confirm: 'shop' });
  assert.equal(del.statusCode, 202, del.body);
  const drop = await pollKind('database.delete');
  assert.equal(drop.payload.name, PHYSICAL, 'the delete drops the spare, not the label');
  assert.equal(await agent.complete(drop.id, drop.attempt, {}), 200);
});

test('a cold database keeps its generated name in its jobs and its connection info; an older one its label', async () => {
  assert.equal((await call('POST', '/v1/databases', { name: 'cold_one' })).statusCode, 202);
  const create = await pollKind('database.create');
  const generated = String(create.payload.name);
  assert.match(generated, /^bulwark_db_p_[0-9a-f]{16}$/);
  assert.equal(await agent.complete(create.id, create.attempt, {}), 200);
  assert.equal((await dbRow('cold_one')).pg_name, generated);
  assert.equal((await call('PUT', '/v1/databases/cold_one/allowlist', { entries: [] })).statusCode, 200);
  const allow = await pollKind('database.allowlist');
  assert.equal(allow.payload.name, generated, 'never the label');
  assert.equal(await agent.complete(allow.id, allow.attempt, {}), 200);
  const conn = (await call('GET', '/v1/databases/cold_one/connection')).json();
  assert.equal(conn.database, generated);
  assert.equal(conn.user, roleNames(generated).owner);

  // A row from before generated names (pg_name NULL) is called by its label on its node.
  await s.db.pool.query("UPDATE databases SET pg_name = NULL WHERE name = 'cold_one' AND deleted_at IS NULL");
  assert.equal((await call('PUT', '/v1/databases/cold_one/allowlist', { entries: [] })).statusCode, 200);
  const old = await pollKind('database.allowlist');
  assert.equal(old.payload.name, 'cold_one');
  assert.equal(await agent.complete(old.id, old.attempt, {}), 200);
  const oldConn = (await call('GET', '/v1/databases/cold_one/connection')).json();
  assert.equal(oldConn.database, 'cold_one');
  assert.equal(oldConn.user, roleNames('cold_one').owner);

  // A physical_name equal to the create's own name is the cold path: the generated name stays.
  assert.equal((await call('POST', '/v1/databases', { name: 'cold_two' })).statusCode, 202);
  const two = await pollKind('database.create');
  const same = { ...warmResult('cold_two', String(two.payload.name), PASSWORD) };
  assert.equal((await completeRaw(two.id, two.attempt, same)).statusCode, 200);
  assert.equal((await dbRow('cold_two')).pg_name, two.payload.name);
});

test('a physical_name another database of the node has fails the create for good', async () => {
  const taken = 'bulwark_db_ff00ff_9999999999';
  assert.equal((await call('POST', '/v1/databases', { name: 'first' })).statusCode, 202);
  const first = await pollKind('database.create');
  assert.equal(await agent.complete(first.id, first.attempt, warmResult('first', taken, PASSWORD)), 200);

  assert.equal((await call('POST', '/v1/databases', { name: 'second' })).statusCode, 202);
  const second = await pollKind('database.create');
  const res = await completeRaw(second.id, second.attempt, warmResult('second', taken, `${PASSWORD}x`));
  assert.equal(res.statusCode, 422, res.body);
  assert.equal(res.json().error.code, 'invalid_job_result');
  const job = (
    await s.db.pool.query<{ status: string; result: unknown; last_error: string }>(
      'SELECT status, result, last_error FROM jobs WHERE id = $1',
      [second.id],
    )
  ).rows[0]!;
  assert.equal(job.status, 'dead');
  assert.equal(job.result, null);
  assert.match(job.last_error, /physical_name/);
  const row = await dbRow('second');
  assert.equal(row.status, 'failed');
  assert.equal(row.pg_name, second.payload.name, 'its generated name, never the one refused');
  // An older database's label (its name on the node) counts as taken too.
  assert.equal((await call('POST', '/v1/databases', { name: 'third' })).statusCode, 202);
  const third = await pollKind('database.create');
  const res3 = await completeRaw(third.id, third.attempt, warmResult('third', 'cold_one', `${PASSWORD}y`));
  assert.equal(res3.statusCode, 422, res3.body);
  assert.equal((await dbRow('third')).status, 'failed');
});

test("a physical_name that is neither the job's name nor a spare's fails the create for good (ADR 0039)", async () => {
  // A free name of any other shape — a label, another create's generated name — is refused too:
  // an agent reports only the name it was given or the spare it handed out.
  for (const [label, other] of [
    ['fourth', 'some_label'],
    ['fifth', 'bulwark_db_p_0123456789abcdef'],
  ] as const) {
    assert.equal((await call('POST', '/v1/databases', { name: label })).statusCode, 202);
    const job = await pollKind('database.create');
    const res = await completeRaw(job.id, job.attempt, warmResult(label, other, `${PASSWORD}z`));
    assert.equal(res.statusCode, 422, res.body);
    const row = await dbRow(label);
    assert.equal(row.status, 'failed');
    assert.equal(row.pg_name, job.payload.name);
  }
});

test("drift's known databases are the names on the node", async () => {
  // Drift's known databases are the names on the node.
  const r = await s.db.pool.query<{ name: string }>(
    "SELECT coalesce(pg_name, name) AS name FROM databases WHERE name = 'first'",
  );
  assert.equal(r.rows[0]!.name, 'bulwark_db_ff00ff_9999999999');
  const { knownDatabaseDetails } = await import('../src/server/modules/drift/drift.repo.ts');
  const known = await knownDatabaseDetails(s.db.pool, agent.nodeId);
  const names = known.map((k) => k.name);
  assert.ok(names.includes('bulwark_db_ff00ff_9999999999'), names.join(','));
  assert.ok(!names.includes('first'));
  assert.ok(names.includes('cold_one'), 'an older row is known by its label');
  const two = await s.db.pool.query<{ pg_name: string }>(
    "SELECT pg_name FROM databases WHERE name = 'cold_two'",
  );
  assert.ok(names.includes(two.rows[0]!.pg_name), 'a new one by its generated name');
  assert.ok(!names.includes('cold_two'));
});
