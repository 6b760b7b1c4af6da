/**
 * Sessions' SQL: sessions (a refresh-token family), refresh tokens (SHA-256 only), the shared
 * JWT signing keys, what authentication needs to know about a user, and the NOTIFYs that reach
 * every replica's session cache (on the channel the key cache already listens to).
 */
import type { Queryable } from '../../db/pool.ts';
import { KEYS_CHANNEL } from '../keys/keys.repo.ts';

export type Role = 'owner' | 'admin' | 'member' | 'viewer';

export type SigningKeyRow = { kid: string; public_key_pem: string; private_key_sealed: string };

/** Serialises the first creation of a signing key among replicas (inside a transaction). */
export async function lockSigningKeys(tx: Queryable): Promise<void> {
  await tx.query("SELECT pg_advisory_xact_lock(hashtext('bulwark.session_signing_keys'))");
}

export async function newestSigningKey(db: Queryable): Promise<SigningKeyRow | null> {
  const r = await db.query<SigningKeyRow>(
    'SELECT kid, public_key_pem, private_key_sealed FROM session_signing_keys ORDER BY created_at DESC, kid LIMIT 1',
  );
  return r.rows[0] ?? null;
}

export async function findSigningPublicKey(db: Queryable, kid: string): Promise<string | null> {
  const r = await db.query<{ public_key_pem: string }>(
    'SELECT public_key_pem FROM session_signing_keys WHERE kid = $1',
    [kid],
  );
  return r.rows[0]?.public_key_pem ?? null;
}

export async function insertSigningKey(tx: Queryable, k: SigningKeyRow): Promise<void> {
  await tx.query(
    'INSERT INTO session_signing_keys (kid, public_key_pem, private_key_sealed) VALUES ($1, $2, $3)',
    [k.kid, k.public_key_pem, k.private_key_sealed],
  );
}

export type UserRow = {
  id: string;
  username: string | null;
  status: 'active' | 'suspended';
  platform_admin: boolean;
  totp_enabled: boolean;
};

export async function findUser(db: Queryable, id: string): Promise<UserRow | null> {
  const r = await db.query<UserRow>(
    `SELECT u.id, u.username, u.status, u.platform_admin,
            EXISTS (SELECT 1 FROM user_totp t WHERE t.user_id = u.id AND t.confirmed_at IS NOT NULL) AS totp_enabled
       FROM users u WHERE u.id = $1`,
    [id],
  );
  return r.rows[0] ?? null;
}

/** Users named here (lower-case usernames) who are not suspended yet. */
export async function findActiveUsersByUsername(
  db: Queryable,
  usernames: string[],
): Promise<{ id: string; username: string }[]> {
  const r = await db.query<{ id: string; username: string }>(
    `SELECT id, username FROM users WHERE username = ANY($1::text[]) AND status <> 'suspended' ORDER BY username`,
    [usernames],
  );
  return r.rows;
}

export type MembershipRow = {
  account_id: string;
  account_name: string;
  account_status: 'active' | 'suspended';
  role: Role;
  /** null: every database of the account; otherwise the names of the granted ones. */
  databases: string[] | null;
};

export async function listMemberships(db: Queryable, userId: string): Promise<MembershipRow[]> {
  const r = await db.query<MembershipRow>(
    `SELECT m.account_id, a.name AS account_name, a.status AS account_status, m.role,
            (SELECT array_agg(d.name ORDER BY d.name)
               FROM membership_databases md JOIN databases d ON d.id = md.database_id
              WHERE md.account_id = m.account_id AND md.user_id = m.user_id) AS databases
       FROM memberships m JOIN accounts a ON a.id = m.account_id
      WHERE m.user_id = $1
      ORDER BY a.name`,
    [userId],
  );
  return r.rows;
}

export type SessionAuthRow = {
  id: string;
  user_id: string;
  expires_at: Date;
  revoked_at: Date | null;
  user_status: 'active' | 'suspended';
  platform_admin: boolean;
};

/** Whether a session still stands now (not revoked nor expired, its user active). */
export async function sessionStillValid(db: Queryable, id: string): Promise<boolean> {
  const s = await findSessionForAuth(db, id);
  return (
    s !== null && s.revoked_at === null && s.expires_at.getTime() > Date.now() && s.user_status === 'active'
  );
}

/** One lookup per (uncached) request: the session named by the JWT's jti, and its user's state. */
export async function findSessionForAuth(db: Queryable, id: string): Promise<SessionAuthRow | null> {
  const r = await db.query<SessionAuthRow>(
    `SELECT s.id, s.user_id, s.expires_at, s.revoked_at, u.status AS user_status, u.platform_admin
       FROM sessions s JOIN users u ON u.id = s.user_id
      WHERE s.id = $1`,
    [id],
  );
  return r.rows[0] ?? null;
}

export async function insertSession(
  tx: Queryable,
  s: { userId: string; expiresAt: Date; sourceIp: string | null; userAgent: string | null },
): Promise<{ id: string }> {
  const r = await tx.query<{ id: string }>(
    `INSERT INTO sessions (user_id, expires_at, source_ip, user_agent)
     VALUES ($1, $2, $3::inet, $4) RETURNING id`,
    [s.userId, s.expiresAt, s.sourceIp, s.userAgent],
  );
  return r.rows[0]!;
}

export async function insertRefreshToken(tx: Queryable, sessionId: string, tokenHash: Buffer): Promise<void> {
  await tx.query('INSERT INTO refresh_tokens (session_id, token_hash) VALUES ($1, $2)', [
    sessionId,
    tokenHash,
  ]);
}

export type RefreshRow = {
  id: string;
  session_id: string;
  used_at: Date | null;
  user_id: string;
  session_expires_at: Date;
  session_revoked_at: Date | null;
  user_status: 'active' | 'suspended';
};

/** The presented refresh token with its session, the session row locked (rotation is serial). */
export async function findRefreshTokenForUpdate(
  tx: Queryable,
  tokenHash: Buffer,
): Promise<RefreshRow | null> {
  const r = await tx.query<RefreshRow>(
    `SELECT rt.id, rt.session_id, rt.used_at, s.user_id, s.expires_at AS session_expires_at,
            s.revoked_at AS session_revoked_at, u.status AS user_status
       FROM refresh_tokens rt
       JOIN sessions s ON s.id = rt.session_id
       JOIN users u ON u.id = s.user_id
      WHERE rt.token_hash = $1
      FOR UPDATE OF s, rt`,
    [tokenHash],
  );
  return r.rows[0] ?? null;
}

export async function markRefreshTokenUsed(tx: Queryable, id: string): Promise<void> {
  await tx.query('UPDATE refresh_tokens SET used_at = now() WHERE id = $1 AND used_at IS NULL', [id]);
}

export async function touchSession(tx: Queryable, id: string): Promise<void> {
  await tx.query('UPDATE sessions SET last_used_at = now() WHERE id = $1', [id]);
}

export type RevokeReason = 'logout' | 'refresh_reuse' | 'user_suspended' | 'revoked';

/** Revokes one session; returns its user when it was live (false when already revoked or absent). */
export async function revokeSession(
  tx: Queryable,
  id: string,
  reason: RevokeReason,
): Promise<{ user_id: string } | null> {
  const r = await tx.query<{ user_id: string }>(
    `UPDATE sessions SET revoked_at = now(), revoked_reason = $2
      WHERE id = $1 AND revoked_at IS NULL RETURNING user_id`,
    [id, reason],
  );
  return r.rows[0] ?? null;
}

/** Every live session of a user; returns their ids. */
export async function revokeUserSessions(
  tx: Queryable,
  userId: string,
  reason: RevokeReason,
): Promise<string[]> {
  const r = await tx.query<{ id: string }>(
    `UPDATE sessions SET revoked_at = now(), revoked_reason = $2
      WHERE user_id = $1 AND revoked_at IS NULL RETURNING id`,
    [userId, reason],
  );
  return r.rows.map((x) => x.id);
}

/** Suspends or reactivates a user; null when absent or already in that state. */
export async function setUserStatus(
  tx: Queryable,
  userId: string,
  status: 'active' | 'suspended',
): Promise<{ id: string } | null> {
  const r = await tx.query<{ id: string }>(
    `UPDATE users SET status = $2, suspended_at = CASE WHEN $2 = 'suspended' THEN now() END
      WHERE id = $1 AND status <> $2 RETURNING id`,
    [userId, status],
  );
  return r.rows[0] ?? null;
}

/** The accounts in which `actorId` is an owner and `userId` a member (for suspension rights). */
export async function accountsOwnedOver(db: Queryable, actorId: string, userId: string): Promise<string[]> {
  const r = await db.query<{ account_id: string }>(
    `SELECT o.account_id FROM memberships o
       JOIN memberships m ON m.account_id = o.account_id AND m.user_id = $2
      WHERE o.user_id = $1 AND o.role = 'owner'`,
    [actorId, userId],
  );
  return r.rows.map((x) => x.account_id);
}

/**
 * Does `userId` belong to an account in which `actorId` is not an owner? Suspension and sessions
 * are the user's, across all their accounts: an owner of one account may not reach the others.
 */
export async function memberOutsideOwned(db: Queryable, actorId: string, userId: string): Promise<boolean> {
  const r = await db.query<{ outside: boolean }>(
    `SELECT EXISTS (
       SELECT 1 FROM memberships m
        WHERE m.user_id = $2
          AND NOT EXISTS (SELECT 1 FROM memberships o
                           WHERE o.user_id = $1 AND o.account_id = m.account_id AND o.role = 'owner')
     ) AS outside`,
    [actorId, userId],
  );
  return r.rows[0]?.outside === true;
}

/** Every replica drops this session from its cache (delivered on commit inside a transaction). */
export async function notifySessionRevoked(db: Queryable, sessionId: string): Promise<void> {
  await db.query('SELECT pg_notify($1, $2)', [KEYS_CHANNEL, `session:${sessionId}`]);
}

/** Every replica drops the user's sessions from its cache. */
export async function notifyUserChanged(db: Queryable, userId: string): Promise<void> {
  await db.query('SELECT pg_notify($1, $2)', [KEYS_CHANNEL, `user:${userId}`]);
}

/**
 * Deletes sessions (and, by cascade, their refresh tokens) that ended more than a day ago, at most
 * `limit` at a time; returns how many went.
 */
export async function deleteEndedSessions(db: Queryable, limit: number): Promise<number> {
  const r = await db.query(
    `DELETE FROM sessions WHERE id IN (
       SELECT id FROM sessions
        WHERE expires_at < now() - interval '1 day' OR revoked_at < now() - interval '1 day'
        LIMIT $1)`,
    [limit],
  );
  return r.rowCount ?? 0;
}
