import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { listNodeHealth } from '../src/server/modules/nodes/nodes.repo.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { type ReserveStack, startReserveStack } from './helpers/reserve-stack.ts';
import type { TestServer } from './helpers/server.ts';
import { waitUntil } from './helpers/wait.ts';
import { type PrivatePooler, tryLogin } from './pooler-harness.ts';

// Reserved databases (issue 16, ADR 0037) through the whole path: the server's keeper has a real
// agent (warm pool of 2) make two databases owned by no account; a create takes one in its own
// transaction and answers ready with the password; the keeper makes the next one.
let pooler: PrivatePooler;
let s: TestServer;
let a: TestKey;
let b: TestKey;
let admin: pg.Pool;
let stack: ReserveStack;

before(async () => {
  stack = await startReserveStack('rsv');
  ({ pooler, s, admin } = stack);
  a = await createTestKey(s, { account: 'rsv-a' });
  b = await createTestKey(s, { account: 'rsv-b' });
});
after(async () => {
  await stack?.stop();
});

const reserves = (status?: string) => stack.reserves(status);
const reservesReady = (n: number) => stack.reservesReady(n);

const api = (k: TestKey, method: 'GET' | 'POST' | 'DELETE', url: string, payload?: Record<string, unknown>) =>
  s.app.inject({ method, url, headers: k.headers, ...(payload ? { payload } : {}) });

test('a create takes a reserved database: ready at once with its password; no tenant ever saw it', async () => {
  const ready = await reservesReady(2);
  // Made from the warm pool: opaque names on the node.
  for (const r of ready) assert.match(r.pg_name ?? r.name, /^(bulwark_db_|rsv_)/);
  // Platform admins see them per node, apart from the accounts' databases.
  const [node] = await listNodeHealth(s.db.pool, 10);
  assert.equal(node!.reserved_databases, 2);
  assert.equal(node!.database_count, 0);
  // Before: in no account's list, jobs or audit.
  for (const k of [a, b]) {
    const listed = (await api(k, 'GET', '/v1/databases')).body;
    const jobs = (await api(k, 'GET', '/v1/jobs')).body;
    const events = (await api(k, 'GET', '/v1/audit/events')).body;
    for (const r of ready)
      for (const text of [listed, jobs, events]) {
        assert.ok(!text.includes(r.id), 'a reserve id shown to a tenant');
        assert.ok(!text.includes(r.name), 'a reserve label shown to a tenant');
      }
  }
  const name = `rv_${randomBytes(4).toString('hex')}`;
  const t0 = performance.now();
  const res = await api(a, 'POST', '/v1/databases', { name, wait_ms: 10_000, reveal: true });
  const ms = performance.now() - t0;
  assert.equal(res.statusCode, 201, res.body);
  const body = res.json();
  assert.equal(body.status, 'ready');
  assert.ok(
    ready.some((r) => r.id === body.id),
    'the oldest ready reserve is the database now',
  );
  assert.ok(ms < 5_000, `answered in ${ms} ms`);
  const { password, connection } = body.credentials;
  // Its name on the node stays whatever the label (a warm-made one's spare name, or a cold one's).
  const taken = ready.find((r) => r.id === body.id)!;
  assert.equal(connection.database, taken.pg_name ?? taken.name);
  const login = new pg.Client({
    host: '127.0.0.1',
    port: pooler.port,
    user: connection.user,
    database: connection.database,
    password,
  });
  assert.equal(await tryLogin(login), null);
  // The account's record: created and ready, both in the create's transaction.
  const events = (await api(a, 'GET', `/v1/audit/events?target=${body.id}`)).json();
  const actions = events.items.map((e: { action: string }) => e.action);
  for (const action of ['database.created', 'database.create_done'])
    assert.ok(actions.includes(action), `${action} in ${JSON.stringify(actions)}`);
  // The other account still cannot see it.
  assert.equal((await api(b, 'GET', `/v1/databases/${name}`)).statusCode, 404);
  // The keeper makes the next one.
  await reservesReady(2);
});

test('concurrent creates beyond the reserves all succeed, none shares a database', async () => {
  await reservesReady(2);
  const names = Array.from({ length: 4 }, () => `rc_${randomBytes(4).toString('hex')}`);
  const answers = await Promise.all(
    names.map((name) => api(a, 'POST', '/v1/databases', { name, wait_ms: 60_000, reveal: true })),
  );
  for (const r of answers) assert.equal(r.statusCode, 201, r.body);
  const bodies = answers.map((r) => r.json());
  for (const d of bodies) assert.equal(d.status, 'ready', JSON.stringify(d));
  assert.equal(new Set(bodies.map((d) => d.id)).size, 4);
  assert.equal(new Set(bodies.map((d) => d.credentials.connection.database)).size, 4);
  for (const d of bodies) {
    const c = new pg.Client({
      host: '127.0.0.1',
      port: pooler.port,
      user: d.credentials.connection.user,
      database: d.credentials.connection.database,
      password: d.credentials.password,
    });
    assert.equal(await tryLogin(c), null, d.name);
  }
  // Deleting one made from a reserve drops it on the node, by its name there.
  const gone = bodies[0]!;
  assert.equal(
    (await api(a, 'DELETE', `/v1/databases/${gone.name}`, { confirm: gone.name })).statusCode,
    202,
  );
  await waitUntil('the database dropped', async () => {
    const r = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [
      gone.credentials.connection.database,
    ]);
    return r.rowCount === 0 ? true : undefined;
  });
});

test('a cordoned node gives its reserves back, and a create then takes none', async () => {
  await reservesReady(2);
  const before = await reserves();
  await s.db.pool.query('UPDATE nodes SET cordoned_at = now()');
  try {
    const { retired } = await s.reserveKeeper.runOnce();
    assert.equal(retired, 2);
    const named = await api(a, 'POST', '/v1/databases', { name: `rx_${randomBytes(4).toString('hex')}` });
    assert.ok([409, 503].includes(named.statusCode), named.body);
    await waitUntil('the reserves dropped on the node', async () => {
      const left = await admin.query('SELECT 1 FROM pg_database WHERE datname = ANY($1)', [
        before.map((r) => r.pg_name ?? r.name),
      ]);
      return left.rowCount === 0 ? true : undefined;
    });
    assert.equal((await reserves()).length, 0);
    assert.equal((await s.reserveKeeper.runOnce()).made, 0, 'none made on a cordoned node');
  } finally {
    await s.db.pool.query('UPDATE nodes SET cordoned_at = NULL');
  }
});

test('a failed reserve and one made with settings no create asks for any more are given back', async () => {
  const [stale, failed] = await reservesReady(2);
  // The server's defaults changed since this one was made (its limits are not what a create asks).
  await s.db.pool.query(
    "UPDATE databases SET limits = jsonb_set(limits, '{statement_timeout_ms}', '1234') WHERE id = $1",
    [stale!.id],
  );
  // A reserve whose create failed (a minute ago: failed ones are retried at most once a minute).
  await s.db.pool.query(
    "UPDATE databases SET status = 'failed', updated_at = now() - interval '2 minutes' WHERE id = $1",
    [failed!.id],
  );
  // Neither is taken meanwhile: a create makes its database as before.
  const name = `rf_${randomBytes(4).toString('hex')}`;
  const made = await api(a, 'POST', '/v1/databases', { name, wait_ms: 60_000, reveal: true });
  assert.equal(made.statusCode, 201, made.body);
  assert.ok(![stale!.id, failed!.id].includes(made.json().id));
  const { retired } = await s.reserveKeeper.runOnce();
  assert.ok(retired >= 2, `retired ${retired}`);
  await waitUntil('both dropped', async () => {
    const r = await s.db.pool.query("SELECT 1 FROM databases WHERE id = ANY($1) AND status <> 'deleted'", [
      [stale!.id, failed!.id],
    ]);
    return r.rowCount === 0 ? true : undefined;
  });
  await reservesReady(2);
});
