/**
 * Making a backup's record: a fresh data key sealed for it, the row, the `backup.create` job —
 * one transaction (the caller's), shared by the API, the scheduler and in-place restores.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import {
  BACKUP_JOB_KINDS,
  type BackupCreatePayload,
  backupKeyContext,
  backupStorageKey,
} from '../../../shared/contracts/backups.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import type { Tx } from '../../db/pool.ts';
import { enqueueJob } from '../jobs/jobs.repo.ts';
import * as repo from './backups.repo.ts';

/** Attempts of a backup job: a killed agent, a full disk or a pg_dump error are retried with backoff. */
export const BACKUP_MAX_ATTEMPTS = 4;

export type BackupTarget = { id: string; account_id: string; node_id: string; name: string };

/**
 * Inserts the backup and queues its job; returns the backup id, or null when a scheduled slot
 * was already taken (another replica, a re-run).
 */
export async function queueBackup(
  tx: Tx,
  box: SecretBox,
  database: BackupTarget,
  opts: { trigger: repo.BackupTrigger; scheduledFor?: Date | null; retentionDays: number | null; now?: Date },
): Promise<string | null> {
  const id = randomUUID();
  const dataKey = randomBytes(32).toString('base64url');
  const now = opts.now ?? new Date();
  const inserted = await repo.insertBackup(tx, {
    id,
    accountId: database.account_id,
    databaseId: database.id,
    nodeId: database.node_id,
    databaseName: database.name,
    trigger: opts.trigger,
    scheduledFor: opts.scheduledFor ?? null,
    wrappedKey: box.seal(dataKey, backupKeyContext(id)),
    storageKey: backupStorageKey(database.id, id),
    expiresAt: opts.retentionDays === null ? null : new Date(now.getTime() + opts.retentionDays * 86_400_000),
  });
  if (!inserted) return null;
  const payload: BackupCreatePayload = { backup_id: id, database_id: database.id, name: database.name };
  const job = await enqueueJob(tx, {
    nodeId: database.node_id,
    accountId: database.account_id,
    kind: BACKUP_JOB_KINDS.create,
    payload,
    maxAttempts: BACKUP_MAX_ATTEMPTS,
  });
  await repo.setBackupJob(tx, id, job.id);
  return id;
}

/** Hides the backup and queues the removal of its file (the row goes when the agent is done). */
export async function queueBackupDeletion(
  tx: Tx,
  backup: { id: string; account_id: string; database_id: string; node_id: string },
): Promise<void> {
  const job = await enqueueJob(tx, {
    nodeId: backup.node_id,
    accountId: backup.account_id,
    kind: BACKUP_JOB_KINDS.delete,
    payload: { backup_id: backup.id, database_id: backup.database_id },
    maxAttempts: BACKUP_MAX_ATTEMPTS,
  });
  await repo.markDeleting(tx, backup.id, job.id);
}
