import type { Queryable } from '../../db/pool.ts';

/** When a user's session (the refresh-token family) began: refreshes do not move it. */
export async function sessionStartedAt(
  db: Queryable,
  sessionId: string,
  userId: string,
): Promise<Date | null> {
  const r = await db.query<{ created_at: Date }>(
    'SELECT created_at FROM sessions WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL',
    [sessionId, userId],
  );
  return r.rows[0]?.created_at ?? null;
}
