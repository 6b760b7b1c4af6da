// Review (session 5): a tenant owner and an attached database's roles against the warm pool
// (ADR 0028), the move's freeze and row checks (ADR 0031) and the attached-database role check.
// Every probe asserts the SAFE behaviour; a probe that found a weakness is marked `todo` with what
// it found (the suite stays green, the report says it).
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { checkAttached } from '../src/agent/attached/attached-check.ts';
import { type AttachedDatabase, loadAttachedConfig } from '../src/agent/attached/attached-config.ts';
import type { BackupJobDeps } from '../src/agent/backups/backup-deps.ts';
import { connectForTools } from '../src/agent/backups/backup-deps.ts';
import { countRows } from '../src/agent/backups/backup-manifest.ts';
import { databaseHandlers } from '../src/agent/jobs/database-handlers.ts';
import { freezeDatabase, thawDatabase } from '../src/agent/jobs/database-move.ts';
import type { JobHandler } from '../src/agent/jobs/job-context.ts';
import type { PoolerManager } from '../src/agent/pgbouncer/pooler-manager.ts';
import type { WarmPool } from '../src/agent/pool/warm-pool.ts';
import { SPARE_PREFIX } from '../src/agent/postgres/spare-sql.ts';
import { stewardPassword } from '../src/agent/postgres/steward.ts';
import { DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import { roleNames } from '../src/shared/identifiers.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import { testEnv } from './helpers/env.ts';
import {
  clientFrom,
  type databaseJobKit,
  newPassword,
  type PrivatePooler,
  startNodeKit,
  startWarmPool,
  tryLogin,
  uniqueName,
} from './pooler-harness.ts';

let p: PrivatePooler;
let pooler: PoolerManager;
let kit: ReturnType<typeof databaseJobKit>;
let pool: WarmPool;
let jobs: Map<string, JobHandler>;
let tmp: string;

before(async () => {
  ({ p, pooler, kit } = await startNodeKit());
  pool = await startWarmPool(kit, pooler, { size: 1 });
  jobs = new Map(
    databaseHandlers({ ...kit.deps, warmPool: pool, platform: { databases: ['bulwark'], roles: [] } }),
  );
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-rv5t-'));
});
const made: { database_id: string; name: string }[] = [];
after(async () => {
  const del = jobs?.get('database.delete');
  for (const t of made) await del?.(t, kit.ctx()).catch(() => {});
  await pool?.drain().catch(() => {});
  await kit?.close();
  await p?.stop();
  if (tmp) await fs.rm(tmp, { recursive: true, force: true });
});

type Tenant = {
  name: string;
  id: string;
  password: string;
  roles: ReturnType<typeof roleNames>;
  warm: number;
};

async function createTenant(prefix: string): Promise<Tenant> {
  const name = uniqueName(prefix);
  const id = randomUUID();
  const password = newPassword();
  const after: (() => void)[] = [];
  const r = (await jobs.get('database.create')!(
    {
      database_id: id,
      name,
      verifier: scramVerifier(password),
      allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
      limits: DEFAULT_LIMITS,
    },
    { ...kit.ctx(password), afterReport: (fn: () => void) => after.push(fn) },
  )) as { steps_ms: Record<string, number>; physical_name: string; owner_password?: string };
  for (const fn of after.splice(0)) fn();
  // A spare keeps its generated names (ADR 0034): the tenant's database is the physical one.
  const physical = r.physical_name;
  made.push({ database_id: id, name: physical });
  return {
    name: physical,
    id,
    password: r.owner_password ?? password,
    roles: roleNames(physical),
    warm: r.steps_ms.warm ?? 0,
  };
}

/** Straight to PostgreSQL (not PgBouncer) as the tenant's owner: the strongest way in a tenant has. */
async function loginOwner(t: Tenant, database = t.name): Promise<pg.Client> {
  const c = new pg.Client({
    host: '127.0.0.1',
    port: testEnv().pgPort,
    database,
    user: t.roles.owner,
    password: t.password,
    connectionTimeoutMillis: 5_000,
  });
  c.on('error', () => {});
  await c.connect();
  return c;
}

async function currentSpares(): Promise<string[]> {
  const r = await kit.admin.query<{ n: string }>(
    `SELECT datname::text AS n FROM pg_database
      WHERE starts_with(datname::text, $1) AND shobj_description(oid, 'pg_database') LIKE 'bulwark:spare:ready:%'`,
    [`${SPARE_PREFIX}${pool.tag}_`],
  );
  return r.rows.map((x) => x.n);
}

const errorOf = async (c: pg.Client, sql: string): Promise<string | null> =>
  c.query(sql).then(
    () => null,
    (err: Error) => err.message,
  );

type Drift = { findings: { kind: string; object: string; detail: string }[] };

test('warm pool: the owner of a claimed database cannot reach, change, join or re-mark a spare, nor its own steward', async () => {
  const t = await createTenant('rvw');
  assert.equal(t.warm, 1, 'the tenant got a spare (warm path)');
  await pool.settled();
  const [spare] = await currentSpares();
  assert.ok(spare, 'the pool refilled');
  const sr = roleNames(spare);
  const c = await loginOwner(t);
  try {
    const attempts = [
      `GRANT "${sr.owner}" TO "${t.roles.owner}"`,
      `GRANT "${t.roles.owner}" TO "${sr.owner}"`,
      `ALTER ROLE "${sr.steward}" PASSWORD 'planted'`,
      `ALTER ROLE "${sr.owner}" LOGIN PASSWORD 'planted'`,
      `ALTER ROLE "${sr.owner}" SET search_path = public`,
      `ALTER ROLE "${sr.owner}" IN DATABASE "${spare}" SET search_path = public`,
      `COMMENT ON ROLE "${sr.owner}" IS 'bulwark:spare'`,
      `COMMENT ON DATABASE "${spare}" IS 'bulwark:spare:ready:0'`,
      `ALTER DATABASE "${spare}" SET search_path = public`,
      `GRANT CONNECT ON DATABASE "${spare}" TO "${t.roles.owner}"`,
      `SET ROLE "${t.roles.steward}"`,
      `ALTER ROLE "${t.roles.steward}" PASSWORD 'planted'`,
      `ALTER ROLE "${t.roles.steward}" SET search_path = public`,
      `ALTER DATABASE "${t.name}" SET search_path = public`,
      `COMMENT ON DATABASE "${t.name}" IS 'bulwark:spare:ready:0'`,
      `CREATE ROLE "${SPARE_PREFIX}${pool.tag}_0000000000_owner"`,
    ];
    for (const sql of attempts) assert.notEqual(await errorOf(c, sql), null, `refused: ${sql}`);
    // GRANT without the grant option only warns: its effect is what matters.
    await c.query(`GRANT CONNECT, TEMPORARY ON DATABASE "${t.name}" TO PUBLIC`).catch(() => {});
    await c.query(`GRANT CONNECT ON DATABASE "${t.name}" TO "${sr.owner}"`).catch(() => {});
    const acl = await kit.admin.query<{ acl: string }>(
      'SELECT datacl::text AS acl FROM pg_database WHERE datname = $1',
      [t.name],
    );
    assert.doesNotMatch(acl.rows[0]!.acl, /[{,]=/, acl.rows[0]!.acl);
    assert.ok(!acl.rows[0]!.acl.includes(sr.owner), acl.rows[0]!.acl);
  } finally {
    await c.end();
  }
  // No way into the spare, straight or through PgBouncer (its wildcard entry).
  await assert.rejects(loginOwner(t, spare), /permission denied|not permitted|does not exist|password/i);
  const viaPooler = await tryLogin(
    clientFrom('127.0.0.1', { port: p.port, user: t.roles.owner, password: t.password, database: spare }),
  );
  assert.notEqual(viaPooler, null, 'PgBouncer refuses the spare too');
  // The spare is still as made: drift reports nothing and the next tenant gets it warm.
  const drift = (await jobs.get('node.drift')!({ known_databases: [t.name] }, kit.ctx())) as Drift;
  assert.ok(!drift.findings.some((f) => f.kind === 'spare_tampered'), JSON.stringify(drift.findings));
  const next = await createTenant('rvn');
  assert.equal(next.warm, 1);
  // The next tenant inherits nothing of the first: no member outside its own five roles.
  const m = await kit.admin.query<{ x: string }>(
    `SELECT pg_get_userbyid(roleid) || '>' || pg_get_userbyid(member) AS x FROM pg_auth_members
      WHERE roleid IN (SELECT oid FROM pg_roles WHERE rolname = ANY($1))
         OR member IN (SELECT oid FROM pg_roles WHERE rolname = ANY($1))`,
    [Object.values(next.roles)],
  );
  assert.ok(
    m.rows.every((r) => r.x.split('>').every((n) => n.startsWith(`${next.name}_`))),
    JSON.stringify(m.rows),
  );
  await pool.settled();
});

test('moves and backups: a policy or shadow the owner plants never runs as the steward in the row counts or drift', async () => {
  const t = await createTenant('rvr');
  const c = await loginOwner(t);
  try {
    await c.query(`
      CREATE FUNCTION public.spy() RETURNS boolean LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'tenant code ran as %', current_user; END $$;
      CREATE TABLE public.t (x int);
      INSERT INTO public.t VALUES (1), (2);
      ALTER TABLE public.t ENABLE ROW LEVEL SECURITY;
      ALTER TABLE public.t FORCE ROW LEVEL SECURITY;
      CREATE POLICY p ON public.t USING (public.spy());
      CREATE FUNCTION public.count(anyelement) RETURNS bigint LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'tenant code ran as %', current_user; END $$;
      ALTER ROLE "${t.roles.owner}" SET search_path = public, pg_catalog;`);
  } finally {
    await c.end();
  }
  const login = {
    host: '127.0.0.1',
    port: testEnv().pgPort,
    database: t.name,
    user: t.roles.steward,
    password: stewardPassword(kit.deps.cluster.key, t.id, t.roles),
  };
  const s = await connectForTools(kit.deps.cluster, login);
  try {
    // The SQL fallback count of a backup and the restore check's count: refused by row security
    // (off in tool sessions), never the tenant's policy run as the steward.
    const counted = await countRows(s, [{ schema: 'public', name: 't' }]).then(
      () => 'counted',
      (err: Error) => err.message,
    );
    assert.doesNotMatch(counted, /tenant code ran as/, counted);
  } finally {
    await s.end();
  }
  const drift = (await jobs.get('node.drift')!(
    { known_databases: [t.name], databases: [{ id: t.id, name: t.name, limits: DEFAULT_LIMITS }] },
    kit.ctx(),
  )) as Drift;
  assert.ok(
    !JSON.stringify(drift.findings).includes('tenant code ran as'),
    JSON.stringify(drift.findings).slice(0, 2000),
  );
});

test('moves: a frozen database takes no tenant write (straight, through PgBouncer, or via a prepared transaction), and thaws', async () => {
  const t = await createTenant('rvf');
  const c = await loginOwner(t);
  await c.query('CREATE TABLE public.w (x int)');
  // A prepared transaction would survive the freeze's terminations (refused when the cluster allows none).
  const prepared = await errorOf(
    c,
    "BEGIN; INSERT INTO public.w VALUES (1); PREPARE TRANSACTION 'rv5-planted'",
  );
  await c.query('ROLLBACK').catch(() => {});
  const deps = { ...kit.deps } as unknown as BackupJobDeps;
  await freezeDatabase(deps, kit.ctx(), t.name);
  try {
    // The open session was ended.
    assert.notEqual(await errorOf(c, 'INSERT INTO public.w VALUES (2)'), null, 'the open session is cut');
    await c.end().catch(() => {});
    await assert.rejects(loginOwner(t), /permission denied/);
    const left = await kit.admin.query("SELECT 1 FROM pg_prepared_xacts WHERE gid = 'rv5-planted'");
    assert.equal(left.rowCount, 0, `no tenant transaction outlives the freeze (prepare: ${prepared})`);
  } finally {
    await thawDatabase(deps, kit.ctx(), t.name);
    await kit.admin.query("ROLLBACK PREPARED 'rv5-planted'").catch(() => {});
  }
  const back = await loginOwner(t);
  await back.query('INSERT INTO public.w VALUES (3)');
  await back.end();
});

// ---- attached databases: the role check, as the roles themselves ----

const sfx = randomBytes(4).toString('hex');
const att = {
  db: `rv5att_${sfx}`,
  owner: `rv5_own_${sfx}`,
  writer: `rv5_wr_${sfx}`,
  superRole: `rv5_su_${sfx}`,
  good: `rv5_good_${sfx}`,
  viaWriter: `rv5_vw_${sfx}`,
  viaWriteAll: `rv5_vwa_${sfx}`,
  viaSuper: `rv5_vsu_${sfx}`,
  viaOwner: `rv5_vo_${sfx}`,
  viaCreateRole: `rv5_vcr_${sfx}`,
  creator: `rv5_cr_${sfx}`,
  migrator: `rv5_mig_${sfx}`,
};
const attPw = randomBytes(18).toString('base64url');

async function asAdmin(database: string, sql: string) {
  const u = new URL(testEnv().adminUrl);
  u.pathname = `/${database}`;
  const c = new pg.Client({ connectionString: u.toString() });
  c.on('error', () => {});
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

let attachedReady = false;
async function attachedSetup() {
  if (attachedReady) return;
  attachedReady = true;
  const login = (r: string, extra = '') => `CREATE ROLE "${r}" LOGIN ${extra} PASSWORD '${attPw}'`;
  const statements = [
    `CREATE ROLE "${att.owner}" NOLOGIN`,
    `CREATE ROLE "${att.writer}" NOLOGIN`,
    `CREATE ROLE "${att.superRole}" NOLOGIN SUPERUSER`,
    `CREATE ROLE "${att.creator}" NOLOGIN CREATEROLE`,
    login(att.good),
    login(att.viaWriter, 'NOINHERIT'),
    login(att.viaWriteAll, 'NOINHERIT'),
    login(att.viaSuper),
    login(att.viaOwner, 'NOINHERIT'),
    login(att.viaCreateRole),
    login(att.migrator),
    `GRANT "${att.writer}" TO "${att.viaWriter}"`,
    `GRANT pg_write_all_data TO "${att.viaWriteAll}"`,
    `GRANT "${att.superRole}" TO "${att.viaSuper}"`,
    `GRANT "${att.owner}" TO "${att.viaOwner}"`,
    `GRANT "${att.creator}" TO "${att.viaCreateRole}"`,
    `CREATE DATABASE "${att.db}" OWNER "${att.owner}"`,
  ];
  for (const sql of statements) await asAdmin('postgres', sql);
  await asAdmin(
    att.db,
    [
      'REVOKE CREATE ON SCHEMA public FROM PUBLIC',
      'CREATE TABLE public.t (x int)',
      `ALTER TABLE public.t OWNER TO "${att.owner}"`,
      'GRANT SELECT ON public.t TO PUBLIC',
      `GRANT INSERT ON public.t TO "${att.writer}"`,
    ].join(';\n'),
  );
}

after(async () => {
  if (!attachedReady) return;
  await asAdmin('postgres', `DROP DATABASE IF EXISTS "${att.db}" WITH (FORCE)`).catch(() => {});
  for (const r of Object.entries(att).filter(([k]) => k !== 'db'))
    await asAdmin('postgres', `DROP ROLE IF EXISTS "${r[1]}"`).catch(() => {});
});

function attached(reader: string): AttachedDatabase {
  return {
    name: 'rv5',
    account_id: randomUUID(),
    host: '127.0.0.1',
    port: testEnv().pgPort,
    database: att.db,
    sslmode: 'disable',
    reader: { user: reader, password: attPw },
    migrator: { user: att.migrator, password: attPw },
  } as AttachedDatabase;
}

/** The reader really writes by switching role (what the check must foresee). */
async function writesVia(reader: string, role: string): Promise<boolean> {
  const c = new pg.Client({
    host: '127.0.0.1',
    port: testEnv().pgPort,
    database: att.db,
    user: reader,
    password: attPw,
  });
  c.on('error', () => {});
  await c.connect();
  try {
    await c.query(`SET ROLE "${role}"`);
    await c.query('INSERT INTO public.t VALUES (42)');
    return true;
  } catch {
    return false;
  } finally {
    await c.end();
  }
}

test('attached: the control — a reader with SELECT only passes; a migrator that is a NOINHERIT member of the owner is refused', async () => {
  await attachedSetup();
  const good = await checkAttached(attached(att.good));
  assert.equal(good.ok, true, JSON.stringify(good.findings));
  const owner = await checkAttached({
    ...attached(att.good),
    migrator: { user: att.viaOwner, password: attPw },
  });
  assert.equal(owner.ok, false);
  assert.ok(
    owner.findings.some((f) => f.kind === 'database_owner'),
    JSON.stringify(owner.findings),
  );
});

test('attached: a reader that can SET ROLE to a writer (NOINHERIT membership) is refused', async () => {
  await attachedSetup();
  assert.equal(await writesVia(att.viaWriter, att.writer), true, 'the reader really writes');
  const r = await checkAttached(attached(att.viaWriter));
  assert.equal(r.ok, false, JSON.stringify(r.findings));
});

test('attached: a reader that can SET ROLE pg_write_all_data (NOINHERIT) is refused', async () => {
  await attachedSetup();
  assert.equal(await writesVia(att.viaWriteAll, 'pg_write_all_data'), true, 'the reader really writes');
  const r = await checkAttached(attached(att.viaWriteAll));
  assert.equal(r.ok, false, JSON.stringify(r.findings));
});

test('attached: a reader or migrator that is a (plain, INHERIT) member of a SUPERUSER role is refused', async () => {
  await attachedSetup();
  assert.equal(await writesVia(att.viaSuper, att.superRole), true, 'the reader really writes as superuser');
  const r = await checkAttached(attached(att.viaSuper));
  assert.equal(r.ok, false, JSON.stringify(r.findings));
  const m = await checkAttached({ ...attached(att.good), migrator: { user: att.viaSuper, password: attPw } });
  assert.equal(m.ok, false, JSON.stringify(m.findings));
});

test('attached: a reader that is a member of a CREATEROLE role is refused', async () => {
  await attachedSetup();
  const r = await checkAttached(attached(att.viaCreateRole));
  assert.equal(r.ok, false, JSON.stringify(r.findings));
});

async function linkedConfig() {
  const real = path.join(tmp, `real-${randomBytes(3).toString('hex')}`);
  await fs.mkdir(real, { mode: 0o700 });
  const pw = path.join(real, 'pw');
  await fs.writeFile(pw, `${attPw}\n`, { mode: 0o600 });
  const linkedFile = path.join(tmp, `linked-${randomBytes(3).toString('hex')}.pw`);
  const linkedDir = path.join(tmp, `linkdir-${randomBytes(3).toString('hex')}`);
  await fs.symlink(pw, linkedFile);
  await fs.symlink(real, linkedDir);
  const entry = (file: string) => ({
    name: `rv5${randomBytes(3).toString('hex')}`,
    account_id: randomUUID(),
    host: '127.0.0.1',
    database: 'x',
    reader: { user: 'r', password_file: file },
    migrator: { user: 'm', password_file: pw },
  });
  const write = async (file: string) => {
    const cfg = path.join(tmp, `attached-${randomBytes(3).toString('hex')}.json`);
    await fs.writeFile(cfg, JSON.stringify({ databases: [entry(file)] }), { mode: 0o600 });
    return loadAttachedConfig(cfg);
  };
  return { viaFile: () => write(linkedFile), viaDir: () => write(path.join(linkedDir, 'pw')) };
}

test('attached: a password file that is itself a symlink is refused', async () => {
  const { databases, refused } = await (await linkedConfig()).viaFile();
  assert.equal(databases.length, 0);
  assert.match(refused[0]!.reason, /links are refused/);
});

test('attached: a password file reached through a symlinked directory is refused like a symlinked file', async () => {
  const { databases, refused } = await (await linkedConfig()).viaDir();
  assert.equal(databases.length, 0, JSON.stringify(refused));
});
