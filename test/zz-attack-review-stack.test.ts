/**
 * Review attacks on reserved databases (ADR 0037), labels per account (0038) and generated names
 * (0039) through a real stack (server + agent with a warm pool and reserves, PostgreSQL,
 * PgBouncer): a tenant holding its owner password, and low-level API keys.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { databaseFingerprint } from '../src/agent/jobs/move-fingerprint.ts';
import { spareProblems } from '../src/agent/postgres/spare-sql.ts';
import { roleNames } from '../src/shared/identifiers.ts';
import { testEnv } from './helpers/env.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { type ReserveStack, startReserveStack } from './helpers/reserve-stack.ts';
import { waitUntil } from './helpers/wait.ts';
import { tryLogin } from './pooler-harness.ts';

let stack: ReserveStack;
let a: TestKey;
let aRead: TestKey;
let b: TestKey;

before(async () => {
  stack = await startReserveStack('zrvw');
  a = await createTestKey(stack.s, { account: 'zrvw-a' });
  aRead = await createTestKey(stack.s, { account: 'zrvw-a', level: 'read' });
  b = await createTestKey(stack.s, { account: 'zrvw-b' });
});
after(async () => {
  await stack?.stop();
});

type Made = {
  id: string;
  name: string;
  credentials: { password: string; connection: { user: string; database: string } };
};

const api = (k: TestKey, method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, payload?: object) =>
  stack.s.app.inject({ method, url, headers: k.headers, ...(payload ? { payload } : {}) });

const create = async (k: TestKey, name: string): Promise<Made> => {
  const res = await api(k, 'POST', '/v1/databases', { name, wait_ms: 45_000, reveal: true });
  assert.equal(res.statusCode, 201, res.body);
  assert.equal(res.json().status, 'ready', res.body);
  return res.json() as Made;
};

const client = (user: string, database: string, password: string) => {
  const c = new pg.Client({
    host: '127.0.0.1',
    port: stack.pooler.port,
    user,
    database,
    password,
    connectionTimeoutMillis: 5_000,
  });
  c.on('error', () => {});
  return c;
};
const ownerClient = (m: Made) =>
  client(m.credentials.connection.user, m.credentials.connection.database, m.credentials.password);

/** The SQL error of a statement, or null when it ran. */
const attempt = async (c: pg.Client, sql: string): Promise<string | null> =>
  c.query(sql).then(
    () => null,
    (e: Error) => e.message,
  );

const physical = (r: { name: string; pg_name: string | null }) => r.pg_name ?? r.name;

const deleteAndWait = async (k: TestKey, m: Made) => {
  const del = await api(k, 'DELETE', `/v1/databases/${m.name}`, { confirm: m.name });
  assert.equal(del.statusCode, 202, del.body);
  const dbName = m.credentials.connection.database;
  await waitUntil(
    `${dbName} dropped on the node`,
    async () =>
      (await stack.admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [dbName])).rowCount === 0
        ? true
        : undefined,
    45_000,
    200,
  );
};

const poolerFiles = async (): Promise<string> => {
  let out = '';
  for (const f of await fs.readdir(stack.pooler.dir, { withFileTypes: true }))
    if (f.isFile()) out += await fs.readFile(path.join(stack.pooler.dir, f.name), 'utf8').catch(() => '');
  return out;
};

test('a tenant owner reaches no reserve or spare through PgBouncer and reads no other label, setting or session from the catalogs', async () => {
  const bLabel = `bsecret_${randomBytes(5).toString('hex')}`;
  await stack.reservesReady(2);
  const bDb = await create(b, bLabel);
  await stack.reservesReady(2);
  const mine = await create(a, `za_${randomBytes(4).toString('hex')}`);
  const ready = await stack.reservesReady(2);
  const c = ownerClient(mine);
  await c.connect();
  try {
    // Catalogs a tenant may read: no label of another account anywhere, no reserve id.
    const dbs = await c.query<{ datname: string; c: string | null }>(
      "SELECT datname, pg_catalog.shobj_description(oid, 'pg_database') AS c FROM pg_catalog.pg_database",
    );
    const roles = await c.query<{ rolname: string; c: string | null }>(
      "SELECT rolname, pg_catalog.shobj_description(oid, 'pg_authid') AS c FROM pg_catalog.pg_roles",
    );
    const seen = JSON.stringify([dbs.rows, roles.rows]);
    assert.ok(!seen.includes(bLabel), "another account's label in the catalogs");
    // Documented (ADR 0039): every database and role on the node carries `bulwark:database:<id>`,
    // reserves' included, so a tenant sees ids, never labels; the id alone opens nothing (404).
    for (const id of [bDb.id, ...ready.map((r) => r.id)]) {
      assert.ok(seen.includes(id), `id ${id} not in the catalogs (the documented marker changed?)`);
      for (const url of [`/v1/databases/${id}`, `/v1/databases/${id}/connection`]) {
        const res = await api(a, 'GET', url);
        assert.ok([400, 404].includes(res.statusCode), `${url}: ${res.statusCode} ${res.body}`);
        assert.ok(!res.body.includes('bulwark_db_'), res.body);
      }
    }
    assert.ok(!seen.includes('rsv_'), 'a reserve label in the catalogs');
    // Reserves look like any tenant database: their comment is the same as the tenant's own.
    const shape = (n: string) =>
      (dbs.rows.find((d) => d.datname === n)?.c ?? '').replace(/[0-9a-f-]{36}/g, '<id>');
    for (const r of ready)
      assert.equal(shape(physical(r)), shape(mine.credentials.connection.database), 'a reserve marked');
    // Hidden: other sessions and other tenants' settings.
    assert.notEqual(await attempt(c, 'SELECT count(*) FROM pg_catalog.pg_db_role_setting'), null);
    assert.notEqual(await attempt(c, 'SELECT count(*) FROM pg_catalog.pg_stat_activity'), null);
    assert.notEqual(await attempt(c, 'SELECT count(*) FROM pg_catalog.pg_stat_database'), null);
  } finally {
    await c.end().catch(() => {});
  }
  // Logins: the tenant's own credentials open no reserve, no spare, no other account's database.
  const targets = new Set<string>([...ready.map(physical), bDb.credentials.connection.database]);
  const spares = await stack.admin.query<{ datname: string }>(
    "SELECT datname FROM pg_database WHERE datname LIKE 'bulwark\\_%' AND datname <> $1",
    [mine.credentials.connection.database],
  );
  for (const s of spares.rows) targets.add(s.datname);
  for (const t of targets) {
    const err = await tryLogin(client(mine.credentials.connection.user, t, mine.credentials.password));
    assert.notEqual(err, null, `A's owner logged in to ${t}`);
  }
});

test("a tenant plants nothing on a reserve's roles or database that the next taker receives", async (t) => {
  const ready = await stack.reservesReady(2);
  const mine = await create(a, `zp_${randomBytes(4).toString('hex')}`);
  const aOwner = mine.credentials.connection.user;
  const rsv = (await stack.reserves()).filter((r) => r.id !== mine.id);
  assert.ok(rsv.length >= 1, 'a reserve left to attack');
  const c = ownerClient(mine);
  await c.connect();
  const outcomes: Record<string, string | null> = {};
  try {
    for (const r of rsv) {
      const db = physical(r);
      const rn = roleNames(db);
      const q = (s: string) => `"${s}"`;
      for (const [k, sql] of [
        ['alter database set', `ALTER DATABASE ${q(db)} SET search_path = evil`],
        ['comment database', `COMMENT ON DATABASE ${q(db)} IS 'evil'`],
        ['alter role set', `ALTER ROLE ${q(rn.owner)} SET search_path = evil`],
        ['alter role password', `ALTER ROLE ${q(rn.owner)} PASSWORD 'x-known-1234567'`],
        ['self in database', `ALTER ROLE CURRENT_USER IN DATABASE ${q(db)} SET search_path = evil`],
        ['grant self to reserve owner', `GRANT ${q(aOwner)} TO ${q(rn.owner)}`],
        ['grant self to reserve steward', `GRANT ${q(aOwner)} TO ${q(rn.steward)}`],
        ['grant self to reserve explorer', `GRANT ${q(aOwner)} TO ${q(rn.explorer)}`],
        ['grant reserve owner to self', `GRANT ${q(rn.owner)} TO ${q(aOwner)}`],
      ] as const)
        outcomes[`${r.id.slice(0, 8)} ${k}`] = await attempt(c, sql);
    }
  } finally {
    await c.end().catch(() => {});
  }
  t.diagnostic(`attempts: ${JSON.stringify(outcomes)}`);
  for (const [k, v] of Object.entries(outcomes))
    if (!k.endsWith('self in database') && !k.includes('grant self to'))
      assert.notEqual(v, null, `${k} ran against a reserve`);
  // B takes what is left: its roles carry no membership of A's roles, no setting of A's.
  await waitUntil(
    'reserves ready',
    async () => ((await stack.reserves()).length >= 1 ? true : undefined),
    45_000,
  );
  const theirs = await create(b, `zq_${randomBytes(4).toString('hex')}`);
  const bRoles = Object.values(roleNames(theirs.credentials.connection.database));
  const members = await stack.admin.query<{ role: string; member: string }>(
    `SELECT r.rolname AS role, m.rolname AS member FROM pg_auth_members am
       JOIN pg_roles r ON r.oid = am.roleid JOIN pg_roles m ON m.oid = am.member
      WHERE m.rolname = ANY($1) AND NOT (r.rolname = ANY($1))`,
    [bRoles],
  );
  const d = ownerClient(theirs);
  await d.connect();
  try {
    const sp = await d.query('SHOW search_path');
    assert.notEqual(sp.rows[0].search_path, 'evil');
    const inA = await d.query('SELECT pg_catalog.pg_has_role(current_user, $1, $2) AS m', [aOwner, 'MEMBER']);
    assert.deepEqual(
      members.rows,
      [],
      `B's roles (taken ${ready.some((r) => r.id === theirs.id) ? 'from a reserve' : 'cold'}) are members of another tenant's role; attempts: ${JSON.stringify(outcomes)}`,
    );
    assert.equal(inA.rows[0].m, false, "B's owner is a member of A's owner");
  } finally {
    await d.end().catch(() => {});
  }
});

test('keys scoped to a reserve by its label, physical name or id reach nothing of it; a read key takes none', async () => {
  const ready = await stack.reservesReady(2);
  const r = ready[0]!;
  const scoped = await createTestKey(stack.s, {
    account: 'zrvw-a',
    level: 'admin',
    databases: [r.name, physical(r), r.id],
  });
  const before = await stack.s.db.pool.query('SELECT * FROM databases WHERE id = ANY($1) ORDER BY id', [
    ready.map((x) => x.id),
  ]);
  for (const ref of [r.name, physical(r), r.id]) {
    for (const [m, url, body] of [
      ['GET', `/v1/databases/${ref}`],
      ['GET', `/v1/databases/${ref}/connection`],
      ['POST', `/v1/databases/${ref}/credentials/reveal`, {}],
      ['POST', `/v1/databases/${ref}/credentials/rotate`, {}],
      ['DELETE', `/v1/databases/${ref}`, { confirm: ref }],
    ] as ['GET' | 'POST' | 'DELETE', string, object?][]) {
      const res = await api(scoped, m, url, body);
      assert.ok(res.statusCode >= 400, `${m} ${url}: ${res.statusCode} ${res.body}`);
      assert.ok(!res.body.includes(r.id) || ref === r.id, res.body);
    }
  }
  const list = await api(scoped, 'GET', '/v1/databases');
  for (const x of [r.id, physical(r)]) assert.ok(!list.body.includes(x), list.body);
  const readCreate = await api(aRead, 'POST', '/v1/databases', { name: 'zrd_x', reveal: true });
  assert.ok(readCreate.statusCode >= 400, readCreate.body);
  const after = await stack.s.db.pool.query('SELECT * FROM databases WHERE id = ANY($1) ORDER BY id', [
    ready.map((x) => x.id),
  ]);
  assert.deepEqual(after.rows, before.rows, 'a scoped or read key changed a reserve');
});

test('a database taken from a reserve and deleted leaves no pooler entry, role or setting on the node', async () => {
  await stack.reservesReady(2);
  const mine = await create(a, `zd_${randomBytes(4).toString('hex')}`);
  const dbName = mine.credentials.connection.database;
  const c = ownerClient(mine);
  await c.connect();
  try {
    await c.query('ALTER ROLE CURRENT_USER SET work_mem = 4321');
    await c.query(`ALTER ROLE CURRENT_USER IN DATABASE ${'"'}${dbName}${'"'} SET search_path = evil`);
    await c.query(`ALTER DATABASE "${dbName}" SET search_path = evil`).catch(() => {});
  } finally {
    await c.end().catch(() => {});
  }
  assert.ok((await poolerFiles()).includes(dbName), 'the pooler knows the database before');
  await deleteAndWait(a, mine);
  await waitUntil(
    'the pooler entry gone',
    async () => (!(await poolerFiles()).includes(dbName) ? true : undefined),
    30_000,
    200,
  );
  const roles = await stack.admin.query('SELECT rolname FROM pg_roles WHERE rolname = ANY($1)', [
    Object.values(roleNames(dbName)),
  ]);
  assert.deepEqual(roles.rows, [], 'roles left on the node');
  const orphans = await stack.admin.query(
    `SELECT setdatabase, setrole FROM pg_db_role_setting s
      WHERE (s.setrole <> 0 AND NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = s.setrole))
         OR (s.setdatabase <> 0 AND NOT EXISTS (SELECT 1 FROM pg_database d WHERE d.oid = s.setdatabase))`,
  );
  assert.deepEqual(orphans.rows, [], 'settings of the deleted database left');
  // The next database (a refilled reserve) has another name and none of it.
  await stack.reservesReady(2);
  const next = await create(b, mine.name);
  assert.notEqual(next.credentials.connection.database, dbName);
  assert.equal(await tryLogin(ownerClient(next)), null);
});

test('rapid create/delete churn by one tenant leaves reserves whole and nothing marked ready that is not', async () => {
  await stack.reservesReady(2);
  const t0 = Date.now();
  for (let i = 0; i < 3; i++) {
    const m = await create(a, `zc${i}_${randomBytes(3).toString('hex')}`);
    const del = await api(a, 'DELETE', `/v1/databases/${m.name}`, { confirm: m.name });
    assert.equal(del.statusCode, 202, del.body);
    await stack.s.reserveKeeper.runOnce();
  }
  const ready = await stack.reservesReady(2);
  assert.ok(Date.now() - t0 < 55_000);
  // Never more reserves than the target, counting those being made.
  const live = await stack.s.db.pool.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM databases WHERE account_id IS NULL AND deleted_at IS NULL',
  );
  assert.ok(live.rows[0]!.n <= 2, `${live.rows[0]!.n} live reserves`);
  // Every row marked ready exists on the node and in the pooler.
  const files = await poolerFiles();
  const rows = await stack.s.db.pool.query<{ id: string; n: string; account_id: string | null }>(
    "SELECT id, coalesce(pg_name, name) AS n, account_id FROM databases WHERE status = 'ready' AND deleted_at IS NULL",
  );
  for (const r of rows.rows) {
    const onNode = await stack.admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [r.n]);
    assert.equal(onNode.rowCount, 1, `ready row ${r.id} (${r.n}) has no database`);
    assert.ok(files.includes(r.n), `ready row ${r.id} (${r.n}) has no pooler entry`);
  }
  assert.equal(ready.length, 2);
  // Another tenant still gets a working database.
  const theirs = await create(b, `zc_b_${randomBytes(3).toString('hex')}`);
  assert.equal(await tryLogin(ownerClient(theirs)), null);
});

// PostgreSQL lets any role `ALTER ROLE self IN DATABASE <any> SET …` (no privilege stops it), so a
// tenant's owner puts rows on every database of the node: reserves, spares, other tenants'. They
// never apply (its role cannot connect there), and nothing of ours counts them: a spare stays
// good (the attack made spares fail their check, one statement each forcing a new spare), another
// tenant's database shows no change to a move's fingerprint (the attack could fail its moves),
// and they go with the tenant's roles.
test("a tenant's `ALTER ROLE self IN DATABASE <reserve, spare, other tenant's>` never applies, trips no check and goes with its roles", async (t) => {
  await stack.reservesReady(2);
  const mine = await create(a, `zs_${randomBytes(4).toString('hex')}`);
  const rsv = await stack.reservesReady(2);
  // A ready spare of the warm pool too (the reserves used the pool's; it refills).
  await waitUntil(
    'a ready spare',
    async () =>
      (
        await stack.admin.query(
          "SELECT 1 FROM pg_database WHERE shobj_description(oid, 'pg_database') LIKE 'bulwark:spare:ready:%'",
        )
      ).rowCount
        ? true
        : undefined,
    30_000,
    100,
  );
  const me = mine.credentials.connection.user;
  const plantAll = async (value: string) => {
    const others = await stack.admin.query<{ datname: string }>(
      "SELECT datname FROM pg_database WHERE datname LIKE 'bulwark\\_db\\_%' AND datname <> $1",
      [mine.credentials.connection.database],
    );
    const c = ownerClient(mine);
    await c.connect();
    const planted: string[] = [];
    try {
      for (const { datname } of others.rows)
        if (
          (await attempt(c, `ALTER ROLE CURRENT_USER IN DATABASE "${datname}" SET work_mem = '${value}'`)) ===
          null
        )
          planted.push(datname);
    } finally {
      await c.end().catch(() => {});
    }
    return planted;
  };
  const planted = await plantAll('1234kB');
  t.diagnostic(`planted on ${planted.length} other databases`);
  // The spares stay good: their check counts only settings that can apply.
  const spares = await stack.admin.query<{ datname: string }>(
    `SELECT datname FROM pg_database WHERE datname = ANY($1)
        AND shobj_description(oid, 'pg_database') LIKE 'bulwark:spare:ready:%'`,
    [planted],
  );
  assert.ok(spares.rows.length > 0, 'a spare was planted on');
  for (const { datname } of spares.rows) {
    const problems = await spareProblems(stack.admin, datname, null);
    assert.deepEqual(
      problems.filter((p) => p.startsWith('setting in the database')),
      [],
      `${datname}: ${problems.join('; ')}`,
    );
  }
  // The next tenant takes a reserve A planted on: A's row there can never apply.
  const theirs = await create(b, `zt_${randomBytes(4).toString('hex')}`);
  assert.ok(
    rsv.some((r) => r.id === theirs.id),
    'taken from a reserve',
  );
  const bdb = theirs.credentials.connection.database;
  assert.ok(planted.includes(bdb), 'A planted on the reserve B took');
  const connect = await stack.admin.query<{ ok: boolean }>(
    "SELECT has_database_privilege($1, $2, 'CONNECT') AS ok",
    [me, bdb],
  );
  assert.equal(connect.rows[0]!.ok, false, "A's role cannot connect to B's database");
  assert.notEqual(await tryLogin(client(me, bdb, mine.credentials.password)), null);
  // A changing its row mid-move changes nothing of B's move fingerprint.
  const u = new URL(testEnv().adminUrl);
  u.pathname = `/${bdb}`;
  const inside = new pg.Client({ connectionString: u.toString() });
  inside.on('error', () => {});
  await inside.connect();
  try {
    const before = await databaseFingerprint(stack.admin, inside, bdb);
    assert.ok((await plantAll('2345kB')).includes(bdb));
    assert.equal(await databaseFingerprint(stack.admin, inside, bdb), before, "B's fingerprint unchanged");
  } finally {
    await inside.end().catch(() => {});
  }
  // A's rows go with A's roles: once its database is deleted, no row of a dropped role is left.
  await deleteAndWait(a, mine);
  const orphans = await stack.admin.query(
    'SELECT 1 FROM pg_db_role_setting s WHERE s.setrole <> 0 AND NOT EXISTS (SELECT 1 FROM pg_roles r WHERE r.oid = s.setrole)',
  );
  assert.equal(orphans.rowCount, 0);
  // (Other test files' tenants on this shared cluster may plant rows of their own meanwhile: only
  // A's are looked for.)
  const left = await stack.admin.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [me]);
  assert.equal(left.rowCount, 0, "A's role is gone, and its rows with it");
});
