/**
 * Governed requests' deliveries (0019): each execution or dry run sent to a node, the jobs that
 * carry them, the sealed results, and the event outbox. Callers pass `tx` for changes.
 */
import type { Queryable } from '../../db/pool.ts';

// --- Deliveries -------------------------------------------------------------------------------

export async function insertExecution(
  tx: Queryable,
  e: {
    requestId: string;
    mode: 'execute' | 'dry_run';
    jti: string;
    sqlSha256: string;
    priorStatus: string;
    userId: string | null;
    keyId: string | null;
  },
): Promise<string> {
  const r = await tx.query<{ id: string }>(
    `INSERT INTO request_executions (request_id, mode, jti, sql_sha256, prior_status, actor_user_id, actor_key_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id`,
    [e.requestId, e.mode, e.jti, e.sqlSha256, e.priorStatus, e.userId, e.keyId],
  );
  return r.rows[0]!.id;
}

export async function setDelivery(
  q: Queryable,
  executionId: string,
  delivery: 'channel' | 'queue',
  jobId: number | null,
): Promise<void> {
  await q.query('UPDATE request_executions SET delivery = $2, job_id = $3 WHERE id = $1', [
    executionId,
    delivery,
    jobId,
  ]);
}

export type ExecutionRow = {
  id: string;
  request_id: string;
  mode: 'execute' | 'dry_run';
  status: 'running' | 'executed' | 'failed' | 'refused';
  sql_sha256: string;
  prior_status: string;
  job_id: string | null;
  actor_user_id: string | null;
  actor_key_id: string | null;
};

/** A delivery still running, locked: exactly one path (the channel's answer or the job's) settles it. */
export async function lockRunningExecution(
  tx: Queryable,
  where: { id: string } | { jobId: number },
): Promise<ExecutionRow | null> {
  const r = await tx.query<ExecutionRow>(
    `SELECT id, request_id, mode, status, sql_sha256, prior_status, job_id, actor_user_id, actor_key_id
       FROM request_executions
      WHERE ${'id' in where ? 'id = $1' : 'job_id = $1'} AND status = 'running' FOR UPDATE`,
    ['id' in where ? where.id : where.jobId],
  );
  return r.rows[0] ?? null;
}

export async function executionStatus(q: Queryable, id: string): Promise<ExecutionRow['status'] | null> {
  return (await executionOutcome(q, id))?.status ?? null;
}

export async function executionOutcome(
  q: Queryable,
  id: string,
): Promise<{ status: ExecutionRow['status']; outcome: unknown } | null> {
  const r = await q.query<{ status: ExecutionRow['status']; outcome: unknown }>(
    'SELECT status, outcome FROM request_executions WHERE id = $1',
    [id],
  );
  return r.rows[0] ?? null;
}

/** Channel deliveries still running long after they were sent (their server stopped waiting). */
export async function lostDeliveries(
  q: Queryable,
  olderThanS: number,
  limit: number,
): Promise<{ id: string; mode: 'execute' | 'dry_run' }[]> {
  const r = await q.query<{ id: string; mode: 'execute' | 'dry_run' }>(
    `SELECT id, mode FROM request_executions
      WHERE status = 'running' AND delivery IS DISTINCT FROM 'queue'
        AND started_at < now() - $1 * interval '1 second'
      ORDER BY started_at LIMIT $2`,
    [olderThanS, limit],
  );
  return r.rows;
}

export async function finishExecution(
  tx: Queryable,
  id: string,
  status: 'executed' | 'failed' | 'refused',
  outcome: unknown,
): Promise<void> {
  await tx.query(
    `UPDATE request_executions SET status = $2, outcome = $3, finished_at = now() WHERE id = $1`,
    [id, status, JSON.stringify(outcome)],
  );
}

/** Ends a request job nobody claimed yet (true), or leaves a claimed one running (false). */
export async function endQueuedJob(tx: Queryable, jobId: number, why: string): Promise<boolean> {
  const r = await tx.query(
    `UPDATE jobs SET status = 'dead', last_error = $2, finished_at = now(), updated_at = now(),
            payload = payload - 'sql' - 'token'
      WHERE id = $1 AND status = 'queued'`,
    [jobId, why],
  );
  return (r.rowCount ?? 0) > 0;
}

/** A preflight dry run's job: its state and outcome (read back once, then scrubbed). */
export async function preflightJob(
  q: Queryable,
  jobId: number,
): Promise<{ status: string; result: unknown; last_error: string | null } | null> {
  const r = await q.query<{ status: string; result: unknown; last_error: string | null }>(
    'SELECT status, result, last_error FROM jobs WHERE id = $1',
    [jobId],
  );
  return r.rows[0] ?? null;
}

/** A finished request job keeps no SQL, no token and no rows. */
export async function scrubJob(tx: Queryable, jobId: number, result: unknown): Promise<void> {
  await tx.query(`UPDATE jobs SET payload = payload - 'sql' - 'token', result = $2 WHERE id = $1`, [
    jobId,
    result === null ? null : JSON.stringify(result),
  ]);
}

// --- Results -----------------------------------------------------------------------------------

export async function putResult(
  tx: Queryable,
  requestId: string,
  sealed: string,
  executedAt: Date,
  lifetimeS: number,
): Promise<Date> {
  const r = await tx.query<{ expires_at: Date }>(
    `INSERT INTO request_results (request_id, sealed, executed_at, expires_at)
     VALUES ($1, $2, $3, now() + $4 * interval '1 second')
     ON CONFLICT (request_id) DO UPDATE SET sealed = EXCLUDED.sealed, executed_at = EXCLUDED.executed_at,
       expires_at = EXCLUDED.expires_at
     RETURNING expires_at`,
    [requestId, sealed, executedAt, lifetimeS],
  );
  return r.rows[0]!.expires_at;
}

export async function findResult(
  q: Queryable,
  requestId: string,
): Promise<{ sealed: string; executed_at: Date; expires_at: Date } | null> {
  const r = await q.query<{ sealed: string; executed_at: Date; expires_at: Date }>(
    'SELECT sealed, executed_at, expires_at FROM request_results WHERE request_id = $1 AND expires_at > now()',
    [requestId],
  );
  return r.rows[0] ?? null;
}

export async function deleteExpiredResults(q: Queryable, limit: number): Promise<number> {
  const r = await q.query(
    `DELETE FROM request_results WHERE request_id IN
       (SELECT request_id FROM request_results WHERE expires_at <= now() ORDER BY expires_at LIMIT $1)`,
    [limit],
  );
  return r.rowCount ?? 0;
}

// --- Events ------------------------------------------------------------------------------------

export const EVENTS_CHANNEL = 'bulwark_events';

/** An event for notifications, in the change's transaction; NOTIFY names its row. */
export async function insertOutboxEvent(
  tx: Queryable,
  e: { accountId: string; kind: string; payload: Record<string, unknown> },
): Promise<string> {
  const r = await tx.query<{ id: string }>(
    `WITH e AS (INSERT INTO event_outbox (account_id, kind, payload) VALUES ($1, $2, $3) RETURNING id)
     SELECT e.id, pg_notify($4, e.id::text) FROM e`,
    [e.accountId, e.kind, JSON.stringify(e.payload), EVENTS_CHANNEL],
  );
  return r.rows[0]!.id;
}
