import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import type { DriftFinding } from '../src/agent/postgres/drift.ts';
import { DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import { roleNames } from '../src/shared/identifiers.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import { loadExplorerParser } from '../src/shared/sql/explorer-validator.ts';
import { waitForLogFlush } from './helpers/db.ts';
import { testEnv } from './helpers/env.ts';
import { queryPayload, testExecutor } from './helpers/explorer.ts';
import { startTenantKit, type TenantKit } from './helpers/tenant-kit.ts';
import { newPassword, uniqueName } from './pooler-harness.ts';

// Issue 10, critical (the focused regression; test/tenant-shadow-attack.test.ts is the broad,
// generated one). A tenant owner plants catalog-named functions and operators in `public` and in
// a schema of its own, points database- and role-level search_path (and other settings) at them,
// and changes its password; then the agent's create re-run, drift, drift fix, the explorer's role
// preparation, a query and the schema read run. Nothing planted may run as any role but the
// tenant's own: no superuser appears, and the postgres log holds no shadow token raised by any
// other user. On the code before the steward, the admin's connections into the database ran
// `pg_get_userbyid` / `format_type` from `public` as the superuser, and this test failed.

const TOKEN = `t${randomBytes(5).toString('hex')}`;
const MARK = `BULWARK-SHADOW-RAN-${TOKEN}`;
const PWN = `pwn_${TOKEN}`;
const LOG = path.join(testEnv().dataDir, 'logs', 'postgres.log');

let tk: TenantKit;
let kit: TenantKit['kit'];
let jobs: TenantKit['jobs'];
before(async () => {
  await loadExplorerParser();
  // What the agent does at start: the tenant template and the maintenance databases closed.
  tk = await startTenantKit();
  ({ kit, jobs } = tk);
});
after(async () => {
  await kit.admin.query(`DROP ROLE IF EXISTS ${PWN}`).catch(() => {});
  await tk.close();
});

/** The shadow body: says who runs it, then tries to make a superuser. */
function hit(schema: string): string {
  return `PERFORM ${schema}.bulwark_shadow_hit();`;
}

/** Catalog-named routines and operators in `schema`, each reporting who ran it. */
function plantSql(schema: string): string {
  const s = schema;
  const fn = (sig: string, returns: string, value: string) =>
    `CREATE OR REPLACE FUNCTION ${s}.${sig} RETURNS ${returns} LANGUAGE plpgsql AS $f$ BEGIN ${hit(s)} RETURN ${value}; END $f$`;
  return [
    `CREATE SCHEMA IF NOT EXISTS ${s}`,
    'CREATE TABLE IF NOT EXISTS public.bulwark_runs (who text)',
    'GRANT INSERT, SELECT ON public.bulwark_runs TO PUBLIC',
    `CREATE OR REPLACE FUNCTION ${s}.bulwark_shadow_hit() RETURNS void LANGUAGE plpgsql AS $f$
     BEGIN
       RAISE LOG '${MARK} %', current_user;
       BEGIN INSERT INTO public.bulwark_runs VALUES (current_user); EXCEPTION WHEN others THEN NULL; END;
       BEGIN EXECUTE 'CREATE ROLE ${PWN} SUPERUSER LOGIN'; EXCEPTION WHEN others THEN NULL; END;
     END $f$`,
    fn('format_type(oid, integer)', 'text', `'integer'`),
    fn('format_type(oid)', 'text', `'integer'`),
    fn('pg_get_userbyid(oid)', 'name', `'nobody'::pg_catalog.name`),
    fn('shobj_description(oid, name)', 'text', 'NULL'),
    fn('obj_description(oid, name)', 'text', 'NULL'),
    fn('set_config(text, text, boolean)', 'text', `''`),
    fn('current_setting(text)', 'text', `''`),
    fn('acldefault("char", oid)', 'aclitem[]', 'NULL'),
    fn('pg_get_function_identity_arguments(oid)', 'text', `''`),
    fn('has_table_privilege(text, text, text)', 'boolean', 'false'),
    fn('has_function_privilege(text, text, text)', 'boolean', 'false'),
    fn('pg_backend_pid()', 'integer', '0'),
    fn('pg_terminate_backend(integer)', 'boolean', 'false'),
    fn('version()', 'text', `'x'`),
    fn('format(text, text, text, text)', 'text', `''`),
    `CREATE OR REPLACE FUNCTION ${s}.aclexplode(aclitem[]) RETURNS TABLE(grantor oid, grantee oid, privilege_type text, is_grantable boolean)
       LANGUAGE plpgsql AS $f$ BEGIN ${hit(s)} RETURN; END $f$`,
    fn('shadow_eq_name_text(name, text)', 'boolean', 'false'),
    fn('shadow_eq_oid(oid, oid)', 'boolean', 'false'),
    `DROP OPERATOR IF EXISTS ${s}.= (name, text)`,
    `CREATE OPERATOR ${s}.= (LEFTARG = name, RIGHTARG = text, FUNCTION = ${s}.shadow_eq_name_text)`,
    `DROP OPERATOR IF EXISTS ${s}.= (oid, oid)`,
    `CREATE OPERATOR ${s}.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = ${s}.shadow_eq_oid)`,
  ].join(';\n');
}

async function asUser(
  database: string,
  user: string,
  password: string,
  sql: string,
): Promise<{ ok: true } | { ok: false; message: string }> {
  const c = new pg.Client({ host: '127.0.0.1', port: testEnv().pgPort, database, user, password });
  c.on('error', () => {});
  try {
    await c.connect();
    await c.query(sql);
    return { ok: true };
  } catch (err) {
    return { ok: false, message: (err as Error).message };
  } finally {
    await c.end().catch(() => {});
  }
}

/**
 * Who ran a shadow: the user of each postgres log line carrying our token (`RAISE LOG`: the
 * cluster logs LOG lines, not WARNINGs), plus what the shadows wrote to their table (when
 * given the database; a read-only or unprivileged caller cannot write there, the log still has it).
 */
async function shadowRunners(database?: string): Promise<Set<string>> {
  const text = await fs.readFile(LOG, 'utf8').catch(() => '');
  const who = new Set<string>();
  if (database) {
    const u = new URL(testEnv().adminUrl);
    u.pathname = `/${database}`;
    const c = new pg.Client({ connectionString: u.toString() });
    await c.connect();
    try {
      const r = await c.query<{ who: string }>('SELECT DISTINCT who FROM public.bulwark_runs');
      for (const row of r.rows) who.add(row.who);
    } finally {
      await c.end();
    }
  }
  for (const line of text.split('\n')) {
    const i = line.indexOf(MARK);
    if (i >= 0) who.add(line.slice(i + MARK.length).trim());
  }
  return who;
}

async function waitForRunner(user: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if ((await shadowRunners()).has(user)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.fail(`the positive control did not reach ${LOG}`);
}

test('a tenant owner’s shadows and settings never run as anyone but the tenant', async () => {
  const name = uniqueName('iso');
  const id = randomUUID();
  const roles = roleNames(name);
  const password = newPassword();
  const create = {
    database_id: id,
    name,
    verifier: scramVerifier(password),
    allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
    limits: DEFAULT_LIMITS,
  };
  await jobs.get('database.create')!(create, kit.ctx(password));
  const tenantRoles = new Set([roles.owner, roles.reader, roles.migrator, roles.explorer]);
  const drift = async (kind: string) =>
    (await jobs.get(kind)!(
      { known_databases: [name], databases: [{ id, name, limits: DEFAULT_LIMITS }] },
      kit.ctx(),
    )) as { findings: DriftFinding[]; fixed?: string[] };
  const ofMine = (f: DriftFinding[]) =>
    f.filter((x) => x.object === name || x.object.startsWith(`${name}:`) || tenantRoles.has(x.object));
  const kinds = (f: DriftFinding[]) => [...new Set(ofMine(f).map((x) => x.kind))].sort();

  // The tenant plants its shadows in public and in a schema of its own.
  const plant = async (pw: string) => {
    for (const schema of ['public', 'evil']) {
      const r = await asUser(name, roles.owner, pw, plantSql(schema));
      assert.deepEqual(r, { ok: true }, `planting in ${schema}`);
    }
  };
  await plant(password);

  // Database-level settings: refused now that the steward owns the database. A database made
  // before the steward (owned by the tenant) is simulated so that its settings exist all the same.
  const dbSettings = [
    `ALTER DATABASE ${name} SET search_path = public, evil, pg_catalog`,
    `ALTER DATABASE ${name} SET check_function_bodies = off`,
    `ALTER DATABASE ${name} SET DateStyle = 'SQL, DMY'`,
  ].join(';\n');
  const refused = await asUser(name, roles.owner, password, dbSettings);
  if (!refused.ok) {
    assert.match(refused.message, /must be owner of database/);
    await kit.admin.query(`ALTER DATABASE ${name} OWNER TO ${roles.owner}`);
    assert.deepEqual(await asUser(name, roles.owner, password, dbSettings), { ok: true });
  }
  // Role-level settings (any database and this one) and a password changed outside rotation.
  const changed = newPassword();
  assert.deepEqual(
    await asUser(
      name,
      roles.owner,
      password,
      [
        `ALTER ROLE ${roles.owner} SET search_path = public, evil, pg_catalog`,
        `ALTER ROLE ${roles.owner} SET statement_timeout = 0`,
        `ALTER ROLE ${roles.owner} IN DATABASE ${name} SET search_path = evil, public, pg_catalog`,
        `ALTER ROLE ${roles.owner} IN DATABASE postgres SET search_path = evil, public, pg_catalog`,
        `ALTER ROLE ${roles.owner} PASSWORD '${changed}'`,
      ].join(';\n'),
    ),
    { ok: true },
  );

  // Positive control: the tenant's own call reaches its shadow, and the log shows it.
  assert.deepEqual(await asUser(name, roles.owner, changed, 'SELECT format_type(23, -1)'), { ok: true });
  await waitForRunner(roles.owner);

  // The agent's work on that database, in the order an operator would meet it.
  const before = await drift('node.drift');
  const stewardOnly = roles.steward; // present after this change only
  if (stewardOnly) {
    assert.deepEqual(
      kinds(before.findings).filter((k) =>
        ['database_owner', 'database_setting', 'role_setting', 'owner_password'].includes(k),
      ),
      ['database_owner', 'database_setting', 'owner_password', 'role_setting'],
      JSON.stringify(ofMine(before.findings)),
    );
  }
  await jobs.get('database.create')!(create, kit.ctx(password));
  const fix = await drift('node.drift_fix');
  assert.deepEqual(fix.fixed, [name]);
  // The tenant plants again (its password is back to the one the platform set).
  await plant(password);
  const e = testExecutor(kit.admin, { key: kit.deps.cluster?.key ?? randomBytes(32) });
  try {
    const q = await e.runQuery(queryPayload({ id, name }, 'SELECT 1 AS one'), new AbortController().signal);
    assert.equal(q.kind, 'rows', JSON.stringify(q));
    const schema = await e.readSchema({ database_id: id, name });
    assert.ok(Array.isArray(schema.tables));
    await e.settled();
  } finally {
    await e.close();
  }
  const afterFix = await drift('node.drift');

  // Nothing planted ran as a platform role or a superuser.
  await waitForLogFlush(LOG);
  const runners = [...(await shadowRunners(name))].filter((u) => !tenantRoles.has(u));
  assert.deepEqual(runners, [], 'shadows ran as a role that is not the tenant’s');
  const pwned = await kit.admin.query('SELECT rolname FROM pg_roles WHERE rolname = $1', [PWN]);
  assert.equal(pwned.rowCount, 0, 'a planted shadow created a role');

  // Drift: the settings, password and ownership are repaired; exact shadows were dropped and the
  // re-planted ones are reported again; name-only shadows are reported, never dropped.
  const left = ofMine(afterFix.findings);
  const leftKinds: string[] = kinds(afterFix.findings);
  for (const k of ['database_owner', 'database_setting', 'role_setting', 'owner_password'])
    assert.ok(!leftKinds.includes(k), `${k} left after the fix: ${JSON.stringify(left)}`);
  const shadows = left.filter((f) => f.kind === 'shadow_routine').map((f) => f.object);
  for (const sig of ['public.format_type(oid, integer)', 'evil.pg_get_userbyid(oid)', 'public.=(name, text)'])
    assert.ok(shadows.includes(`${name}:${sig}`), `${sig} not reported: ${JSON.stringify(shadows)}`);
  assert.ok(shadows.includes(`${name}:public.format(text, text, text, text)`));
  const settings = await kit.admin.query(
    `SELECT s.setrole FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = $1`,
    [name],
  );
  assert.equal(settings.rowCount, 0, 'database-level settings left');
  const ownerSettings = await kit.admin.query(
    `SELECT s.setdatabase FROM pg_db_role_setting s WHERE s.setrole = $1::regrole AND s.setdatabase <> 0`,
    [roles.owner],
  );
  assert.equal(ownerSettings.rowCount, 0, 'per-database settings of the owner left');
  const owner = await kit.admin.query(
    'SELECT pg_get_userbyid(datdba)::text AS o FROM pg_database WHERE datname = $1',
    [name],
  );
  assert.equal(owner.rows[0]!.o, roles.steward);
  assert.ok(!leftKinds.includes('catalog_visibility'), JSON.stringify(left));
  // Catalog visibility: other tenants' sessions and settings hidden; pg_database/pg_roles kept;
  // the maintenance databases refuse the tenant.
  for (const sql of [
    'SELECT count(*) FROM pg_catalog.pg_stat_activity',
    'SELECT count(*) FROM pg_catalog.pg_stat_get_activity(NULL)',
    'SELECT count(*) FROM pg_catalog.pg_db_role_setting',
  ]) {
    const r = await asUser(name, roles.owner, password, sql);
    assert.ok(!r.ok && /permission denied/.test(r.message), `${sql}: ${JSON.stringify(r)}`);
  }
  assert.deepEqual(await asUser(name, roles.owner, password, 'SELECT count(*) FROM pg_database, pg_roles'), {
    ok: true,
  });
  for (const db of ['postgres', 'template1']) {
    const r = await asUser(db, roles.owner, password, 'SELECT 1');
    assert.ok(!r.ok && /permission denied for database/.test(r.message), `${db}: ${JSON.stringify(r)}`);
  }
  // The tenant cannot change the database any more.
  const again = await asUser(name, roles.owner, password, `ALTER DATABASE ${name} SET search_path = public`);
  assert.ok(!again.ok);

  await jobs.get('database.delete')!({ database_id: id, name }, kit.ctx());
});

test('startup options outrank database-, role- and role-in-database settings', async () => {
  const { pinnedOptions } = await import('../src/agent/postgres/steward.ts');
  const name = uniqueName('pin');
  const role = uniqueName('pinrole');
  const pw = newPassword();
  await kit.admin.query(`CREATE ROLE ${role} LOGIN PASSWORD '${pw}'`);
  await kit.admin.query(`CREATE DATABASE ${name} OWNER ${role}`);
  try {
    for (const sql of [
      `ALTER DATABASE ${name} SET search_path = public`,
      `ALTER DATABASE ${name} SET default_transaction_read_only = on`,
      `ALTER ROLE ${role} SET statement_timeout = 1`,
      `ALTER ROLE ${role} IN DATABASE ${name} SET check_function_bodies = off`,
      `ALTER ROLE ${role} IN DATABASE ${name} SET search_path = evil`,
      `ALTER DATABASE ${name} SET role = ${role}`,
    ])
      await kit.admin.query(sql);
    const c = new pg.Client({
      host: '127.0.0.1',
      port: testEnv().pgPort,
      database: name,
      user: role,
      password: pw,
      options: pinnedOptions(),
    });
    await c.connect();
    const r = await c.query(
      `SELECT pg_catalog.current_setting('search_path') AS sp,
              pg_catalog.current_setting('default_transaction_read_only') AS ro,
              pg_catalog.current_setting('statement_timeout') AS st,
              pg_catalog.current_setting('check_function_bodies') AS cfb,
              pg_catalog.current_setting('role') AS role`,
    );
    await c.end();
    assert.deepEqual(r.rows[0], {
      sp: 'pg_catalog,pg_temp',
      ro: 'off',
      st: '2min',
      cfb: 'on',
      role: 'none',
    });
  } finally {
    await kit.admin.query(`DROP DATABASE IF EXISTS ${name}`);
    await kit.admin.query(`DROP ROLE IF EXISTS ${role}`);
  }
});

test('thousands of planted shadows still fit the drift report (bounded per kind and database)', async () => {
  const { boundFindings, MAX_FINDINGS_PER_GROUP } = await import('../src/agent/postgres/drift.ts');
  const many: DriftFinding[] = Array.from({ length: 5_000 }, (_, i) => ({
    kind: 'shadow_routine',
    object: `db1:public.f${i}(${'integer, '.repeat(40)}integer)`,
    detail: 'x'.repeat(2_000),
  }));
  const out = boundFindings([...many, { kind: 'unexpected_role', object: 'r', detail: 'd' }]);
  const listed = out.filter((f) => f.object.startsWith('db1:')).length;
  assert.ok(listed > 0 && listed <= MAX_FINDINGS_PER_GROUP, String(listed));
  assert.match(out.at(-1)!.detail, /not listed \(report too large\)/);
  assert.ok(out.some((f) => f.object === 'db1' && /4900 more/.test(f.detail)));
  assert.ok(out.some((f) => f.kind === 'unexpected_role'));
  assert.ok(out.every((f) => f.object.length <= 200 && f.detail.length <= 1000));
  assert.ok(JSON.stringify(out).length < 64 * 1024);
});
