/**
 * Governed requests' SQL (issue 14): the requests, their approvals, each delivery to the agent,
 * sealed results and the event outbox (migration 0019). Callers pass `tx` for changes.
 */
import type { Queryable } from '../../db/pool.ts';
import type { PageCursor } from '../../http/pagination.ts';
import type { RequestStatus } from './requests.schemas.ts';

export type RequestRow = {
  id: string;
  account_id: string;
  database_id: string;
  database: string;
  node_id: string;
  status: RequestStatus;
  kind: 'sql' | 'access';
  sql: string | null;
  sql_sha256: string | null;
  reason: string;
  capability: 'reader' | 'migrator';
  access_role: 'reader' | 'migrator' | null;
  access_duration_s: number | null;
  class: string;
  classification: Record<string, unknown>;
  findings: Record<string, unknown>[];
  requester_user_id: string | null;
  requester_key_id: string | null;
  requester_name: string;
  policy: {
    version: number;
    rule: string;
    why: string;
    environment: string | null;
    approvals_required: number;
    admin_approvals_required: number;
  };
  max_executions: number;
  executions: number;
  approval_lifetime_s: number;
  dry_run: { affected_rows: number; statements: unknown[]; ran_at: string } | null;
  dry_run_error: { sqlstate: string; message: string } | null;
  approved_rows: string | null;
  rejection: { user_id: string; name: string; comment: string; created_at: string } | null;
  break_glass: { user_id: string; name: string; reason: string; at: string } | null;
  last_execution: Record<string, unknown> | null;
  expires_at: Date;
  approval_expires_at: Date | null;
  created_at: Date;
  updated_at: Date;
  created_us: string;
  result_expires_at: Date | null;
};

const COLUMNS = `r.*, d.name AS database, d.node_id,
  (extract(epoch FROM r.created_at) * 1000000)::bigint AS created_us,
  (SELECT rr.expires_at FROM request_results rr WHERE rr.request_id = r.id AND rr.expires_at > now()) AS result_expires_at`;
const FROM = 'governed_requests r JOIN databases d ON d.id = r.database_id';

export type NewRequest = {
  accountId: string;
  databaseId: string;
  status: RequestStatus;
  kind: 'sql' | 'access';
  sql: string | null;
  sqlSha256: string | null;
  reason: string;
  capability: 'reader' | 'migrator';
  access: { role: 'reader' | 'migrator'; duration_s: number } | null;
  cls: string;
  classification: unknown;
  findings: unknown;
  requesterUserId: string | null;
  requesterKeyId: string | null;
  requesterName: string;
  policy: unknown;
  maxExecutions: number;
  approvalLifetimeS: number;
  requestLifetimeS: number;
};

export async function insertRequest(tx: Queryable, r: NewRequest): Promise<string> {
  const out = await tx.query<{ id: string }>(
    `INSERT INTO governed_requests (account_id, database_id, status, kind, sql, sql_sha256, reason, capability,
        access_role, access_duration_s, class, classification, findings, requester_user_id, requester_key_id,
        requester_name, policy, max_executions, approval_lifetime_s, expires_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
             now() + $20 * interval '1 second')
     RETURNING id`,
    [
      r.accountId,
      r.databaseId,
      r.status,
      r.kind,
      r.sql,
      r.sqlSha256,
      r.reason,
      r.capability,
      r.access?.role ?? null,
      r.access?.duration_s ?? null,
      r.cls,
      JSON.stringify(r.classification),
      JSON.stringify(r.findings),
      r.requesterUserId,
      r.requesterKeyId,
      r.requesterName,
      JSON.stringify(r.policy),
      r.maxExecutions,
      r.approvalLifetimeS,
      r.requestLifetimeS,
    ],
  );
  return out.rows[0]!.id;
}

/** One request of an account (optionally of one database), optionally row-locked. */
export async function findRequest(
  q: Queryable,
  where: { accountId: string; id: string; databaseId?: string },
  opts: { forUpdate?: boolean } = {},
): Promise<RequestRow | null> {
  const r = await q.query<RequestRow>(
    `SELECT ${COLUMNS} FROM ${FROM}
      WHERE r.id = $1 AND r.account_id = $2 AND ($3::uuid IS NULL OR r.database_id = $3)
      ${opts.forUpdate ? 'FOR UPDATE OF r' : ''}`,
    [where.id, where.accountId, where.databaseId ?? null],
  );
  return r.rows[0] ?? null;
}

/** Columns a change may set (never built from input: only these names reach the SQL). */
const PATCHABLE = [
  'status',
  'sql',
  'sql_sha256',
  'reason',
  'class',
  'classification',
  'findings',
  'policy',
  'max_executions',
  'executions',
  'approval_lifetime_s',
  'dry_run',
  'dry_run_error',
  'approved_rows',
  'rejection',
  'break_glass',
  'last_execution',
  'approval_expires_at',
] as const;
type Patchable = (typeof PATCHABLE)[number];
const JSON_COLUMNS = new Set<Patchable>([
  'classification',
  'findings',
  'policy',
  'dry_run',
  'dry_run_error',
  'rejection',
  'break_glass',
  'last_execution',
]);

/**
 * Sets the given columns of one request (and updated_at). `approval_expires_at` may be given as
 * `{ inSeconds: n }` (now() + n s in the database's clock).
 */
export async function patchRequest(
  tx: Queryable,
  id: string,
  patch: Partial<Record<Patchable, unknown>>,
): Promise<void> {
  const sets: string[] = [];
  const values: unknown[] = [id];
  for (const col of PATCHABLE) {
    if (!Object.hasOwn(patch, col)) continue;
    const v = patch[col];
    if (col === 'approval_expires_at' && v && typeof v === 'object' && 'inSeconds' in v) {
      values.push((v as { inSeconds: number }).inSeconds);
      sets.push(`${col} = now() + $${values.length} * interval '1 second'`);
      continue;
    }
    values.push(JSON_COLUMNS.has(col) && v !== null ? JSON.stringify(v) : v);
    sets.push(`${col} = $${values.length}`);
  }
  if (sets.length === 0) return;
  await tx.query(`UPDATE governed_requests SET ${sets.join(', ')}, updated_at = now() WHERE id = $1`, values);
}

export type ListFilter = {
  accountId: string;
  databaseId?: string;
  /** A database-scoped caller sees only these databases' requests. */
  databaseNames?: readonly string[] | null;
  status?: RequestStatus;
  requesterUserId?: string;
  requesterKeyId?: string;
  /** Pending requests this user may still approve (not theirs, not approved by them). */
  awaitingUserId?: string;
  cursor: PageCursor | null;
  limit: number;
};

export async function listRequests(q: Queryable, f: ListFilter): Promise<RequestRow[]> {
  const r = await q.query<RequestRow>(
    `SELECT ${COLUMNS} FROM ${FROM}
      WHERE r.account_id = $1
        AND ($2::uuid IS NULL OR r.database_id = $2)
        AND ($3::text[] IS NULL OR d.name = ANY ($3))
        AND ($4::text IS NULL OR r.status = $4)
        AND ($5::uuid IS NULL OR r.requester_user_id = $5)
        AND ($6::uuid IS NULL OR r.requester_key_id = $6)
        AND ($7::uuid IS NULL OR (r.status = 'pending' AND r.requester_user_id IS DISTINCT FROM $7
             AND NOT EXISTS (SELECT 1 FROM request_approvals a WHERE a.request_id = r.id AND a.user_id = $7)))
        AND ($8::bigint IS NULL OR (r.created_at, r.id) <
             (timestamptz 'epoch' + $8::bigint * interval '1 microsecond', $9::uuid))
      ORDER BY r.created_at DESC, r.id DESC
      LIMIT $10`,
    [
      f.accountId,
      f.databaseId ?? null,
      f.databaseNames ?? null,
      f.status ?? null,
      f.requesterUserId ?? null,
      f.requesterKeyId ?? null,
      f.awaitingUserId ?? null,
      f.cursor?.ts ?? null,
      f.cursor?.id ?? null,
      f.limit + 1,
    ],
  );
  return r.rows;
}

export type ApprovalRow = {
  request_id: string;
  user_id: string;
  name: string;
  /** The approver's role in the account now (null: no longer a member). */
  role: string | null;
  active: boolean;
  comment: string | null;
  created_at: Date;
};

/** Approvals of some requests, with each approver's CURRENT role and status (what counts). */
export async function approvalsOf(
  q: Queryable,
  accountId: string,
  requestIds: string[],
): Promise<ApprovalRow[]> {
  if (requestIds.length === 0) return [];
  const r = await q.query<ApprovalRow>(
    `SELECT a.request_id, a.user_id, coalesce(u.username, 'user ' || left(u.id::text, 8)) AS name,
            m.role, (u.status = 'active') AS active, a.comment, a.created_at
       FROM request_approvals a
       JOIN users u ON u.id = a.user_id
       LEFT JOIN memberships m ON m.account_id = $1 AND m.user_id = a.user_id
      WHERE a.request_id = ANY ($2::uuid[])
      ORDER BY a.created_at, a.user_id`,
    [accountId, requestIds],
  );
  return r.rows;
}

/** Records an approval; false when this person had already approved (one person counts once). */
export async function insertApproval(
  tx: Queryable,
  requestId: string,
  userId: string,
  comment: string | null,
): Promise<boolean> {
  const r = await tx.query(
    `INSERT INTO request_approvals (request_id, user_id, comment) VALUES ($1, $2, $3)
     ON CONFLICT (request_id, user_id) DO NOTHING`,
    [requestId, userId, comment],
  );
  return (r.rowCount ?? 0) > 0;
}

export async function deleteApprovals(tx: Queryable, requestId: string): Promise<void> {
  await tx.query('DELETE FROM request_approvals WHERE request_id = $1', [requestId]);
}

export async function userName(q: Queryable, userId: string): Promise<string> {
  const r = await q.query<{ name: string }>(
    `SELECT coalesce(username, 'user ' || left(id::text, 8)) AS name FROM users WHERE id = $1`,
    [userId],
  );
  return r.rows[0]?.name ?? 'unknown user';
}

export async function keyName(q: Queryable, keyId: string): Promise<string> {
  const r = await q.query<{ name: string }>('SELECT name FROM api_keys WHERE id = $1', [keyId]);
  return r.rows[0]?.name ?? 'unknown key';
}

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

/** Marks open requests past their lifetime `expired` (bounded batch); returns them. */
export async function expireDue(
  tx: Queryable,
  limit: number,
): Promise<{ id: string; account_id: string; database_id: string; was: string }[]> {
  const r = await tx.query<{ id: string; account_id: string; database_id: string; was: string }>(
    `WITH due AS (
       SELECT id, status FROM governed_requests
        WHERE (status = 'pending' AND expires_at <= now())
           OR (status = 'approved' AND approval_expires_at <= now())
        LIMIT $1 FOR UPDATE SKIP LOCKED)
     UPDATE governed_requests g SET status = 'expired', updated_at = now()
       FROM due WHERE g.id = due.id
     RETURNING g.id, g.account_id, g.database_id, due.status AS was`,
    [limit],
  );
  return r.rows;
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
