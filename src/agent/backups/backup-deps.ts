import type { ChildProcess } from 'node:child_process';
import pg from 'pg';
import type { DatabaseJobDeps } from '../jobs/database-common.ts';
import { type JobContext, PermanentJobError } from '../jobs/job-context.ts';
import type { ClusterAccess } from '../postgres/steward.ts';
import { pinnedOptions, stewardPassword } from '../postgres/steward.ts';
import type { BackupStorage } from './backup-storage.ts';
import { type PgLogin, TOOL_SETTINGS } from './pg-tools.ts';

/** What the backup jobs need besides the job context; built once in the agent's wiring. */
export type BackupJobDeps = DatabaseJobDeps & {
  storage: BackupStorage;
  /** The directory of pg_dump and pg_restore (the cluster's major version or newer). */
  pgBin: string;
  /** Plaintext bytes per archive chunk (default 1 MiB; tests use small ones). */
  chunkSize?: number;
  /** Test hook: each pg_dump / pg_restore as it starts (a test kills one mid-run). */
  onTool?: (tool: 'pg_dump' | 'pg_restore', child: ChildProcess) => void;
};

/** The backup's data key from the server (never from a payload). */
export async function getBackupKey(ctx: JobContext): Promise<Buffer> {
  if (!ctx.backupKey) throw new PermanentJobError('this agent cannot fetch backup keys');
  const key = await ctx.backupKey();
  if (!Buffer.isBuffer(key) || key.length !== 32)
    throw new PermanentJobError('the server sent an invalid backup key');
  return key;
}

/** The steward's login into `database` (a tenant's, or a scratch database the steward owns). */
export function stewardLogin(
  cluster: ClusterAccess,
  who: { databaseId: string; steward: string },
  database: string,
): PgLogin {
  return {
    host: cluster.pgHost,
    port: cluster.pgPort,
    database,
    user: who.steward,
    password: stewardPassword(cluster.key, who.databaseId, { steward: who.steward }),
  };
}

/**
 * A steward session with the tools' settings (pinned at login; no statement timeout, row
 * security off) and no client-side query timeout: counting a large table's rows takes as long
 * as it takes, and the job's signal ends it.
 */
export async function connectForTools(cluster: ClusterAccess, login: PgLogin): Promise<pg.Client> {
  const client = new pg.Client({
    host: cluster.pgHost,
    port: cluster.pgPort,
    database: login.database,
    user: login.user,
    password: login.password,
    application_name: 'bulwark-backup',
    connectionTimeoutMillis: 10_000,
    options: pinnedOptions(TOOL_SETTINGS),
  });
  client.on('error', () => {});
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => {});
    throw err;
  }
  return client;
}
