import type { Queryable } from '../../db/pool.ts';

export type JobStatus = 'queued' | 'running' | 'succeeded' | 'dead';

export type JobRow = {
  id: number;
  node_id: string;
  account_id: string | null;
  kind: string;
  payload: Record<string, unknown>;
  status: JobStatus;
  attempts: number;
  max_attempts: number;
  run_after: Date;
  lease_expires_at: Date | null;
  claimed_at: Date | null;
  result: Record<string, unknown> | null;
  last_error: string | null;
  created_at: Date;
  updated_at: Date;
  finished_at: Date | null;
};

export const JOBS_CHANNEL = 'bulwark_jobs';

export type EnqueueInput = {
  nodeId: string;
  kind: string;
  payload?: Record<string, unknown>;
  accountId?: string | null;
  maxAttempts?: number;
};

/**
 * Queues a job and notifies listeners; the NOTIFY is delivered when the surrounding
 * transaction commits, so an agent never wakes for a job it cannot see yet.
 */
export async function enqueueJob(db: Queryable, input: EnqueueInput): Promise<JobRow> {
  const r = await db.query<JobRow>(
    `WITH j AS (
       INSERT INTO jobs (node_id, account_id, kind, payload, max_attempts)
       VALUES ($1, $2, $3, $4, $5) RETURNING *
     ), n AS (SELECT pg_notify($6, $1::text))
     SELECT j.* FROM j, n`,
    [
      input.nodeId,
      input.accountId ?? null,
      input.kind,
      input.payload ?? {},
      input.maxAttempts ?? 5,
      JOBS_CHANNEL,
    ],
  );
  return r.rows[0]!;
}

/**
 * Claims the next runnable job of a node: a queued job whose time has come, or a running
 * one whose lease expired (its agent died). SKIP LOCKED lets concurrent claimers pass each
 * other; a job whose lease expired after its last allowed attempt is dead-lettered.
 *
 * Jobs that change or read one database (`database.*`, and the backup jobs that use it:
 * `ORDERED_BACKUP_KINDS`) run in the order they were queued: a job waits while an older one for
 * the same database is queued (e.g. retrying with backoff) or running, so a retried create can
 * never overtake the delete queued after it, nor an old allowlist a newer one, nor a backup run
 * while its database is deleted or its password rotated (migration 0026).
 *
 * `now` (tests) stands in for the database clock when deciding what is due and when the new
 * lease ends; production leaves it out and uses the transaction's `now()`.
 */
export async function claimJob(
  db: Queryable,
  nodeId: string,
  leaseMs: number,
  now?: Date,
): Promise<JobRow | null> {
  await db.query(
    `UPDATE jobs SET status = 'dead', finished_at = now(), updated_at = now(),
            last_error = coalesce(last_error || '; ', '') || 'lease expired after the last attempt'
      WHERE node_id = $1 AND status = 'running' AND lease_expires_at < coalesce($2::timestamptz, now())
        AND attempts >= max_attempts`,
    [nodeId, now ?? null],
  );
  const r = await db.query<JobRow>(
    `WITH next AS (
       SELECT id FROM jobs
        WHERE node_id = $1
          AND ((status = 'queued' AND run_after <= coalesce($3::timestamptz, now()))
               OR (status = 'running' AND lease_expires_at < coalesce($3::timestamptz, now())
                   AND attempts < max_attempts))
          AND NOT ((kind LIKE 'database.%' OR kind IN ('backup.create', 'backup.restore', 'backup.drill'))
               AND EXISTS (
                SELECT 1 FROM jobs o
                 WHERE o.payload->>'database_id' = jobs.payload->>'database_id'
                   AND o.id < jobs.id
                   AND (o.kind LIKE 'database.%' OR o.kind IN ('backup.create', 'backup.restore', 'backup.drill'))
                   AND o.status IN ('queued', 'running')))
        ORDER BY run_after, id
        LIMIT 1
        FOR UPDATE SKIP LOCKED
     )
     UPDATE jobs j
        SET status = 'running', attempts = j.attempts + 1, updated_at = now(), claimed_at = now(),
            lease_expires_at = coalesce($3::timestamptz, now()) + make_interval(secs => $2::double precision / 1000)
       FROM next WHERE j.id = next.id
     RETURNING j.*, ${PHYSICAL_NAME_OF_JOB} AS physical_name`,
    [nodeId, leaseMs, now ?? null],
  );
  const row = r.rows[0];
  return row ? withPhysicalName(row) : null;
}

/**
 * The physical name (migration 0036) of the database a job names, for the job as handed out: a
 * database made from a warm-pool spare is called by the spare's name on its node, not by its label.
 * Jobs are queued with the label (a job queued while the create ran could not know better, and the
 * account's job list shows labels); the agent gets the name it must act on. Resolved for jobs of
 * the database's own node, for the move steps (whose target is another node; `move_in`'s
 * `create` names it too) and for backup jobs (a backup stays on the node that made it, which
 * the database may have left since; a physical name never changes). Never for `database.create`, which reports the physical name itself.
 */
const PHYSICAL_NAME_OF_JOB = `(
  SELECT d.pg_name FROM databases d
   WHERE j.kind <> 'database.create' AND jsonb_typeof(j.payload->'name') = 'string'
     AND d.id = (CASE WHEN j.payload->>'database_id' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                      THEN (j.payload->>'database_id')::uuid END)
     AND (d.node_id = j.node_id OR j.kind LIKE 'database.move\\_%' OR j.kind LIKE 'backup.%')
     AND d.pg_name IS NOT NULL)`;

function withPhysicalName(row: JobRow & { physical_name?: string | null }): JobRow {
  const { physical_name: physical, ...job } = row;
  if (!physical) return job;
  // A step that makes the database again elsewhere (`database.move_in`) describes it in `create`.
  const create = job.payload.create;
  const remade =
    typeof create === 'object' &&
    create !== null &&
    !Array.isArray(create) &&
    (create as Record<string, unknown>).database_id === job.payload.database_id &&
    typeof (create as Record<string, unknown>).name === 'string'
      ? { create: { ...(create as Record<string, unknown>), name: physical } }
      : {};
  return { ...job, payload: { ...job.payload, name: physical, ...remade } };
}

/** The running job this node holds at this attempt, locked until the transaction ends. */
export async function lockRunningJob(
  db: Queryable,
  jobId: number,
  nodeId: string,
  attempt: number,
): Promise<JobRow | null> {
  const r = await db.query<JobRow>(
    `SELECT * FROM jobs WHERE id = $1 AND node_id = $2 AND attempts = $3 AND status = 'running' FOR UPDATE`,
    [jobId, nodeId, attempt],
  );
  return r.rows[0] ?? null;
}

/** Records success; only the holder of the current lease (node + attempt) may do so. */
export async function completeJob(
  db: Queryable,
  jobId: number,
  nodeId: string,
  attempt: number,
  result: Record<string, unknown>,
): Promise<JobRow | null> {
  const r = await db.query<JobRow>(
    `UPDATE jobs SET status = 'succeeded', result = $4, last_error = NULL, lease_expires_at = NULL,
            finished_at = now(), updated_at = now()
      WHERE id = $1 AND node_id = $2 AND attempts = $3 AND status = 'running'
     RETURNING *`,
    [jobId, nodeId, attempt, result],
  );
  return r.rows[0] ?? null;
}

/**
 * The backup kinds that take their place in a database's job order (with `database.*`): they
 * read or replace the database. `backup.delete` and `backup.download` touch only the archive.
 */
export const ORDERED_BACKUP_KINDS = ['backup.create', 'backup.restore', 'backup.drill'] as const;

/**
 * Extends the lease of a job this node holds (running, this attempt, lease not yet expired) to
 * `leaseMs` from now; null when the lease is lost (expired, reclaimed, finished, or not this node's).
 */
export async function renewLease(
  db: Queryable,
  jobId: number,
  nodeId: string,
  attempt: number,
  leaseMs: number,
): Promise<Date | null> {
  const r = await db.query<{ lease_expires_at: Date }>(
    `UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $4::double precision / 1000),
            updated_at = now()
      WHERE id = $1 AND node_id = $2 AND attempts = $3 AND status = 'running' AND lease_expires_at > now()
     RETURNING lease_expires_at`,
    [jobId, nodeId, attempt, leaseMs],
  );
  return r.rows[0]?.lease_expires_at ?? null;
}

/** Records how far a job this node holds is (`progress`, a small object); false when not leased. */
export async function recordProgress(
  db: Queryable,
  jobId: number,
  nodeId: string,
  attempt: number,
  progress: Record<string, unknown>,
): Promise<boolean> {
  const r = await db.query(
    `UPDATE jobs SET progress = $4
      WHERE id = $1 AND node_id = $2 AND attempts = $3 AND status = 'running' AND lease_expires_at > now()`,
    [jobId, nodeId, attempt, progress],
  );
  return (r.rowCount ?? 0) > 0;
}

/** Backoff before retry n (1-based): 1 s, 2 s, 4 s … capped at 5 minutes, with ±20 % jitter. */
export function retryDelayMs(attempt: number, baseMs = 1_000): number {
  const raw = Math.min(baseMs * 2 ** Math.max(0, attempt - 1), 300_000);
  return Math.round(raw * (0.8 + Math.random() * 0.4));
}

/** Records a failure: retried later with backoff, or dead-lettered after the last attempt. */
export async function failJob(
  db: Queryable,
  jobId: number,
  nodeId: string,
  attempt: number,
  error: string,
  retryable: boolean,
  baseDelayMs = 1_000,
): Promise<JobRow | null> {
  const r = await db.query<JobRow>(
    `UPDATE jobs SET
        status = CASE WHEN $5 AND attempts < max_attempts THEN 'queued' ELSE 'dead' END,
        run_after = CASE WHEN $5 AND attempts < max_attempts
                         THEN now() + make_interval(secs => $6::double precision / 1000) ELSE run_after END,
        finished_at = CASE WHEN $5 AND attempts < max_attempts THEN NULL ELSE now() END,
        last_error = $4, lease_expires_at = NULL, updated_at = now()
      WHERE id = $1 AND node_id = $2 AND attempts = $3 AND status = 'running'
     RETURNING *`,
    [jobId, nodeId, attempt, error.slice(0, 4000), retryable, retryDelayMs(attempt, baseDelayMs)],
  );
  return r.rows[0] ?? null;
}

/**
 * When a node's next job becomes runnable (a retry's run_after or a lease expiry), if ever.
 * `now` (tests) stands in for the database clock, as in `claimJob`.
 */
export async function nextWakeAt(db: Queryable, nodeId: string, now?: Date): Promise<Date | null> {
  const r = await db.query<{ at: Date | null }>(
    `WITH c AS (SELECT coalesce($2::timestamptz, now()) AS now)
     SELECT least(
        (SELECT min(run_after) FROM jobs, c WHERE node_id = $1 AND status = 'queued' AND run_after > c.now),
        (SELECT min(lease_expires_at) FROM jobs WHERE node_id = $1 AND status = 'running'),
        -- A due job that could not be claimed waits behind an older job of its database (or
        -- became due a moment ago): look again within a second rather than spin.
        (SELECT c.now + interval '1 second' FROM jobs, c
          WHERE node_id = $1 AND status = 'queued' AND run_after <= c.now LIMIT 1)) AS at`,
    [nodeId, now ?? null],
  );
  return r.rows[0]?.at ?? null;
}

export async function getJob(db: Queryable, jobId: number): Promise<JobRow | null> {
  const r = await db.query<JobRow>('SELECT * FROM jobs WHERE id = $1', [jobId]);
  return r.rows[0] ?? null;
}

export async function queueStats(
  db: Queryable,
): Promise<{ status: JobStatus; count: number; oldest: Date | null }[]> {
  const r = await db.query<{ status: JobStatus; count: number; oldest: Date | null }>(
    `SELECT status, count(*)::int AS count, min(created_at) AS oldest FROM jobs GROUP BY status ORDER BY status`,
  );
  return r.rows;
}

/**
 * Dead-letters the node's running jobs whose lease expired after their last allowed attempt
 * and returns them (so the caller can finish what they drive in the same transaction).
 */
export async function deadLetterExpiredLeases(db: Queryable, nodeId: string): Promise<JobRow[]> {
  const r = await db.query<JobRow>(
    `UPDATE jobs SET status = 'dead', finished_at = now(), updated_at = now(),
            last_error = coalesce(last_error || '; ', '') || 'lease expired after the last attempt'
      WHERE node_id = $1 AND status = 'running' AND lease_expires_at < now() AND attempts >= max_attempts
     RETURNING *`,
    [nodeId],
  );
  return r.rows;
}

/** The job if this node holds its current lease (running, this attempt, lease not expired). */
export async function findLeasedJob(
  db: Queryable,
  jobId: number,
  nodeId: string,
  attempt: number,
): Promise<JobRow | null> {
  const r = await db.query<JobRow>(
    `SELECT * FROM jobs
      WHERE id = $1 AND node_id = $2 AND attempts = $3 AND status = 'running' AND lease_expires_at > now()`,
    [jobId, nodeId, attempt],
  );
  return r.rows[0] ?? null;
}

export type AccountJobRow = Pick<
  JobRow,
  | 'id'
  | 'kind'
  | 'status'
  | 'attempts'
  | 'max_attempts'
  | 'last_error'
  | 'created_at'
  | 'claimed_at'
  | 'finished_at'
> & { database: string | null; created_us: string };

/**
 * A job as its account sees it: `database` is the label of the job's database (by its
 * `database_id`: a database made from a warm-pool spare is called by the spare's name on its node,
 * and jobs handed to the agent with that name are stored with it, ADR 0034), else the name the job
 * was queued with. A database-scoped caller's filter uses the same label.
 */
const ACCOUNT_JOBS_FROM = `FROM jobs j
  LEFT JOIN databases d ON d.account_id = j.account_id
   AND d.id = (CASE WHEN j.payload->>'database_id' ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
                    THEN (j.payload->>'database_id')::uuid END)`;
const JOB_LABEL = `coalesce(d.name, j.payload->>'name')`;
const ACCOUNT_JOB_COLUMNS = `j.id, j.kind, j.status, j.attempts, j.max_attempts, j.last_error, j.created_at, j.claimed_at,
  j.finished_at, ${JOB_LABEL} AS database, (extract(epoch FROM j.created_at) * 1000000)::bigint::text AS created_us`;

/**
 * An account's jobs, newest first. `databases` (a database-scoped caller) limits them to
 * jobs about those databases. Payloads are never returned: they may hold SQL.
 */
export async function listAccountJobs(
  db: Queryable,
  accountId: string,
  databases: readonly string[] | null,
  page: { limit: number; after: { ts: number; id: string } | null },
): Promise<AccountJobRow[]> {
  const r = await db.query<AccountJobRow>(
    `SELECT ${ACCOUNT_JOB_COLUMNS} ${ACCOUNT_JOBS_FROM}
      WHERE j.account_id = $1
        AND ($2::text[] IS NULL OR ${JOB_LABEL} = ANY($2::text[]))
        AND ($3::bigint IS NULL
             OR (j.created_at, j.id) < (timestamptz 'epoch' + $3::bigint * interval '1 microsecond', $4::bigint))
      ORDER BY j.created_at DESC, j.id DESC
      LIMIT $5`,
    [accountId, databases, page.after?.ts ?? null, page.after?.id ?? null, page.limit + 1],
  );
  return r.rows;
}

export async function getAccountJob(
  db: Queryable,
  accountId: string,
  databases: readonly string[] | null,
  jobId: number,
): Promise<AccountJobRow | null> {
  const r = await db.query<AccountJobRow>(
    `SELECT ${ACCOUNT_JOB_COLUMNS} ${ACCOUNT_JOBS_FROM}
      WHERE j.id = $1 AND j.account_id = $2 AND ($3::text[] IS NULL OR ${JOB_LABEL} = ANY($3::text[]))`,
    [jobId, accountId, databases],
  );
  return r.rows[0] ?? null;
}

/** Hands a just-claimed job back to the queue (its claimer vanished before it got it). */
export async function releaseJob(
  db: Queryable,
  jobId: number,
  nodeId: string,
  attempt: number,
): Promise<void> {
  await db.query(
    `UPDATE jobs SET status = 'queued', attempts = attempts - 1, lease_expires_at = NULL, claimed_at = NULL,
            updated_at = now()
      WHERE id = $1 AND node_id = $2 AND attempts = $3 AND status = 'running'`,
    [jobId, nodeId, attempt],
  );
}
