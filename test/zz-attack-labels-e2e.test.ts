/**
 * Attacks on labels unique per account only (migration 0038), end to end (real server, agent,
 * PostgreSQL, PgBouncer): two accounts' databases of one label on one node; what one account does
 * to its database (rotate, allowlist, delete) never touches the other's.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import pg from 'pg';
import type { RunningAgent } from '../src/agent/main.ts';
import { startTestAgent } from './helpers/agent.ts';
import { adminQuery, dropKnownDatabases } from './helpers/db.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { waitUntil } from './helpers/wait.ts';
import { type PrivatePooler, startPrivatePooler, tryLogin } from './pooler-harness.ts';

let pooler: PrivatePooler;
let s: TestServer;
let agent: RunningAgent;
let a: TestKey;
let b: TestKey;
before(async () => {
  pooler = await startPrivatePooler();
  s = await createTestServer({ poolerPort: pooler.port, poolerSslmode: 'disable' });
  const url = await s.app.listen({ host: '127.0.0.1', port: 0 });
  agent = await startTestAgent(s, url, { name: 'lbl-e2e', pooler });
  a = await createTestKey(s, { account: 'lbl-e2e-a' });
  b = await createTestKey(s, { account: 'lbl-e2e-b' });
});
after(async () => {
  await agent?.stop();
  s?.app.server.closeAllConnections();
  // Every database this file made leaves the shared cluster.
  if (s) await dropKnownDatabases(s.db.pool);
  await s?.stop();
  await pooler?.stop();
});

const as = (k: TestKey) => (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: object) =>
  s.app.inject({ method, url, headers: k.headers, ...(payload ? { payload } : {}) });

const canLogin = async (c: { user: string; database: string; password: string }): Promise<boolean> =>
  (await tryLogin(
    new pg.Client({ host: '127.0.0.1', port: pooler.port, ...c, connectionTimeoutMillis: 5_000 }),
  )) === null;

test("B's rotate, allowlist and delete of its database of A's label act on B's database only", async () => {
  const label = `lbl_${randomBytes(4).toString('hex')}`;
  const made: { password: string; connection: { user: string; database: string } }[] = [];
  for (const k of [a, b]) {
    const res = await as(k)('POST', '/v1/databases', { name: label, wait_ms: 30_000, reveal: true });
    assert.equal(res.statusCode, 201, res.body);
    assert.equal(res.json().status, 'ready', res.body);
    made.push(res.json().credentials);
  }
  const [ca, cb] = made as [(typeof made)[0], (typeof made)[0]];
  assert.notEqual(ca.connection.database, cb.connection.database);
  // Neither is under the label on the node: each has a generated name there (ADR 0039).
  for (const c of [ca, cb]) assert.match(c.connection.database, /^bulwark_db_/);
  assert.equal((await adminQuery('SELECT 1 FROM pg_database WHERE datname = $1', [label])).length, 0);
  const loginA = { ...ca.connection, password: ca.password };
  assert.ok(await canLogin(loginA));
  assert.ok(await canLogin({ ...cb.connection, password: cb.password }));

  // B rotates: B's old password stops working, A's keeps working.
  assert.equal((await as(b)('POST', `/v1/databases/${label}/credentials/rotate`)).statusCode, 202);
  await waitUntil('rotation', async () => {
    const d = (await as(b)('GET', `/v1/databases/${label}`)).json();
    return !d.rotation_pending && d.password_version === 2 ? d : undefined;
  });
  assert.equal(await canLogin({ ...cb.connection, password: cb.password }), false);
  assert.ok(await canLogin(loginA), "A's password still works after B's rotation");
  const fresh = (await as(b)('POST', `/v1/databases/${label}/credentials/reveal`)).json().password;
  assert.ok(await canLogin({ ...cb.connection, password: fresh }));

  // B closes its allowlist to a far address: B's loopback login is refused, A's is not.
  const put = await as(b)('PUT', `/v1/databases/${label}/allowlist`, {
    entries: [{ cidr: '198.51.100.7/32' }],
  });
  assert.equal(put.statusCode, 200, put.body);
  await waitUntil('allowlist applied', async () =>
    (await canLogin({ ...cb.connection, password: fresh })) ? undefined : true,
  );
  assert.ok(await canLogin(loginA), "A's PgBouncer rules unchanged");

  // B deletes: B's physical database goes, A's stays and serves.
  assert.equal((await as(b)('DELETE', `/v1/databases/${label}`, { confirm: label })).statusCode, 202);
  await waitUntil('dropped', async () => {
    const r = await adminQuery('SELECT 1 FROM pg_database WHERE datname = $1', [cb.connection.database]);
    return r.length === 0 ? true : undefined;
  });
  assert.equal(
    (await adminQuery('SELECT 1 FROM pg_database WHERE datname = $1', [ca.connection.database])).length,
    1,
  );
  assert.ok(await canLogin(loginA), "A's database survives B's delete");
  assert.equal((await as(a)('DELETE', `/v1/databases/${label}`, { confirm: label })).statusCode, 202);
  await waitUntil('A dropped', async () => {
    const r = await adminQuery('SELECT 1 FROM pg_database WHERE datname = $1', [ca.connection.database]);
    return r.length === 0 ? true : undefined;
  });
});
