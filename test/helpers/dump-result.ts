import type { BackupCreateResult } from '../../src/shared/contracts/backup-results.ts';
import type { MoveOutResult } from '../../src/shared/contracts/move-results.ts';

/**
 * A well-formed `backup.create` result (one table `public.t` of one row), shaped like the real
 * agent's: what a fake agent reports for a dump it did not make.
 */
export const dumpResult = (backupId: string): BackupCreateResult => ({
  backup_id: backupId,
  sha256: 'a'.repeat(64),
  tables: [{ schema: 'public', name: 't', rows: 1, rows_estimate: 1 }],
  tables_total: 1,
  objects: {
    schemas: 1,
    tables: 1,
    views: 0,
    materialized_views: 0,
    sequences: 0,
    indexes: 0,
    functions: 0,
    large_objects: 0,
  },
  size_bytes: 100,
  dump_bytes: 100,
  duration_ms: 1,
  pg_version: '17.0',
  server_version_num: 170000,
  format_version: 1,
  verified: true,
});

/** A well-formed `database.move_out` result: the source froze now and dumped the database. */
export const moveOutResult = (moveId: string): MoveOutResult => ({
  ...dumpResult(moveId),
  frozen_at: new Date().toISOString(),
});
