/**
 * Governed requests' SQL (issue 14): the requests, their approvals, each delivery to the agent,
 * sealed results and the event outbox (migration 0019). Callers pass `tx` for changes.
 */
import type { Queryable } from '../../db/pool.ts';
import type { PageCursor } from '../../http/pagination.ts';
import { findKeyForAuth } from '../keys/keys.repo.ts';
import type { RequestStatus } from './requests.schemas.ts';

export type RequestRow = {
  id: string;
  account_id: string;
  database_id: string;
  database: string;
  /** The database's name on its node (`pg_name`, migration 0036, else `database`): what the agent is sent. */
  database_physical: string;
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
  /** The person behind the request: the user, or the user up a key's created_by chain (migration 0023). */
  requester_person_id: string | null;
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

const COLUMNS = `r.*, d.name AS database, coalesce(d.pg_name, d.name) AS database_physical, d.node_id,
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
  requesterPersonId: string | null;
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
        requester_name, policy, max_executions, approval_lifetime_s, expires_at, requester_person_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19,
             now() + $20 * interval '1 second', $21)
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
      r.requesterPersonId,
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
  'capability',
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
             AND r.requester_person_id IS DISTINCT FROM $7
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

/**
 * The person behind an API key: the signed-in user who created it, or (a key created by a key) the
 * user at the top of its created_by chain, walked a bounded number of levels (key chains are
 * limited far below it); null when an operator key stands at the top.
 */
export async function keyPerson(q: Queryable, keyId: string): Promise<string | null> {
  const r = await q.query<{ person: string | null }>(
    `WITH RECURSIVE up (id, parent, person, depth) AS (
       SELECT k.id, k.created_by_key_id, k.created_by_user_id, 0 FROM api_keys k WHERE k.id = $1
       UNION ALL
       SELECT p.id, p.created_by_key_id, p.created_by_user_id, up.depth + 1
         FROM up JOIN api_keys p ON p.id = up.parent
        WHERE up.person IS NULL AND up.depth < 32
     ) SELECT person FROM up WHERE person IS NOT NULL ORDER BY depth LIMIT 1`,
    [keyId],
  );
  return r.rows[0]?.person ?? null;
}

/**
 * What the requester is NOW, for the check at execution: a user's membership role in the account
 * while active (null: suspended or no longer a member); a key's level while it and every key up its
 * chain are unrevoked and unexpired and its creators still stand behind it (null otherwise).
 */
export async function requesterNow(
  q: Queryable,
  row: Pick<RequestRow, 'account_id' | 'requester_user_id' | 'requester_key_id'>,
): Promise<{ kind: 'user'; role: string } | { kind: 'key'; level: string } | null> {
  if (row.requester_user_id !== null) {
    const r = await q.query<{ role: string }>(
      `SELECT m.role FROM users u JOIN memberships m ON m.user_id = u.id AND m.account_id = $2
        WHERE u.id = $1 AND u.status = 'active'`,
      [row.requester_user_id, row.account_id],
    );
    return r.rows[0] ? { kind: 'user', role: r.rows[0].role } : null;
  }
  if (row.requester_key_id !== null) {
    const r = await q.query<{ lookup_prefix: string }>(
      'SELECT lookup_prefix FROM api_keys WHERE id = $1 AND account_id = $2',
      [row.requester_key_id, row.account_id],
    );
    const prefix = r.rows[0]?.lookup_prefix;
    if (!prefix) return null;
    const k = await findKeyForAuth(q, prefix);
    if (!k || k.revoked_at !== null || k.creator_revoked || k.expires_at.getTime() <= Date.now()) return null;
    return { kind: 'key', level: k.level };
  }
  return null;
}

/** Records that a request's dry run did not run (no slot), unless its SQL changed or a dry run landed since. */
export async function markDryRunSkipped(
  q: Queryable,
  id: string,
  sqlSha256: string,
  error: { sqlstate: string; message: string },
): Promise<void> {
  await q.query(
    `UPDATE governed_requests SET dry_run_error = $3, updated_at = now()
      WHERE id = $1 AND sql_sha256 = $2 AND dry_run IS NULL`,
    [id, sqlSha256, JSON.stringify(error)],
  );
}

export async function keyName(q: Queryable, keyId: string): Promise<string> {
  const r = await q.query<{ name: string }>('SELECT name FROM api_keys WHERE id = $1', [keyId]);
  return r.rows[0]?.name ?? 'unknown key';
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
