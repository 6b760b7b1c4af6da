import type { Queryable } from '../../db/pool.ts';
import { JOBS_CHANNEL, type JobRow } from '../jobs/jobs.repo.ts';

/** The key a waiting request subscribes to on the jobs channel (payload of the NOTIFY). */
export const resultKey = (jobId: number) => `explorer:${jobId}`;

/**
 * The agent's hand-over in one statement: completes the explorer job this node holds (attempt,
 * still running) with its metadata and without its SQL, stores the result and notifies.
 * Returns false when the node does not hold the job (it ended, or never was this node's).
 */
export async function completeWithResult(
  db: Queryable,
  job: { id: number; nodeId: string; attempt: number },
  meta: Record<string, unknown>,
  body: Buffer,
): Promise<boolean> {
  const r = await db.query(
    `WITH done AS (
       UPDATE jobs SET status = 'succeeded', result = $4, payload = payload - 'sql', last_error = NULL,
              lease_expires_at = NULL, finished_at = now(), updated_at = now()
        WHERE id = $1 AND node_id = $2 AND attempts = $3 AND status = 'running' AND kind LIKE 'explorer.%'
       RETURNING id
     ), ins AS (
       INSERT INTO explorer_results (job_id, body) SELECT id, $5 FROM done
       ON CONFLICT (job_id) DO NOTHING RETURNING job_id
     )
     SELECT pg_notify($6, $7) FROM ins`,
    [job.id, job.nodeId, job.attempt, meta, body, JOBS_CHANNEL, resultKey(job.id)],
  );
  return (r.rowCount ?? 0) > 0;
}

/** Reads and deletes a job's result (a result is handed over once). */
export async function takeResult(db: Queryable, jobId: number): Promise<Buffer | null> {
  const r = await db.query<{ body: Buffer }>(
    'DELETE FROM explorer_results WHERE job_id = $1 AND expires_at > now() RETURNING body',
    [jobId],
  );
  return r.rows[0]?.body ?? null;
}

/** Drops results nobody collected (the request gave up); returns how many. */
export async function sweepResults(db: Queryable): Promise<number> {
  const r = await db.query('DELETE FROM explorer_results WHERE expires_at <= now()');
  return r.rowCount ?? 0;
}

/**
 * Ends an explorer job the API request gave up on (client gone, or no answer in time): a queued
 * job is never claimed, a running one loses its lease (its agent cancels the query).
 */
export async function endJob(db: Queryable, jobId: number, reason: string): Promise<JobRow | null> {
  const r = await db.query<JobRow>(
    `UPDATE jobs SET status = 'dead', last_error = $2, lease_expires_at = NULL, finished_at = now(),
            updated_at = now()
      WHERE id = $1 AND kind LIKE 'explorer.%' AND status IN ('queued', 'running')
     RETURNING *`,
    [jobId, reason],
  );
  return r.rows[0] ?? null;
}

/** The job's status and error, to stop waiting early when it died without a result. */
export async function jobState(
  db: Queryable,
  jobId: number,
): Promise<{ status: string; last_error: string | null } | null> {
  const r = await db.query<{ status: string; last_error: string | null }>(
    'SELECT status, last_error FROM jobs WHERE id = $1',
    [jobId],
  );
  return r.rows[0] ?? null;
}

/** Removes the SQL text from a finished explorer job (the redacted copy stays) and wakes its waiter. */
export async function scrubJob(db: Queryable, jobId: number): Promise<void> {
  await db.query(
    `WITH s AS (UPDATE jobs SET payload = payload - 'sql' WHERE id = $1 AND kind LIKE 'explorer.%' RETURNING id)
     SELECT pg_notify($2, $3) FROM s`,
    [jobId, JOBS_CHANNEL, resultKey(jobId)],
  );
}

/** Safety net: SQL left in finished explorer jobs (e.g. dead-lettered without hooks) is removed. */
export async function scrubFinished(db: Queryable): Promise<number> {
  const r = await db.query(
    `UPDATE jobs SET payload = payload - 'sql'
      WHERE status IN ('succeeded', 'dead') AND created_at > now() - interval '1 day'
        AND kind = 'explorer.query' AND payload ? 'sql'`,
  );
  return r.rowCount ?? 0;
}
