/**
 * Derives the SQL explorer's function allowlist from a real PostgreSQL's pg_proc, by the rules in
 * src/shared/sql/explorer-function-policy.ts (ADR 0012), and writes
 * src/shared/sql/explorer-functions.generated.ts.
 *
 *   node scripts/explorer-allowlist.ts                      # a throwaway cluster of the installed PostgreSQL
 *   node scripts/explorer-allowlist.ts --database-url URL   # an existing cluster (any database)
 *   node scripts/explorer-allowlist.ts --check              # exit 1 when the committed file differs
 *
 * test/explorer-allowlist.test.ts runs deriveAllowlist() against the test cluster and fails when the
 * committed file differs: a new PostgreSQL version must be regenerated and its diff reviewed.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import {
  CATALOG_TYPES,
  deniedReason,
  HARMLESS_OVERLOADS,
  JUSTIFIED_VOLATILE,
  SAFE_PSEUDO_TYPES,
} from '../src/shared/sql/explorer-function-policy.ts';

export const GENERATED_FILE = path.resolve(
  import.meta.dirname,
  '..',
  'src/shared/sql/explorer-functions.generated.ts',
);

/**
 * Every function in pg_catalog with the first rule it breaks (null when it breaks none). Catalog
 * types count with their array types. Signatures as regprocedure prints them.
 */
const OVERLOADS_SQL = `
WITH catalog_types AS (
  SELECT t.oid FROM pg_catalog.pg_type t
   WHERE t.typname = ANY ($2::text[])
      OR t.typelem IN (SELECT e.oid FROM pg_catalog.pg_type e WHERE e.typname = ANY ($2::text[]))
), unsafe_pseudo AS (
  SELECT t.oid FROM pg_catalog.pg_type t WHERE t.typtype = 'p' AND NOT t.typname = ANY ($1::text[])
), fn AS (
  SELECT p.oid, p.proname::text AS name, p.prokind, p.provolatile, p.prosecdef, l.lanname::text AS lang,
         p.prorettype,
         pg_catalog.array_append(
           COALESCE(p.proallargtypes, pg_catalog.string_to_array(p.proargtypes::text, ' ')::pg_catalog.oid[]),
           p.prorettype) AS types,
         COALESCE(p.proallargtypes, pg_catalog.string_to_array(p.proargtypes::text, ' ')::pg_catalog.oid[]) AS args
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_language l ON l.oid = p.prolang
   WHERE p.pronamespace = 'pg_catalog'::pg_catalog.regnamespace
)
SELECT fn.name, fn.oid::pg_catalog.regprocedure::text AS signature,
       CASE
         WHEN fn.prokind NOT IN ('f', 'a', 'w') THEN 'a procedure'
         WHEN fn.provolatile = 'v' AND NOT fn.name = ANY ($3::text[]) THEN 'volatile'
         WHEN fn.prosecdef THEN 'security definer'
         WHEN fn.lang NOT IN ('internal', 'sql') THEN 'language ' || fn.lang
         WHEN EXISTS (SELECT 1 FROM pg_catalog.unnest(fn.types) a WHERE a IN (SELECT oid FROM unsafe_pseudo))
           THEN 'a pseudo-type argument or result'
         WHEN EXISTS (SELECT 1 FROM pg_catalog.unnest(fn.types) a WHERE a IN (SELECT oid FROM catalog_types))
           THEN 'a catalog-object type'
         WHEN fn.provolatile <> 'i'
              AND fn.args OPERATOR(pg_catalog.&&) ARRAY['pg_catalog.oid'::pg_catalog.regtype,
                'pg_catalog.oidvector'::pg_catalog.regtype, 'pg_catalog._oid'::pg_catalog.regtype]::pg_catalog.oid[]
           THEN 'stable, given an oid'
       END AS unsafe
  FROM fn
 ORDER BY fn.name, signature`;

export type DerivedAllowlist = {
  /** `PostgreSQL 15.18` */
  source: string;
  names: string[];
  /** SHA-256 of every signature of every allowed name: a new overload changes the file too. */
  digest: string;
};

type Overload = { name: string; signature: string; unsafe: string | null };

async function readOverloads(client: pg.ClientBase): Promise<Overload[]> {
  const r = await client.query<Overload>(OVERLOADS_SQL, [
    SAFE_PSEUDO_TYPES,
    Object.keys(CATALOG_TYPES),
    Object.keys(JUSTIFIED_VOLATILE),
  ]);
  return r.rows;
}

/** The allowlist the rules give for this cluster's pg_catalog. */
export async function deriveAllowlist(client: pg.ClientBase): Promise<DerivedAllowlist> {
  // The major version only: a minor release does not change pg_proc (the digest would say if it did).
  const version = await client.query<{ v: string }>(
    `SELECT (pg_catalog.current_setting('server_version_num')::int / 10000)::text AS v`,
  );
  const byName = new Map<string, Overload[]>();
  for (const o of await readOverloads(client)) {
    const list = byName.get(o.name) ?? [];
    list.push(o);
    byName.set(o.name, list);
  }
  const names: string[] = [];
  const hash = createHash('sha256');
  for (const [name, overloads] of [...byName].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    if (deniedReason(name) !== null) continue;
    if (!/^[a-z_][a-z0-9_]*$/.test(name)) continue; // every built-in is; anything else needs a review
    if (overloads.some((o) => o.unsafe !== null && !Object.hasOwn(HARMLESS_OVERLOADS, o.signature))) continue;
    names.push(name);
    for (const o of overloads) hash.update(`${o.signature}\n`);
  }
  return { source: `PostgreSQL ${version.rows[0]?.v ?? '?'}`, names, digest: hash.digest('hex') };
}

export function renderAllowlist(d: DerivedAllowlist): string {
  return `/**
 * GENERATED by scripts/explorer-allowlist.ts from the pg_proc of ${d.source}: do not edit.
 * The built-in functions the SQL explorer may call, by the rules of explorer-function-policy.ts
 * (ADR 0012). When a test says this file is stale, regenerate it and review the diff: every name
 * added is a function a tenant can call.
 */

/** Where the list came from, and a digest of every signature of the names below. */
export const DERIVED_FROM = '${d.source}';
export const DERIVED_SIGNATURES_SHA256 = '${d.digest}';

/** ${d.names.length} names, one a line. */
export const DERIVED_FUNCTION_NAMES = \`
${d.names.join('\n')}
\`;
`;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const at = args.indexOf('--database-url');
  const url = at >= 0 ? args[at + 1] : undefined;
  const check = args.includes('--check');
  if (at >= 0 && !url) throw new Error('--database-url needs a value');
  let stop = async () => {};
  let connectionString = url;
  if (!connectionString) {
    // A throwaway cluster of the installed PostgreSQL (loopback, free port), removed afterwards.
    const { startDataPlane } = await import('../src/embedded/data-plane.ts');
    const { dataLayout } = await import('../src/embedded/layout.ts');
    const { resolveServiceUser } = await import('../src/embedded/service-user.ts');
    const { freePort } = await import('../test/helpers/ports.ts');
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-allowlist-'));
    const dp = await startDataPlane({
      layout: dataLayout(dir),
      ports: { postgres: await freePort(), pooler: await freePort() },
      user: resolveServiceUser(),
      unsafeFast: true,
      log: () => {},
    });
    connectionString = dp.adminUrl;
    stop = async () => {
      await dp.stop();
      await fs.rm(dir, { recursive: true, force: true });
    };
  }
  try {
    const client = new pg.Client({ connectionString });
    await client.connect();
    let text: string;
    try {
      text = renderAllowlist(await deriveAllowlist(client));
    } finally {
      await client.end();
    }
    const current = await fs.readFile(GENERATED_FILE, 'utf8').catch(() => '');
    if (check) {
      console.log(current === text ? 'up to date' : 'STALE: regenerate and review the diff');
      process.exitCode = current === text ? 0 : 1;
    } else if (current !== text) {
      await fs.writeFile(GENERATED_FILE, text);
      console.log(`wrote ${path.relative(process.cwd(), GENERATED_FILE)}`);
    } else console.log('up to date');
  } finally {
    await stop();
  }
}

if (import.meta.main) await main();
