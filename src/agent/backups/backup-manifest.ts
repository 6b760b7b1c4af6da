/**
 * What a backup records of its database and what a restore is checked against: object counts,
 * the planner's row estimate and the exact row count per table. At backup the objects are
 * counted on a steward session (pinned settings, row security off so a policy cannot hide rows)
 * in the very snapshot pg_dump reads (`--snapshot`), and the exact rows are read from the dump
 * stream itself (dump-rows.ts; `count(*)` in that snapshot where it cannot): the record describes
 * exactly what the archive holds. After a restore, both are counted in the restored database.
 *
 * System schemas (pg_catalog, information_schema, pg_toast…, pg_temp…) and the template's guard
 * schema are left out: they are not the tenant's and are not restored.
 */
import type pg from 'pg';
import {
  type BackupObjects,
  type BackupTable,
  MAX_BACKUP_TABLES,
  type RestoreCheck,
} from '../../shared/contracts/backups.ts';
import { quoteIdent } from '../../shared/identifiers.ts';
import { tableKey } from './dump-rows.ts';

type Queryable = Pick<pg.ClientBase, 'query'>;

/** Schemas that are never the tenant's (SQL predicate on a `pg_namespace` alias `n`). */
const TENANT_SCHEMA = `n.nspname OPERATOR(pg_catalog.<>) ALL (ARRAY['pg_catalog', 'information_schema', 'bulwark_guard']::pg_catalog.name[])
  AND n.nspname::pg_catalog.text NOT LIKE 'pg\\_toast%'
  AND n.nspname::pg_catalog.text NOT LIKE 'pg\\_temp\\_%'`;

export async function countObjects(c: Queryable): Promise<BackupObjects> {
  const r = await c.query<Record<keyof BackupObjects, string>>(
    `SELECT
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_namespace n WHERE ${TENANT_SCHEMA}) AS schemas,
       (SELECT pg_catalog.count(*) FILTER (WHERE k.relkind OPERATOR(pg_catalog.=) ANY ('{r,p}'::pg_catalog."char"[])) FROM pg_catalog.pg_class k JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) k.relnamespace WHERE ${TENANT_SCHEMA}) AS tables,
       (SELECT pg_catalog.count(*) FILTER (WHERE k.relkind OPERATOR(pg_catalog.=) 'v') FROM pg_catalog.pg_class k JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) k.relnamespace WHERE ${TENANT_SCHEMA}) AS views,
       (SELECT pg_catalog.count(*) FILTER (WHERE k.relkind OPERATOR(pg_catalog.=) 'm') FROM pg_catalog.pg_class k JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) k.relnamespace WHERE ${TENANT_SCHEMA}) AS materialized_views,
       (SELECT pg_catalog.count(*) FILTER (WHERE k.relkind OPERATOR(pg_catalog.=) 'S') FROM pg_catalog.pg_class k JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) k.relnamespace WHERE ${TENANT_SCHEMA}) AS sequences,
       (SELECT pg_catalog.count(*) FILTER (WHERE k.relkind OPERATOR(pg_catalog.=) ANY ('{i,I}'::pg_catalog."char"[])) FROM pg_catalog.pg_class k JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) k.relnamespace WHERE ${TENANT_SCHEMA}) AS indexes,
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace WHERE ${TENANT_SCHEMA}) AS functions,
       (SELECT pg_catalog.count(*) FROM pg_catalog.pg_largeobject_metadata) AS large_objects`,
  );
  const row = r.rows[0]!;
  const out = {} as BackupObjects;
  for (const k of Object.keys(row) as (keyof BackupObjects)[]) out[k] = Number(row[k]);
  return out;
}

/**
 * Every ordinary and partitioned-leaf table of the tenant, largest first (by pages), with the
 * planner's estimate; the first MAX_BACKUP_TABLES are then counted exactly.
 */
export async function listTables(
  c: Queryable,
): Promise<{ tables: { schema: string; name: string; estimate: number | null }[]; total: number }> {
  const r = await c.query<{ schema: string; name: string; estimate: string; total: string }>(
    `SELECT n.nspname::pg_catalog.text AS schema, k.relname::pg_catalog.text AS name,
            k.reltuples::pg_catalog.int8::pg_catalog.text AS estimate,
            pg_catalog.count(*) OVER ()::pg_catalog.text AS total
       FROM pg_catalog.pg_class k JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) k.relnamespace
      WHERE k.relkind OPERATOR(pg_catalog.=) 'r' AND ${TENANT_SCHEMA}
      ORDER BY k.relpages DESC, n.nspname, k.relname
      LIMIT $1`,
    [MAX_BACKUP_TABLES],
  );
  const total = Number(r.rows[0]?.total ?? 0);
  return {
    total,
    tables: r.rows.map((t) => {
      const e = Number(t.estimate);
      return { schema: t.schema, name: t.name, estimate: e < 0 ? null : e };
    }),
  };
}

/** Exact rows of each table (one statement per table, on the caller's snapshot). */
export async function countRows(
  c: Queryable,
  tables: readonly { schema: string; name: string; estimate?: number | null }[],
  signal?: AbortSignal,
): Promise<BackupTable[]> {
  const out: BackupTable[] = [];
  for (const t of tables) {
    signal?.throwIfAborted();
    // ONLY: a parent's rows are its own (a partition's rows are counted as that partition).
    const r = await c.query<{ n: string }>(
      `SELECT pg_catalog.count(*)::pg_catalog.text AS n FROM ONLY ${quoteIdent(t.schema)}.${quoteIdent(t.name)}`,
    );
    out.push({
      schema: t.schema,
      name: t.name,
      rows: Number(r.rows[0]?.n ?? 0),
      rows_estimate: t.estimate ?? null,
    });
  }
  return out;
}

/**
 * The record's rows per listed table at backup: from the dump stream (`DumpRowCounter`) where it
 * holds the table's data, else (a table whose data pg_dump leaves out, such as an extension's
 * own, or a stream this reader does not know) `count(*)` on `c`, which is still in the dump's
 * snapshot.
 */
export async function tableRows(
  c: Queryable,
  tables: readonly { schema: string; name: string; estimate: number | null }[],
  fromDump: { rows: Map<string, number> } | { unsupported: string },
  signal?: AbortSignal,
  onUnsupported?: (reason: string) => void,
): Promise<BackupTable[]> {
  if ('unsupported' in fromDump) {
    onUnsupported?.(fromDump.unsupported);
    return countRows(c, tables, signal);
  }
  const missing = tables.filter((t) => !fromDump.rows.has(tableKey(t.schema, t.name)));
  const counted = new Map(
    (await countRows(c, missing, signal)).map((t) => [tableKey(t.schema, t.name), t.rows]),
  );
  return tables.map((t) => {
    const k = tableKey(t.schema, t.name);
    return {
      schema: t.schema,
      name: t.name,
      rows: fromDump.rows.get(k) ?? counted.get(k)!,
      rows_estimate: t.estimate,
    };
  });
}

/**
 * Compares a restored database with the backup's record: every object count equal, every
 * recorded table present with exactly its recorded rows. Throws with the first differences.
 * Three statements, whatever the number of tables: the object counts, which recorded tables exist
 * (one catalog query), then the exact rows of every one that does (one `count(*)` per table).
 */
export async function checkRestored(
  c: Queryable,
  expected: { tables: readonly BackupTable[]; tables_total: number; objects: BackupObjects },
  signal?: AbortSignal,
): Promise<RestoreCheck> {
  const objects = await countObjects(c);
  const problems: string[] = [];
  for (const k of Object.keys(expected.objects) as (keyof BackupObjects)[]) {
    if (objects[k] !== expected.objects[k])
      problems.push(`${k}: ${objects[k]} restored, ${expected.objects[k]} backed up`);
  }
  signal?.throwIfAborted();
  const found = await c.query<{ i: number }>(
    `SELECT t.i::pg_catalog.int4 AS i
       FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.text[]), pg_catalog.unnest($2::pg_catalog.text[]))
            WITH ORDINALITY AS t(s, r, i)
      WHERE EXISTS (SELECT 1 FROM pg_catalog.pg_class k JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) k.relnamespace
                     WHERE n.nspname::pg_catalog.text OPERATOR(pg_catalog.=) t.s
                       AND k.relname::pg_catalog.text OPERATOR(pg_catalog.=) t.r
                       AND k.relkind OPERATOR(pg_catalog.=) 'r')`,
    [expected.tables.map((t) => t.schema), expected.tables.map((t) => t.name)],
  );
  const present = new Set(found.rows.map((r) => Number(r.i) - 1));
  const there = expected.tables.filter((t, i) => {
    if (!present.has(i)) problems.push(`table ${t.schema}.${t.name} missing`);
    return present.has(i);
  });
  let rows = 0;
  if (there.length > 0) {
    signal?.throwIfAborted();
    // ONLY: a parent's rows are its own (a partition's rows are counted as that partition).
    const counted = await c.query<Record<string, string>>(
      `SELECT ${there
        .map(
          (t, i) =>
            `(SELECT pg_catalog.count(*) FROM ONLY ${quoteIdent(t.schema)}.${quoteIdent(t.name)})::pg_catalog.text AS c${i}`,
        )
        .join(', ')}`,
    );
    const row = counted.rows[0]!;
    there.forEach((t, i) => {
      const got = Number(row[`c${i}`]);
      rows += got;
      if (got !== t.rows)
        problems.push(`table ${t.schema}.${t.name}: ${got} rows restored, ${t.rows} backed up`);
    });
  }
  if (problems.length > 0)
    throw new Error(
      `the restored database does not match the backup: ${problems.slice(0, 10).join('; ')}`.slice(0, 2000),
    );
  return { tables_checked: there.length, rows_checked: rows, objects };
}
