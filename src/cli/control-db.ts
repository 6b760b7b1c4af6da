import path from 'node:path';
import pg from 'pg';
import { dataLayout } from '../embedded/layout.ts';
import { readSecretFile } from '../embedded/secrets.ts';
import { CliError, EXIT } from './api-client.ts';

/**
 * The control DB URL for operator commands run on the server host: BULWARK_DATABASE_URL or
 * BULWARK_DATABASE_URL_FILE when set (a production server), else the data dir's secret file.
 */
export function controlDatabaseUrl(dataDir: string): string {
  if (process.env.BULWARK_DATABASE_URL) return process.env.BULWARK_DATABASE_URL;
  const file =
    process.env.BULWARK_DATABASE_URL_FILE ?? path.join(dataLayout(dataDir).secrets, 'control-database-url');
  try {
    return readSecretFile(file);
  } catch (err) {
    throw new CliError(`cannot read the control DB URL (${(err as Error).message})`, EXIT.usage);
  }
}

/** A small pool on the control DB for one operator command (idle errors never crash the CLI). */
export function controlPool(dataDir: string, applicationName: string, max = 2): pg.Pool {
  const pool = new pg.Pool({
    connectionString: controlDatabaseUrl(dataDir),
    max,
    application_name: applicationName,
  });
  pool.on('error', () => {});
  return pool;
}
