import type pg from 'pg';

/**
 * How the explorer talks to PostgreSQL: the extended query protocol only (one statement per
 * message), with every value in its text form (no client-side type parsing).
 */

/** Every value arrives as PostgreSQL's text form (the executor converts cells by type). */
const RAW_TYPES = { getTypeParser: () => (v: string) => v };

/** Extended protocol, raw text values, rows as arrays. */
export function extended<R extends pg.QueryResultRow = unknown[] & pg.QueryResultRow>(
  c: pg.ClientBase,
  text: string,
  values: unknown[] = [],
  rowMode: 'array' | 'object' = 'array',
): Promise<pg.QueryResult<R>> {
  // `queryMode: 'extended'` (pg >= 8.12; not in @types/pg) forces Parse/Bind/Execute even without values.
  const config = {
    text,
    values,
    queryMode: 'extended',
    types: RAW_TYPES,
    ...(rowMode === 'array' ? { rowMode } : {}),
  };
  return c.query<R>(config as pg.QueryConfig);
}

/** The backend pid of a connected client (pg sets it; @types/pg does not declare it). */
export const backendPid = (c: pg.ClientBase): number => (c as unknown as { processID: number }).processID;
