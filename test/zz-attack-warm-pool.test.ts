// Attacks on the warm pool's kept PgBouncer sessions, keep-warm and the early proving login (ADR 0035).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { proveLogin } from '../src/agent/jobs/database-common.ts';
import { databaseHandlers } from '../src/agent/jobs/database-handlers.ts';
import type { JobContext, JobHandler } from '../src/agent/jobs/job-context.ts';
import type { PoolerManager } from '../src/agent/pgbouncer/pooler-manager.ts';
import { createWarmPool, type WarmPool } from '../src/agent/pool/warm-pool.ts';
import { SPARE_PREFIX, spareOwnerPassword } from '../src/agent/postgres/spare-sql.ts';
import { stewardPassword } from '../src/agent/postgres/steward.ts';
import { DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import { roleNames } from '../src/shared/identifiers.ts';
import { createLogger } from '../src/shared/logger.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import { testEnv } from './helpers/env.ts';
import {
  clientFrom,
  type databaseJobKit,
  newPassword,
  type PrivatePooler,
  startNodeKit,
  tryLogin,
  uniqueName,
} from './pooler-harness.ts';

let p: PrivatePooler;
let pooler: PoolerManager;
let kit: ReturnType<typeof databaseJobKit>;
const pools: WarmPool[] = [];
const logLines: string[] = [];
const sink = new Writable({
  write(chunk, _enc, cb) {
    logLines.push(String(chunk));
    cb();
  },
});

before(async () => {
  ({ p, pooler, kit } = await startNodeKit());
});
const alive = async () =>
  await pooler.admin('SHOW VERSION').then(
    () => true,
    () => false,
  );
const poolerLog = async () => {
  const fs = await import('node:fs/promises');
  const path = await import('node:path');
  return fs.readFile(path.join(path.dirname(p.dir), 'pgbouncer.log'), 'utf8').then(
    (t) => t.slice(-4000),
    (e) => String(e),
  );
};
const only = process.env.ZZ_ONLY;
const t_ = (name: string, fn: () => Promise<void>) =>
  test(name, { skip: only !== undefined && !name.includes(only) }, async () => {
    try {
      await fn();
    } finally {
      if (!(await alive())) console.log(`PgBouncer died; its log:\n${await poolerLog()}`);
    }
    assert.ok(await alive(), 'PgBouncer died');
  });
after(async () => {
  for (const pool of pools) await pool.drain().catch(() => {});
  await kit.close();
  await p.stop();
});

async function startPool(size: number, more: { keepWarmMs?: number } = {}): Promise<WarmPool> {
  for (const old of pools.splice(0)) await old.drain();
  const pool = createWarmPool({
    ...more,
    admin: kit.admin,
    cluster: kit.deps.cluster,
    pooler,
    warmUp: (login) => proveLogin(kit.deps, login),
    size,
    log: createLogger('warm-pool', 'debug', sink),
    auditMs: 0,
  });
  pools.push(pool);
  // biome-ignore lint/correctness/useHookAtTopLevel: a warm pool method, not a React hook
  pool.useAllowlist([{ cidr: '127.0.0.1/32', expires_at: null }]);
  pool.start();
  await pool.settled();
  await pool.refill();
  return pool;
}

const handlers = (pool: WarmPool): Map<string, JobHandler> =>
  new Map(databaseHandlers({ ...kit.deps, warmPool: pool, platform: { databases: ['bulwark'], roles: [] } }));

function jobCtx(password: string): JobContext & { report(): void } {
  const after: (() => void)[] = [];
  return {
    ...kit.ctx(password),
    log: createLogger('job', 'debug', sink),
    attempt: 1,
    afterReport: (fn) => after.push(fn),
    report: () => {
      for (const fn of after.splice(0)) fn();
    },
  };
}

type Created = { steps_ms: Record<string, number>; physical_name: string; owner_password?: string };

async function create(pool: WarmPool, password = newPassword()) {
  const ctx = jobCtx(password);
  const payload = {
    database_id: randomUUID(),
    name: uniqueName('zz'),
    verifier: scramVerifier(password),
    allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
    limits: DEFAULT_LIMITS,
  };
  const r = (await handlers(pool).get('database.create')!(payload, ctx)) as Created;
  ctx.report();
  return { r, payload, password };
}

const pgbLogin = (database: string, user: string, password: string) =>
  tryLogin(clientFrom('127.0.0.1', { port: p.port, user, password, database }));
const directLogin = (database: string, user: string, password: string) =>
  tryLogin(
    new pg.Client({
      host: '127.0.0.1',
      port: testEnv().pgPort,
      user,
      password,
      database,
      connectionTimeoutMillis: 5_000,
    }),
  );
const loginOf = (c: { r: Created; password: string }) => ({
  database: c.r.physical_name,
  user: roleNames(c.r.physical_name).owner,
  password: c.r.owner_password ?? c.password,
});
/** The tenant's first login, timed: it must succeed at once (no PgBouncer lockout). */
async function firstLogin(c: { r: Created; password: string }) {
  const l = loginOf(c);
  const t = Date.now();
  const err = await pgbLogin(l.database, l.user, l.password);
  return { err, ms: Date.now() - t };
}

async function readySpares(pool: WarmPool): Promise<string[]> {
  const r = await kit.admin.query<{ n: string }>(
    `SELECT datname::text AS n FROM pg_database
      WHERE starts_with(datname::text, $1) AND shobj_description(oid, 'pg_database') LIKE 'bulwark:spare:ready:%' ORDER BY 1`,
    [`${SPARE_PREFIX}${pool.tag}_`],
  );
  return r.rows.map((x) => x.n);
}

/** Spares (any marker) whose owner can log in while marked ready: must never be seen. */
async function readyWithLogin(pool: WarmPool): Promise<string[]> {
  const r = await kit.admin.query<{ n: string }>(
    `SELECT d.datname::text AS n FROM pg_database d JOIN pg_roles r ON r.rolname = d.datname::text || '_owner'
      WHERE starts_with(d.datname::text, $1) AND r.rolcanlogin
        AND shobj_description(d.oid, 'pg_database') LIKE 'bulwark:spare:ready:%'`,
    // This pool's spares only: other test files share the cluster (one plants LOGIN on purpose).
    [`${SPARE_PREFIX}${pool.tag}_`],
  );
  return r.rows.map((x) => x.n);
}

t_('zz-attack: a tenant cannot reach, kill or lock out a spare or its kept session', async () => {
  const pool = await startPool(2, { keepWarmMs: 0 });
  const tenant = await create(pool);
  assert.equal(tenant.r.steps_ms.warm, 1);
  const me = loginOf(tenant);
  const [spare] = await readySpares(pool);
  assert.ok(spare);
  const spareOwner = roleNames(spare).owner;
  assert.ok(await pooler.serverHeld(spare, spareOwner), 'kept session there before the attack');

  const c = clientFrom('127.0.0.1', { port: p.port, ...me });
  await c.connect();
  try {
    // Observing the kept session.
    const seen = await c
      .query<{ pid: number; usename: string | null; query: string | null }>(
        'SELECT pid, usename, query FROM pg_stat_activity WHERE datname = $1',
        [spare],
      )
      .catch(() => ({ rows: [] as { query: string | null }[] })); // not even readable: fine
    for (const row of seen.rows)
      assert.ok(!row.query || row.query === '<insufficient privilege>', `query text visible: ${row.query}`);
    // Killing it (PgBouncer would then open a new session for an owner without LOGIN).
    const pids = (
      await kit.admin.query<{ pid: number }>(
        'SELECT pid FROM pg_stat_activity WHERE datname = $1 AND usename = $2',
        [spare, spareOwner],
      )
    ).rows.map((x) => x.pid);
    assert.ok(pids.length > 0);
    for (const pid of pids) {
      const killed = await c.query<{ k: boolean }>('SELECT pg_terminate_backend($1) AS k', [pid]).then(
        (r) => r.rows[0]!.k,
        () => false,
      );
      assert.equal(killed, false, 'tenant terminated the kept session');
      const cancelled = await c.query<{ k: boolean }>('SELECT pg_cancel_backend($1) AS k', [pid]).then(
        (r) => r.rows[0]!.k,
        () => false,
      );
      assert.equal(cancelled, false);
    }
    // Changing the spare or its roles.
    for (const sql of [
      `ALTER ROLE "${spareOwner}" LOGIN`,
      `ALTER ROLE "${spareOwner}" PASSWORD 'x'`,
      `ALTER ROLE "${spareOwner}" SET idle_session_timeout = '1ms'`,
      `ALTER DATABASE "${spare}" SET idle_session_timeout = '1ms'`,
      `COMMENT ON DATABASE "${spare}" IS 'bulwark:spare'`,
      `GRANT "${me.user}" TO "${spareOwner}"`,
      `GRANT "${spareOwner}" TO "${me.user}"`,
      'ALTER SYSTEM SET idle_session_timeout = 1',
    ])
      await assert.rejects(c.query(sql), Error, sql);
    // The tenant's own role/database settings (allowed) must not spill onto spares.
    await c.query(`ALTER ROLE "${me.user}" SET idle_session_timeout = '1ms'`).catch(() => {});
  } finally {
    await c.end();
  }
  // Logins into the spare with what a tenant has, through PgBouncer and straight to PostgreSQL.
  for (const [user, pw] of [
    [me.user, me.password],
    [spareOwner, me.password],
    [spareOwner, 'guess'],
    [roleNames(spare).steward, me.password],
    [roleNames(spare).reader, me.password],
  ] as const) {
    assert.notEqual(await pgbLogin(spare, user, pw), null, `pgbouncer ${user}`);
    assert.notEqual(await directLogin(spare, user, pw), null, `direct ${user}`);
  }
  // The tenant's own user into the spare's PgBouncer name repeatedly (its own pool's lockout).
  for (let i = 0; i < 3; i++) await pgbLogin(spare, me.user, me.password);
  // The spare's kept session survived, and its next tenant gets in at once.
  assert.ok(await pooler.serverHeld(spare, spareOwner), 'kept session survived the attack');
  const next = await create(pool);
  assert.equal(next.r.physical_name, spare);
  const first = await firstLogin(next);
  assert.equal(first.err, null, `next tenant locked out: ${first.err}`);
  assert.ok(first.ms < 3_000, `next tenant's first login took ${first.ms} ms`);
});

t_(
  'zz-attack: creates racing keep-warm (re-warms forced): no spare twice, no LOGIN on a ready spare, no lockout',
  async () => {
    const pool = await startPool(3, { keepWarmMs: 25 });
    let stop = false;
    const bad: string[] = [];
    // Watcher: a ready spare whose owner has LOGIN, at any moment.
    const watcher = (async () => {
      while (!stop) {
        const r = await readyWithLogin(pool).catch(() => []);
        bad.push(...r);
        await new Promise((res) => setTimeout(res, 3));
      }
    })();
    // Chaos: PgBouncer keeps dropping the spares' sessions (forcing re-warms, and kept-session
    // checks that go stale between SHOW SERVERS and the login).
    const chaos = (async () => {
      while (!stop) {
        // (Backends ended by PostgreSQL, as an idle timeout or restart would: PgBouncer sees them go.
        // Not KILL on the console: see the disconnect test below, PgBouncer 1.18 itself crashes.)
        await kit.admin
          .query(
            `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE starts_with(datname::text, $1) AND usename::text LIKE '%\\_owner' AND state = 'idle'
              AND datname::text IN (SELECT datname::text FROM pg_database WHERE shobj_description(oid, 'pg_database') LIKE 'bulwark:spare%')`,
            [`${SPARE_PREFIX}${pool.tag}_`],
          )
          .catch(() => {});
        await new Promise((res) => setTimeout(res, 40));
      }
    })();
    const made: { r: Created; password: string }[] = [];
    const failures: string[] = [];
    const deadline = Date.now() + 25_000;
    try {
      for (let wave = 0; wave < 4 && Date.now() < deadline; wave++) {
        const results = await Promise.allSettled([create(pool), create(pool), create(pool)]);
        for (const r of results) {
          if (r.status === 'fulfilled') made.push(r.value);
          else failures.push(String(r.reason?.message ?? r.reason));
        }
        await new Promise((res) => setTimeout(res, 150));
      }
    } finally {
      stop = true;
      await Promise.all([watcher, chaos]);
    }
    const names = made.map((m) => m.r.physical_name);
    assert.equal(new Set(names).size, names.length, `a spare handed out twice: ${names}`);
    assert.deepEqual([...new Set(bad)], [], 'a ready spare had an owner with LOGIN');
    await pool.stop();
    assert.deepEqual(await readyWithLogin(pool), [], 'a ready spare with LOGIN after the pool stopped');
    // Last: the kept-session TOCTOU (see the TOCTOU test) fails creates under this churn.
    assert.deepEqual(failures, [], 'creates failed (PgBouncer lockout)');
    const locked: string[] = [];
    for (const m of made) {
      const f = await firstLogin(m);
      if (f.err !== null || f.ms > 3_000)
        locked.push(`${m.r.physical_name} warm=${m.r.steps_ms.warm}: ${f.err} (${f.ms} ms)`);
    }
    assert.deepEqual(locked, [], 'tenants locked out of their new database');
  },
);

t_('zz-attack: no spare or steward password in logs or job results', async () => {
  const pool = await startPool(2, { keepWarmMs: 30 });
  const made: { r: Created; payload: { database_id: string } }[] = [];
  await kit.admin.query(
    `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE starts_with(datname::text, $1)`,
    [`${SPARE_PREFIX}${pool.tag}_`],
  );
  await new Promise((res) => setTimeout(res, 400)); // keep-warm re-warms
  for (let i = 0; i < 2; i++) made.push(await create(pool));
  await pool.settled();
  await new Promise((res) => setTimeout(res, 200));
  await pool.stop();
  const text = logLines.join('');
  const spares = new Set<string>([...(await readySpares(pool)), ...made.map((m) => m.r.physical_name)]);
  for (const m of text.matchAll(/bulwark_db_[0-9a-f]+_[0-9a-f]+/g))
    spares.add(m[0].replace(/_(owner|reader|migrator|explorer|steward)$/, ''));
  const secrets: string[] = [];
  for (const s of spares) secrets.push(spareOwnerPassword(kit.deps.cluster.key, s));
  for (const m of made)
    secrets.push(stewardPassword(kit.deps.cluster.key, m.payload.database_id, roleNames(m.r.physical_name)));
  for (const secret of secrets) assert.ok(!text.includes(secret), 'a derived password in the logs');
  for (const m of made) {
    const json = JSON.stringify({ ...m.r, owner_password: undefined });
    for (const secret of secrets) assert.ok(!json.includes(secret), 'a derived password in a job result');
  }
});

t_(
  "zz-attack: the spare's kept session lost right after SHOW SERVERS (TOCTOU): the create still succeeds, its tenant is not locked out",
  async () => {
    const pool = await startPool(1, { keepWarmMs: 0 });
    const [spare] = await readySpares(pool);
    assert.ok(spare && (await pooler.serverHeld(spare, roleNames(spare).owner)));
    // PgBouncer's answer is true, and the session goes right after it (idle timeout, lifetime,
    // a PostgreSQL restart, an operator's pg_terminate_backend): the early login meets NOLOGIN.
    const racyPooler: PoolerManager = {
      ...pooler,
      async serverHeld(database: string, user: string) {
        const held = await pooler.serverHeld(database, user);
        if (held) {
          await kit.admin.query(
            'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND usename = $2',
            [database, user],
          );
          for (let i = 0; i < 100 && (await pooler.serverHeld(database, user)); i++)
            await new Promise((res) => setTimeout(res, 10));
        }
        return held;
      },
    };
    const password = newPassword();
    const ctx = jobCtx(password);
    const payload = {
      database_id: randomUUID(),
      name: uniqueName('zz'),
      verifier: scramVerifier(password),
      allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
      limits: DEFAULT_LIMITS,
    };
    const h = new Map(
      databaseHandlers({
        ...kit.deps,
        pooler: racyPooler,
        warmPool: pool,
        platform: { databases: ['bulwark'], roles: [] },
      }),
    );
    let r: Created | null = null;
    let err: unknown = null;
    try {
      r = (await h.get('database.create')!(payload, ctx)) as Created;
    } catch (e) {
      err = e;
    } finally {
      ctx.report();
    }
    assert.equal(err, null, `the create failed: ${(err as Error)?.message}`);
    const first = await firstLogin({ r: r!, password });
    assert.equal(first.err, null, `tenant locked out: ${first.err}`);
  },
);

t_(
  "zz-attack: keep-warm's kept-session login losing the session after SHOW SERVERS: the spare is not handed out locked",
  async () => {
    for (const old of pools.splice(0)) await old.drain();
    let armed = true;
    const racyPooler: PoolerManager = {
      ...pooler,
      async serverHeld(database: string, user: string) {
        const held = await pooler.serverHeld(database, user);
        if (held && armed) {
          armed = false;
          await kit.admin.query(
            'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND usename = $2',
            [database, user],
          );
          for (let i = 0; i < 100 && (await pooler.serverHeld(database, user)); i++)
            await new Promise((res) => setTimeout(res, 10));
        }
        return held;
      },
    };
    const pool = createWarmPool({
      admin: kit.admin,
      cluster: kit.deps.cluster,
      pooler: racyPooler,
      warmUp: (login) => proveLogin(kit.deps, login),
      size: 1,
      log: createLogger('warm-pool', 'debug', sink),
      auditMs: 0,
      keepWarmMs: 200,
    });
    pools.push(pool);
    pool.useAllowlist([{ cidr: '127.0.0.1/32', expires_at: null }]);
    pool.start();
    await pool.settled();
    await pool.refill();
    // Wait for the keep-warm tick that meets the vanished session.
    for (let i = 0; i < 100 && armed; i++) await new Promise((res) => setTimeout(res, 20));
    assert.equal(armed, false, 'keep-warm ran');
    await new Promise((res) => setTimeout(res, 300));
    await pool.settled();
    const password = newPassword();
    const ctx = jobCtx(password);
    const payload = {
      database_id: randomUUID(),
      name: uniqueName('zz'),
      verifier: scramVerifier(password),
      allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
      limits: DEFAULT_LIMITS,
    };
    const h = new Map(
      databaseHandlers({ ...kit.deps, warmPool: pool, platform: { databases: ['bulwark'], roles: [] } }),
    );
    let r: Created | null = null;
    let err: unknown = null;
    try {
      r = (await h.get('database.create')!(payload, ctx)) as Created;
    } catch (e) {
      err = e;
    } finally {
      ctx.report();
    }
    assert.equal(err, null, `the create failed: ${(err as Error)?.message}`);
    const first = await firstLogin({ r: r!, password });
    assert.equal(first.err, null, `tenant locked out: ${first.err}`);
    await pool.stop();
  },
);
