// Security review (ADR 0034): attacks on warm-pool spares that keep their names, against a real
// server, a real agent with a warm pool of 2, PostgreSQL and PgBouncer. Each test asserts the
// secure behaviour (it passes where the defence held).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { loadExplorerKey } from '../src/agent/explorer/explorer-role.ts';
import type { RunningAgent } from '../src/agent/main.ts';
import { SPARE_PREFIX, spareOwnerPassword, spareTag } from '../src/agent/postgres/spare-sql.ts';
import { roleNames } from '../src/shared/identifiers.ts';
import { startTestAgent } from './helpers/agent.ts';
import { testEnv } from './helpers/env.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { drainSpares } from './helpers/reserve-stack.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { type PrivatePooler, startPrivatePooler, tryLogin } from './pooler-harness.ts';

let pooler: PrivatePooler;
let s: TestServer;
let agent: RunningAgent;
let a: TestKey;
let aRead: TestKey;
let b: TestKey;
let admin: pg.Pool;
let tag: string;
let agentKey: Buffer;
before(async () => {
  pooler = await startPrivatePooler();
  s = await createTestServer({ poolerPort: pooler.port, poolerSslmode: 'disable' });
  const url = await s.app.listen({ host: '127.0.0.1', port: 0 });
  agent = await startTestAgent(s, url, { name: 'zzwarm', pooler, warmPoolSize: 2, explorerChannel: false });
  a = await createTestKey(s, { account: 'zz-a', level: 'write' });
  aRead = await createTestKey(s, { account: 'zz-a', level: 'read' });
  b = await createTestKey(s, { account: 'zz-b', level: 'write' });
  admin = new pg.Pool({ connectionString: testEnv().adminUrl, max: 2 });
  admin.on('error', () => {});
  agentKey = await loadExplorerKey(pooler.stateDir);
  tag = spareTag(agentKey);
});
after(async () => {
  await agent?.stop();
  await drainSpares(pooler, admin);
  await admin?.end();
  s?.app.server.closeAllConnections();
  await s?.stop();
  await pooler?.stop();
});

async function spares(): Promise<string[]> {
  const r = await admin.query<{ n: string }>(
    `SELECT datname::text AS n FROM pg_database
      WHERE starts_with(datname::text, $1) AND shobj_description(oid, 'pg_database') LIKE 'bulwark:spare:ready:%'`,
    [`${SPARE_PREFIX}${tag}_`],
  );
  return r.rows.map((x) => x.n);
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const v = await fn();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

const api = (
  k: TestKey,
  method: 'GET' | 'POST' | 'DELETE',
  url: string,
  payload?: Record<string, unknown>,
  headers: Record<string, string> = {},
) => s.app.inject({ method, url, headers: { ...k.headers, ...headers }, ...(payload ? { payload } : {}) });

const viaPooler = (user: string, database: string, password: string) =>
  new pg.Client({ host: '127.0.0.1', port: pooler.port, user, database, password });
const direct = (user: string, database: string, password: string) =>
  new pg.Client({ host: '127.0.0.1', port: testEnv().pgPort, user, database, password });

/** Every row of every table of the control database, as text, that contains `needle`. */
async function controlRowsWith(needle: string): Promise<string[]> {
  const tables = await s.db.pool.query<{ t: string }>(
    `SELECT quote_ident(table_schema) || '.' || quote_ident(table_name) AS t FROM information_schema.tables
      WHERE table_type = 'BASE TABLE' AND table_schema NOT IN ('pg_catalog', 'information_schema')`,
  );
  const hits: string[] = [];
  for (const { t } of tables.rows) {
    const r = await s.db.pool.query(
      `SELECT count(*)::int AS n FROM ${t} x WHERE x::text LIKE '%' || $1 || '%'`,
      [needle],
    );
    if (r.rows[0].n > 0) hits.push(t);
  }
  return hits;
}

let label: string;
let physical: string;
let password: string;

test('read key, create with reveal: refused up front (403), nothing created', async () => {
  await waitFor('the pool full', async () => ((await spares()).length === 2 ? true : undefined));
  const name = `zzr_${randomBytes(3).toString('hex')}`;
  const res = await api(aRead, 'POST', '/v1/databases', { name, wait_ms: 5000, reveal: true });
  assert.equal(res.statusCode, 403, res.body);
  const n = await s.db.pool.query('SELECT 1 FROM databases WHERE name = $1', [name]);
  assert.equal(n.rowCount, 0);
  // A key scoped to one database cannot create (and so cannot reveal at create).
  const scoped = await createTestKey(s, { account: 'zz-a', level: 'write', databases: ['whatever'] });
  const res2 = await api(scoped, 'POST', '/v1/databases', { name, wait_ms: 5000, reveal: true });
  assert.equal(res2.statusCode, 403, res2.body);
  assert.equal((await s.db.pool.query('SELECT 1 FROM databases WHERE name = $1', [name])).rowCount, 0);
});

test('warm create with wait_ms + reveal: the password never lands in the control DB, job APIs or replays', async () => {
  label = `zza_${randomBytes(3).toString('hex')}`;
  const idem = { 'idempotency-key': `zz-${randomBytes(6).toString('hex')}` };
  const res = await api(a, 'POST', '/v1/databases', { name: label, wait_ms: 30_000, reveal: true }, idem);
  assert.equal(res.statusCode, 201, res.body);
  const body = res.json();
  assert.equal(body.status, 'ready', res.body);
  password = body.credentials.password;
  physical = body.credentials.connection.database;
  assert.ok(physical.startsWith(`${SPARE_PREFIX}${tag}_`), 'made from a spare');
  // It is the spare's derived password (ADR 0034 §2): the agent key derives it.
  assert.equal(password, spareOwnerPassword(agentKey, physical));

  // Nowhere in the control database (jobs.result, audit, idempotency records, outboxes…).
  assert.deepEqual(await controlRowsWith(password), []);
  // Not in any job API for either key level.
  for (const k of [a, aRead]) {
    const jobs = await api(k, 'GET', '/v1/jobs?limit=100');
    assert.ok(!jobs.body.includes(password), 'password in GET /v1/jobs');
  }
  const audit = await api(a, 'GET', '/v1/audit/events?limit=100');
  assert.ok(!audit.body.includes(password), 'password in audit');
  // The idempotent replay answers without the credentials.
  const replay = await api(a, 'POST', '/v1/databases', { name: label, wait_ms: 30_000, reveal: true }, idem);
  assert.equal(replay.headers['idempotent-replayed'], 'true', replay.body);
  assert.ok(!replay.body.includes(password), 'password in a replay');
  assert.equal(replay.json().credentials, undefined);
  // The read key sees the database but not the password; the other account sees nothing.
  assert.equal((await api(aRead, 'POST', `/v1/databases/${label}/credentials/reveal`)).statusCode, 403);
  const other = await api(b, 'GET', `/v1/databases/${label}/connection`);
  assert.equal(other.statusCode, 404);
  assert.ok(!other.body.includes(physical));
  // Another account's listing does not name the physical database.
  assert.ok(!(await api(b, 'GET', '/v1/databases')).body.includes(physical));
  assert.ok(!(await api(b, 'GET', '/v1/jobs?limit=100')).body.includes(physical));
});

test('tenant with the owner password: cannot reach, log into or tamper with a spare', async () => {
  const owner = roleNames(physical).owner;
  const c = viaPooler(owner, physical, password);
  await c.connect();
  try {
    // The tenant sees spare names in the catalog (accepted: ADR 0028 consequences).
    const seen = (
      await c.query<{ n: string }>(
        `SELECT datname::text AS n FROM pg_database WHERE datname::text LIKE 'bulwark\\_db\\_%'`,
      )
    ).rows.map((r) => r.n);
    const ready = await spares();
    assert.ok(ready.length > 0);
    for (const spare of ready) assert.ok(seen.includes(spare));
    for (const spare of ready) {
      const r = roleNames(spare);
      // Tamper attempts from the tenant's session: every one refused.
      for (const sql of [
        `ALTER ROLE "${r.owner}" SET search_path = public`,
        `ALTER ROLE "${r.owner}" LOGIN`,
        `ALTER ROLE "${r.owner}" PASSWORD 'x'`,
        `GRANT "${owner}" TO "${r.owner}"`,
        `GRANT "${owner}" TO "${r.migrator}"`,
        `COMMENT ON DATABASE "${spare}" IS 'bulwark:spare:ready:x'`,
        `COMMENT ON ROLE "${r.owner}" IS 'x'`,
        `ALTER DATABASE "${spare}" SET search_path = public`,
        `ALTER ROLE "${r.owner}" IN DATABASE "${spare}" SET search_path = public`,
        `COMMENT ON DATABASE "${physical}" IS 'bulwark:spare:ready:x'`,
        `ALTER DATABASE "${physical}" RENAME TO zz_squat`,
      ]) {
        const err = await c.query(sql).then(
          () => null,
          (e: Error) => e.message,
        );
        assert.notEqual(err, null, `succeeded: ${sql}`);
      }
      // Logins into the spare: as its owner with the tenant's own password, as the tenant, as
      // the spare's steward/reader/migrator with the tenant's password, through PgBouncer and
      // straight to PostgreSQL.
      for (const user of [r.owner, r.reader, r.migrator, r.explorer, r.steward]) {
        assert.notEqual(await tryLogin(viaPooler(user, spare, password)), null, `pooler ${user}`);
        assert.notEqual(await tryLogin(direct(user, spare, password)), null, `direct ${user}`);
      }
      assert.notEqual(
        await tryLogin(viaPooler(owner, spare, password)),
        null,
        'tenant into spare via pooler',
      );
      assert.notEqual(await tryLogin(direct(owner, spare, password)), null, 'tenant into spare direct');
    }
  } finally {
    await c.end();
  }
});

test('planted objects in a tenant database never reach the next tenant; the next claim is a fresh spare', async () => {
  const owner = roleNames(physical).owner;
  const c = direct(owner, physical, password);
  await c.connect();
  try {
    await c.query('CREATE TABLE planted (x int)');
    await c.query(`CREATE FUNCTION public.now_planted() RETURNS int LANGUAGE sql AS 'SELECT 1'`);
    await c.query(`ALTER ROLE "${owner}" SET search_path = evil, public`).catch(() => {});
  } finally {
    await c.end();
  }
  const labelB = `zzb_${randomBytes(3).toString('hex')}`;
  const res = await api(b, 'POST', '/v1/databases', { name: labelB, wait_ms: 30_000, reveal: true });
  assert.equal(res.statusCode, 201, res.body);
  const physB = res.json().credentials.connection.database as string;
  assert.notEqual(physB, physical);
  const cb = viaPooler(roleNames(physB).owner, physB, res.json().credentials.password);
  await cb.connect();
  try {
    const r = await cb.query(
      `SELECT count(*)::int AS n FROM pg_class WHERE relname = 'planted' UNION ALL
       SELECT count(*)::int FROM pg_proc WHERE proname = 'now_planted'`,
    );
    assert.deepEqual(
      r.rows.map((x) => x.n),
      [0, 0],
    );
    // B cannot get into A's database either.
    assert.notEqual(
      await tryLogin(viaPooler(roleNames(physB).owner, physical, res.json().credentials.password)),
      null,
    );
  } finally {
    await cb.end();
  }
});

test('rotate and delete of a warm database act on its physical name; its entry and roles go', async () => {
  const rot = await api(a, 'POST', `/v1/databases/${label}/credentials/rotate`);
  assert.ok([200, 202].includes(rot.statusCode), rot.body);
  await waitFor('rotated', async () => {
    const r = await s.db.pool.query<{ status: string }>(
      "SELECT status FROM jobs WHERE kind = 'database.rotate' AND payload->>'database_id' = (SELECT id::text FROM databases WHERE name = $1 AND deleted_at IS NULL)",
      [label],
    );
    const st = r.rows[0]?.status;
    assert.notEqual(st, 'dead');
    return st === 'succeeded' ? true : undefined;
  });
  // The derived (spare) password no longer logs in; the new one does.
  assert.notEqual(await tryLogin(viaPooler(roleNames(physical).owner, physical, password)), null);
  const { password: fresh } = (await api(a, 'POST', `/v1/databases/${label}/credentials/reveal`)).json();
  assert.notEqual(fresh, password);
  assert.equal(await tryLogin(viaPooler(roleNames(physical).owner, physical, fresh)), null);

  const del = await api(a, 'DELETE', `/v1/databases/${label}`, { confirm: label });
  assert.ok([200, 202, 204].includes(del.statusCode), del.body);
  await waitFor(
    'dropped',
    async () => {
      const r = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [physical]);
      return r.rowCount === 0 ? true : undefined;
    },
    30_000,
  );
  await waitFor('delete job finished', async () => {
    const r = await s.db.pool.query<{ status: string; last_error: string | null }>(
      "SELECT status, last_error FROM jobs WHERE kind = 'database.delete' ORDER BY id DESC LIMIT 1",
    );
    const st = r.rows[0]?.status;
    return st === 'succeeded' || st === 'dead' ? r.rows[0] : undefined;
  });
  const roles = await admin.query('SELECT rolname FROM pg_roles WHERE starts_with(rolname::text, $1)', [
    physical,
  ]);
  assert.deepEqual(roles.rows, []);
  // Its PgBouncer entry (auth file, ini, hba) is gone.
  await waitFor('entry gone', async () => {
    for (const f of fs.readdirSync(pooler.dir)) {
      const p = path.join(pooler.dir, f);
      if (fs.statSync(p).isFile() && fs.readFileSync(p, 'utf8').includes(physical)) return undefined;
    }
    return true;
  });
});
