import type pg from 'pg';
import { EXPLORER_LIMITS, type SchemaOutput } from './explorer.contract.ts';

const KINDS: Record<string, SchemaOutput['tables'][number]['kind']> = {
  r: 'table',
  v: 'view',
  m: 'materialized_view',
  f: 'foreign_table',
  p: 'partitioned_table',
};

/**
 * Tables, views and their columns in schema public of one database, read by the agent as the
 * admin (catalogs are refused to explorer queries; this is the dedicated way to list them).
 */
export async function readPublicSchema(
  deps: { connectAdmin(database: string): Promise<pg.Client> },
  database: string,
): Promise<SchemaOutput> {
  const c = await deps.connectAdmin(database);
  try {
    const r = await c.query<{
      rel: string;
      kind: string;
      col: string | null;
      type: string | null;
      nullable: boolean;
    }>(
      `SELECT c.relname AS rel, c.relkind::text AS kind, a.attname AS col,
              format_type(a.atttypid, a.atttypmod) AS type, NOT coalesce(a.attnotnull, false) AS nullable
         FROM pg_class c
         JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
         LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
        WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p')
        ORDER BY c.relname, a.attnum
        LIMIT $1`,
      [EXPLORER_LIMITS.maxSchemaColumns + 1],
    );
    const truncated = r.rows.length > EXPLORER_LIMITS.maxSchemaColumns;
    const tables: SchemaOutput['tables'] = [];
    for (const row of r.rows.slice(0, EXPLORER_LIMITS.maxSchemaColumns)) {
      let t = tables.at(-1);
      if (!t || t.name !== row.rel) {
        t = { name: row.rel, kind: KINDS[row.kind] ?? 'table', columns: [] };
        tables.push(t);
      }
      if (row.col !== null)
        t.columns.push({ name: row.col, type: row.type ?? 'unknown', nullable: row.nullable });
    }
    return { tables, truncated };
  } finally {
    await c.end().catch(() => {});
  }
}
