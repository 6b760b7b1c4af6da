import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { proveLogin } from '../src/agent/jobs/database-common.ts';
import { databaseHandlers } from '../src/agent/jobs/database-handlers.ts';
import type { JobContext, JobHandler } from '../src/agent/jobs/job-context.ts';
import type { PoolerManager } from '../src/agent/pgbouncer/pooler-manager.ts';
import { createWarmPool, type WarmPool } from '../src/agent/pool/warm-pool.ts';
import {
  connectSpare,
  SPARE_MARKER,
  SPARE_PREFIX,
  spareOwnerPassword,
} from '../src/agent/postgres/spare-sql.ts';
import { FIXED_LIMITS } from '../src/agent/postgres/tenant-sql.ts';
import { DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import { quoteIdent, roleNames } from '../src/shared/identifiers.ts';
import { createLogger } from '../src/shared/logger.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import {
  clientFrom,
  type databaseJobKit,
  newPassword,
  type PrivatePooler,
  startNodeKit,
  tryLogin,
  uniqueName,
} from './pooler-harness.ts';

/**
 * The warm pool (ADR 0028, ADR 0034) on a real cluster and PgBouncer: it fills to N, a create takes a spare
 * and is ready (owner login through PgBouncer), the pool refills after the job is reported,
 * concurrent creates beyond N all succeed, a crash right before or right after the claim leaves
 * the spare in the pool or handed out (never lost, never twice), a tampered spare is reported
 * and never handed out, and spares are nowhere a tenant could reach them.
 */
const SIZE = 2;
let p: PrivatePooler;
let pooler: PoolerManager;
let kit: ReturnType<typeof databaseJobKit>;
const pools: WarmPool[] = [];
let crashAt: string | null = null;
class Killed extends Error {}

before(async () => {
  // Spares and tenant databases are made from the tenant template, as on a real node.
  ({ p, pooler, kit } = await startNodeKit());
});
after(async () => {
  for (const pool of pools) await pool.drain().catch(() => {});
  await kit.close();
  await p.stop();
});

/** A warm pool as the agent builds it (a new one on the same key = an agent restart). */
async function startPool(size = SIZE, more: { keepWarmMs?: number } = {}): Promise<WarmPool> {
  const pool = createWarmPool({
    ...more,
    admin: kit.admin,
    cluster: kit.deps.cluster,
    pooler,
    // As the agent wires it: the create's proving login, through this PgBouncer.
    warmUp: (login) => proveLogin(kit.deps, login),
    size,
    log: createLogger('warm-pool', (process.env.WP_LOG ?? 'silent') as 'silent'),
    auditMs: 0,
  });
  pools.push(pool);
  pool.start();
  await pool.settled();
  return pool;
}

/**
 * A pool whose spares are all its own (the earlier pools, same key, drained first): it made and
 * warmed up each, as a running agent has (a restarted one knows no warm-up of the spares it finds).
 */
async function freshPool(more: { keepWarmMs?: number } = {}): Promise<WarmPool> {
  for (const old of pools.splice(0)) await old.drain();
  return startPool(SIZE, more);
}

function handlers(pool: WarmPool): Map<string, JobHandler> {
  return new Map(
    databaseHandlers({
      ...kit.deps,
      warmPool: pool,
      platform: { databases: ['bulwark'], roles: [] },
      onStep: (kind: string, step: string) => {
        if (crashAt === `${kind}/${step}`) {
          crashAt = null;
          throw new Killed(`killed at ${step}`);
        }
      },
    }),
  );
}

/** A job context whose after-report hooks run when `report()` is called (the runner's order). */
function jobCtx(password: string, attempt = 1): JobContext & { report(): void } {
  const after: (() => void)[] = [];
  return {
    ...kit.ctx(password),
    attempt,
    afterReport: (fn) => after.push(fn),
    report: () => {
      for (const fn of after.splice(0)) fn();
    },
  };
}

function createPayload(
  name: string,
  password: string,
  allowlist = [{ cidr: '127.0.0.1/32', expires_at: null }],
) {
  return {
    database_id: randomUUID(),
    name,
    verifier: scramVerifier(password),
    allowlist,
    limits: DEFAULT_LIMITS,
  };
}

type Created = {
  steps_ms: Record<string, number>;
  physical_name: string;
  owner_password?: string;
};
/** The login a create's result hands out: the spare's names and password (warm), else the payload's. */
const loginOf = (r: Created, password: string) => ({
  database: r.physical_name,
  password: r.owner_password ?? password,
});

/** This pool's spares as the catalog holds them (database names, sorted). */
async function sparesInCatalog(pool: WarmPool): Promise<string[]> {
  const r = await kit.admin.query<{ n: string }>(
    `SELECT datname::text AS n FROM pg_database
      WHERE starts_with(datname::text, $1) AND shobj_description(oid, 'pg_database') LIKE 'bulwark:spare:ready:%'
      ORDER BY 1`,
    [`${SPARE_PREFIX}${pool.tag}_`],
  );
  return r.rows.map((x) => x.n);
}

const ownerLogin = (name: string, password: string) =>
  tryLogin(clientFrom('127.0.0.1', { port: p.port, user: roleNames(name).owner, password, database: name }));
const createdLogin = (r: Created, password: string) => {
  const l = loginOf(r, password);
  return ownerLogin(l.database, l.password);
};

async function create(
  pool: WarmPool,
  name: string,
  password: string,
  allowlist?: { cidr: string; expires_at: null }[],
) {
  const ctx = jobCtx(password);
  const payload = createPayload(name, password, allowlist);
  const r = await handlers(pool).get('database.create')!(payload, ctx);
  ctx.report();
  return { result: r as Created, payload };
}

test('the pool fills to N; spares have no tenant login and nobody gets in through PgBouncer', async () => {
  const pool = await startPool();
  const spares = await sparesInCatalog(pool);
  assert.equal(spares.length, SIZE);
  assert.equal(pool.stats().ready, SIZE);
  // PgBouncer holds one idle server connection per spare, opened by the pool's warm-up login
  // (ADR 0034), and no client of it.
  const clients = await pooler.admin('SHOW CLIENTS');
  assert.ok(!clients.rows.some((row) => String(row.database).startsWith(SPARE_PREFIX)));
  const servers = await pooler.admin('SHOW SERVERS');
  for (const spare of spares)
    assert.ok(
      servers.rows.some((row) => row.database === spare && row.user === roleNames(spare).owner),
      `a warm session for ${spare}`,
    );
  // Its owner's entry is ready in the auth file (ADR 0034), with the verifier of the password
  // the agent derives; the owner has no LOGIN, so even that password is refused.
  const auth = await fs.readFile(pooler.files.auth, 'utf8');
  for (const spare of spares) {
    assert.ok(auth.includes(`"${roleNames(spare).owner}"`), 'the spare owner is in the auth file');
    assert.deepEqual(pooler.state().databases[spare]?.owner, roleNames(spare).owner);
    const refused = await ownerLogin(spare, spareOwnerPassword(kit.deps.cluster.key, spare));
    assert.match(String(refused), /not permitted to log in|login/i, String(refused));
  }

  for (const spare of spares) {
    const r = roleNames(spare);
    const roles = await kit.admin.query<{ rolname: string; rolcanlogin: boolean; marker: string | null }>(
      `SELECT rolname, rolcanlogin, shobj_description(oid, 'pg_authid') AS marker FROM pg_roles
        WHERE rolname = ANY($1) ORDER BY rolname`,
      [Object.values(r)],
    );
    assert.equal(roles.rows.length, 5, spare);
    for (const role of roles.rows) {
      assert.equal(role.marker, SPARE_MARKER);
      assert.equal(role.rolcanlogin, role.rolname === r.steward, `${role.rolname} login`);
    }
    // The owner's one session there is the warm-up's, idle in PgBouncer.
    const sessions = await kit.admin.query<{ state: string }>(
      'SELECT state FROM pg_stat_activity WHERE datname = $1 AND usename = $2',
      [spare, r.owner],
    );
    assert.deepEqual(sessions.rows, [{ state: 'idle' }]);
    // No login through PgBouncer with a guessed password either.
    assert.notEqual(await ownerLogin(spare, 'anything'), null);
    // The schema setup is done: public belongs to the spare's owner.
    const c = await kit.connectAdmin(spare);
    const s = await c.query<{ owner: string }>(
      "SELECT pg_get_userbyid(nspowner) AS owner FROM pg_namespace WHERE nspname = 'public'",
    );
    await c.end();
    assert.equal(s.rows[0]!.owner, r.owner);
  }
  // The drift job does not call spares unknown databases or unexpected roles.
  const drift = (await handlers(pool).get('node.drift')!({ known_databases: [] }, kit.ctx())) as {
    findings: { kind: string; object: string }[];
  };
  // Only this pool's tag: other agents on the cluster (other keys) may hold spares of their own.
  assert.ok(
    !drift.findings.some((f) => f.object.startsWith(`${SPARE_PREFIX}${pool.tag}_`)),
    JSON.stringify(drift.findings),
  );
});

test('a create takes a spare (warm), is ready through PgBouncer, and the pool refills to N', async () => {
  const pool = await startPool();
  // New spares' pooler entries (and those of the ready ones, at the next refill) follow the
  // latest create's allowlist: this one's.
  pool.useAllowlist([{ cidr: '127.0.0.1/32', expires_at: null }]);
  await pool.refill();
  const before = await sparesInCatalog(pool);
  const name = uniqueName('wp');
  const password = newPassword();
  const { result, payload } = await create(pool, name, password);
  assert.equal(result.steps_ms.warm, 1, JSON.stringify(result.steps_ms));
  // No reload: the spare's pooler entry had this allowlist already.
  assert.equal(result.steps_ms.pooler, undefined, JSON.stringify(result.steps_ms));
  // Handed out as it is: the spare's generated name is the database's physical name, and its
  // owner's password the one the result hands to the server (ADR 0034).
  const physical = result.physical_name;
  assert.ok(before.includes(physical), `${physical} was a spare`);
  assert.equal(result.owner_password, spareOwnerPassword(kit.deps.cluster.key, physical));
  assert.equal(await createdLogin(result, password), null);
  assert.notEqual(await ownerLogin(physical, password), null, "the server's own password is not the owner's");
  const label = await kit.admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
  assert.equal(label.rowCount, 0, 'no database under the API name');
  // The tenant's markers, nothing of the spare left on it.
  const marker = await kit.admin.query<{ m: string }>(
    "SELECT shobj_description(oid, 'pg_database') AS m FROM pg_database WHERE datname = $1",
    [physical],
  );
  assert.equal(marker.rows[0]!.m, `bulwark:database:${payload.database_id}`);
  const steward = await kit.admin.query('SELECT 1 FROM pg_roles WHERE rolname = $1 AND rolcanlogin', [
    roleNames(physical).steward,
  ]);
  assert.equal(steward.rowCount, 1);
  // The drift job sees a sound database (the steward's derived password for the real id works).
  const drift = (await handlers(pool).get('node.drift')!(
    {
      known_databases: [physical],
      databases: [{ id: payload.database_id, name: physical, limits: DEFAULT_LIMITS }],
    },
    kit.ctx(),
  )) as { findings: { kind: string; object: string }[] };
  const mine = drift.findings.filter((f) => f.object === physical || f.object.startsWith(`${physical}:`));
  assert.deepEqual(mine, []);
  // Deleting it (by its physical name, as the server names it) takes the pooler entry too.
  await handlers(pool).get('database.delete')!(
    { database_id: payload.database_id, name: physical },
    kit.ctx(),
  );
  assert.equal(pooler.state().databases[physical], undefined);
  assert.notEqual(await createdLogin(result, password), null);
  await pool.settled();
  const afterRefill = await sparesInCatalog(pool);
  assert.equal(afterRefill.length, SIZE);
  assert.equal(before.filter((s) => afterRefill.includes(s)).length, SIZE - 1, 'one spare taken, one made');
});

test('concurrent creates beyond the pool size all succeed, each spare handed out once', async () => {
  const pool = await startPool();
  const spares = await sparesInCatalog(pool);
  const jobs = Array.from({ length: SIZE + 2 }, () => ({ name: uniqueName('wc'), password: newPassword() }));
  const results = await Promise.all(jobs.map((j) => create(pool, j.name, j.password)));
  assert.equal(results.filter((r) => r.result.steps_ms.warm === 1).length, SIZE);
  const physical = results.map((r) => r.result.physical_name);
  assert.equal(new Set(physical).size, jobs.length, 'each create its own database');
  for (const [i, j] of jobs.entries())
    assert.equal(await createdLogin(results[i]!.result, j.password), null, j.name);
  await pool.settled();
  const now = await sparesInCatalog(pool);
  assert.equal(now.length, SIZE);
  assert.deepEqual(
    now.filter((s) => spares.includes(s)),
    [],
    'every spare there before was handed out exactly once',
  );
});

test('killed right before the claim: the spare stays; right after: it is handed out; a rerun ends ready', async () => {
  const pool = await startPool();
  // Before the claim: nothing changed, the rerun takes a spare.
  const spares = await sparesInCatalog(pool);
  const a = { name: uniqueName('wk'), password: newPassword() };
  const payloadA = createPayload(a.name, a.password);
  crashAt = 'database.create/claim';
  await assert.rejects(handlers(pool).get('database.create')!(payloadA, jobCtx(a.password)), Killed);
  assert.deepEqual(await sparesInCatalog(pool), spares, 'the spare is still in the pool');

  // After the commit: the spare is the tenant's; a restarted agent's pool does not list it.
  crashAt = 'database.create/claimed';
  await assert.rejects(handlers(pool).get('database.create')!(payloadA, jobCtx(a.password)), Killed);
  const left = await sparesInCatalog(pool);
  assert.equal(left.length, SIZE - 1);
  assert.ok(left.every((s) => spares.includes(s)));
  const restarted = await startPool();
  assert.equal(restarted.tag, pool.tag);
  await restarted.settled();
  const refilled = await sparesInCatalog(restarted);
  assert.equal(refilled.length, SIZE, 'refilled to N, the handed-out spare not counted');
  // The rerun (the job's next attempt) finds the spare its claim handed out, finishes it and
  // takes no other.
  const claimed = spares.find((s) => !left.includes(s))!;
  const r = (await handlers(restarted).get('database.create')!(payloadA, jobCtx(a.password, 2))) as Created;
  assert.equal(r.physical_name, claimed);
  assert.equal(r.owner_password, spareOwnerPassword(kit.deps.cluster.key, claimed));
  assert.equal(await createdLogin(r, a.password), null);
  assert.deepEqual(await sparesInCatalog(restarted), refilled, 'no spare lost or taken twice');
  await pool.stop();
});

type Drift = { findings: { kind: string; object: string; detail: string }[] };

test('a tampered spare is reported by drift, destroyed and replaced', async () => {
  const pool = await startPool();
  const [planted, setting] = await sparesInCatalog(pool);
  // A function planted inside one spare; a database-level setting on the other.
  const c = await kit.connectAdmin(planted!);
  await c.query('CREATE FUNCTION public.now() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$');
  await c.end();
  await kit.admin.query(`ALTER DATABASE "${setting}" SET work_mem = '64kB'`);
  const drift = (await handlers(pool).get('node.drift')!({ known_databases: [] }, kit.ctx())) as Drift;
  const tampered = drift.findings.filter((f) => f.kind === 'spare_tampered');
  assert.deepEqual(
    tampered.map((f) => f.object).sort(),
    [planted, setting].sort(),
    JSON.stringify(drift.findings),
  );
  assert.match(tampered.find((f) => f.object === setting)!.detail, /work_mem/);
  await pool.settled();
  const now = await sparesInCatalog(pool);
  assert.ok(!now.includes(planted!) && !now.includes(setting!), 'tampered spares destroyed');
  assert.equal(now.length, SIZE, 'and replaced');
  // Their pooler entries went with them; the new spares have theirs.
  assert.equal(pooler.state().databases[planted!], undefined);
  assert.equal(pooler.state().databases[setting!], undefined);
  for (const spare of now) assert.ok(pooler.state().databases[spare], spare);
});

test('an object planted in any catalog of a spare is found (a publication, a text search configuration)', async () => {
  const pool = await startPool();
  const [published, searched] = await sparesInCatalog(pool);
  // A publication FOR ALL TABLES would publish every table the tenant makes; neither object is
  // among the catalogs the fingerprint lists by name.
  let c = await kit.connectAdmin(published!);
  await c.query('CREATE PUBLICATION planted FOR ALL TABLES');
  await c.end();
  c = await kit.connectAdmin(searched!);
  await c.query('CREATE TEXT SEARCH CONFIGURATION public.planted (COPY = pg_catalog.simple)');
  await c.end();
  const findings = await pool.audit();
  assert.deepEqual(
    findings
      .filter((f) => f.kind === 'spare_tampered')
      .map((f) => f.object)
      .sort(),
    [published, searched].sort(),
    JSON.stringify(findings),
  );
  await pool.settled();
  const now = await sparesInCatalog(pool);
  assert.ok(!now.includes(published!) && !now.includes(searched!), 'tampered spares destroyed');
  assert.equal(now.length, SIZE, 'and replaced');
});

test('a spare its steward cannot reach for want of connections is kept; one closed to connections is tampered', async () => {
  const pool = await startPool();
  const [busy, closed] = await sparesInCatalog(pool);
  // The steward's own connection limit used up: the check cannot run, which proves nothing.
  const held = [];
  for (let i = 0; i < FIXED_LIMITS.stewardConnectionLimit; i++)
    held.push(await connectSpare(kit.deps.cluster, busy!));
  await kit.admin.query(`ALTER DATABASE "${closed}" ALLOW_CONNECTIONS false`);
  try {
    const findings = await pool.audit();
    assert.deepEqual(
      findings.map((f) => [f.kind, f.object]),
      [['spare_tampered', closed]],
      JSON.stringify(findings),
    );
    assert.match(findings[0]!.detail, /database connection settings changed/);
  } finally {
    for (const c of held) await c.end();
  }
  await pool.settled();
  const now = await sparesInCatalog(pool);
  assert.ok(now.includes(busy!), 'kept');
  assert.ok(!now.includes(closed!), 'destroyed');
  assert.equal(now.length, SIZE, 'and replaced');
  assert.deepEqual(await pool.audit(), []);
});

test('a spare whose role was given LOGIN is refused by the claim itself; the create goes cold', async () => {
  const pool = await startPool();
  const spares = await sparesInCatalog(pool);
  for (const spare of spares) await kit.admin.query(`ALTER ROLE "${roleNames(spare).owner}" LOGIN`);
  const name = uniqueName('wt');
  const password = newPassword();
  const { result } = await create(pool, name, password);
  assert.equal(result.steps_ms.warm, 0, 'not handed out');
  assert.equal(result.physical_name, name);
  assert.equal(result.owner_password, undefined);
  assert.equal(await ownerLogin(name, password), null);
  const drift = (await handlers(pool).get('node.drift')!({ known_databases: [name] }, kit.ctx())) as Drift;
  const tampered = drift.findings.filter((f) => f.kind === 'spare_tampered').map((f) => f.object);
  assert.deepEqual(tampered.sort(), [...spares].sort(), JSON.stringify(drift.findings));
  await pool.settled();
  const now = await sparesInCatalog(pool);
  assert.equal(now.length, SIZE);
  assert.ok(now.every((s) => !spares.includes(s)));
});

test('an agent restarted with a smaller pool size destroys the extra spares', async () => {
  const big = await startPool(SIZE);
  assert.equal((await sparesInCatalog(big)).length, SIZE);
  await big.stop();
  const small = await startPool(1);
  assert.equal(small.stats().ready, 1);
  assert.equal((await sparesInCatalog(small)).length, 1);
});

test("another agent key's spares (an agent enrolled again) are reported by drift, not hidden", async () => {
  const other = createWarmPool({
    admin: kit.admin,
    cluster: { ...kit.deps.cluster, key: randomBytes(32) },
    pooler,
    size: 1,
    log: createLogger('warm-pool', 'silent'),
    auditMs: 0,
  });
  pools.push(other);
  other.start();
  await other.settled();
  const [foreign] = await sparesInCatalog(other);
  assert.ok(foreign);
  const mine = await startPool();
  const drift = (await handlers(mine).get('node.drift')!({ known_databases: [] }, kit.ctx())) as Drift;
  // The cluster may be shared with other agents (other keys, other spares, other roles): the
  // findings about the foreign spare are either listed, or counted by the per-kind bound
  // (boundFindings: "and N more … not listed") when the cluster holds more than it lists.
  const expected: [string, string][] = [
    ['unexpected_role', roleNames(foreign).explorer],
    ['unexpected_role', roleNames(foreign).migrator],
    ['unexpected_role', roleNames(foreign).owner],
    ['unexpected_role', roleNames(foreign).reader],
    ['unexpected_role', roleNames(foreign).steward],
    ['unknown_database', foreign],
  ];
  const listed = (kind: string, object: string) =>
    drift.findings.some((f) => f.kind === kind && f.object === object);
  const counted = (kind: string) =>
    drift.findings.some((f) => f.kind === kind && /more .* not listed/.test(f.detail));
  for (const [kind, object] of expected)
    assert.ok(listed(kind, object) || counted(kind), `${kind} ${object}: ${JSON.stringify(drift.findings)}`);
  // Whatever is listed about it is exactly those findings.
  const about = drift.findings.filter((f) => f.object.startsWith(`${foreign}`));
  for (const f of about)
    assert.ok(
      expected.some(([kind, object]) => kind === f.kind && object === f.object),
      JSON.stringify(f),
    );
  const db = about.find((f) => f.kind === 'unknown_database');
  if (db) assert.match(db.detail, /another agent key/);
  else assert.ok(counted('unknown_database'));
  // This agent's own spares are never reported (databases handed out earlier in this file keep
  // their spare names and are unknown to this drift run: those are reported, as they should be).
  const mySpares = await sparesInCatalog(mine);
  assert.ok(!drift.findings.some((f) => mySpares.some((s) => f.object.startsWith(s))));
  await other.drain();
});

test("a create whose allowlist differs from the spare's entry reloads once; new spares take that allowlist", async () => {
  const pool = await startPool();
  const name = uniqueName('wa');
  const password = newPassword();
  const allowlist = [
    { cidr: '127.0.0.1/32', expires_at: null },
    { cidr: '198.51.100.0/24', expires_at: null },
  ];
  const { result } = await create(pool, name, password, allowlist);
  assert.equal(result.steps_ms.warm, 1);
  assert.ok((result.steps_ms.pooler ?? 0) > 0, 'the pooler was reloaded for the other allowlist');
  assert.deepEqual(
    pooler.state().databases[result.physical_name]!.allowlist.map((e) => e.cidr),
    ['127.0.0.1/32', '198.51.100.0/24'],
  );
  assert.equal(await createdLogin(result, password), null);
  // The spare made after it has that allowlist already: the next such create needs no reload.
  await pool.settled();
  const next = await create(pool, uniqueName('wa'), newPassword(), allowlist);
  assert.equal(next.result.steps_ms.warm, 1);
  assert.equal(next.result.steps_ms.pooler, undefined, JSON.stringify(next.result.steps_ms));
});

test('a spare whose owner password was changed is refused by the claim; the create goes cold', async () => {
  const pool = await startPool(1);
  const [spare] = await sparesInCatalog(pool);
  await kit.admin.query(`ALTER ROLE "${roleNames(spare!).owner}" PASSWORD 'known-to-someone-else'`);
  const name = uniqueName('wpw');
  const password = newPassword();
  const { result } = await create(pool, name, password);
  assert.equal(result.steps_ms.warm, 0, 'not handed out');
  assert.equal(result.physical_name, name);
  assert.equal(await ownerLogin(name, password), null);
  await pool.settled();
  assert.ok(!(await sparesInCatalog(pool)).includes(spare!), 'destroyed');
});

test("the tenant's first session is the one the warm-up opened; other limits get a new one", async () => {
  const pool = await freshPool();
  pool.useAllowlist([{ cidr: '127.0.0.1/32', expires_at: null }]);
  await pool.refill();
  const warmPid = async (spare: string) =>
    (
      await kit.admin.query<{ pid: number }>(
        'SELECT pid FROM pg_stat_activity WHERE datname = $1 AND usename = $2',
        [spare, roleNames(spare).owner],
      )
    ).rows.map((x) => x.pid);
  const before = new Map<string, number[]>();
  for (const spare of await sparesInCatalog(pool)) before.set(spare, await warmPid(spare));
  const tenantPid = async (r: Created, password: string) => {
    const l = loginOf(r, password);
    const c = clientFrom('127.0.0.1', {
      port: p.port,
      user: roleNames(l.database).owner,
      password: l.password,
      database: l.database,
    });
    await c.connect();
    try {
      const row = (
        await c.query('SELECT pg_backend_pid() AS pid, current_setting($1) AS st', ['statement_timeout'])
      ).rows[0];
      return { pid: Number(row.pid), statementTimeout: String(row.st) };
    } finally {
      await c.end();
    }
  };
  // Default limits: the session PgBouncer kept since the warm-up serves the proving login and the tenant.
  const first = await create(pool, uniqueName('ww'), newPassword());
  assert.equal(first.result.steps_ms.warm, 1);
  // Its proving login began beside the claim (PgBouncer held the spare's session).
  assert.equal(first.result.steps_ms.probe_beside_claim, 1);
  const seen = await tenantPid(first.result, 'unused');
  assert.deepEqual(before.get(first.result.physical_name), [seen.pid], 'the warm-up session');
  assert.equal(seen.statementTimeout, '1min');
  // Other limits: the claim sets them and the warm session (the spare's settings) is closed first.
  const ctx = jobCtx('unused');
  const payload = {
    ...createPayload(uniqueName('wl'), newPassword()),
    limits: { ...DEFAULT_LIMITS, statement_timeout_ms: 5_000 },
  };
  const other = (await handlers(pool).get('database.create')!(payload, ctx)) as Created;
  ctx.report();
  assert.equal(other.steps_ms.warm, 1);
  const fresh = await tenantPid(other, 'unused');
  assert.ok(!(before.get(other.physical_name) ?? []).includes(fresh.pid), 'a new session');
  assert.equal(fresh.statementTimeout, '5s');
});

test('a spare whose role settings were changed is refused by the claim; the create goes cold', async () => {
  const pool = await startPool(1);
  const [spare] = await sparesInCatalog(pool);
  await kit.admin.query(`ALTER ROLE "${roleNames(spare!).owner}" SET statement_timeout = 0`);
  const name = uniqueName('wst');
  const password = newPassword();
  const { result } = await create(pool, name, password);
  assert.equal(result.steps_ms.warm, 0, 'not handed out');
  assert.equal(await ownerLogin(name, password), null);
  await pool.settled();
  assert.ok(!(await sparesInCatalog(pool)).includes(spare!), 'destroyed');
});

test('a spare whose kept session PgBouncer closed is proven after its claim: no refused login locks the tenant out', async () => {
  const pool = await freshPool();
  pool.useAllowlist([{ cidr: '127.0.0.1/32', expires_at: null }]);
  await pool.refill();
  const spares = await sparesInCatalog(pool);
  assert.equal(spares.length, SIZE);
  // PgBouncer drops the spares' kept sessions (as its idle timeout or a restart would).
  for (const spare of spares) await pooler.disconnect(spare);
  for (const spare of spares)
    assert.equal(await pooler.serverHeld(spare, roleNames(spare).owner), false, 'no session held');
  const password = newPassword();
  const { result } = await create(pool, uniqueName('wk'), password);
  assert.equal(result.steps_ms.warm, 1);
  assert.equal(result.steps_ms.probe_beside_claim, undefined, 'no login before the claim committed');
  // The tenant gets in at once, twice (PgBouncer never saw a refused server login for it).
  for (let i = 0; i < 2; i++) assert.equal(await createdLogin(result, password), null);
  // What the guard avoids, on the other spare: a login that makes PgBouncer open a session for an
  // owner without LOGIN is refused, and the next one gets nowhere either, however right its
  // password and even with LOGIN granted meanwhile, until PgBouncer's server_login_retry passes.
  const other = spares.find((s) => s !== result.physical_name)!;
  const pw = spareOwnerPassword(kit.deps.cluster.key, other);
  assert.match(String(await ownerLogin(other, pw)), /not permitted to log in|login failed|server/i);
  await kit.admin.query(`ALTER ROLE ${quoteIdent(roleNames(other).owner)} LOGIN`);
  try {
    const locked = await ownerLogin(other, pw);
    assert.notEqual(locked, null, 'locked out after a refused server login');
    // PgBouncer 1.18 holds the login until its retry time (the client gives up first).
    assert.match(String(locked), /server login has been failing|cannot connect to server|timeout/i);
  } finally {
    await kit.admin.query(`ALTER ROLE ${quoteIdent(roleNames(other).owner)} NOLOGIN`);
  }
});

test("kept warm: a spare's session PgBouncer closed is opened again, its owner left without LOGIN", async () => {
  const pool = await freshPool({ keepWarmMs: 100 });
  pool.useAllowlist([{ cidr: '127.0.0.1/32', expires_at: null }]);
  await pool.refill();
  const spares = await sparesInCatalog(pool);
  assert.equal(spares.length, SIZE);
  const held = async () => {
    const each = await Promise.all(spares.map((s) => pooler.serverHeld(s, roleNames(s).owner)));
    return each.every(Boolean);
  };
  assert.ok(await held(), 'warmed up when made');
  // PgBouncer drops their sessions (as its idle timeout would after 10 minutes).
  for (const spare of spares) await pooler.disconnect(spare);
  assert.equal(await held(), false);
  let back = false;
  for (let i = 0; i < 100 && !back; i++) {
    await new Promise((r) => setTimeout(r, 50));
    back = await held();
  }
  assert.ok(back, 'each spare has a kept session again');
  // Its owner has LOGIN only for that moment (the pool keeps warming every 100 ms here, so one
  // look may land inside a re-warm's moment): none of them is left able to log in on its own.
  let withLogin = -1;
  for (let i = 0; i < 40 && withLogin !== 0; i++) {
    if (i > 0) await new Promise((r) => setTimeout(r, 25));
    const owners = await kit.admin.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM pg_roles WHERE rolname = ANY($1) AND rolcanlogin',
      [spares.map((s) => roleNames(s).owner)],
    );
    withLogin = owners.rows[0]!.n;
  }
  assert.equal(withLogin, 0, 'an owner left with LOGIN');
  // A create then proves its login beside the claim, on that session.
  const password = newPassword();
  const { result } = await create(pool, uniqueName('kw'), password);
  assert.equal(result.steps_ms.probe_beside_claim, 1);
  assert.equal(await createdLogin(result, password), null);
});

test('stopped in the middle of a re-warm, a spare is destroyed at the next start, not reported as tampered', async () => {
  const pool = await freshPool();
  const [spare] = await sparesInCatalog(pool);
  await pool.stop();
  // What a crash between rewarmSpare's two transactions leaves: unfinished, its owner with LOGIN.
  await kit.admin.query(
    `BEGIN; COMMENT ON DATABASE ${quoteIdent(spare!)} IS 'bulwark:spare';
     ALTER ROLE ${quoteIdent(roleNames(spare!).owner)} LOGIN; COMMIT`,
  );
  const next = await startPool();
  const drift = (await handlers(next).get('node.drift')!({ known_databases: [] }, kit.ctx())) as Drift;
  assert.deepEqual(
    drift.findings.filter((f) => f.kind === 'spare_tampered'),
    [],
    JSON.stringify(drift.findings),
  );
  await next.settled();
  const now = await sparesInCatalog(next);
  assert.ok(!now.includes(spare!), 'destroyed');
  assert.equal(now.length, SIZE, 'and replaced');
  const left = await kit.admin.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [roleNames(spare!).owner]);
  assert.equal(left.rowCount, 0, 'its roles went with it');
});
