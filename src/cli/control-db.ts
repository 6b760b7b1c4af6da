/**
 * The CLI's one door into the control plane's code. Operator commands run on the server host
 * (`admin create-key`, `doctor`, `master-key`, `audit`, `status`) reach the control database and the
 * server's key files directly, with the server's own services; they import them from here and
 * nowhere else, so `test/import-rules.test.ts` can hold every other CLI file to the HTTP API.
 */
import path from 'node:path';
import pg from 'pg';
import { dataLayout } from '../embedded/layout.ts';
import { readSecretFile } from '../embedded/secrets.ts';
import { queueStats } from '../server/modules/jobs/jobs.repo.ts';
import { listNodes } from '../server/modules/nodes/nodes.repo.ts';
import { CliError, EXIT } from './api-client.ts';
import { cliSetting } from './settings.ts';

export { addKeyToKeyringFile, createSecretBox, loadKeyringFile } from '../server/crypto/secret-box.ts';
export { keyIdOfPem } from '../server/crypto/signing-key.ts';
export { type Db, withTx } from '../server/db/pool.ts';
export type { Permission } from '../server/http/caller.ts';
export { keyMap, parseCheckpointLines, publicKeysOf } from '../server/modules/audit/audit.checkpoints.ts';
export {
  ExportFormatError,
  exportLines,
  parseExport,
  verifyDatabase,
  verifyExport,
} from '../server/modules/audit/audit.export.ts';
export type { VerifyReport } from '../server/modules/audit/audit.verify.ts';
export { resealPasswords } from '../server/modules/databases/databases.jobs.ts';
export { createDriftService, type DriftReport } from '../server/modules/drift/drift.service.ts';
export { inviteUrl } from '../server/modules/invites/invite-code.ts';
export { createOperatorInvite } from '../server/modules/invites/invites.operator.ts';
export type { InviteRole } from '../server/modules/invites/invites.repo.ts';
export { createOperatorKey } from '../server/modules/keys/keys.service.ts';
export { storeEnrollment } from '../server/modules/nodes/nodes.service.ts';

/**
 * The control DB URL for operator commands run on the server host: BULWARK_DATABASE_URL or
 * BULWARK_DATABASE_URL_FILE when set (a production server), else the data dir's secret file.
 */
export function controlDatabaseUrl(dataDir: string): string {
  const direct = cliSetting('databaseUrl');
  if (direct) return direct;
  const file =
    cliSetting('databaseUrlFile') ?? path.join(dataLayout(dataDir).secrets, 'control-database-url');
  try {
    return readSecretFile(file);
  } catch (err) {
    throw new CliError(`cannot read the control DB URL (${(err as Error).message})`, EXIT.usage);
  }
}

/** What `bulwark status` shows of the control database: the job queue and the nodes. */
export type StackState = {
  queue: { status: string; count: number }[];
  nodes: { name: string; pg_version: string | null; heartbeat_age_s: number | null }[];
};

/**
 * Reads the job queue and the nodes of the stack in `dataDir` (its own control DB URL file), with
 * the server's repositories; throws when the database cannot be read (pg's messages name the host,
 * port, user or database at most, never a password).
 */
export async function readStackState(dataDir: string): Promise<StackState> {
  const db = new pg.Client({
    connectionString: readSecretFile(path.join(dataLayout(dataDir).secrets, 'control-database-url')),
    application_name: 'bulwark-status',
  });
  db.on('error', () => {});
  try {
    await db.connect();
    const queue = await queueStats(db);
    const now = Date.now();
    const nodes = (await listNodes(db)).map((n) => ({
      name: n.name,
      pg_version: n.pg_version,
      heartbeat_age_s: n.last_heartbeat_at ? Math.round((now - n.last_heartbeat_at.getTime()) / 1000) : null,
    }));
    return { queue: queue.map(({ status, count }) => ({ status, count })), nodes };
  } finally {
    await db.end().catch(() => {});
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
