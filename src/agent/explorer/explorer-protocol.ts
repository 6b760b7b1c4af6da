import type pg from 'pg';

/**
 * How the explorer talks to PostgreSQL: the extended query protocol only (one statement per
 * message), with every value in its text form (no client-side type parsing). The explorer pool's
 * connections run in pg's pipeline mode (`pipeline: true`): a query is written without waiting
 * for the previous one's answer, each with its own Sync, and results resolve in order.
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

export type Step = { text: string; values?: unknown[]; rowMode?: 'array' | 'object' };
export type Settled = PromiseSettledResult<pg.QueryResult<pg.QueryResultRow>>;

/**
 * Sends every step in one write (the socket is corked while they are queued) and waits for all
 * of them: one round trip on a pipelined connection. Never rejects; results are in step order.
 * PostgreSQL runs the steps one after the other, so inside an explicit transaction a failed step
 * aborts it and every later step fails with 25P02 without being parsed.
 */
export function pipelined(c: pg.ClientBase, steps: Step[]): Promise<Settled[]> {
  const stream = (c as unknown as { connection?: { stream?: { cork?(): void; uncork?(): void } } }).connection
    ?.stream;
  stream?.cork?.();
  try {
    return Promise.allSettled(steps.map((s) => extended(c, s.text, s.values, s.rowMode)));
  } finally {
    stream?.uncork?.();
  }
}

/** The backend pid of a connected client (pg sets it; @types/pg does not declare it). */
export const backendPid = (c: pg.ClientBase): number => (c as unknown as { processID: number }).processID;
