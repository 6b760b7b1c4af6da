/**
 * People's SQL: users, their memberships, TOTP factor and recovery codes, and the login
 * throttle. Rows for the API never carry password_hash or the sealed TOTP secret: those are read
 * only by the functions that verify them.
 */
import type { Queryable } from '../../db/pool.ts';

export type Role = 'owner' | 'admin' | 'member' | 'viewer';

export type UserRow = {
  id: string;
  username: string | null;
  status: 'active' | 'suspended';
  platform_admin: boolean;
  created_at: Date;
  suspended_at: Date | null;
};

/** What a password sign-in needs: the user, the hash and whether a confirmed TOTP factor exists. */
type LoginRow = UserRow & { password_hash: string | null; totp_confirmed: boolean };

const USER_COLUMNS = 'u.id, u.username, u.status, u.platform_admin, u.created_at, u.suspended_at';

export async function insertUser(
  db: Queryable,
  u: { username: string | null; passwordHash: string | null; platformAdmin: boolean },
): Promise<UserRow> {
  const r = await db.query<UserRow>(
    `INSERT INTO users AS u (username, password_hash, password_changed_at, platform_admin)
     VALUES ($1, $2, CASE WHEN $2::text IS NULL THEN NULL ELSE now() END, $3)
     RETURNING ${USER_COLUMNS}`,
    [u.username, u.passwordHash, u.platformAdmin],
  );
  return r.rows[0]!;
}

export async function insertMembership(
  db: Queryable,
  m: { accountId: string; userId: string; role: Role },
): Promise<void> {
  await db.query('INSERT INTO memberships (account_id, user_id, role) VALUES ($1, $2, $3)', [
    m.accountId,
    m.userId,
    m.role,
  ]);
}

export async function findUserById(db: Queryable, id: string): Promise<UserRow | null> {
  const r = await db.query<UserRow>(`SELECT ${USER_COLUMNS} FROM users u WHERE u.id = $1`, [id]);
  return r.rows[0] ?? null;
}

export async function findLoginByUsername(db: Queryable, username: string): Promise<LoginRow | null> {
  const r = await db.query<LoginRow>(
    `SELECT ${USER_COLUMNS}, u.password_hash,
            EXISTS (SELECT 1 FROM user_totp t WHERE t.user_id = u.id AND t.confirmed_at IS NOT NULL)
              AS totp_confirmed
       FROM users u WHERE u.username = $1`,
    [username],
  );
  return r.rows[0] ?? null;
}

// --- TOTP ------------------------------------------------------------------------------------

type TotpRow = { secret_sealed: string; confirmed_at: Date | null; last_used_step: number | null };

export async function findTotp(db: Queryable, userId: string): Promise<TotpRow | null> {
  const r = await db.query<TotpRow>(
    'SELECT secret_sealed, confirmed_at, last_used_step FROM user_totp WHERE user_id = $1',
    [userId],
  );
  return r.rows[0] ?? null;
}

/** A new (unconfirmed) factor; replaces an unconfirmed one, never a confirmed one. */
export async function upsertPendingTotp(
  db: Queryable,
  userId: string,
  secretSealed: string,
): Promise<boolean> {
  const r = await db.query(
    `INSERT INTO user_totp (user_id, secret_sealed) VALUES ($1, $2)
     ON CONFLICT (user_id) DO UPDATE SET secret_sealed = EXCLUDED.secret_sealed, created_at = now(),
       last_used_step = NULL
       WHERE user_totp.confirmed_at IS NULL`,
    [userId, secretSealed],
  );
  return r.rowCount === 1;
}

/**
 * Takes a TOTP step for this user: succeeds only when it is later than the last step used, so a
 * code is accepted once even when two requests race with it (the row update is atomic).
 * `confirm` also marks the factor confirmed (enrolment).
 */
export async function takeTotpStep(
  db: Queryable,
  userId: string,
  step: number,
  opts: { confirm: boolean },
): Promise<boolean> {
  const r = await db.query(
    `UPDATE user_totp SET last_used_step = $2,
            confirmed_at = CASE WHEN $3::boolean THEN coalesce(confirmed_at, now()) ELSE confirmed_at END
      WHERE user_id = $1 AND (last_used_step IS NULL OR last_used_step < $2)
        AND (confirmed_at IS NULL) = $3::boolean`,
    [userId, step, opts.confirm],
  );
  return r.rowCount === 1;
}

export async function replaceRecoveryCodes(db: Queryable, userId: string, hashes: Buffer[]): Promise<void> {
  await db.query('DELETE FROM user_recovery_codes WHERE user_id = $1', [userId]);
  await db.query(
    'INSERT INTO user_recovery_codes (user_id, code_hash) SELECT $1, h FROM unnest($2::bytea[]) AS h',
    [userId, hashes],
  );
}

/** Marks an unused recovery code used; true when it was there and unused (once only). */
export async function takeRecoveryCode(db: Queryable, userId: string, hash: Buffer): Promise<boolean> {
  const r = await db.query(
    `UPDATE user_recovery_codes SET used_at = now()
      WHERE user_id = $1 AND code_hash = $2 AND used_at IS NULL`,
    [userId, hash],
  );
  return r.rowCount === 1;
}

// --- login throttle --------------------------------------------------------------------------

export type ThrottleScope = 'user' | 'ip';

/**
 * Takes one attempt for a (scope, key), counted as a failure until refunded: allowed only when the
 * key's next allowed time has come, in the same statement that counts it (a row lock serialises
 * concurrent attempts, so a burst of parallel guesses gets no more than one at a time would). From
 * the `free`-th attempt on, the next one is allowed `baseMs · 2^(attempts − free)` later, capped at
 * `maxMs`. Returns null when taken, else the time the key is next allowed.
 */
export async function takeThrottleAttempt(
  db: Queryable,
  k: { scope: ThrottleScope; key: string },
  policy: { free: number; baseMs: number; maxMs: number },
  now: Date,
): Promise<Date | null> {
  const r = await db.query(
    `INSERT INTO login_throttle AS t (scope, key, failures, next_allowed_at, updated_at)
     VALUES ($1, $2, 1, CASE WHEN 1 < $4::integer THEN $3::timestamptz
                             ELSE $3::timestamptz + make_interval(secs => $5::float8 / 1000) END, $3)
     ON CONFLICT (scope, key) DO UPDATE SET
       failures = t.failures + 1,
       updated_at = $3,
       next_allowed_at = CASE WHEN t.failures + 1 < $4::integer THEN t.next_allowed_at
         ELSE $3::timestamptz + make_interval(secs => least(
           $5::float8 * power(2, least(t.failures + 1 - $4::integer, 30)), $6::float8) / 1000) END
     WHERE t.next_allowed_at <= $3`,
    [k.scope, k.key, now, policy.free, policy.baseMs, policy.maxMs],
  );
  if (r.rowCount === 1) return null;
  // Refused. A new statement (a new snapshot): the row may have been made by a transaction that
  // committed after this one's statement began.
  const row = await db.query<{ next_allowed_at: Date }>(
    'SELECT next_allowed_at FROM login_throttle WHERE scope = $1 AND key = $2',
    [k.scope, k.key],
  );
  return row.rows[0]?.next_allowed_at ?? new Date(now.getTime() + policy.baseMs);
}

/** Gives back an attempt that turned out not to be a failure (no password checked, or a success). */
export async function refundThrottleAttempt(
  db: Queryable,
  k: { scope: ThrottleScope; key: string },
): Promise<void> {
  await db.query(
    'UPDATE login_throttle SET failures = greatest(failures - 1, 0) WHERE scope = $1 AND key = $2',
    [k.scope, k.key],
  );
}

export async function clearThrottle(db: Queryable, k: { scope: ThrottleScope; key: string }): Promise<void> {
  await db.query('DELETE FROM login_throttle WHERE scope = $1 AND key = $2', [k.scope, k.key]);
}

/**
 * Deletes up to `limit` rows that no longer slow anyone (allowed again, untouched since `before`),
 * so guessing at many usernames cannot grow the table without bound.
 */
export async function pruneThrottle(db: Queryable, before: Date, limit: number): Promise<number> {
  const r = await db.query(
    `DELETE FROM login_throttle WHERE ctid = ANY (ARRAY(
       SELECT ctid FROM login_throttle WHERE updated_at < $1 AND next_allowed_at < $1 LIMIT $2))`,
    [before, limit],
  );
  return r.rowCount ?? 0;
}
