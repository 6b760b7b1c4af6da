/**
 * Just-in-time credentials end to end (issue 14): a real server, a real agent owning a private
 * PgBouncer, a database made through the API. An approved access request executed through the API
 * answers the credentials once; they work through PgBouncer (reads only for a reader) from the
 * allowlist only; at expiry the agent cuts an open session and refuses new logins, and the server
 * records the grant expired; a deleted database takes its grants with it.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import pg from 'pg';
import type { RunningAgent } from '../src/agent/main.ts';
import { startTestAgent } from './helpers/agent.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { clientFrom, type PrivatePooler, startPrivatePooler, tryLogin } from './pooler-harness.ts';
import { api, auditOf, expectStatus, type Person, person } from './requests-helpers.ts';

let pooler: PrivatePooler;
let s: TestServer;
let agent: RunningAgent;
let key: TestKey;
let http: ReturnType<typeof api>;
let requester: Person;
let approver: Person;

before(async () => {
  pooler = await startPrivatePooler();
  s = await createTestServer({ poolerPort: pooler.port, poolerSslmode: 'disable' });
  const url = await s.app.listen({ host: '127.0.0.1', port: 0 });
  agent = await startTestAgent(s, url, { name: 'jit-node', pooler });
  key = await createTestKey(s, { account: 'jit' });
  http = api(s);
  requester = await person(s, key.accountId, 'member', 'jit-req');
  approver = await person(s, key.accountId, 'member', 'jit-appr');
});
after(async () => {
  await agent?.stop();
  s?.app.server.closeAllConnections();
  await s?.stop();
  await pooler?.stop();
});

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const v = await fn();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`timed out waiting for ${what}`);
}

/** A ready database through the API, with a table its owner made; `physical` is its name on the node. */
async function readyDatabase(): Promise<{ name: string; id: string; physical: string }> {
  const name = `jit_${randomBytes(4).toString('hex')}`;
  const call = (method: 'GET' | 'POST', url: string) => s.app.inject({ method, url, headers: key.headers });
  const created = await s.app.inject({
    method: 'POST',
    url: '/v1/databases',
    headers: key.headers,
    payload: { name },
  });
  assert.equal(created.statusCode, 202, created.body);
  const ready = await waitFor('ready', async () => {
    const d = (await call('GET', `/v1/databases/${name}`)).json();
    assert.notEqual(d.status, 'failed', d.failure_reason);
    return d.status === 'ready' ? d : undefined;
  });
  const conn = (await call('GET', `/v1/databases/${name}/connection`)).json();
  const { password } = (await call('POST', `/v1/databases/${name}/credentials/reveal`)).json();
  const owner = new pg.Client({
    host: '127.0.0.1',
    port: pooler.port,
    user: conn.user,
    password,
    database: conn.database,
  });
  await owner.connect();
  await owner.query('CREATE TABLE orders (id int PRIMARY KEY, total int); INSERT INTO orders VALUES (1, 42)');
  await owner.end();
  return { name, id: ready.id as string, physical: conn.database as string };
}

type Credentials = { login: string; password: string; connection_string: string; valid_until: string };

/** An approved, executed access request: its id and the credentials in the answer. */
async function accessRequest(db: string, role: 'reader' | 'migrator', seconds: number) {
  const created = expectStatus(
    await http.create(db, requester.headers, {
      access: { role, duration_s: seconds },
      reason: 'look into an order',
    }),
    201,
  );
  assert.equal(created.kind, 'access');
  const id = created.id as string;
  if (created.status === 'pending') expectStatus(await http.act(db, id, 'approve', approver.headers), 200);
  const done = expectStatus(await http.act(db, id, 'execute', requester.headers), 200);
  return { id, done, credentials: done.credentials as Credentials };
}

const client = (c: Credentials, from = '127.0.0.1') => {
  const u = new URL(c.connection_string);
  return clientFrom(from, {
    port: Number(u.port),
    user: decodeURIComponent(u.username),
    password: c.password,
    database: u.pathname.slice(1),
  });
};

test('an executed access request answers working credentials once: reads through PgBouncer, no writes, allowlist only', async () => {
  const db = await readyDatabase();
  const { id, done, credentials } = await accessRequest(db.name, 'reader', 3600);
  assert.ok(credentials, JSON.stringify(done));
  // The login and the connection string name the database's name on the node, never its label.
  assert.match(credentials.login, new RegExp(`^${db.physical}_jit_[0-9a-f]{8}$`));
  assert.equal(
    credentials.connection_string,
    `postgresql://${credentials.login}@127.0.0.1:${pooler.port}/${db.physical}?sslmode=disable`,
  );
  assert.ok(credentials.password.length >= 32);
  const leftMs = Date.parse(credentials.valid_until) - Date.now();
  assert.ok(leftMs > 3_590_000 && leftMs <= 3_600_000, `valid for an hour (${leftMs} ms)`);

  const c = client(credentials);
  await c.connect();
  assert.equal((await c.query('SELECT total FROM orders WHERE id = 1')).rows[0].total, 42);
  await assert.rejects(c.query('UPDATE orders SET total = 0'), /permission denied/);
  await c.end();
  assert.notEqual(await tryLogin(client(credentials, '127.0.0.2')), null, 'outside the allowlist');

  // Shown once: reading the request again carries no credentials; nothing stored holds the password.
  const again = expectStatus(await http.get(db.name, id, requester.headers), 200);
  assert.equal('credentials' in again, false);
  const grant = await s.db.pool.query(
    'SELECT status, login, capability FROM access_grants WHERE request_id = $1',
    [id],
  );
  assert.deepEqual(grant.rows, [{ status: 'active', login: credentials.login, capability: 'reader' }]);
  const granted = await auditOf(s, 'access.granted', db.id);
  const mine = granted.filter((e) => e.details.login === credentials.login);
  assert.equal(mine.length, 1);
  assert.equal(mine[0]!.details.request_id, id);
  // Named by its label, never by its generated name on the node (ADR 0039).
  assert.equal(mine[0]!.details.name, db.name);
  const dump = await s.db.pool.query(
    `SELECT count(*)::int AS n FROM (SELECT details::text AS t FROM audit_events UNION ALL SELECT payload::text FROM jobs
       UNION ALL SELECT coalesce(result::text, '') FROM jobs) x WHERE t LIKE '%' || $1 || '%'`,
    [credentials.password],
  );
  assert.equal(dump.rows[0].n, 0, 'the password is nowhere in the control DB');
});

test('at expiry an open session through PgBouncer is cut, new logins are refused, and the grant is recorded expired', async () => {
  const db = await readyDatabase();
  const { id } = await accessRequest(db.name, 'reader', 3600);
  // A short window (the request API's minimum is a minute): the service directly, for the same request.
  const credentials = await s.access.grantAccess({
    accountId: key.accountId,
    requestId: id,
    databaseId: db.id,
    capability: 'reader',
    durationS: 4,
    actor: { type: 'system', id: null },
  });
  const until = Date.parse(credentials.valid_until);
  const open = client(credentials);
  await open.connect();
  assert.equal((await open.query('SELECT count(*)::int AS n FROM orders')).rows[0].n, 1);
  let cutAt: number | null = null;
  while (Date.now() < until + 8_000) {
    try {
      await open.query('SELECT 1');
    } catch {
      cutAt = Date.now();
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  await open.end().catch(() => {});
  assert.ok(cutAt !== null, 'the open session was cut');
  assert.ok(cutAt >= until - 1_000 && cutAt <= until + 5_000, `cut at its expiry (${cutAt - until} ms)`);
  assert.notEqual(await tryLogin(client(credentials)), null, 'a new login is refused');

  const row = await waitFor('the grant recorded expired and its revocation answered', async () => {
    const r = await s.db.pool.query(
      'SELECT status, end_reason, revoke_outcome FROM access_grants WHERE login = $1',
      [credentials.login],
    );
    return r.rows[0]?.status === 'expired' && r.rows[0].revoke_outcome ? r.rows[0] : undefined;
  });
  assert.equal(row.end_reason, 'expired');
  const revoked = (await auditOf(s, 'access.revoked', db.id)).filter(
    (e) => e.details.login === credentials.login,
  );
  assert.equal(revoked.length, 1);
  assert.equal(revoked[0]!.details.reason, 'expired');
  assert.equal(revoked[0]!.details.name, db.name, 'named by its label');
});

test('deleting the database ends its grants', async () => {
  const db = await readyDatabase();
  const { credentials } = await accessRequest(db.name, 'reader', 3600);
  assert.equal(await tryLogin(client(credentials)), null);
  const del = await s.app.inject({
    method: 'DELETE',
    url: `/v1/databases/${db.name}`,
    headers: key.headers,
    payload: { confirm: db.name },
  });
  assert.ok(del.statusCode < 300, del.body);
  const row = await waitFor('the grant revoked', async () => {
    const r = await s.db.pool.query(
      'SELECT status, end_reason, revoke_outcome FROM access_grants WHERE login = $1',
      [credentials.login],
    );
    return r.rows[0]?.status === 'revoked' && r.rows[0].revoke_outcome ? r.rows[0] : undefined;
  });
  assert.equal(row.end_reason, 'database_deleted');
  const role = await s.db.pool.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [credentials.login]);
  assert.equal(role.rows.length, 0, 'the login is dropped');
});

test('cancelling an access request that may run again ends its live login at once', async () => {
  // Two executions per approved request on this account (the built-in rules allow one).
  const applied = await s.app.inject({
    method: 'PUT',
    url: '/v1/policy',
    headers: key.headers,
    payload: { source: 'version: 1\ndefaults:\n  max_executions: 2\n' },
  });
  assert.equal(applied.statusCode, 200, applied.body);
  const db = await readyDatabase();
  const { id, done, credentials } = await accessRequest(db.name, 'reader', 3600);
  assert.equal(done.status, 'approved', 'it may run once more');
  const open = client(credentials);
  await open.connect();
  await open.query('SELECT 1');
  expectStatus(await http.act(db.name, id, 'cancel', requester.headers), 200);
  const row = await waitFor('the grant revoked', async () => {
    const r = await s.db.pool.query(
      'SELECT status, end_reason, revoke_outcome FROM access_grants WHERE login = $1',
      [credentials.login],
    );
    return r.rows[0]?.status === 'revoked' && r.rows[0].revoke_outcome ? r.rows[0] : undefined;
  });
  assert.equal(row.end_reason, 'cancelled');
  assert.equal(row.revoke_outcome.dropped, true);
  await assert.rejects(open.query('SELECT 1'), 'the open session is cut');
  await open.end().catch(() => {});
  assert.notEqual(await tryLogin(client(credentials)), null);
});
