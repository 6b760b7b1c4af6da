/** The step-up window's SQL: one read and one stamp of a session row, by its primary key. */
import type { Queryable } from '../../db/pool.ts';

export type StepUpRow = {
  created_at: Date;
  reauthenticated_at: Date | null;
  has_password: boolean;
  totp_confirmed: boolean;
};

/** A live session of this user, with what its user can re-authenticate with; null when gone. */
export async function findStepUp(
  db: Queryable,
  sessionId: string,
  userId: string,
): Promise<StepUpRow | null> {
  const r = await db.query<StepUpRow>(
    `SELECT s.created_at, s.reauthenticated_at, u.password_hash IS NOT NULL AS has_password,
            EXISTS (SELECT 1 FROM user_totp t WHERE t.user_id = u.id AND t.confirmed_at IS NOT NULL)
              AS totp_confirmed
       FROM sessions s JOIN users u ON u.id = s.user_id
      WHERE s.id = $1 AND s.user_id = $2 AND s.revoked_at IS NULL`,
    [sessionId, userId],
  );
  return r.rows[0] ?? null;
}

/** Opens the window of a live session; false when the session is gone (revoked). */
export async function stampReauth(
  db: Queryable,
  sessionId: string,
  userId: string,
  at: Date,
): Promise<boolean> {
  const r = await db.query(
    'UPDATE sessions SET reauthenticated_at = $3 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL',
    [sessionId, userId, at],
  );
  return (r.rowCount ?? 0) > 0;
}
