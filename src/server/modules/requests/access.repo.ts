/**
 * Just-in-time credential grants (0020-access-grants.sql): one row per temporary login. Its
 * password is never stored; the row is the login's life (granting → active → expired | revoked,
 * or failed) and the jobs that made and ended it.
 */

import type { Queryable } from '../../db/pool.ts';
import type { DatabaseKind } from '../databases/databases.kind.ts';

export type GrantStatus = 'granting' | 'active' | 'expired' | 'revoked' | 'failed';
export type EndReason = 'expired' | 'cancelled' | 'database_deleted' | 'grant_timeout' | 'revoked' | 'moved';

export type GrantRow = {
  id: string;
  account_id: string;
  request_id: string;
  database_id: string;
  login: string;
  capability: 'reader' | 'migrator';
  valid_until: Date;
  status: GrantStatus;
  actor_type: 'user' | 'key' | 'system';
  actor_id: string | null;
  grant_job_id: number | null;
  revoke_job_id: number | null;
  end_reason: EndReason | null;
  created_at: Date;
  granted_at: Date | null;
  revoked_at: Date | null;
};

/** A live grant with where its revoke job goes (the database's node and name). */
export type LiveGrant = GrantRow & { node_id: string; name: string };

const COLUMNS = `g.id, g.account_id, g.request_id, g.database_id, g.login, g.capability, g.valid_until,
  g.status, g.actor_type, g.actor_id, g.grant_job_id, g.revoke_job_id, g.end_reason, g.created_at,
  g.granted_at, g.revoked_at`;

export async function insertGrant(
  db: Queryable,
  g: Pick<
    GrantRow,
    | 'id'
    | 'account_id'
    | 'request_id'
    | 'database_id'
    | 'login'
    | 'capability'
    | 'valid_until'
    | 'actor_type'
    | 'actor_id'
  >,
): Promise<void> {
  await db.query(
    `INSERT INTO access_grants (id, account_id, request_id, database_id, login, capability, valid_until, actor_type, actor_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
    [
      g.id,
      g.account_id,
      g.request_id,
      g.database_id,
      g.login,
      g.capability,
      g.valid_until,
      g.actor_type,
      g.actor_id,
    ],
  );
}

export async function setGrantJob(db: Queryable, id: string, jobId: number): Promise<void> {
  await db.query('UPDATE access_grants SET grant_job_id = $2 WHERE id = $1', [id, jobId]);
}

export async function findGrant(db: Queryable, id: string): Promise<GrantRow | null> {
  const r = await db.query<GrantRow>(`SELECT ${COLUMNS} FROM access_grants g WHERE g.id = $1`, [id]);
  return r.rows[0] ?? null;
}

/** The grant live now: its agent reported the login made (only from `granting`). */
export async function markActive(db: Queryable, id: string): Promise<GrantRow | null> {
  const r = await db.query<GrantRow>(
    `UPDATE access_grants g SET status = 'active', granted_at = now()
      WHERE g.id = $1 AND g.status = 'granting' RETURNING ${COLUMNS}`,
    [id],
  );
  return r.rows[0] ?? null;
}

/** The grant never became live (only from `granting`). */
export async function markFailed(
  db: Queryable,
  id: string,
  reason: string,
  endReason: EndReason | null = null,
): Promise<GrantRow | null> {
  const r = await db.query<GrantRow>(
    `UPDATE access_grants g SET status = 'failed', failure_reason = $2, end_reason = $3
      WHERE g.id = $1 AND g.status = 'granting' RETURNING ${COLUMNS}`,
    [id, reason.slice(0, 1000), endReason],
  );
  return r.rows[0] ?? null;
}

/**
 * Locks the live grants (granting or active) that `where` selects, with their database's node
 * and name; SKIP LOCKED, so replicas sweeping at once take different rows.
 */
async function lockLive(
  db: Queryable,
  where: string,
  params: unknown[],
  limit: number,
): Promise<LiveGrant[]> {
  const r = await db.query<LiveGrant>(
    `SELECT ${COLUMNS}, d.node_id, coalesce(d.pg_name, d.name) AS name
       FROM access_grants g JOIN databases d ON d.id = g.database_id
      WHERE g.status IN ('granting', 'active') AND ${where}
      ORDER BY g.valid_until, g.id
      LIMIT ${Math.trunc(limit)}
        FOR UPDATE OF g SKIP LOCKED`,
    params,
  );
  return r.rows;
}

export const lockExpired = (db: Queryable, now: Date, limit: number) =>
  lockLive(db, 'g.valid_until <= $1', [now], limit);
export const lockLiveOfRequest = (db: Queryable, requestId: string, limit: number) =>
  lockLive(db, 'g.request_id = $1', [requestId], limit);
export const lockLiveOfDatabase = (db: Queryable, databaseId: string, limit: number) =>
  lockLive(db, 'g.database_id = $1', [databaseId], limit);

/** Ends a live grant: expired at its time, or revoked earlier; its revoke job recorded. */
export async function markEnded(
  db: Queryable,
  id: string,
  reason: EndReason,
  revokeJobId: number,
): Promise<void> {
  await db.query(
    `UPDATE access_grants SET status = CASE WHEN $2 = 'expired' THEN 'expired' ELSE 'revoked' END,
            end_reason = $2, revoked_at = now(), revoke_job_id = $3
      WHERE id = $1`,
    [id, reason, revokeJobId],
  );
}

/** Records the agent's answer to a revocation (or its error). */
export async function setRevokeOutcome(
  db: Queryable,
  id: string,
  outcome: Record<string, unknown>,
): Promise<void> {
  await db.query('UPDATE access_grants SET revoke_outcome = $2 WHERE id = $1', [id, outcome]);
}

/** The earliest valid_until of a live grant, if any. */
export async function nextExpiry(db: Queryable): Promise<Date | null> {
  const r = await db.query<{ at: Date | null }>(
    `SELECT min(valid_until) AS at FROM access_grants WHERE status IN ('granting', 'active')`,
  );
  return r.rows[0]?.at ?? null;
}

/** A database the caller's account holds, for a grant: its name, node and state. */
export async function findDatabase(
  db: Queryable,
  accountId: string,
  databaseId: string,
): Promise<{ id: string; name: string; node_id: string; status: string; kind: DatabaseKind } | null> {
  const r = await db.query<{ id: string; name: string; node_id: string; status: string; kind: DatabaseKind }>(
    // `name` is the database's name on its node (a warm-pool spare keeps its own, migration 0036):
    // the agent makes the login there, and the connection string names it.
    'SELECT id, coalesce(pg_name, name) AS name, node_id, status, kind FROM databases WHERE id = $1 AND account_id = $2',
    [databaseId, accountId],
  );
  return r.rows[0] ?? null;
}

/** Gives up a job no agent took yet (a grant that timed out). */
export async function abandonQueuedJob(db: Queryable, jobId: number): Promise<boolean> {
  const r = await db.query(
    `UPDATE jobs SET status = 'dead', finished_at = now(), updated_at = now(),
            last_error = 'abandoned: the grant was not made in time'
      WHERE id = $1 AND status = 'queued'`,
    [jobId],
  );
  return (r.rowCount ?? 0) > 0;
}
