/**
 * The admin view of people: users (all of them, or one account's members), a user's sessions,
 * and revoking one session. `accountId` null means the platform-wide view (platform admins).
 */
import type { Queryable } from '../../db/pool.ts';
import type { PageCursor } from '../../http/pagination.ts';

export type AdminUserRow = {
  id: string;
  username: string | null;
  status: 'active' | 'suspended';
  platform_admin: boolean;
  totp_enabled: boolean;
  /** The role in the listed account; null in the platform-wide view. */
  role: 'owner' | 'admin' | 'member' | 'viewer' | null;
  created_at: Date;
  created_us: number;
};

const CURSOR = `($3::bigint IS NULL
  OR (u.created_at, u.id) < (timestamptz 'epoch' + $3::bigint * interval '1 microsecond', $4::uuid))`;

/** Users newest first: every user (accountId null) or the members of one account; `limit` rows. */
export async function listUsers(
  db: Queryable,
  accountId: string | null,
  page: { limit: number; after: PageCursor | null },
): Promise<AdminUserRow[]> {
  const r = await db.query<AdminUserRow>(
    `SELECT u.id, u.username, u.status, u.platform_admin, m.role, u.created_at,
            (extract(epoch FROM u.created_at) * 1000000)::bigint AS created_us,
            EXISTS (SELECT 1 FROM user_totp t WHERE t.user_id = u.id AND t.confirmed_at IS NOT NULL) AS totp_enabled
       FROM users u
       LEFT JOIN memberships m ON m.user_id = u.id AND m.account_id = $1
      WHERE ($1::uuid IS NULL OR m.account_id IS NOT NULL) AND ${CURSOR}
      ORDER BY u.created_at DESC, u.id DESC
      LIMIT $2`,
    [accountId, page.limit, page.after?.ts ?? null, page.after?.id ?? null],
  );
  return r.rows;
}

/**
 * Whose sessions a caller manages: anyone (null: platform admins), or the members of one account
 * whose role there is one of `roles` (at or below the caller's own), who are not platform admins and
 * belong to no other account (a session is the user's everywhere: ending it would reach accounts the
 * caller has no say in).
 */
export type SessionScope = { accountId: string; roles: readonly string[] } | null;

const MANAGED = (user: string) => `($1::uuid IS NULL OR (
    NOT EXISTS (SELECT 1 FROM users pa WHERE pa.id = ${user} AND pa.platform_admin)
    AND EXISTS (SELECT 1 FROM memberships m WHERE m.user_id = ${user} AND m.account_id = $1 AND m.role = ANY($3::text[]))
    AND NOT EXISTS (SELECT 1 FROM memberships o WHERE o.user_id = ${user} AND o.account_id <> $1)))`;

/** Whether the caller manages this user's sessions. */
export async function userManaged(db: Queryable, scope: SessionScope, userId: string): Promise<boolean> {
  const r = await db.query(`SELECT 1 FROM users u WHERE u.id = $2 AND ${MANAGED('u.id')}`, [
    scope?.accountId ?? null,
    userId,
    scope?.roles ?? [],
  ]);
  return (r.rowCount ?? 0) > 0;
}

export type AdminSessionRow = {
  id: string;
  user_id: string;
  created_at: Date;
  last_used_at: Date;
  expires_at: Date;
  revoked_at: Date | null;
  revoked_reason: string | null;
  source_ip: string | null;
  user_agent: string | null;
  created_us: number;
};

const SESSION_COLUMNS = `s.id, s.user_id, s.created_at, s.last_used_at, s.expires_at, s.revoked_at, s.revoked_reason,
  host(s.source_ip) AS source_ip, s.user_agent, (extract(epoch FROM s.created_at) * 1000000)::bigint AS created_us`;

/** A user's sessions, newest first (live and ended); `limit` rows. */
export async function listSessions(
  db: Queryable,
  userId: string,
  page: { limit: number; after: PageCursor | null },
): Promise<AdminSessionRow[]> {
  const r = await db.query<AdminSessionRow>(
    `SELECT ${SESSION_COLUMNS} FROM sessions s
      WHERE s.user_id = $1
        AND ($3::bigint IS NULL
             OR (s.created_at, s.id) < (timestamptz 'epoch' + $3::bigint * interval '1 microsecond', $4::uuid))
      ORDER BY s.created_at DESC, s.id DESC
      LIMIT $2`,
    [userId, page.limit, page.after?.ts ?? null, page.after?.id ?? null],
  );
  return r.rows;
}

/** One session, if the caller manages its user (locked for the revocation when in a transaction). */
export async function findManagedSession(
  db: Queryable,
  scope: SessionScope,
  sessionId: string,
): Promise<AdminSessionRow | null> {
  const r = await db.query<AdminSessionRow>(
    `SELECT ${SESSION_COLUMNS} FROM sessions s
      WHERE s.id = $2 AND ${MANAGED('s.user_id')}
      FOR UPDATE OF s`,
    [scope?.accountId ?? null, sessionId, scope?.roles ?? []],
  );
  return r.rows[0] ?? null;
}

export type MemberRole = 'owner' | 'admin' | 'member' | 'viewer';

/**
 * The account's memberships, locked for a role change or a removal: two owners demoting each other
 * at once wait for one another, and the second sees the first's change (the last owner stays).
 */
export async function lockMembers(
  tx: Queryable,
  accountId: string,
): Promise<{ user_id: string; role: MemberRole }[]> {
  const r = await tx.query<{ user_id: string; role: MemberRole }>(
    `SELECT user_id, role FROM memberships WHERE account_id = $1 ORDER BY user_id FOR UPDATE`,
    [accountId],
  );
  return r.rows;
}

export async function setMemberRole(
  tx: Queryable,
  accountId: string,
  userId: string,
  role: MemberRole,
): Promise<void> {
  await tx.query('UPDATE memberships SET role = $3 WHERE account_id = $1 AND user_id = $2', [
    accountId,
    userId,
    role,
  ]);
}

/** Removes a membership (its database grants go with it, by cascade). */
export async function deleteMember(tx: Queryable, accountId: string, userId: string): Promise<void> {
  await tx.query('DELETE FROM memberships WHERE account_id = $1 AND user_id = $2', [accountId, userId]);
}

/** One member of an account as the admin list shows it; null when not a member. */
export async function findMember(
  db: Queryable,
  accountId: string,
  userId: string,
): Promise<AdminUserRow | null> {
  const r = await db.query<AdminUserRow>(
    `SELECT u.id, u.username, u.status, u.platform_admin, m.role, u.created_at,
            (extract(epoch FROM u.created_at) * 1000000)::bigint AS created_us,
            EXISTS (SELECT 1 FROM user_totp t WHERE t.user_id = u.id AND t.confirmed_at IS NOT NULL) AS totp_enabled
       FROM users u JOIN memberships m ON m.user_id = u.id AND m.account_id = $1
      WHERE u.id = $2`,
    [accountId, userId],
  );
  return r.rows[0] ?? null;
}

/** An account's id by its name; null when there is none. */
export async function findAccountId(db: Queryable, name: string): Promise<string | null> {
  const r = await db.query<{ id: string }>('SELECT id FROM accounts WHERE name = $1', [name]);
  return r.rows[0]?.id ?? null;
}
