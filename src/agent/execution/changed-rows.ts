/**
 * The rows an execution's transaction changed (ADR 0021, "affected rows"): every row it inserted,
 * updated or deleted in user tables, whatever statement did it — a top-level INSERT/UPDATE/
 * DELETE/MERGE, DML in a CTE, `EXPLAIN ANALYZE` of a write, a trigger, a function, a foreign key's
 * cascade, CREATE TABLE AS. Command tags would count only the first kind.
 *
 * Read from PostgreSQL's own per-backend counters (`pg_stat_xact_user_tables`), in the execution's
 * session: once right after BEGIN and once before COMMIT/ROLLBACK, and the difference taken. In
 * PostgreSQL 15 these counters are not reset at each transaction's end (a backend flushes them at
 * most once a second, and only while idle outside a transaction), so only the difference within
 * the transaction is this transaction's. Nothing the request runs can lower them (resetting
 * statistics is for superusers). Not counted: temporary tables (gone with the session), TRUNCATE
 * and table rewrites (no row counts), and rows changed outside this backend.
 *
 * Every name is schema-qualified and every operator pinned to pg_catalog: the query runs in the
 * tenant's session after the tenant's SQL.
 */
export const CHANGED_ROWS_SQL = `SELECT pg_catalog.current_setting('track_counts'),
       COALESCE(pg_catalog.sum(n_tup_ins OPERATOR(pg_catalog.+) n_tup_upd OPERATOR(pg_catalog.+) n_tup_del), 0)::pg_catalog.text
  FROM pg_catalog.pg_stat_xact_user_tables
 WHERE NOT pg_catalog.starts_with(schemaname::pg_catalog.text, 'pg_temp_')`;

/** The counter's value from the query's one row; throws when PostgreSQL does not count. */
export function parseChangedRows(row: (string | null)[] | undefined): number {
  if (row?.[0] !== 'on')
    throw new Error('the node cannot count changed rows: track_counts is off in PostgreSQL');
  const n = Number(row[1]);
  if (!Number.isSafeInteger(n) || n < 0) throw new Error(`unexpected changed-row count: ${row[1]}`);
  return n;
}
