import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import pg from 'pg';
import type { RunningAgent } from '../src/agent/main.ts';
import { DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { type ReserveStack, startReserveStack } from './helpers/reserve-stack.ts';
import type { TestServer } from './helpers/server.ts';
import { waitUntil } from './helpers/wait.ts';
import { type PrivatePooler, tryLogin } from './pooler-harness.ts';

// Attacks on reserved databases (ADR 0037) through the whole path: a real server with reserves on,
// a real agent (warm pool of 2), PostgreSQL and PgBouncer. Each test asserts the safe behaviour.
let pooler: PrivatePooler;
let s: TestServer;
let agent: RunningAgent;
let a: TestKey;
let aRead: TestKey;
let aWrite: TestKey;
let aScoped: TestKey;
let b: TestKey;
let admin: pg.Pool;
let stack: ReserveStack;

before(async () => {
  stack = await startReserveStack('zrsv');
  ({ pooler, s, agent, admin } = stack);
  a = await createTestKey(s, { account: 'zrsv-a' });
  aRead = await createTestKey(s, { account: 'zrsv-a', level: 'read' });
  aWrite = await createTestKey(s, { account: 'zrsv-a', level: 'write' });
  aScoped = await createTestKey(s, { account: 'zrsv-a', level: 'admin', databases: ['only_this'] });
  b = await createTestKey(s, { account: 'zrsv-b' });
});
after(async () => {
  await stack?.stop();
});

const reserves = (status?: string) => stack.reserves(status);
const physical = (r: { name: string; pg_name: string | null }) => r.pg_name ?? r.name;
const reservesReady = (n: number) => stack.reservesReady(n);

const api = (
  k: TestKey,
  method: 'GET' | 'POST' | 'PUT' | 'DELETE',
  url: string,
  payload?: Record<string, unknown>,
) => s.app.inject({ method, url, headers: k.headers, ...(payload ? { payload } : {}) });

/** A database for `k` (taken from a reserve when one is ready), with its password. */
const createWithPassword = async (k: TestKey, name: string) => {
  const res = await api(k, 'POST', '/v1/databases', { name, wait_ms: 60_000, reveal: true });
  assert.equal(res.statusCode, 201, res.body);
  const body = res.json();
  assert.equal(body.status, 'ready', res.body);
  return body as {
    id: string;
    name: string;
    credentials: { password: string; connection: { user: string; database: string } };
  };
};

/** A login through the node's PgBouncer: null when it worked, the error otherwise. */
const login = (user: string, database: string, password: string) =>
  tryLogin(poolerClient(user, database, password));

/** That login through PgBouncer is refused (an error, whatever it says). */
const refused = async (user: string, database: string, password: string) =>
  assert.notEqual(await login(user, database, password), null, `${user} logged in to ${database}`);

const poolerClient = (user: string, database: string, password: string) => {
  const c = new pg.Client({
    host: '127.0.0.1',
    port: pooler.port,
    user,
    database,
    password,
    connectionTimeoutMillis: 5_000,
  });
  c.on('error', () => {});
  return c;
};

/** The reserve rows as they were, to prove an attempt changed nothing. */
const snapshot = async (ids: string[]) =>
  (
    await s.db.pool.query(
      `SELECT id, account_id, name, pg_name, status, password_sealed, pending_password_sealed, allowlist, limits,
              deleted_at FROM databases WHERE id = ANY($1) ORDER BY id`,
      [ids],
    )
  ).rows;

test('no tenant API call (any key level, any account) sees or touches a reserve before it is handed out', async () => {
  const ready = await reservesReady(2);
  const before = await snapshot(ready.map((r) => r.id));
  const secrets = ready.flatMap((r) => [r.id, r.name, ...(r.pg_name ? [r.pg_name] : [])]);
  const keys = [a, aRead, aWrite, aScoped, b];
  for (const k of keys) {
    for (const url of [
      '/v1/databases',
      '/v1/databases?status=ready',
      '/v1/databases?q=rsv',
      '/v1/databases?q=bulwark',
      '/v1/jobs',
      '/v1/audit/events',
    ]) {
      const res = await api(k, 'GET', url);
      for (const x of secrets) assert.ok(!res.body.includes(x), `${url} shows a reserve (${x})`);
    }
    for (const r of ready)
      for (const ref of [r.name, r.pg_name, r.id].filter((x): x is string => !!x)) {
        const calls: ['GET' | 'POST' | 'PUT' | 'DELETE', string, Record<string, unknown>?][] = [
          ['GET', `/v1/databases/${ref}`],
          ['GET', `/v1/databases/${ref}/connection`],
          ['GET', `/v1/databases/${ref}/allowlist`],
          ['GET', `/v1/databases/${ref}/limits`],
          ['GET', `/v1/databases/${ref}/samples`],
          ['GET', `/v1/databases/${ref}/backups`],
          ['GET', `/v1/databases/${ref}/backup-settings`],
          ['GET', `/v1/databases/${ref}/requests`],
          ['GET', `/v1/databases/${ref}/restores`],
          ['GET', `/v1/databases/${ref}/move`],
          ['GET', `/v1/databases/${ref}/explorer/schema`],
          ['GET', `/v1/jobs?database=${ref}`],
          ['GET', `/v1/audit/events?target=${ref}`],
          ['POST', `/v1/databases/${ref}/credentials/reveal`, {}],
          ['POST', `/v1/databases/${ref}/credentials/rotate`, {}],
          ['POST', `/v1/databases/${ref}/allowlist`, { cidr: '10.9.9.9/32' }],
          ['PUT', `/v1/databases/${ref}/limits`, { statement_timeout_ms: 1234 }],
          ['POST', `/v1/databases/${ref}/backups`, {}],
          ['POST', `/v1/databases/${ref}/explorer/query`, { sql: 'SELECT 1' }],
          ['POST', `/v1/databases/${ref}/requests`, { sql: 'SELECT 1', reason: 'x' }],
          ['POST', `/v1/databases/${ref}/move`, { node: 'zrsv' }],
          ['POST', `/v1/databases/${ref}/attachment/accept`, {}],
          ['DELETE', `/v1/databases/${ref}`, { confirm: ref }],
        ];
        for (const [method, url, payload] of calls) {
          const res = await api(k, method, url, payload);
          const listing = url.startsWith('/v1/jobs') || url.startsWith('/v1/audit');
          if (!listing) assert.ok(res.statusCode >= 400, `${method} ${url}: ${res.statusCode} ${res.body}`);
          for (const x of secrets)
            if (x !== ref) assert.ok(!res.body.includes(x), `${method} ${url} shows a reserve (${x})`);
          if (listing) assert.ok(!res.body.includes(ready[0]!.id) && !res.body.includes(ready[1]!.id), url);
        }
      }
  }
  // The reserves' own jobs (no account) by id, their secrets, and the account-wide exports.
  const rsvJobs = await s.db.pool.query<{ id: string }>(
    "SELECT id::text AS id FROM jobs WHERE account_id IS NULL AND payload->>'database_id' = ANY($1)",
    [ready.map((r) => r.id)],
  );
  assert.ok(rsvJobs.rows.length >= 1);
  for (const k of keys) {
    for (const j of rsvJobs.rows) {
      const got = await api(k, 'GET', `/v1/jobs/${j.id}`);
      assert.ok(got.statusCode >= 400, `GET /v1/jobs/${j.id}: ${got.statusCode} ${got.body}`);
      const lease = await api(k, 'GET', `/v1/agent/jobs/${j.id}/lease?attempt=1`);
      assert.ok(lease.statusCode >= 400, `lease of ${j.id}: ${lease.statusCode} ${lease.body}`);
      const leaseP = await api(k, 'POST', `/v1/agent/jobs/${j.id}/lease`, { attempt: 1 });
      assert.ok(leaseP.statusCode >= 400, `lease of ${j.id}: ${leaseP.statusCode} ${leaseP.body}`);
    }
    for (const url of ['/v1/audit/export', '/v1/requests']) {
      const res = await api(k, 'GET', url);
      for (const x of secrets) assert.ok(!res.body.includes(x), `${url} shows a reserve (${x})`);
    }
  }
  assert.deepEqual(await snapshot(ready.map((r) => r.id)), before, 'a tenant call changed a reserve');
});

test('read, database-scoped and refused creates take no reserve', async () => {
  const ready = await reservesReady(2);
  const before = await snapshot(ready.map((r) => r.id));
  const name = `zr_${randomBytes(4).toString('hex')}`;
  for (const [k, payload] of [
    [aRead, { name }],
    [aRead, { name, wait_ms: 1000, reveal: true }],
    [aScoped, { name }],
    [aScoped, { name: 'only_this', wait_ms: 1000 }],
    // Not a name (an id), bad nodes.
    [a, { name: ready[0]!.id }],
    [a, { name, node: 'no-such-node' }],
    [a, { name, node: '00000000-0000-4000-8000-000000000000' }],
  ] as [TestKey, Record<string, unknown>][]) {
    const res = await api(k, 'POST', '/v1/databases', payload);
    assert.ok(res.statusCode >= 400, `${JSON.stringify(payload)}: ${res.statusCode} ${res.body}`);
  }
  assert.deepEqual(await snapshot(ready.map((r) => r.id)), before, 'a refused create changed a reserve');
});

test("a label equal to a reserve's label or name on the node is just the account's own name (labels are per account)", async () => {
  const ready = await reservesReady(2);
  for (const [k, name] of [
    [a, ready[0]!.name],
    [b, physical(ready[1]!)],
  ] as [TestKey, string][]) {
    if (name.startsWith('bulwark_')) {
      // A warm-made reserve's name on the node is in the reserved prefix: refused as any such name.
      assert.equal((await api(k, 'POST', '/v1/databases', { name })).statusCode, 400);
      continue;
    }
    const res = await api(k, 'POST', '/v1/databases', { name, wait_ms: 30_000, reveal: true });
    assert.equal(res.statusCode, 201, res.body);
    const d = res.json();
    assert.equal(d.status, 'ready', res.body);
    // Its name on the node is never the reserve's own unless it is that reserve, taken.
    const rows = await s.db.pool.query<{ id: string; account_id: string | null; n: string }>(
      'SELECT id, account_id, coalesce(pg_name, name) AS n FROM databases WHERE deleted_at IS NULL AND coalesce(pg_name, name) = $1',
      [d.credentials.connection.database],
    );
    assert.equal(rows.rowCount, 1, 'one database per name on the node');
    assert.equal(rows.rows[0]!.id, d.id);
    const c = new pg.Client({
      host: '127.0.0.1',
      port: pooler.port,
      user: d.credentials.connection.user,
      database: d.credentials.connection.database,
      password: d.credentials.password,
    });
    assert.equal(await tryLogin(c), null);
  }
  // No reserve has an owner but the one that took it.
  const owned = await s.db.pool.query(
    'SELECT id FROM databases WHERE id = ANY($1) AND account_id IS NOT NULL',
    [ready.map((r) => r.id)],
  );
  for (const row of owned.rows as { id: string }[]) {
    const mine = await s.db.pool.query('SELECT 1 FROM databases WHERE id = $1 AND account_id = ANY($2)', [
      row.id,
      [a.accountId, b.accountId],
    ]);
    assert.equal(mine.rowCount, 1);
  }
});

test('a write key without reveal rights gets no password when it takes a reserve, and the reserve is not lost', async () => {
  await reservesReady(2);
  const name = `zw_${randomBytes(4).toString('hex')}`;
  const res = await api(aWrite, 'POST', '/v1/databases', { name, wait_ms: 5_000, reveal: true });
  if (res.statusCode === 201) {
    // Allowed to reveal at this level: then the password must work (nothing half-made).
    const body = res.json();
    assert.equal(body.status, 'ready');
  } else {
    assert.ok(res.statusCode >= 400, res.body);
    assert.ok(!res.body.includes('password'), res.body);
    // Refused up front: no database for the account, and both reserves still unowned.
    assert.equal((await api(a, 'GET', `/v1/databases/${name}`)).statusCode, 404);
    assert.equal((await reserves()).length, 2);
  }
});

test('through PgBouncer a tenant cannot log in to a reserve (own password, guesses, other roles)', async () => {
  await reservesReady(2);
  const mine = await createWithPassword(a, `zp_${randomBytes(4).toString('hex')}`);
  const ready = await reservesReady(2);
  const own = mine.credentials;
  for (const r of ready) {
    const db = physical(r);
    const attempts: [string, string][] = [
      [own.connection.user, own.password],
      [`${db}_owner`, own.password],
      [`${db}_owner`, ''],
      [`${db}_owner`, 'postgres'],
      [`${db}_owner`, db],
      [`${db}_reader`, own.password],
      [`${db}_reader`, ''],
      [`${db}_migrator`, own.password],
      [`${db}_steward`, own.password],
      [`${db}_explorer`, own.password],
    ];
    for (const [user, password] of attempts) {
      const err = await login(user, db, password);
      assert.notEqual(err, null, `logged in to reserve ${db} as ${user}`);
    }
  }
  // The tenant's own login still works (the attempts above were refused, not broken).
  assert.equal(await login(own.connection.user, own.connection.database, own.password), null);
});

test('from inside its own database a tenant owner cannot reach, grant itself or plant settings on a reserve', async () => {
  await reservesReady(2);
  const mine = await createWithPassword(a, `zc_${randomBytes(4).toString('hex')}`);
  const ready = await reservesReady(2);
  const own = mine.credentials;
  const c = poolerClient(own.connection.user, own.connection.database, own.password);
  await c.connect();
  try {
    // What the catalogs show is by design (pg_database and pg_roles stay readable); what matters is
    // that nothing there gives a way in.
    for (const r of ready) {
      const db = physical(r);
      const priv = await c.query<{ connect: boolean | null; member: boolean | null }>(
        `SELECT (SELECT has_database_privilege(current_user, datname, 'CONNECT') FROM pg_database WHERE datname = $1) AS connect,
                (SELECT pg_has_role(current_user, oid, 'MEMBER') FROM pg_roles WHERE rolname = $2) AS member`,
        [db, `${db}_owner`],
      );
      assert.notEqual(priv.rows[0]?.connect, true, `CONNECT on reserve ${db}`);
      assert.notEqual(priv.rows[0]?.member, true, `member of ${db}_owner`);
      for (const sql of [
        `ALTER ROLE "${db}_owner" SET search_path = 'evil'`,
        `ALTER ROLE "${db}_owner" PASSWORD 'planted-password-123'`,
        `ALTER ROLE ALL IN DATABASE "${db}" SET search_path = 'evil'`,
        `ALTER DATABASE "${db}" SET search_path = 'evil'`,
        `COMMENT ON DATABASE "${db}" IS 'planted'`,
        `GRANT CONNECT ON DATABASE "${db}" TO "${own.connection.user}"`,
        `GRANT "${db}_owner" TO "${own.connection.user}"`,
        `REVOKE CONNECT ON DATABASE "${db}" FROM "${db}_owner"`,
        `ALTER DATABASE "${db}" OWNER TO "${own.connection.user}"`,
        `CREATE EVENT TRIGGER zz_evil ON ddl_command_start EXECUTE FUNCTION pg_catalog.now()`,
      ]) {
        const err = await c.query(sql).then(
          () => null,
          (e: Error) => e.message,
        );
        assert.notEqual(err, null, `allowed: ${sql}`);
      }
    }
    // Seen through the catalogs (by design, as every database of the node): the comment is the
    // database-id marker only (no account, nothing secret), and no role's password is readable.
    const seen = await c.query<{ datname: string; comment: string | null }>(
      "SELECT datname, shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname = ANY($1)",
      [ready.map(physical)],
    );
    for (const row of seen.rows) {
      const r = ready.find((x) => physical(x) === row.datname)!;
      assert.ok(row.comment === null || row.comment === `bulwark:database:${r.id}`, JSON.stringify(row));
    }
    const authid = await c.query('SELECT rolpassword FROM pg_authid LIMIT 1').then(
      () => null,
      (e: Error) => e.message,
    );
    assert.notEqual(authid, null, 'pg_authid readable by a tenant');
    const roleComments = await c.query<{ rolname: string; comment: string | null }>(
      "SELECT rolname, shobj_description(oid, 'pg_authid') AS comment FROM pg_roles WHERE rolname LIKE ANY($1)",
      [ready.map((r) => `${physical(r)}\\_%`)],
    );
    for (const row of roleComments.rows)
      assert.ok(row.comment === null || row.comment.startsWith('bulwark:database:'), JSON.stringify(row));
    // A self-targeted per-database setting on a reserve's database only ever touches the tenant's
    // own role (which can never log in there); check it never lands on a reserve's roles.
    await c
      .query(`ALTER ROLE CURRENT_USER IN DATABASE "${physical(ready[0]!)}" SET work_mem = '64kB'`)
      .catch(() => {});
  } finally {
    await c.end().catch(() => {});
  }
  const planted = await admin.query(
    `SELECT r.rolname, d.datname FROM pg_db_role_setting s
       LEFT JOIN pg_roles r ON r.oid = s.setrole LEFT JOIN pg_database d ON d.oid = s.setdatabase
      WHERE (d.datname = ANY($1) AND s.setrole <> 0 AND r.rolname NOT LIKE ANY($2))
         OR (d.datname = ANY($1) AND s.setrole = 0)`,
    [ready.map(physical), ready.map((r) => `${physical(r)}\\_%`)],
  );
  // Only the tenant's own role may hold a setting there (harmless); no reserve role, no database-wide one.
  for (const row of planted.rows)
    assert.equal(row.rolname, own.connection.user, `a setting planted on a reserve: ${JSON.stringify(row)}`);
});

test('a taken reserve brings nothing of its earlier life into the account, and the account sees nothing of others', async () => {
  const ready = await reservesReady(2);
  // Its earlier life: samples the agent reported while it was a reserve (as POST /v1/agent/samples stores them).
  for (const r of ready)
    await s.db.pool.query(
      "INSERT INTO database_samples (database_id, at, size_bytes, connections) VALUES ($1, now() - interval '5 minutes', 123456789, 7)",
      [r.id],
    );
  const name = `zh_${randomBytes(4).toString('hex')}`;
  const mine = await createWithPassword(a, name);
  const taken = ready.find((r) => r.id === mine.id);
  assert.ok(taken, 'taken from a reserve');
  // The reserve's audit events and create job exist, with no account.
  const rsvEvents = await s.db.pool.query(
    "SELECT action, account_id FROM audit_events WHERE target_id = $1 AND action LIKE 'database.reserve%'",
    [mine.id],
  );
  assert.ok(rsvEvents.rows.length >= 1, 'the reserve_created event exists');
  for (const e of rsvEvents.rows) assert.equal(e.account_id, null);
  const events = (await api(a, 'GET', `/v1/audit/events?target=${mine.id}`)).json();
  const actions = events.items.map((e: { action: string }) => e.action) as string[];
  assert.ok(!actions.some((x) => x.startsWith('database.reserve')), JSON.stringify(actions));
  const all = await api(a, 'GET', '/v1/audit/events?limit=100');
  assert.equal(all.statusCode, 200, all.body);
  assert.ok(!all.body.includes('database.reserve_'), 'a reserve event in the account audit');
  for (const r of await reserves()) assert.ok(!all.body.includes(r.id));
  // Jobs: the reserve's create job is no job of the account's.
  const jobs = await api(a, 'GET', '/v1/jobs?limit=100');
  assert.equal(jobs.statusCode, 200, jobs.body);
  const jobIds = new Set((jobs.json().items as { id: number | string }[]).map((j) => String(j.id)));
  const rsvJobs = await s.db.pool.query<{ id: string }>(
    "SELECT id::text AS id FROM jobs WHERE account_id IS NULL AND payload->>'database_id' = ANY($1)",
    [ready.map((r) => r.id)],
  );
  assert.ok(rsvJobs.rows.length >= 1);
  for (const j of rsvJobs.rows)
    assert.ok(!jobIds.has(j.id), `the reserve's job ${j.id} in the account's jobs`);
  const dbJobs = await api(a, 'GET', `/v1/jobs?database=${name}`);
  if (dbJobs.statusCode === 200)
    for (const j of dbJobs.json().items as { id: number | string }[])
      assert.ok(!rsvJobs.rows.some((r) => r.id === String(j.id)), `reserve job ${j.id} under ${name}`);
  // Samples: none from before the take.
  const samples = await api(a, 'GET', `/v1/databases/${name}/samples?window=24h`);
  assert.equal(samples.statusCode, 200, samples.body);
  const points = samples.json().points as { at: string; size_bytes: number }[];
  assert.ok(
    !points.some((p) => p.size_bytes === 123456789),
    `a sample of the reserve shown: ${samples.body}`,
  );
  const listed = (await api(a, 'GET', '/v1/databases?limit=100')).body;
  assert.ok(!listed.includes('123456789'), 'a reserve sample in the list');
  // The other account: nothing.
  for (const ref of [name, mine.id, mine.credentials.connection.database]) {
    const got = await api(b, 'GET', `/v1/databases/${ref}`);
    assert.ok([400, 404].includes(got.statusCode), got.body);
    assert.ok(!got.body.includes(mine.id));
    assert.ok((await api(b, 'POST', `/v1/databases/${ref}/credentials/reveal`, {})).statusCode >= 400);
  }
  const bAudit = (await api(b, 'GET', '/v1/audit/events?limit=100')).body;
  assert.ok(!bAudit.includes(mine.id));
  const stillNull = await s.db.pool.query('SELECT 1 FROM databases WHERE id = $1 AND account_id IS NULL', [
    mine.id,
  ]);
  assert.equal(stillNull.rowCount, 0);
});

test('many concurrent creates of one name (two accounts) make one database per account and leave the other reserves whole', async () => {
  const ready = await reservesReady(2);
  const name = `zd_${randomBytes(4).toString('hex')}`;
  const callers = [a, a, a, b, b, b];
  const answers = await Promise.all(
    callers.map((k) => api(k, 'POST', '/v1/databases', { name, wait_ms: 20_000, reveal: true })),
  );
  // Labels are unique per account (migration 0038): one winner in each account, whatever node.
  const winners = answers.flatMap((r, i) => (r.statusCode === 201 ? [{ r, k: callers[i]! }] : []));
  const dump = answers.map((r) => `${r.statusCode} ${r.body}`).join('\n');
  assert.equal(winners.length, 2, dump);
  assert.deepEqual(new Set(winners.map((w) => w.k.accountId)), new Set([a.accountId, b.accountId]), dump);
  for (const r of answers) if (r.statusCode !== 201) assert.equal(r.statusCode, 409, r.body);
  const rows = await s.db.pool.query<{ id: string; account_id: string; n: string }>(
    "SELECT id, account_id, coalesce(pg_name, name) AS n FROM databases WHERE name = $1 AND deleted_at IS NULL AND status <> 'deleted'",
    [name],
  );
  assert.equal(rows.rowCount, 2);
  assert.notEqual(rows.rows[0]!.n, rows.rows[1]!.n, 'two databases, two names on the node');
  // Reserves not taken are untouched (no account, their own label).
  const taken = new Set(winners.map((w) => w.r.json().id as string));
  for (const row of await snapshot(ready.filter((r) => !taken.has(r.id)).map((r) => r.id))) {
    assert.equal(row.account_id, null, 'a loser kept a reserve');
    assert.match(row.name, /^rsv_/);
    assert.equal(row.deleted_at, null);
  }
  // No reserve of this test with an account and its reserve label still (a half-made handover).
  const half = await s.db.pool.query(
    "SELECT id FROM databases WHERE id = ANY($1) AND account_id IS NOT NULL AND name LIKE 'rsv\\_%' AND deleted_at IS NULL",
    [ready.map((r) => r.id)],
  );
  assert.equal(half.rowCount, 0);
  for (const { r } of winners) {
    const w = r.json();
    assert.equal(w.status, 'ready');
    assert.equal(
      await login(w.credentials.connection.user, w.credentials.connection.database, w.credentials.password),
      null,
    );
  }
});

test('a burst of distinct concurrent creates never gives one reserve to two creates', async () => {
  await reservesReady(2);
  const names = Array.from({ length: 6 }, (_, i) => `zb${i}_${randomBytes(3).toString('hex')}`);
  const answers = await Promise.all(
    names.map((name, i) =>
      api(i % 2 ? b : a, 'POST', '/v1/databases', { name, wait_ms: 60_000, reveal: true }),
    ),
  );
  for (const r of answers) assert.equal(r.statusCode, 201, r.body);
  const bodies = answers.map((r) => r.json());
  assert.equal(new Set(bodies.map((d) => d.id)).size, names.length);
  assert.equal(new Set(bodies.map((d) => d.credentials?.connection.database)).size, names.length);
  // Each login only reaches its own database: one account's password never opens another's.
  for (const d of bodies) {
    const other = bodies.find((x) => x.id !== d.id)!;
    await refused(
      other.credentials.connection.user,
      d.credentials.connection.database,
      other.credentials.password,
    );
  }
});

test('a deleted database leaves nothing for the next one of the same name (taken from a reserve)', async () => {
  await reservesReady(2);
  const name = `zx_${randomBytes(4).toString('hex')}`;
  const first = await createWithPassword(a, name);
  const c = poolerClient(
    first.credentials.connection.user,
    first.credentials.connection.database,
    first.credentials.password,
  );
  await c.connect();
  await c.query('CREATE TABLE planted (secret text)');
  await c.query("INSERT INTO planted VALUES ('from-the-first-life')");
  await c.query(`ALTER ROLE CURRENT_USER SET search_path = 'evil'`).catch(() => {});
  await c.end();
  assert.equal((await api(a, 'DELETE', `/v1/databases/${name}`, { confirm: name })).statusCode, 202);
  await waitUntil(
    'the first one deleted',
    async () => ((await api(a, 'GET', `/v1/databases/${name}`)).statusCode === 404 ? true : undefined),
    60_000,
    200,
  );
  // Gone on the node too, by its name there (a cold reserve's label, or a spare's name), with its roles.
  const gonePhysical = first.credentials.connection.database;
  await waitUntil(
    'the first one dropped on the node',
    async () => {
      const left = await admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [gonePhysical]);
      return left.rowCount === 0 ? true : undefined;
    },
    60_000,
    200,
  );
  const roles = await admin.query('SELECT rolname FROM pg_roles WHERE rolname LIKE $1', [
    `${gonePhysical.replace(/_/g, '\\_')}\\_%`,
  ]);
  assert.deepEqual(roles.rows, [], 'roles of the deleted database left on the node');
  await reservesReady(2);
  const second = await createWithPassword(b, name);
  assert.notEqual(second.id, first.id);
  assert.notEqual(second.credentials.connection.database, first.credentials.connection.database);
  const d = poolerClient(
    second.credentials.connection.user,
    second.credentials.connection.database,
    second.credentials.password,
  );
  await d.connect();
  try {
    const t = await d.query("SELECT to_regclass('public.planted') AS t");
    assert.equal(t.rows[0].t, null);
    const sp = await d.query('SHOW search_path');
    assert.notEqual(sp.rows[0].search_path, 'evil');
  } finally {
    await d.end().catch(() => {});
  }
  // The first password opens nothing now.
  await refused(
    first.credentials.connection.user,
    second.credentials.connection.database,
    first.credentials.password,
  );
});

test('the keeper stays within its target: repeated passes make nothing more, and reserves count in the node budget', async () => {
  await reservesReady(2);
  for (let i = 0; i < 5; i++) {
    const { made } = await s.reserveKeeper.runOnce();
    assert.equal(made, 0, `pass ${i} made ${made}`);
  }
  const live = await s.db.pool.query(
    "SELECT count(*)::int AS n FROM databases WHERE account_id IS NULL AND deleted_at IS NULL AND status IN ('provisioning', 'ready')",
  );
  assert.equal(live.rows[0].n, 2);
  // Reserves hold their connections in the budget a tenant create is checked against.
  const { committedConnections } = await import('../src/server/modules/databases/databases.repo.ts');
  const node = (await reserves())[0]!.node_id;
  const withRes = await committedConnections(s.db.pool as never, node);
  const tenants = await s.db.pool.query<{ n: number }>(
    `SELECT coalesce(sum(greatest((limits->>'owner_connection_limit')::bigint + (limits->>'reader_connection_limit')::bigint,
                                  coalesce(connections_held, 0))), 0)::int AS n
       FROM databases WHERE node_id = $1 AND deleted_at IS NULL AND account_id IS NOT NULL`,
    [node],
  );
  assert.ok(withRes > tenants.rows[0]!.n, `reserves not in the committed budget (${withRes})`);
});

// Last in the file: it stops the agent (every reserve create then fails, as when the node's
// creates keep failing) and shrinks the node's reported connections.
test('reserve creates that keep failing do not pile up and do not eat the node budget tenant creates need', async () => {
  await reservesReady(2);
  await agent.stop();
  const { committedConnections } = await import('../src/server/modules/databases/databases.repo.ts');
  const { connectionBudget } = await import('../src/server/modules/nodes/nodes.capacity.ts');
  const node = (
    await s.db.pool.query<{ id: string; reserved_connections: number | null }>(
      "SELECT id, reserved_connections FROM nodes WHERE name = 'zrsv'",
    )
  ).rows[0]!;
  const perDb = DEFAULT_LIMITS.owner_connection_limit + DEFAULT_LIMITS.reader_connection_limit;
  // The node has room for four more databases (the two ready reserves already counted).
  const committed = await committedConnections(s.db.pool as never, node.id);
  const reserved = node.reserved_connections ?? 3;
  const max = committed + reserved + s.config.nodeConnectionReserve + perDb * 4 + 5;
  await s.db.pool.query('UPDATE nodes SET max_connections = $2, unhealthy_since = NULL WHERE id = $1', [
    node.id,
    max,
  ]);
  assert.equal(
    connectionBudget({ max_connections: max, reserved_connections: reserved }, s.config) - committed,
    perDb * 4 + 5,
  );
  const failAll = async () => {
    await s.db.pool.query(
      "UPDATE jobs SET status = 'dead', finished_at = now(), last_error = 'simulated' WHERE account_id IS NULL AND kind = 'database.create' AND status IN ('queued', 'running')",
    );
    // As onJobFinished records a failed create (within the minute: not given back yet).
    await s.db.pool.query(
      "UPDATE databases SET status = 'failed', updated_at = now() WHERE account_id IS NULL AND deleted_at IS NULL AND status IN ('provisioning', 'ready')",
    );
  };
  // One minute of a keeper whose creates all fail: six passes, ten seconds apart.
  await failAll();
  for (let i = 0; i < 6; i++) {
    // The node as its agent last reported it: healthy, its warm pool on (its creates fail).
    await s.db.pool.query(
      `UPDATE nodes SET unhealthy_since = NULL, max_connections = $2,
              capabilities = jsonb_set(coalesce(capabilities, '{}'::jsonb), '{warm_pool}',
                                       coalesce(capabilities->'warm_pool', '{}'::jsonb) || '{"size": 2}'::jsonb)
        WHERE id = $1`,
      [node.id, max],
    );
    await s.reserveKeeper.runOnce();
    await failAll();
  }
  const rows = await s.db.pool.query<{ status: string; n: number }>(
    'SELECT status, count(*)::int AS n FROM databases WHERE account_id IS NULL AND deleted_at IS NULL GROUP BY status',
  );
  const live = rows.rows.reduce((n, r) => n + r.n, 0);
  await s.db.pool.query('UPDATE nodes SET unhealthy_since = NULL WHERE id = $1', [node.id]);
  const res = await api(a, 'POST', '/v1/databases', { name: `zk_${randomBytes(4).toString('hex')}` });
  assert.ok(
    res.statusCode < 300,
    `a tenant create refused after a minute of failing reserve creates (${live} reserve rows left: ${JSON.stringify(rows.rows)}): ${res.statusCode} ${res.body}`,
  );
  assert.ok(
    live <= 2 * s.config.reservedDatabases,
    `${live} reserve rows on the node: ${JSON.stringify(rows.rows)}`,
  );
});

test('the keeper never takes the last room of a node a tenant create needs', async () => {
  // The agent is stopped (previous test); the failed reserves are given back (gone).
  const { committedConnections } = await import('../src/server/modules/databases/databases.repo.ts');
  await s.db.pool.query(
    "UPDATE databases SET status = 'deleted', deleted_at = now() WHERE account_id IS NULL AND deleted_at IS NULL",
  );
  const node = (
    await s.db.pool.query<{ id: string; reserved_connections: number | null }>(
      "SELECT id, reserved_connections FROM nodes WHERE name = 'zrsv'",
    )
  ).rows[0]!;
  const perDb = DEFAULT_LIMITS.owner_connection_limit + DEFAULT_LIMITS.reader_connection_limit;
  const committed = await committedConnections(s.db.pool as never, node.id);
  // Room for one database and a bit.
  const max = committed + (node.reserved_connections ?? 3) + s.config.nodeConnectionReserve + perDb + 5;
  await s.db.pool.query(
    `UPDATE nodes SET unhealthy_since = NULL, max_connections = $2,
            capabilities = jsonb_set(coalesce(capabilities, '{}'::jsonb), '{warm_pool}',
                                     coalesce(capabilities->'warm_pool', '{}'::jsonb) || '{"size": 2}'::jsonb)
      WHERE id = $1`,
    [node.id, max],
  );
  const { made } = await s.reserveKeeper.runOnce();
  assert.equal(made, 0, 'a reserve took the last room');
  await s.db.pool.query('UPDATE nodes SET unhealthy_since = NULL WHERE id = $1', [node.id]);
  const res = await api(b, 'POST', '/v1/databases', { name: `zl_${randomBytes(4).toString('hex')}` });
  assert.ok(res.statusCode < 300, `${res.statusCode} ${res.body}`);
});
