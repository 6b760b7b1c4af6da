import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import pg from 'pg';
import type { RunningAgent } from '../src/agent/main.ts';
import { startTestAgent } from './helpers/agent.ts';
import { adminQuery } from './helpers/db.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { type PrivatePooler, startPrivatePooler } from './pooler-harness.ts';

// The whole path: HTTP API with a real key → job → a real agent → PostgreSQL + PgBouncer.
let pooler: PrivatePooler;
let s: TestServer;
let agent: RunningAgent;
let key: TestKey;
before(async () => {
  pooler = await startPrivatePooler();
  s = await createTestServer({ poolerPort: pooler.port, poolerSslmode: 'disable' });
  const url = await s.app.listen({ host: '127.0.0.1', port: 0 });
  agent = await startTestAgent(s, url, { name: 'local', pooler });
  await agent.explorerChannelOpen();
  key = await createTestKey(s, { account: 'e2e' });
});
after(async () => {
  await agent?.stop();
  // The agent ran in this process: a long-poll it abandoned would hold the server's close
  // until Node's headers timeout; cut what is left (the agent is gone).
  s?.app.server.closeAllConnections();
  await s?.stop();
  await pooler?.stop();
});

const api = (method: 'GET' | 'POST' | 'DELETE', url: string, payload?: Record<string, unknown>) =>
  s.app.inject({ method, url, headers: key.headers, ...(payload ? { payload } : {}) });

async function waitUntil<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const v = await fn();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 10));
  }
  throw new Error(`timed out waiting for ${what}`);
}

async function connect(c: { user: string; database: string; password: string }): Promise<pg.Client> {
  const client = new pg.Client({
    host: '127.0.0.1',
    port: pooler.port,
    ...c,
    connectionTimeoutMillis: 5_000,
  });
  client.on('error', () => {});
  await client.connect();
  return client;
}

test('create → ready → connect through PgBouncer → rotate cuts the old password → delete removes it', async () => {
  const name = `e2e_${randomBytes(4).toString('hex')}`;
  const created = await api('POST', '/v1/databases', { name });
  assert.equal(created.statusCode, 202, created.body);
  assert.equal(created.json().status, 'provisioning');
  const ready = await waitUntil('ready', async () => {
    const d = (await api('GET', `/v1/databases/${name}`)).json();
    assert.notEqual(d.status, 'failed', d.failure_reason);
    return d.status === 'ready' ? d : undefined;
  });
  assert.ok(ready.ready_at);

  const conn = (await api('GET', `/v1/databases/${name}/connection`)).json();
  assert.equal(conn.port, pooler.port);
  const { password } = (await api('POST', `/v1/databases/${name}/credentials/reveal`)).json();
  const app = await connect({ user: conn.user, database: conn.database, password });
  await app.query('CREATE TABLE notes (id int PRIMARY KEY, body text)');
  await app.query("INSERT INTO notes VALUES (1, 'hello')");
  assert.equal((await app.query('SELECT body FROM notes')).rows[0].body, 'hello');

  // Rotation: the new password works, the old one fails, and the open session is gone.
  assert.equal((await api('POST', `/v1/databases/${name}/credentials/rotate`)).statusCode, 202);
  await waitUntil('rotation', async () => {
    const d = (await api('GET', `/v1/databases/${name}`)).json();
    return !d.rotation_pending && d.password_version === 2 ? d : undefined;
  });
  await assert.rejects(app.query('SELECT 1'), 'the session of the old password was cut');
  await app.end().catch(() => {});
  await assert.rejects(connect({ user: conn.user, database: conn.database, password }));
  const { password: fresh } = (await api('POST', `/v1/databases/${name}/credentials/reveal`)).json();
  assert.notEqual(fresh, password);
  const again = await connect({ user: conn.user, database: conn.database, password: fresh });
  assert.equal((await again.query('SELECT body FROM notes')).rows[0].body, 'hello', 'data survived');
  await again.end();

  // The owner's table, read through the SQL explorer: down the agent's channel, no job queued.
  const jobsBefore = (
    await s.db.pool.query("SELECT count(*)::int AS n FROM jobs WHERE kind LIKE 'explorer.%'")
  ).rows[0].n;
  const explored = await api('POST', `/v1/databases/${name}/explorer/query`, {
    sql: 'select id, body from notes',
  });
  assert.equal(explored.statusCode, 200, explored.body);
  assert.deepEqual(explored.json().rows, [[1, 'hello']]);
  const jobsAfter = (
    await s.db.pool.query("SELECT count(*)::int AS n FROM jobs WHERE kind LIKE 'explorer.%'")
  ).rows[0].n;
  assert.equal(jobsAfter, jobsBefore, 'the explorer used the channel');

  const leaks = await s.db.pool.query(
    "SELECT count(*)::int AS n FROM jobs WHERE payload::text LIKE $1 OR payload::text LIKE $2 OR coalesce(result::text, '') LIKE $1 OR coalesce(result::text, '') LIKE $2",
    [`%${password}%`, `%${fresh}%`],
  );
  assert.equal(leaks.rows[0].n, 0, 'no clear password in any job row');

  // Delete: confirm, then it is gone from the API, the cluster and the pooler.
  assert.equal((await api('DELETE', `/v1/databases/${name}`, { confirm: name })).statusCode, 202);
  await waitUntil('deleted', async () =>
    (await api('GET', `/v1/databases/${name}`)).statusCode === 404 ? true : undefined,
  );
  assert.deepEqual(await adminQuery('SELECT 1 FROM pg_database WHERE datname = $1', [conn.database]), []);
  assert.deepEqual(
    await adminQuery('SELECT 1 FROM pg_roles WHERE rolname LIKE $1', [`${conn.database}\\_%`]),
    [],
  );
  await assert.rejects(connect({ user: conn.user, database: conn.database, password: fresh }));
});

test('two accounts with one label on one node: each its own database, each under a generated name there; neither learns of the other', async () => {
  const label = `same_${randomBytes(4).toString('hex')}`;
  const other = await createTestKey(s, { account: 'e2e-other' });
  const as =
    (k: TestKey) => (method: 'GET' | 'POST' | 'DELETE', url: string, payload?: Record<string, unknown>) =>
      s.app.inject({ method, url, headers: k.headers, ...(payload ? { payload } : {}) });
  const made: { password: string; connection: { user: string; database: string } }[] = [];
  for (const k of [key, other]) {
    const res = await as(k)('POST', '/v1/databases', { name: label, wait_ms: 30_000, reveal: true });
    assert.equal(res.statusCode, 201, res.body);
    assert.equal(res.json().status, 'ready', res.body);
    assert.equal(res.json().name, label);
    made.push(res.json().credentials);
  }
  const [first, second] = made as [(typeof made)[0], (typeof made)[0]];
  // Neither is under the label on the node: every new database's name there is generated (ADR 0039).
  for (const c of [first, second]) {
    assert.match(c.connection.database, /^bulwark_db_p_[0-9a-f]{16}$/);
    assert.equal(c.connection.user, `${c.connection.database}_owner`);
  }
  assert.notEqual(first.connection.database, second.connection.database);
  assert.deepEqual(await adminQuery('SELECT 1 FROM pg_database WHERE datname = $1', [label]), []);
  // Each logs in with its own password only.
  for (const [mine, theirs] of [
    [first, second],
    [second, first],
  ] as const) {
    const c = await connect({ ...mine.connection, password: mine.password });
    await c.end();
    await assert.rejects(connect({ ...theirs.connection, password: mine.password }));
  }
  // The second account deletes its database: dropped on the node under its name there, the
  // first one untouched.
  assert.equal((await as(other)('DELETE', `/v1/databases/${label}`, { confirm: label })).statusCode, 202);
  await waitUntil('dropped', async () => {
    const r = await adminQuery('SELECT 1 FROM pg_database WHERE datname = $1', [second.connection.database]);
    return r.length === 0 ? true : undefined;
  });
  const still = await connect({ ...first.connection, password: first.password });
  await still.end();
  assert.equal((await api('DELETE', `/v1/databases/${label}`, { confirm: label })).statusCode, 202);
});
