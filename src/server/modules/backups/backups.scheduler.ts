/**
 * The backup clock of the control plane, one tick a minute on every replica (each step is safe
 * to run on several at once): the daily backups, the restore drills, the retention sweeper and
 * the freshness alerts. Each database is handled in its own transaction, so one database's
 * trouble (a node gone, a bad row) never stops the others; the job queue retries what fails on
 * the node.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { BACKUP_JOB_KINDS, type BackupDrillPayload } from '../../../shared/contracts/backups.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import { type Db, withTx } from '../../db/pool.ts';
import type { AuditService } from '../audit/audit.service.ts';
import { enqueueJob } from '../jobs/jobs.repo.ts';
import { BACKUP_MAX_ATTEMPTS, queueBackup, queueBackupDeletion } from './backups.records.ts';
import * as repo from './backups.repo.ts';
import type { BackupDefaults } from './backups.service.ts';
import * as settingsRepo from './backups.settings.repo.ts';
import * as restoresRepo from './restores.repo.ts';
import { manifestOf } from './restores.service.ts';

const BATCH = 200;
const TICK_MS = 60_000;

type SchedulerDeps = {
  db: Db;
  box: SecretBox | null;
  log: Logger;
  audit: Pick<AuditService, 'record'>;
  defaults: BackupDefaults;
};

/** One step for each item, each in its own transaction; a failure is logged and the rest go on. */
async function eachAlone<T>(
  log: Logger,
  items: readonly T[],
  what: string,
  step: (item: T) => Promise<boolean>,
): Promise<number> {
  let done = 0;
  for (const item of items) {
    try {
      if (await step(item)) done += 1;
    } catch (err) {
      log.error(
        { err, item: (item as { id?: string }).id },
        `${what} failed for one database; the others go on`,
      );
    }
  }
  return done;
}

/** Queues the daily backup of every ready database whose slot has come (at most one per slot). */
export async function runScheduledBackups(deps: SchedulerDeps, now = new Date()): Promise<number> {
  const box = deps.box;
  if (!box) return 0;
  const due = await settingsRepo.dueScheduledBackups(deps.db, deps.defaults, now, BATCH);
  return eachAlone(deps.log, due, 'scheduled backup', (d) =>
    withTx(deps.db, async (tx) => {
      const id = await queueBackup(tx, box, d, {
        trigger: 'scheduled',
        scheduledFor: d.slot,
        retentionDays: d.retention_days,
        now,
      });
      if (!id) return false;
      await deps.audit.record(tx, {
        action: 'backup.created',
        actorType: 'system',
        accountId: d.account_id,
        targetType: 'backup',
        targetId: id,
        details: { database: d.name, trigger: 'scheduled', scheduled_for: d.slot.toISOString() },
      });
      return true;
    }),
  );
}

/** Queues a restore drill of each database's latest good backup when its period's drill is due. */
export async function runDrills(deps: SchedulerDeps, now = new Date()): Promise<number> {
  const due = await settingsRepo.dueDrills(deps.db, deps.defaults, now, BATCH);
  return eachAlone(deps.log, due, 'restore drill', (d) =>
    withTx(deps.db, async (tx) => {
      const backup = await repo.findBackup(tx, d.account_id, d.id, d.backup_id);
      if (backup?.status !== 'completed') return false;
      const restoreId = randomUUID();
      const inserted = await restoresRepo.insertRestore(tx, {
        id: restoreId,
        accountId: d.account_id,
        backupId: backup.id,
        sourceDatabaseId: d.id,
        targetDatabaseId: null,
        target: 'drill',
        safetyBackupId: null,
        scheduledFor: d.slot,
      });
      if (!inserted) return false;
      const payload: BackupDrillPayload = {
        backup_id: backup.id,
        database_id: d.id,
        name: backup.database_name,
        expected: manifestOf(backup),
      };
      const job = await enqueueJob(tx, {
        nodeId: backup.node_id,
        accountId: d.account_id,
        kind: BACKUP_JOB_KINDS.drill,
        payload,
        maxAttempts: BACKUP_MAX_ATTEMPTS,
      });
      await restoresRepo.setRestoreJob(tx, restoreId, job.id);
      await deps.audit.record(tx, {
        action: 'restore.started',
        actorType: 'system',
        accountId: d.account_id,
        targetType: 'restore',
        targetId: restoreId,
        details: { database: d.name, backup_id: backup.id, target: 'drill' },
      });
      return true;
    }),
  );
}

/**
 * Retention: every backup past its expiry is hidden and its file's removal queued (the row goes
 * when the agent reports it gone). Never a database's newest good backup, never one a restore in
 * progress reads. Deletions whose job died are queued again. Returns how many were queued.
 */
export async function sweepExpiredBackups(deps: SchedulerDeps, now = new Date()): Promise<number> {
  let total = 0;
  for (;;) {
    const n = await withTx(deps.db, async (tx) => {
      const rows = await repo.lockExpired(tx, now, BATCH);
      for (const b of rows) {
        await queueBackupDeletion(tx, b);
        await deps.audit.record(tx, {
          action: 'backup.deleted',
          actorType: 'system',
          accountId: b.account_id,
          targetType: 'backup',
          targetId: b.id,
          details: { database: b.database_name, reason: 'retention', expired_at: b.expires_at.toISOString() },
        });
      }
      return rows.length;
    });
    total += n;
    if (n < BATCH) break;
  }
  await withTx(deps.db, async (tx) => {
    for (const b of await repo.lockStrandedDeletions(tx, BATCH)) await queueBackupDeletion(tx, b);
  });
  if (total) deps.log.info({ backups: total }, 'expired backups queued for deletion');
  return total;
}

/**
 * Freshness: a database whose last good backup (or, with none, its ready time) is older than its
 * RPO raises one `backup.stale` alert per stale spell — an audit event, and a row in the event
 * outbox where the installation has one.
 */
export async function checkFreshness(deps: SchedulerDeps, now = new Date()): Promise<number> {
  const stale = await settingsRepo.staleDatabases(deps.db, deps.defaults, now, 1000);
  return eachAlone(deps.log, stale, 'freshness alert', (s) =>
    withTx(deps.db, async (tx) => {
      if (!(await settingsRepo.noteStaleAlert(tx, s.id, s.account_id, s.last_good_at))) return false;
      const ageS = Math.floor((now.getTime() - s.since.getTime()) / 1000);
      const details = {
        database: s.name,
        database_id: s.id,
        last_good_at: s.last_good_at?.toISOString() ?? null,
        age_seconds: ageS,
        rpo_hours: s.rpo_hours,
      };
      await deps.audit.record(tx, {
        action: 'backup.stale',
        actorType: 'system',
        accountId: s.account_id,
        outcome: 'failure',
        targetType: 'database',
        targetId: s.id,
        details,
      });
      await settingsRepo.outboxAlert(tx, s.account_id, 'backup.stale', details);
      deps.log.warn(details, 'backup older than its RPO');
      return true;
    }),
  );
}

/** The minute tick; `start` runs it until `stop`. */
export function createBackupScheduler(deps: SchedulerDeps & { tickMs?: number }) {
  let timer: NodeJS.Timeout | null = null;
  let running: Promise<void> | null = null;
  let stopped = false;

  const tick = async () => {
    for (const [what, step] of [
      ['scheduled backups', runScheduledBackups],
      ['restore drills', runDrills],
      ['retention sweep', sweepExpiredBackups],
      ['freshness check', checkFreshness],
    ] as const) {
      if (stopped) return;
      try {
        await step(deps);
      } catch (err) {
        deps.log.error({ err }, `backup ${what} failed`);
      }
    }
  };

  const schedule = () => {
    if (stopped) return;
    timer = setTimeout(() => {
      running = tick().finally(() => {
        running = null;
        schedule();
      });
    }, deps.tickMs ?? TICK_MS);
    timer.unref();
  };

  return {
    tick,
    start() {
      stopped = false;
      schedule();
    },
    async stop() {
      stopped = true;
      if (timer) clearTimeout(timer);
      await running;
    },
  };
}
