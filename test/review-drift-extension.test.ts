import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { DriftFinding } from '../src/agent/postgres/drift.ts';
import { DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import { startTenantKit, type TenantKit } from './helpers/tenant-kit.ts';

// Outside review (second round), drift blind spots made with trusted extensions.
//
// Drift's shadow search skips every member of an extension (`pg_depend.deptype = 'e'`), on the
// ground that extension code is installed by the superuser from trusted scripts. But the tenant
// owns the extensions it creates, and the owner of an extension may `ALTER EXTENSION … ADD
// FUNCTION` any routine it owns: an exact-signature shadow of `pg_catalog.format_type(oid, int)`
// planted in public and added to the tenant's pgcrypto is neither reported by drift nor dropped by
// `doctor --fix` (its twin outside the extension is reported). Membership must not be trusted
// when the extension's owner is the tenant; or shadows owned by a tenant role are reported
// whatever their extension.
//
// Also: `CREATE EXTENSION hstore SCHEMA pg_catalog` succeeds for the tenant owner (trusted
// extension, no CREATE on pg_catalog needed), adding 100+ routines and operators to the
// tenant database's pg_catalog, the schema every platform connection pins first on its
// search_path. Drift looks at every schema but pg_catalog and says nothing.

let tk: TenantKit;
let kit: TenantKit['kit'];
let jobs: TenantKit['jobs'];
before(async () => {
  tk = await startTenantKit();
  ({ kit, jobs } = tk);
});
after(async () => {
  await tk?.close();
});

async function asOwner(database: string, user: string, password: string, sql: string): Promise<void> {
  const c = await tk.loginOwner({ name: database, user, password });
  try {
    await c.query(sql);
  } finally {
    await c.end().catch(() => {});
  }
}

/** The error of a statement the tenant owner runs (null when it succeeds). */
async function refusal(
  database: string,
  user: string,
  password: string,
  sql: string,
): Promise<string | null> {
  return asOwner(database, user, password, sql).then(
    () => null,
    (err: Error) => err.message,
  );
}

/**
 * Makes a database look like one created before the extension guard (the tenant template's event
 * trigger): a superuser drops the trigger, so the attacks below go through and drift must see them.
 */
async function withoutGuard(name: string): Promise<void> {
  const c = await kit.connectAdmin(name);
  try {
    await c.query('DROP EVENT TRIGGER bulwark_extension_guard');
  } finally {
    await c.end();
  }
}

test("a shadow hidden in the tenant's own extension is still reported and dropped by drift", async () => {
  const { name, id, roles, password } = await tk.create('extshadow');
  // A database made from the current template refuses the hiding place outright.
  await asOwner(name, roles.owner, password, 'CREATE EXTENSION pgcrypto');
  const added = await refusal(
    name,
    roles.owner,
    password,
    [
      `CREATE FUNCTION public.format_type(oid, integer) RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$`,
      'ALTER EXTENSION pgcrypto ADD FUNCTION public.format_type(oid, integer)',
    ].join(';\n'),
  );
  assert.match(
    added ?? 'accepted',
    /may not be added to an extension/,
    'the guard let ALTER EXTENSION … ADD through',
  );
  await asOwner(name, roles.owner, password, 'DROP EXTENSION pgcrypto');
  // A database made before the guard: the tenant hides the shadow; drift must still see it.
  await withoutGuard(name);
  await asOwner(
    name,
    roles.owner,
    password,
    [
      'CREATE EXTENSION pgcrypto',
      `CREATE FUNCTION public.format_type(oid, integer) RETURNS text LANGUAGE sql AS $$ SELECT 'x' $$`,
      'ALTER EXTENSION pgcrypto ADD FUNCTION public.format_type(oid, integer)',
      // The positive control: the same kind of shadow, outside any extension.
      `CREATE FUNCTION public.pg_get_userbyid(oid) RETURNS name LANGUAGE sql AS $$ SELECT 'x'::name $$`,
    ].join(';\n'),
  );
  const payload = { known_databases: [name], databases: [{ id, name, limits: DEFAULT_LIMITS }] };
  const { findings } = (await jobs.get('node.drift')!(payload, kit.ctx())) as { findings: DriftFinding[] };
  const shadows = findings.filter((f) => f.kind === 'shadow_routine' && f.object.startsWith(`${name}:`));
  assert.ok(
    shadows.some((f) => f.object.includes('pg_get_userbyid')),
    `control: ${JSON.stringify(shadows)}`,
  );
  assert.ok(
    shadows.some((f) => f.object.includes('format_type')),
    `public.format_type(oid, integer), added to the tenant's extension, is not reported: ${JSON.stringify(shadows)}`,
  );
  assert.ok(
    findings.some((f) => f.kind === 'tenant_guard' && f.object.startsWith(`${name}:`)),
    `the missing extension guard is not reported: ${JSON.stringify(findings)}`,
  );

  await jobs.get('node.drift_fix')!(payload, kit.ctx());
  const c = await kit.connectAdmin(name);
  try {
    const left = await c.query(
      `SELECT p.oid::regprocedure::text AS f FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND p.proname IN ('format_type', 'pg_get_userbyid')`,
    );
    assert.deepEqual(left.rows, [], 'doctor --fix left the shadow that hides in an extension');
  } finally {
    await c.end();
  }
});

test('an extension a tenant installs into pg_catalog is reported by drift', async () => {
  const { name, id, roles, password } = await tk.create('extcat');
  // A database made from the current template refuses it, and moving one there.
  const direct = await refusal(name, roles.owner, password, 'CREATE EXTENSION hstore SCHEMA pg_catalog');
  assert.match(
    direct ?? 'accepted',
    /system schema/,
    'the guard let CREATE EXTENSION … SCHEMA pg_catalog through',
  );
  const moved = await refusal(
    name,
    roles.owner,
    password,
    'CREATE EXTENSION hstore; ALTER EXTENSION hstore SET SCHEMA pg_catalog',
  );
  // (PostgreSQL refuses this one itself: SET SCHEMA needs CREATE on pg_catalog.)
  assert.match(
    moved ?? 'accepted',
    /system schema|permission denied for schema pg_catalog/,
    'the guard let ALTER EXTENSION … SET SCHEMA pg_catalog through',
  );
  // Guard-made databases report no guard finding; the rest of this test is a database made before it.
  const clean = (await jobs.get('node.drift')!(
    { known_databases: [name], databases: [{ id, name, limits: DEFAULT_LIMITS }] },
    kit.ctx(),
  )) as { findings: DriftFinding[] };
  assert.ok(
    !clean.findings.some((f) => f.kind === 'tenant_guard' || f.kind === 'extension_in_catalog'),
    JSON.stringify(clean.findings),
  );
  await withoutGuard(name);
  await asOwner(name, roles.owner, password, 'CREATE EXTENSION hstore SCHEMA pg_catalog');
  const c = await kit.connectAdmin(name);
  try {
    const n = await c.query(
      `SELECT count(*)::int AS n FROM pg_depend d JOIN pg_extension e ON e.oid = d.refobjid
        WHERE e.extname = 'hstore' AND e.extnamespace = 'pg_catalog'::regnamespace AND d.deptype = 'e'`,
    );
    assert.ok(n.rows[0].n > 50, 'the tenant put hstore into pg_catalog (precondition)');
  } finally {
    await c.end();
  }
  const payload = { known_databases: [name], databases: [{ id, name, limits: DEFAULT_LIMITS }] };
  const { findings } = (await jobs.get('node.drift')!(payload, kit.ctx())) as { findings: DriftFinding[] };
  const mine = findings.filter(
    (f) => f.object === name || f.object.startsWith(`${name}:`) || f.object.startsWith(`${name}.`),
  );
  assert.ok(
    mine.some((f) => /hstore|pg_catalog|extension/i.test(`${f.object} ${f.detail}`)),
    `a tenant extension in pg_catalog is not reported: ${JSON.stringify(mine)}`,
  );
});

test("a range type calling the tenant's own subtype_diff is refused by the guard and reported by drift", async () => {
  // The planner calls a range's subtype_diff through the type cache with no EXECUTE check when it
  // estimates && or << on a column with statistics: the tenant's function would run in every
  // session querying the column, the explorer's included, as that session's role.
  const { name, id, roles, password } = await tk.create('rangediff');
  const plant = `CREATE FUNCTION public.plant_diff(a int4, b int4) RETURNS float8 LANGUAGE plpgsql IMMUTABLE
      AS $$ BEGIN RAISE NOTICE 'planted ran as %', current_user; RETURN b - a; END $$;
    CREATE TYPE public.prange AS RANGE (subtype = int4, subtype_diff = public.plant_diff)`;
  const refused = await refusal(name, roles.owner, password, plant);
  assert.match(refused ?? 'accepted', /subtype_diff must be a built-in function/);
  // A built-in subtype_diff stays allowed (what a tenant legitimately writes).
  await asOwner(
    name,
    roles.owner,
    password,
    'CREATE TYPE public.okrange AS RANGE (subtype = int4, subtype_diff = pg_catalog.int4range_subdiff)',
  );
  const payload = { known_databases: [name], databases: [{ id, name, limits: DEFAULT_LIMITS }] };
  const clean = (await jobs.get('node.drift')!(payload, kit.ctx())) as { findings: DriftFinding[] };
  assert.ok(
    !clean.findings.some((f) => f.kind === 'range_function' || f.kind === 'tenant_guard'),
    JSON.stringify(clean.findings),
  );
  // A database made before the guard knew ranges: the plant goes through, drift must see it.
  await withoutGuard(name);
  await asOwner(name, roles.owner, password, plant);
  const { findings } = (await jobs.get('node.drift')!(payload, kit.ctx())) as { findings: DriftFinding[] };
  const range = findings.filter((f) => f.kind === 'range_function' && f.object.startsWith(`${name}:`));
  assert.equal(range.length, 1, JSON.stringify(findings));
  assert.match(range[0]!.detail, /plant_diff/);
  assert.ok(findings.some((f) => f.kind === 'tenant_guard' && f.object.startsWith(`${name}:`)));
});
