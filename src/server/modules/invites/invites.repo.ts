/**
 * The SQL of invites. A code is stored only as its SHA-256 (`code_hash`); no statement here ever
 * selects it, so rows leaving the repository cannot carry it.
 */
import type { Queryable } from '../../db/pool.ts';
import type { PageCursor } from '../../http/pagination.ts';

export type InviteRole = 'owner' | 'admin' | 'member' | 'viewer';

export type InviteRow = {
  id: string;
  account_id: string | null;
  account_name: string | null;
  role: InviteRole | null;
  platform_admin: boolean;
  expires_at: Date;
  created_by_user_id: string | null;
  created_at: Date;
  /** Microseconds since the epoch: the exact created_at, for cursors. */
  created_us: number;
};

const INVITE_COLUMNS = `i.id, i.account_id, a.name AS account_name, i.role, i.platform_admin, i.expires_at,
  i.created_by_user_id, i.created_at, (extract(epoch FROM i.created_at) * 1000000)::bigint AS created_us`;

type InsertInvites = {
  /** Ids chosen by the caller, one per code hash (so each code is paired with its row). */
  ids: readonly string[];
  codeHashes: readonly Buffer[];
  accountId: string | null;
  role: InviteRole | null;
  platformAdmin: boolean;
  expiresAt: Date;
  createdByUserId: string | null;
};

/** One row per (id, code hash) pair, in one statement. */
export async function insertInvites(db: Queryable, x: InsertInvites): Promise<InviteRow[]> {
  const r = await db.query<InviteRow>(
    `WITH i AS (
       INSERT INTO invites (id, code_hash, account_id, role, platform_admin, expires_at, created_by_user_id)
       SELECT u.id, u.h, $3, $4, $5, $6, $7 FROM unnest($1::uuid[], $2::bytea[]) AS u(id, h)
       RETURNING *
     ) SELECT ${INVITE_COLUMNS} FROM i LEFT JOIN accounts a ON a.id = i.account_id`,
    [x.ids, x.codeHashes, x.accountId, x.role, x.platformAdmin, x.expiresAt, x.createdByUserId],
  );
  return r.rows;
}

/** Whose invites a caller reaches: one account's, or (null: a platform admin) every invite. */
export type InviteFilter = { accountId: string | null };

/** Pending invites (not expired), newest first, keyset-paginated over (created_at, id). */
export async function listPendingInvites(
  db: Queryable,
  f: InviteFilter,
  page: { limit: number; after: PageCursor | null },
): Promise<InviteRow[]> {
  const r = await db.query<InviteRow>(
    `SELECT ${INVITE_COLUMNS} FROM invites i LEFT JOIN accounts a ON a.id = i.account_id
      WHERE i.expires_at > now()
        AND ($1::uuid IS NULL OR i.account_id = $1)
        AND ($2::bigint IS NULL
             OR (i.created_at, i.id) < (timestamptz 'epoch' + $2::bigint * interval '1 microsecond', $3::uuid))
      ORDER BY i.created_at DESC, i.id DESC
      LIMIT $4`,
    [f.accountId, page.after?.ts ?? null, page.after?.id ?? null, page.limit],
  );
  return r.rows;
}

/** Deletes one invite (pending or expired) within the caller's reach; null when there is none. */
export async function deleteInvite(db: Queryable, f: InviteFilter, id: string): Promise<InviteRow | null> {
  const r = await db.query<InviteRow>(
    `WITH i AS (
       DELETE FROM invites
        WHERE id = $1 AND ($2::uuid IS NULL OR account_id = $2)
        RETURNING *
     ) SELECT ${INVITE_COLUMNS} FROM i LEFT JOIN accounts a ON a.id = i.account_id`,
    [id, f.accountId],
  );
  return r.rows[0] ?? null;
}

/**
 * Takes the invite of this code hash, if it is pending, by deleting it: concurrent redemptions of
 * one code queue on the row lock and all but the first find it gone. A used, an expired and a
 * never-issued code all give null, by the same statement; so does the invite of a user who can no
 * longer stand behind it — suspended, removed from the invite's account, or now below the invite's
 * role (it stays, and works again if they are restored). Call it in the transaction that
 * creates the user, so that a failure there puts the invite back.
 */
export async function takeInvite(db: Queryable, codeHash: Buffer): Promise<InviteRow | null> {
  const r = await db.query<InviteRow>(
    `WITH i AS (
       DELETE FROM invites d
        WHERE d.code_hash = $1 AND d.expires_at > now()
          AND (d.created_by_user_id IS NULL OR EXISTS (
                SELECT 1 FROM users u
                 WHERE u.id = d.created_by_user_id AND u.status = 'active'
                   AND (u.platform_admin OR EXISTS (
                         SELECT 1 FROM memberships m
                          WHERE m.user_id = u.id AND m.account_id = d.account_id
                            AND (CASE m.role WHEN 'viewer' THEN 1 WHEN 'member' THEN 2 WHEN 'admin' THEN 3 ELSE 4 END)
                                >= (CASE d.role WHEN 'viewer' THEN 1 WHEN 'member' THEN 2 WHEN 'admin' THEN 3 ELSE 4 END)))))
        RETURNING d.*
     ) SELECT ${INVITE_COLUMNS} FROM i LEFT JOIN accounts a ON a.id = i.account_id`,
    [codeHash],
  );
  return r.rows[0] ?? null;
}

export async function findAccountIdByName(db: Queryable, name: string): Promise<string | null> {
  const r = await db.query<{ id: string }>('SELECT id FROM accounts WHERE name = $1', [name]);
  return r.rows[0]?.id ?? null;
}

/** What the first start of `bulwark up` needs to know: are there users, is an admin invite pending. */
export async function firstAdminState(
  db: Queryable,
): Promise<{ users: number; pendingAdminInvite: Date | null }> {
  const r = await db.query<{ users: number; pending: Date | null }>(
    `SELECT (SELECT count(*)::int FROM users) AS users,
            (SELECT max(created_at) FROM invites WHERE platform_admin AND expires_at > now()) AS pending`,
  );
  return { users: r.rows[0]?.users ?? 0, pendingAdminInvite: r.rows[0]?.pending ?? null };
}

/** Serialises the first-admin check of concurrent starts (one transaction-scoped advisory lock). */
export async function lockFirstAdmin(db: Queryable): Promise<void> {
  await db.query("SELECT pg_advisory_xact_lock(hashtext('bulwark.first_admin_invite'))");
}
