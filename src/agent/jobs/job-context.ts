import type pg from 'pg';
import type { Logger } from 'pino';

/** What a job handler may use. The admin pool is the only admin connection to the cluster. */
export type JobContext = {
  admin: pg.Pool;
  log: Logger;
  signal: AbortSignal;
};

/** A failure the handler knows is final (bad input): no retry. Anything else is retried. */
export class PermanentJobError extends Error {}

export type JobHandler = (
  payload: Record<string, unknown>,
  ctx: JobContext,
) => Promise<Record<string, unknown>>;
