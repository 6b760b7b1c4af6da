import type { BackupManifest } from '../../../shared/contracts/backups.ts';
import type { Queryable } from '../../db/pool.ts';
import type { PageCursor } from '../../http/pagination.ts';

/** The manifest of a completed backup without its sha256 (a column of its own). */
export type StoredManifest = Omit<BackupManifest, 'sha256'>;

export type BackupStatus = 'pending' | 'running' | 'completed' | 'failed';
export type BackupTrigger = 'scheduled' | 'manual' | 'safety' | 'drill';

/** A backup as the service sees it: never its wrapped data key (see findWrappedKey). */
export type BackupRow = {
  id: string;
  account_id: string;
  database_id: string;
  node_id: string;
  database_name: string;
  /** `pending` while its job waits, `running` while the agent holds it (read from the job). */
  status: BackupStatus;
  trigger: BackupTrigger;
  scheduled_for: Date | null;
  size_bytes: string | null;
  sha256: string | null;
  storage_key: string;
  job_id: string | null;
  pg_version: string | null;
  duration_ms: string | null;
  manifest: StoredManifest | null;
  failure_reason: string | null;
  created_at: Date;
  started_at: Date | null;
  completed_at: Date | null;
  verified_at: Date | null;
  verify_failure: string | null;
  expires_at: Date | null;
  attempts: number | null;
  /** The off-site copy's object key (null: none was made). */
  offsite_key: string | null;
  offsite_verified_at: Date | null;
  /** What its running job last reported (phase, bytes; `jobs.progress`). */
  progress: Record<string, unknown> | null;
  created_us: string;
};

// A pending backup whose job an agent holds is running; its start is the job's first claim.
const COLUMNS = `b.id, b.account_id, b.database_id, b.node_id, b.database_name,
  CASE WHEN b.status = 'pending' AND j.status = 'running' THEN 'running' ELSE b.status END AS status,
  b.trigger, b.scheduled_for, b.size_bytes::text AS size_bytes, b.sha256, b.storage_key,
  b.job_id::text AS job_id, b.pg_version, b.duration_ms::text AS duration_ms, b.manifest,
  b.failure_reason, b.created_at,
  coalesce(b.started_at, CASE WHEN b.status IN ('pending', 'running') THEN j.claimed_at END) AS started_at,
  b.completed_at, b.verified_at, b.verify_failure, b.expires_at, j.attempts,
  b.offsite_key, b.offsite_verified_at, CASE WHEN j.status = 'running' THEN j.progress END AS progress,
  (extract(epoch FROM b.created_at) * 1000000)::bigint::text AS created_us`;

const FROM = 'backups b LEFT JOIN jobs j ON j.id = b.job_id';

export type NewBackup = {
  id: string;
  accountId: string;
  databaseId: string;
  nodeId: string;
  databaseName: string;
  trigger: BackupTrigger;
  scheduledFor: Date | null;
  wrappedKey: string;
  storageKey: string;
  expiresAt: Date | null;
};

/** Inserts a backup; a scheduled slot already filled (another replica) inserts nothing: false. */
export async function insertBackup(db: Queryable, b: NewBackup): Promise<boolean> {
  const r = await db.query(
    `INSERT INTO backups (id, account_id, database_id, node_id, database_name, trigger, scheduled_for,
                          wrapped_key, storage_key, expires_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
     ON CONFLICT (database_id, scheduled_for) WHERE scheduled_for IS NOT NULL DO NOTHING`,
    [
      b.id,
      b.accountId,
      b.databaseId,
      b.nodeId,
      b.databaseName,
      b.trigger,
      b.scheduledFor,
      b.wrappedKey,
      b.storageKey,
      b.expiresAt,
    ],
  );
  return r.rowCount === 1;
}

export async function setBackupJob(db: Queryable, id: string, jobId: number): Promise<void> {
  await db.query('UPDATE backups SET job_id = $2, updated_at = now() WHERE id = $1', [id, jobId]);
}

/** One backup of a database in an account (deleted ones are gone as far as the API knows). */
export async function findBackup(
  db: Queryable,
  accountId: string,
  databaseId: string,
  id: string,
  opts: { forUpdate?: boolean } = {},
): Promise<BackupRow | null> {
  const r = await db.query<BackupRow>(
    `SELECT ${COLUMNS} FROM ${FROM}
      WHERE b.id = $1 AND b.account_id = $2 AND b.database_id = $3 AND b.deleted_at IS NULL
      ${opts.forUpdate ? 'FOR UPDATE OF b' : ''}`,
    [id, accountId, databaseId],
  );
  return r.rows[0] ?? null;
}

/** A backup by id alone, for the job hooks (the job names it; the row's account is checked there). */
export async function findBackupById(db: Queryable, id: string): Promise<BackupRow | null> {
  const r = await db.query<BackupRow>(`SELECT ${COLUMNS} FROM ${FROM} WHERE b.id = $1 FOR UPDATE OF b`, [id]);
  return r.rows[0] ?? null;
}

/** The sealed data key of a backup held by this node (the job secret and the download need it). */
export async function findWrappedKey(
  db: Queryable,
  id: string,
  nodeId?: string,
): Promise<{ wrapped_key: string; account_id: string; storage_key: string } | null> {
  const r = await db.query<{ wrapped_key: string; account_id: string; storage_key: string }>(
    `SELECT wrapped_key, account_id, storage_key FROM backups
      WHERE id = $1 AND ($2::uuid IS NULL OR node_id = $2)`,
    [id, nodeId ?? null],
  );
  return r.rows[0] ?? null;
}

/** A database's backups, newest first (`limit + 1` rows: the extra one says there is more). */
export async function listBackups(
  db: Queryable,
  accountId: string,
  databaseId: string,
  page: { after: PageCursor | null; limit: number; status?: BackupStatus | undefined },
): Promise<BackupRow[]> {
  const r = await db.query<BackupRow>(
    `SELECT * FROM (
       SELECT ${COLUMNS} FROM ${FROM}
        WHERE b.account_id = $1 AND b.database_id = $2 AND b.deleted_at IS NULL
          AND ($3::bigint IS NULL
               OR (b.created_at, b.id) < (timestamptz 'epoch' + $3::bigint * interval '1 microsecond', $4::uuid))
        ORDER BY b.created_at DESC, b.id DESC
     ) s
     WHERE ($5::text IS NULL OR s.status = $5)
     LIMIT $6`,
    [
      accountId,
      databaseId,
      page.after?.ts ?? null,
      page.after?.id ?? null,
      page.status ?? null,
      page.limit + 1,
    ],
  );
  return r.rows;
}

export type BackupOutcome = {
  sizeBytes: number;
  sha256: string;
  pgVersion: string | null;
  durationMs: number | null;
  manifest: StoredManifest;
  startedAt: Date | null;
  offsiteKey?: string | null;
};

export async function markCompleted(db: Queryable, id: string, o: BackupOutcome): Promise<void> {
  await db.query(
    `UPDATE backups SET status = 'completed', size_bytes = $2, sha256 = $3, pg_version = $4, duration_ms = $5,
            manifest = $6, started_at = coalesce($7, started_at, now()), completed_at = now(),
            failure_reason = NULL, offsite_key = $8, updated_at = now()
      WHERE id = $1`,
    [
      id,
      o.sizeBytes,
      o.sha256,
      o.pgVersion,
      Math.round(o.durationMs ?? 0),
      o.manifest,
      o.startedAt,
      o.offsiteKey ?? null,
    ],
  );
}

export async function markFailed(db: Queryable, id: string, reason: string): Promise<void> {
  await db.query(
    `UPDATE backups SET status = 'failed', failure_reason = $2, updated_at = now()
      WHERE id = $1 AND status <> 'completed'`,
    [id, reason.slice(0, 1000)],
  );
}

/** A drill restored and checked the backup; `offsiteVerified`: it also read the off-site copy whole. */
export async function markVerified(db: Queryable, id: string, offsiteVerified = false): Promise<void> {
  await db.query(
    `UPDATE backups SET verified_at = now(), verify_failure = NULL,
            offsite_verified_at = CASE WHEN $2 THEN now() ELSE offsite_verified_at END, updated_at = now()
      WHERE id = $1`,
    [id, offsiteVerified],
  );
}

export async function markVerifyFailed(db: Queryable, id: string, reason: string): Promise<void> {
  await db.query('UPDATE backups SET verify_failure = $2, updated_at = now() WHERE id = $1', [
    id,
    reason.slice(0, 1000),
  ]);
}

/** Hides a backup from the API and names the job that removes its file. */
export async function markDeleting(db: Queryable, id: string, deleteJobId: number | null): Promise<void> {
  await db.query(
    'UPDATE backups SET deleted_at = coalesce(deleted_at, now()), delete_job_id = $2, updated_at = now() WHERE id = $1',
    [id, deleteJobId],
  );
}

/** The row of a backup whose file is gone (restores that named it go with it). */
export async function removeBackupRow(db: Queryable, id: string): Promise<void> {
  await db.query('DELETE FROM backups WHERE id = $1 AND deleted_at IS NOT NULL', [id]);
}

export type ExpiredBackup = {
  id: string;
  account_id: string;
  database_id: string;
  node_id: string;
  database_name: string;
  storage_key: string;
  expires_at: Date;
};

/**
 * Backups past their expiry that no restore in progress needs, locked for the sweeper (other
 * replicas skip them), oldest first. A live database's newest completed backup is never among
 * them: retention never leaves a database with no good backup at all (a deleted database's
 * backups simply expire).
 */
export async function lockExpired(db: Queryable, now: Date, limit: number): Promise<ExpiredBackup[]> {
  const r = await db.query<ExpiredBackup>(
    `SELECT b.id, b.account_id, b.database_id, b.node_id, b.database_name, b.storage_key, b.expires_at
       FROM backups b
      WHERE b.deleted_at IS NULL AND b.expires_at IS NOT NULL AND b.expires_at <= $1
        AND b.status IN ('completed', 'failed')
        AND NOT EXISTS (SELECT 1 FROM restores r
                         WHERE (r.backup_id = b.id OR r.safety_backup_id = b.id)
                           AND r.status IN ('pending', 'running'))
        AND (b.id IS DISTINCT FROM (SELECT g.id FROM backups g
                                     WHERE g.database_id = b.database_id AND g.status = 'completed'
                                       AND g.deleted_at IS NULL
                                     ORDER BY g.completed_at DESC, g.id DESC LIMIT 1)
             OR EXISTS (SELECT 1 FROM databases d WHERE d.id = b.database_id AND d.status = 'deleted'))
      ORDER BY b.expires_at, b.id
      LIMIT $2
      FOR UPDATE OF b SKIP LOCKED`,
    [now, limit],
  );
  return r.rows;
}

/** Backups whose deletion was requested but whose delete job is gone or dead (the sweeper retries). */
export async function lockStrandedDeletions(db: Queryable, limit: number): Promise<ExpiredBackup[]> {
  const r = await db.query<ExpiredBackup>(
    `SELECT b.id, b.account_id, b.database_id, b.node_id, b.database_name, b.storage_key, b.expires_at
       FROM backups b LEFT JOIN jobs j ON j.id = b.delete_job_id
      WHERE b.deleted_at IS NOT NULL AND (j.id IS NULL OR j.status = 'dead')
        AND b.deleted_at < now() - interval '1 minute'
      ORDER BY b.deleted_at, b.id
      LIMIT $1
      FOR UPDATE OF b SKIP LOCKED`,
    [limit],
  );
  return r.rows;
}

/** Latest completed backup of a database (freshness; the drill restores it). */
export async function latestGood(
  db: Queryable,
  databaseId: string,
): Promise<{ id: string; completed_at: Date } | null> {
  const r = await db.query<{ id: string; completed_at: Date }>(
    `SELECT id, completed_at FROM backups
      WHERE database_id = $1 AND status = 'completed' AND deleted_at IS NULL
      ORDER BY completed_at DESC, id DESC LIMIT 1`,
    [databaseId],
  );
  return r.rows[0] ?? null;
}

/** Last good backup time of each of these databases (absent: none). */
export async function lastGoodTimes(
  db: Queryable,
  databaseIds: readonly string[],
): Promise<Map<string, Date>> {
  if (databaseIds.length === 0) return new Map();
  const r = await db.query<{ database_id: string; at: Date }>(
    `SELECT database_id, max(completed_at) AS at FROM backups
      WHERE database_id = ANY($1::uuid[]) AND status = 'completed' AND deleted_at IS NULL
      GROUP BY database_id`,
    [databaseIds],
  );
  return new Map(r.rows.map((row) => [row.database_id, row.at]));
}
