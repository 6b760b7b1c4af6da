import fs from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { DatabaseJobDeps } from '../jobs/database-common.ts';
import type { BackupJobDeps } from './backup-deps.ts';
import { sweepScratchDatabases } from './backup-restore.ts';
import { type BackupStorage, createLocalStorage } from './backup-storage.ts';
import { findPgBin } from './pg-tools.ts';
import { sweepRestoreLogins } from './restore-login.ts';
import type { S3StorageOptions } from './s3-storage.ts';

/**
 * The backup jobs' dependencies at agent start: the backup dir (made 0700), the PostgreSQL
 * client tools, and the sweep of what a crashed agent left — `.partial` files and scratch
 * databases of restores and drills. Null (no backup jobs offered) when pg_dump is not found or
 * the backup dir cannot be made.
 */
export async function startBackups(opts: {
  database: DatabaseJobDeps;
  admin: pg.Pool;
  stateDir: string;
  backupDir?: string | undefined;
  pgBinDir?: string | undefined;
  /** Off-site copies in S3 (ADR 0022): every backup is uploaded there too. */
  offsite?: S3StorageOptions | undefined;
  log: Logger;
}): Promise<BackupJobDeps | null> {
  const pgBin = findPgBin(opts.pgBinDir);
  if (!pgBin) {
    opts.log.warn('pg_dump not found (set BULWARK_AGENT_PG_BIN): this agent offers no backup jobs');
    return null;
  }
  const dir = path.resolve(opts.backupDir ?? path.join(opts.stateDir, 'backups'));
  try {
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    await fs.chmod(dir, 0o700);
  } catch (err) {
    opts.log.error(
      { err: { message: (err as Error).message } },
      'backup dir unusable: this agent offers no backup jobs',
    );
    return null;
  }
  const local = createLocalStorage(dir);
  let storage: BackupStorage = local;
  if (opts.offsite) {
    // Loaded only when configured (the S3 client is large).
    const { createS3Storage } = await import('./s3-storage.ts');
    const { withOffsiteCopy } = await import('./offsite-storage.ts');
    const s3 = createS3Storage(opts.offsite);
    storage = withOffsiteCopy(local, s3);
    const where = { bucket: opts.offsite.bucket, prefix: opts.offsite.prefix ?? '' };
    opts.log.info(where, 'backups are copied off-site (S3)');
    // Not awaited: an unreachable store must not hold up the agent; its backups fail meanwhile.
    s3.check().catch((err: Error) =>
      opts.log.warn(
        { ...where, err: { name: err.name, message: err.message } },
        'off-site storage not reachable: backups fail until it is',
      ),
    );
  }
  const partials = await storage.sweepPartials();
  const scratch = await sweepScratchDatabases(opts.admin, storage.tag).catch((err: Error) => {
    opts.log.warn({ err: { message: err.message } }, 'scratch databases of earlier restores not swept');
    return [] as string[];
  });
  const logins = await sweepRestoreLogins(opts.admin, storage.tag).catch((err: Error) => {
    opts.log.warn({ err: { message: err.message } }, 'restore logins of earlier restores not swept');
    return 0;
  });
  if (partials > 0 || scratch.length > 0 || logins > 0)
    opts.log.info(
      { partials, scratch: scratch.length, logins },
      'swept what an interrupted backup or restore left',
    );
  return { ...opts.database, storage, pgBin };
}
