/**
 * The agent side of backups on the server: what a finished `backup.*` job does to its records
 * (in the transaction that finished the job), and the data key a leased job fetches.
 */
import type { Logger } from 'pino';
import {
  BACKUP_JOB_KINDS,
  BACKUP_KEY_KINDS,
  backupCreateResultSchema,
  backupDrillResultSchema,
  backupKeyContext,
} from '../../../shared/contracts/backups.ts';
import { notFound, unavailable } from '../../../shared/errors.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import { notify } from '../../db/notify.ts';
import type { Db, Tx } from '../../db/pool.ts';
import type { AuditService } from '../audit/audit.service.ts';
import { DATABASE_STATUS_CHANNEL } from '../databases/databases.jobs.ts';
import * as dbRepo from '../databases/databases.repo.ts';
import { findLeasedJob, type JobRow } from '../jobs/jobs.repo.ts';
import * as repo from './backups.repo.ts';
import { outboxAlert } from './backups.settings.repo.ts';
import * as restoresRepo from './restores.repo.ts';
import { queueRestoreJob } from './restores.service.ts';

/** NOTIFY channel: a backup or restore changed (payload: its id); waiters (CLI, tests) wake at once. */
export const BACKUP_STATUS_CHANNEL = 'bulwark_backup_status';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const idIn = (job: JobRow, key: string): string | null => {
  const v = job.payload[key];
  return typeof v === 'string' && UUID.test(v) ? v : null;
};

const reasonOf = (job: JobRow, what: string) =>
  `${what}: ${job.last_error ?? 'the job failed'}`.slice(0, 1000);

export function createBackupJobs(deps: {
  db: Db;
  box: SecretBox | null;
  log: Logger;
  audit: Pick<AuditService, 'record'>;
}) {
  const { log } = deps;

  const agentEvent = (
    tx: Tx,
    job: JobRow,
    action: string,
    target: { type: string; id: string },
    ok: boolean,
    details: Record<string, unknown>,
  ) =>
    deps.audit.record(tx, {
      action,
      actorType: 'agent',
      actorId: job.node_id,
      accountId: job.account_id,
      targetType: target.type,
      targetId: target.id,
      outcome: ok ? 'success' : 'failure',
      details: {
        job_id: job.id,
        attempts: job.attempts,
        ...(ok ? {} : { error: (job.last_error ?? '').slice(0, 500) }),
        ...details,
      },
    });

  /** A restore that cannot go on: failed, its new target database with it. */
  async function failRestore(tx: Tx, job: JobRow, restore: restoresRepo.RestoreRow, reason: string) {
    await restoresRepo.markRestoreFailed(tx, restore.id, reason);
    if (restore.target === 'new' && restore.target_database_id) {
      await dbRepo.markFailed(tx, restore.target_database_id, 'provisioning', reason);
      await notify(tx, DATABASE_STATUS_CHANNEL, restore.target_database_id);
    }
    await agentEvent(tx, job, 'restore.failed', { type: 'restore', id: restore.id }, false, {
      backup_id: restore.backup_id,
      target: restore.target,
      reason: reason.slice(0, 500),
    });
    await notify(tx, BACKUP_STATUS_CHANNEL, restore.id);
  }

  async function backupFinished(tx: Tx, job: JobRow, backupId: string, ok: boolean) {
    const backup = await repo.findBackupById(tx, backupId);
    if (!backup || backup.account_id !== job.account_id || backup.node_id !== job.node_id) return;
    const parsed = ok ? backupCreateResultSchema.safeParse(job.result) : null;
    if (parsed?.success && parsed.data.backup_id === backupId) {
      const r = parsed.data;
      await repo.markCompleted(tx, backupId, {
        sizeBytes: r.size_bytes,
        sha256: r.sha256,
        pgVersion: r.pg_version,
        durationMs: r.duration_ms,
        manifest: { tables: r.tables, tables_total: r.tables_total, objects: r.objects },
        startedAt: job.claimed_at,
        offsiteKey: r.offsite_key ?? null,
      });
      await agentEvent(tx, job, 'backup.completed', { type: 'backup', id: backupId }, true, {
        database: backup.database_name,
        trigger: backup.trigger,
        size_bytes: r.size_bytes,
        sha256: r.sha256,
      });
    } else {
      const reason = ok
        ? 'the agent reported a result that does not match the backup'
        : reasonOf(job, 'backup failed');
      await repo.markFailed(tx, backupId, reason);
      await agentEvent(tx, job, 'backup.failed', { type: 'backup', id: backupId }, false, {
        database: backup.database_name,
        trigger: backup.trigger,
      });
    }
    await notify(tx, BACKUP_STATUS_CHANNEL, backupId);
    // An in-place restore waits for its safety backup: go on, or stop without touching anything.
    if (backup.trigger !== 'safety') return;
    const restore = await restoresRepo.lockRestoreAwaitingSafety(tx, backupId);
    if (!restore) return;
    if (!parsed?.success) {
      await failRestore(
        tx,
        job,
        restore,
        `the safety backup failed; nothing was restored (${reasonOf(job, 'backup')})`,
      );
      return;
    }
    const source = await repo.findBackupById(tx, restore.backup_id);
    if (source?.status !== 'completed' || !source.sha256 || !source.manifest) {
      await failRestore(tx, job, restore, 'the backup to restore is no longer available');
      return;
    }
    await queueRestoreJob(tx, restore, source, {
      database_id: source.database_id,
      name: backup.database_name,
      mode: 'in_place',
    });
  }

  async function restoreFinished(tx: Tx, job: JobRow, ok: boolean) {
    const restore = await restoresRepo.lockRestoreOfJob(tx, job.id);
    if (!restore || restore.account_id !== job.account_id) return;
    if (!ok) {
      const what = job.kind === BACKUP_JOB_KINDS.drill ? 'restore drill failed' : 'restore failed';
      await failRestore(tx, job, restore, reasonOf(job, what));
      if (job.kind === BACKUP_JOB_KINDS.drill) {
        await repo.markVerifyFailed(tx, restore.backup_id, reasonOf(job, 'restore drill failed'));
        // A failed drill is an alert.
        await agentEvent(
          tx,
          job,
          'backup.drill_failed',
          { type: 'backup', id: restore.backup_id },
          false,
          {},
        );
        if (job.account_id)
          await outboxAlert(tx, job.account_id, 'backup.drill_failed', {
            backup_id: restore.backup_id,
            database_id: restore.source_database_id,
            reason: reasonOf(job, 'restore drill failed').slice(0, 500),
          });
      }
      return;
    }
    await restoresRepo.markRestoreCompleted(tx, restore.id, job.result ?? {}, job.claimed_at);
    if (job.kind === BACKUP_JOB_KINDS.drill) {
      const drill = backupDrillResultSchema.safeParse(job.result);
      await repo.markVerified(tx, restore.backup_id, drill.success && drill.data.offsite_verified === true);
    }
    if (restore.target === 'new' && restore.target_database_id) {
      await dbRepo.markReady(tx, restore.target_database_id);
      await notify(tx, DATABASE_STATUS_CHANNEL, restore.target_database_id);
    }
    await agentEvent(tx, job, 'restore.completed', { type: 'restore', id: restore.id }, true, {
      backup_id: restore.backup_id,
      target: restore.target,
    });
    await notify(tx, BACKUP_STATUS_CHANNEL, restore.id);
  }

  return {
    /** Registered for `backup.` jobs: runs in the transaction that finished the job. */
    async onJobFinished(tx: Tx, job: JobRow): Promise<void> {
      const backupId = idIn(job, 'backup_id');
      if (!backupId) return;
      const ok = job.status === 'succeeded';
      switch (job.kind) {
        case BACKUP_JOB_KINDS.create:
          await backupFinished(tx, job, backupId, ok);
          break;
        case BACKUP_JOB_KINDS.restore:
        case BACKUP_JOB_KINDS.drill:
          await restoreFinished(tx, job, ok);
          break;
        case BACKUP_JOB_KINDS.delete:
          // The file is gone: so is the row. A dead delete job leaves the row hidden; the sweeper retries.
          if (ok) await repo.removeBackupRow(tx, backupId);
          else
            log.warn(
              { backup_id: backupId, job: job.id },
              'backup file deletion failed; retried by the sweeper',
            );
          break;
        default:
          break;
      }
    },

    /**
     * The data key of the backup a running `backup.create` / `restore` / `drill` job names, for the
     * node that holds the job's current lease only; anything else is a 404 that says nothing more.
     */
    async backupKey(nodeId: string, jobId: number, attempt: number): Promise<string> {
      const job = await findLeasedJob(deps.db, jobId, nodeId, attempt);
      const backupId = job ? idIn(job, 'backup_id') : null;
      if (!job || !backupId || !job.account_id || !BACKUP_KEY_KINDS.has(job.kind))
        throw notFound('Job lease');
      const sealed = await repo.findWrappedKey(deps.db, backupId, nodeId);
      if (!sealed || sealed.account_id !== job.account_id) throw notFound('Job lease');
      if (!deps.box) throw unavailable('The server has no master key configured');
      log.info({ job: jobId, kind: job.kind, backup_id: backupId }, 'backup key handed to its agent');
      return deps.box.open(sealed.wrapped_key, backupKeyContext(backupId));
    },
  };
}

export type BackupJobs = ReturnType<typeof createBackupJobs>;
