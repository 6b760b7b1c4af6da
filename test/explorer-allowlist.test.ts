import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { deriveAllowlist, GENERATED_FILE, renderAllowlist } from '../scripts/explorer-allowlist.ts';
import {
  CATALOG_TYPES,
  DENIED_FUNCTIONS,
  DENIED_PREFIXES,
  deniedReason,
  HARMLESS_OVERLOADS,
  JUSTIFIED_VOLATILE,
} from '../src/shared/sql/explorer-function-policy.ts';
import {
  createExplorerValidator,
  type ExplorerValidator,
  loadExplorerParser,
} from '../src/shared/sql/explorer-validator.ts';
import { testEnv } from './helpers/env.ts';

// Issue 19: the explorer's function allowlist is derived from pg_proc by rules, not listed by hand.
// Over the whole pg_catalog of the test cluster's PostgreSQL: what the validator lets through is of
// the safe kind (checked here by SQL written apart from the generator's), the deny list is refused,
// and the committed generated file is what the generator makes of this PostgreSQL now.

let client: pg.Client;
let validator: ExplorerValidator;
/** Every distinct function name in pg_catalog. */
let catalogNames: string[];
/** The names the validator lets through, asked name by name. */
let allowed: string[];

const quoteIdent = (s: string) => `"${s.replaceAll('"', '""')}"`;

/** Whether the validator refuses a call of `name` for the function itself (not its arguments). */
function refusedAsFunction(name: string): { refused: boolean; reason: string } {
  const v = validator.validate(`select pg_catalog.${quoteIdent(name)}()`);
  return v.ok
    ? { refused: false, reason: '' }
    : { refused: v.code === 'function_not_allowed', reason: `${v.code}: ${v.reason}` };
}

before(async () => {
  await loadExplorerParser();
  validator = createExplorerValidator({ cacheSize: 0 });
  client = new pg.Client({ connectionString: testEnv().adminUrl });
  await client.connect();
  const r = await client.query<{ name: string }>(
    `SELECT DISTINCT proname::text AS name FROM pg_catalog.pg_proc
      WHERE pronamespace = 'pg_catalog'::pg_catalog.regnamespace ORDER BY 1`,
  );
  catalogNames = r.rows.map((x) => x.name);
  allowed = catalogNames.filter((n) => !refusedAsFunction(n).refused);
});

after(async () => {
  await client?.end();
});

test('the committed allowlist is what the generator makes of this PostgreSQL now', async () => {
  const now = renderAllowlist(await deriveAllowlist(client));
  const committed = await fs.readFile(GENERATED_FILE, 'utf8');
  assert.ok(
    committed === now,
    'src/shared/sql/explorer-functions.generated.ts is stale for this PostgreSQL: run ' +
      '`node scripts/explorer-allowlist.ts`, then review the diff (every added name is a function a tenant can call)',
  );
});

test('the validator lets through a substantial part of pg_catalog, and not the dangerous part', () => {
  assert.ok(catalogNames.length > 2000, `${catalogNames.length} names in pg_catalog`);
  assert.ok(allowed.length > 1000, `only ${allowed.length} names allowed`);
  for (const name of ['pg_read_file', 'nextval', 'set_config', 'pg_sleep', 'lo_import', 'query_to_xml']) {
    assert.ok(!allowed.includes(name), `${name} is allowed`);
  }
  // Issue 19: harmless SQL that the hand-written list refused.
  for (const name of [
    'numeric_uminus',
    'int4or',
    'int4range',
    'int4multirange',
    'point',
    'box',
    'circle',
    'bpchar',
    'current_database',
    'current_schema',
    'version',
    'getdatabaseencoding',
    'to_tsvector',
  ]) {
    assert.ok(allowed.includes(name), `${name} is refused`);
  }
});

test('every function the validator allows, in every overload, is of the safe kind', async () => {
  // Written apart from the generator's query: pseudo-types by pattern, array types through
  // typarray, the catalog's own words for each rule.
  const r = await client.query<{ signature: string; why: string }>(
    `WITH catalog_type AS (
       SELECT t.oid FROM pg_catalog.pg_type t WHERE t.typname = ANY ($2::text[])
       UNION SELECT t.typarray FROM pg_catalog.pg_type t WHERE t.typname = ANY ($2::text[]) AND t.typarray <> 0
     ), overloads AS (
       SELECT p.*, p.oid::pg_catalog.regprocedure::text AS signature,
              ARRAY(SELECT pg_catalog.unnest(p.proargtypes::pg_catalog.oid[])
                    UNION SELECT pg_catalog.unnest(COALESCE(p.proallargtypes, '{}'))
                    UNION SELECT p.prorettype) AS types
         FROM pg_catalog.pg_proc p
        WHERE p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace AND p.proname::text = ANY ($1::text[])
     )
     SELECT o.signature, why FROM overloads o, LATERAL (VALUES
       (CASE WHEN o.prokind = 'p' THEN 'a procedure' END),
       (CASE WHEN o.provolatile = 'v' AND NOT o.proname::text = ANY ($3::text[]) THEN 'volatile' END),
       (CASE WHEN o.prosecdef THEN 'security definer' END),
       (CASE WHEN (SELECT l.lanname FROM pg_catalog.pg_language l WHERE l.oid = o.prolang)
                  NOT IN ('internal', 'sql') THEN 'language' END),
       (CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_type t WHERE t.oid = ANY (o.types) AND t.typtype = 'p'
                          AND t.typname !~ '^any' AND t.typname <> 'record') THEN 'pseudo-type' END),
       (CASE WHEN EXISTS (SELECT 1 FROM catalog_type c WHERE c.oid = ANY (o.types)) THEN 'catalog type' END),
       (CASE WHEN o.provolatile <> 'i' AND EXISTS (
               SELECT 1 FROM pg_catalog.pg_type t WHERE t.oid = ANY (o.proargtypes::pg_catalog.oid[])
                  AND t.typname IN ('oid', '_oid', 'oidvector')) THEN 'stable with an oid' END)
     ) AS rule(why)
     WHERE why IS NOT NULL AND NOT o.signature = ANY ($4::text[])
     ORDER BY 1`,
    [allowed, Object.keys(CATALOG_TYPES), Object.keys(JUSTIFIED_VOLATILE), Object.keys(HARMLESS_OVERLOADS)],
  );
  assert.deepEqual(
    r.rows.map((x) => `${x.signature}: ${x.why}`),
    [],
    'the validator allows functions that are not of the safe kind',
  );
  for (const name of allowed) assert.equal(deniedReason(name), null, `${name} is denied yet allowed`);
});

test('every deny-listed function is refused, with its reason; the deny list names real functions', async () => {
  for (const [name, reason] of Object.entries(DENIED_FUNCTIONS)) {
    assert.ok(catalogNames.includes(name), `${name} is not in pg_catalog: remove it from the deny list`);
    const r = refusedAsFunction(name);
    assert.ok(r.refused && r.reason.endsWith(reason), `${name}: ${r.reason || 'accepted'}`);
  }
  for (const [prefix, reason] of Object.entries(DENIED_PREFIXES)) {
    const family = catalogNames.filter((n) => n.startsWith(prefix));
    assert.ok(family.length > 0, `no function starts with ${prefix}: remove it from the deny list`);
    for (const name of family) {
      const r = refusedAsFunction(name);
      assert.ok(r.refused, `${name} is accepted`);
    }
    // A denied stable one says why.
    const stable = await client.query<{ name: string }>(
      `SELECT proname::text AS name FROM pg_catalog.pg_proc
        WHERE proname::text LIKE $1 AND provolatile <> 'v' LIMIT 1`,
      [`${prefix}%`],
    );
    const one = stable.rows[0]?.name;
    if (one) assert.ok(refusedAsFunction(one).reason.endsWith(reason), one);
  }
  for (const name of Object.keys(JUSTIFIED_VOLATILE)) {
    const r = await client.query(
      `SELECT 1 FROM pg_catalog.pg_proc WHERE proname = $1 AND provolatile = 'v'
          AND pronamespace = 'pg_catalog'::pg_catalog.regnamespace`,
      [name],
    );
    assert.ok(r.rowCount, `${name} is no longer volatile: remove it from JUSTIFIED_VOLATILE`);
  }
  for (const signature of Object.keys(HARMLESS_OVERLOADS)) {
    const r = await client.query(`SELECT $1::pg_catalog.regprocedure`, [signature]).catch(() => null);
    assert.ok(r?.rowCount, `${signature} no longer exists: remove it from HARMLESS_OVERLOADS`);
  }
});
