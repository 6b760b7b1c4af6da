import type { Queryable } from '../../db/pool.ts';
import type { PageCursor } from '../../http/pagination.ts';

export type RestoreStatus = 'pending' | 'running' | 'completed' | 'failed';
export type RestoreTarget = 'new' | 'in_place' | 'drill';

export type RestoreRow = {
  id: string;
  account_id: string;
  backup_id: string;
  source_database_id: string;
  target_database_id: string | null;
  target_database_name: string | null;
  target: RestoreTarget;
  status: RestoreStatus;
  safety_backup_id: string | null;
  job_id: string | null;
  scheduled_for: Date | null;
  failure_reason: string | null;
  result: Record<string, unknown> | null;
  created_at: Date;
  started_at: Date | null;
  completed_at: Date | null;
  /** What its running job last reported (phase, bytes; `jobs.progress`). */
  progress: Record<string, unknown> | null;
  created_us: string;
};

const COLUMNS = `r.id, r.account_id, r.backup_id, r.source_database_id, r.target_database_id,
  t.name AS target_database_name, r.target,
  CASE WHEN r.status = 'pending' AND j.status = 'running' THEN 'running' ELSE r.status END AS status,
  r.safety_backup_id, r.job_id::text AS job_id, r.scheduled_for, r.failure_reason, r.result, r.created_at,
  coalesce(r.started_at, CASE WHEN r.status IN ('pending', 'running') THEN j.claimed_at END) AS started_at,
  r.completed_at, CASE WHEN j.status = 'running' THEN j.progress END AS progress, (extract(epoch FROM r.created_at) * 1000000)::bigint::text AS created_us`;

const FROM =
  'restores r LEFT JOIN jobs j ON j.id = r.job_id LEFT JOIN databases t ON t.id = r.target_database_id';

export type NewRestore = {
  id: string;
  accountId: string;
  backupId: string;
  sourceDatabaseId: string;
  targetDatabaseId: string | null;
  target: RestoreTarget;
  safetyBackupId: string | null;
  scheduledFor: Date | null;
};

/** Inserts a restore; a drill slot already taken (another replica) inserts nothing: false. */
export async function insertRestore(db: Queryable, r: NewRestore): Promise<boolean> {
  const res = await db.query(
    `INSERT INTO restores (id, account_id, backup_id, source_database_id, target_database_id, target,
                           safety_backup_id, scheduled_for)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
     ON CONFLICT (source_database_id, scheduled_for) WHERE scheduled_for IS NOT NULL DO NOTHING`,
    [
      r.id,
      r.accountId,
      r.backupId,
      r.sourceDatabaseId,
      r.targetDatabaseId,
      r.target,
      r.safetyBackupId,
      r.scheduledFor,
    ],
  );
  return res.rowCount === 1;
}

export async function setRestoreJob(db: Queryable, id: string, jobId: number): Promise<void> {
  await db.query('UPDATE restores SET job_id = $2, updated_at = now() WHERE id = $1', [id, jobId]);
}

export async function findRestore(
  db: Queryable,
  accountId: string,
  sourceDatabaseId: string,
  id: string,
): Promise<RestoreRow | null> {
  const r = await db.query<RestoreRow>(
    `SELECT ${COLUMNS} FROM ${FROM} WHERE r.id = $1 AND r.account_id = $2 AND r.source_database_id = $3`,
    [id, accountId, sourceDatabaseId],
  );
  return r.rows[0] ?? null;
}

/** A restore by id, locked (job hooks). */
export async function lockRestore(db: Queryable, id: string): Promise<RestoreRow | null> {
  const r = await db.query<RestoreRow>(`SELECT ${COLUMNS} FROM ${FROM} WHERE r.id = $1 FOR UPDATE OF r`, [
    id,
  ]);
  return r.rows[0] ?? null;
}

/** The restore a job runs (restore or drill), locked. */
export async function lockRestoreOfJob(db: Queryable, jobId: number): Promise<RestoreRow | null> {
  const r = await db.query<RestoreRow>(`SELECT ${COLUMNS} FROM ${FROM} WHERE r.job_id = $1 FOR UPDATE OF r`, [
    jobId,
  ]);
  return r.rows[0] ?? null;
}

/** The in-place restore waiting for this safety backup, locked. */
export async function lockRestoreAwaitingSafety(
  db: Queryable,
  safetyBackupId: string,
): Promise<RestoreRow | null> {
  const r = await db.query<RestoreRow>(
    `SELECT ${COLUMNS} FROM ${FROM}
      WHERE r.safety_backup_id = $1 AND r.status = 'pending' AND r.job_id IS NULL
      FOR UPDATE OF r`,
    [safetyBackupId],
  );
  return r.rows[0] ?? null;
}

/** The restore into a new database that waits for this database's create job, locked. */
export async function lockRestoreAwaitingTarget(
  db: Queryable,
  targetDatabaseId: string,
): Promise<RestoreRow | null> {
  const r = await db.query<RestoreRow>(
    `SELECT ${COLUMNS} FROM ${FROM}
      WHERE r.target_database_id = $1 AND r.target = 'new' AND r.status = 'pending' AND r.job_id IS NULL
      FOR UPDATE OF r`,
    [targetDatabaseId],
  );
  return r.rows[0] ?? null;
}

export async function listRestores(
  db: Queryable,
  accountId: string,
  sourceDatabaseId: string,
  page: { after: PageCursor | null; limit: number },
): Promise<RestoreRow[]> {
  const r = await db.query<RestoreRow>(
    `SELECT ${COLUMNS} FROM ${FROM}
      WHERE r.account_id = $1 AND r.source_database_id = $2
        AND ($3::bigint IS NULL
             OR (r.created_at, r.id) < (timestamptz 'epoch' + $3::bigint * interval '1 microsecond', $4::uuid))
      ORDER BY r.created_at DESC, r.id DESC
      LIMIT $5`,
    [accountId, sourceDatabaseId, page.after?.ts ?? null, page.after?.id ?? null, page.limit + 1],
  );
  return r.rows;
}

export async function markRestoreCompleted(
  db: Queryable,
  id: string,
  result: Record<string, unknown>,
  startedAt: Date | null,
): Promise<void> {
  await db.query(
    `UPDATE restores SET status = 'completed', result = $2, started_at = coalesce($3, started_at, now()),
            completed_at = now(), failure_reason = NULL, updated_at = now()
      WHERE id = $1`,
    [id, result, startedAt],
  );
}

export async function markRestoreFailed(db: Queryable, id: string, reason: string): Promise<void> {
  await db.query(
    `UPDATE restores SET status = 'failed', failure_reason = $2, completed_at = now(), updated_at = now()
      WHERE id = $1 AND status <> 'completed'`,
    [id, reason.slice(0, 1000)],
  );
}

/** A restore in flight from this backup or into this database (one at a time). */
export async function restoreInFlight(db: Queryable, databaseId: string): Promise<boolean> {
  const r = await db.query(
    `SELECT 1 FROM restores
      WHERE (source_database_id = $1 OR target_database_id = $1) AND target <> 'drill'
        AND status IN ('pending', 'running') LIMIT 1`,
    [databaseId],
  );
  return (r.rowCount ?? 0) > 0;
}

/** A restore in flight that reads this backup (as its source or as its safety backup). */
export async function backupInUse(db: Queryable, backupId: string): Promise<boolean> {
  const r = await db.query(
    `SELECT 1 FROM restores WHERE (backup_id = $1 OR safety_backup_id = $1) AND status IN ('pending', 'running') LIMIT 1`,
    [backupId],
  );
  return (r.rowCount ?? 0) > 0;
}
