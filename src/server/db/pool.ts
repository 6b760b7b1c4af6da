import pg from 'pg';
import type { Logger } from 'pino';

// int8 as string would leak into every API; our bigints (job ids, audit seq) fit in 2^53.
pg.types.setTypeParser(20, (v) => Number(v));

export type Db = pg.Pool;
export type Tx = pg.PoolClient;
export type Queryable = pg.Pool | pg.PoolClient | pg.Client;

export function createPool(connectionString: string, max: number, log: Logger): pg.Pool {
  const pool = new pg.Pool({
    connectionString,
    max,
    idleTimeoutMillis: 30_000,
    connectionTimeoutMillis: 5_000,
    application_name: 'bulwark-server',
  });
  // Without this handler an idle client killed by the server (restart) crashes the process.
  pool.on('error', (err) => log.warn({ err: { message: err.message } }, 'idle control DB connection lost'));
  // A checked-out client whose connection dies between two queries emits 'error' too (the pool
  // only listens while a client is idle): without a listener that would crash the process. The
  // caller's next query fails instead, and the pool discards the broken client on release.
  pool.on('connect', (client) => {
    client.on('error', (err) => log.warn({ err: { message: err.message } }, 'control DB connection lost'));
  });
  return pool;
}

/** Runs fn in a transaction on one connection; rolls back on any error. */
export async function withTx<T>(pool: pg.Pool, fn: (tx: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  try {
    await client.query('BEGIN');
    const out = await fn(client);
    await client.query('COMMIT');
    return out;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    client.release();
  }
}
