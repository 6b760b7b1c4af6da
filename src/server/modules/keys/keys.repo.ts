import type { Queryable } from '../../db/pool.ts';
import type { Permission } from '../../http/caller.ts';
import type { PageCursor } from '../../http/pagination.ts';

export const KEYS_CHANNEL = 'bulwark_keys';

export type AccountRow = {
  id: string;
  name: string;
  status: 'active' | 'suspended';
  max_key_lifetime_days: number;
  key_idle_revoke_days: number | null;
};

export type KeyRow = {
  id: string;
  account_id: string;
  name: string;
  lookup_prefix: string;
  level: Permission;
  databases: string[] | null;
  explorer: boolean;
  decoy: boolean;
  created_by_key_id: string | null;
  expires_at: Date;
  last_used_at: Date | null;
  last_used_ip: string | null;
  revoked_at: Date | null;
  created_at: Date;
  /** Microseconds since the epoch: the exact created_at, for cursors. */
  created_us: number;
};

/** What authentication needs: the row, its hash, its account and its creator chain. */
export type KeyAuthRow = KeyRow & {
  key_hash: Buffer;
  account_name: string;
  account_status: 'active' | 'suspended';
  /** Some key up the created_by chain is revoked: this key has lost its rights. */
  creator_revoked: boolean;
};

// Never selects key_hash: rows leaving the repo for the API cannot carry it.
const KEY_COLUMNS = `k.id, k.account_id, k.name, k.lookup_prefix, k.level, k.databases, k.explorer, k.decoy,
  k.created_by_key_id, k.expires_at, k.last_used_at, host(k.last_used_ip) AS last_used_ip, k.revoked_at,
  k.created_at, (extract(epoch FROM k.created_at) * 1000000)::bigint AS created_us`;

const ACCOUNT_COLUMNS = 'id, name, status, max_key_lifetime_days, key_idle_revoke_days';

export async function findAccountById(db: Queryable, id: string): Promise<AccountRow | null> {
  const r = await db.query<AccountRow>(`SELECT ${ACCOUNT_COLUMNS} FROM accounts WHERE id = $1`, [id]);
  return r.rows[0] ?? null;
}

/** The account of that name, created on first use (operator keys). */
export async function ensureAccount(db: Queryable, name: string): Promise<AccountRow & { created: boolean }> {
  const r = await db.query<AccountRow & { created: boolean }>(
    `INSERT INTO accounts (name) VALUES ($1)
     ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
     RETURNING ${ACCOUNT_COLUMNS}, (xmax = 0) AS created`,
    [name],
  );
  return r.rows[0]!;
}

export type InsertKey = {
  accountId: string;
  name: string;
  lookupPrefix: string;
  keyHash: Buffer;
  level: Permission;
  databases: readonly string[] | null;
  explorer: boolean;
  decoy: boolean;
  createdByKeyId: string | null;
  /** The signed-in user who created it (it dies with their suspension). */
  createdByUserId?: string | null;
  expiresAt: Date;
};

export async function insertKey(db: Queryable, k: InsertKey): Promise<KeyRow> {
  const r = await db.query<KeyRow>(
    `WITH k AS (
       INSERT INTO api_keys (account_id, name, lookup_prefix, key_hash, level, databases, explorer, decoy,
                             created_by_key_id, expires_at, created_by_user_id)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING *
     ) SELECT ${KEY_COLUMNS} FROM k`,
    [
      k.accountId,
      k.name,
      k.lookupPrefix,
      k.keyHash,
      k.level,
      k.databases,
      k.explorer,
      k.decoy,
      k.createdByKeyId,
      k.expiresAt,
      k.createdByUserId ?? null,
    ],
  );
  return r.rows[0]!;
}

/**
 * Whether the key `alias` was made by a signed-in user who can no longer stand behind it: suspended,
 * gone from the key's account, or holding a role below the key's level (owner/admin → admin,
 * member → write, viewer → read). A key never exceeds its creator's role.
 */
const userKeyDead = (alias: string) => `(${alias}.created_by_user_id IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM users u JOIN memberships m ON m.user_id = u.id AND m.account_id = ${alias}.account_id
     WHERE u.id = ${alias}.created_by_user_id AND u.status = 'active'
       AND (CASE m.role WHEN 'viewer' THEN 1 WHEN 'member' THEN 2 ELSE 3 END)
           >= (CASE ${alias}.level WHEN 'read' THEN 1 WHEN 'write' THEN 2 ELSE 3 END)
       AND (NOT ${alias}.explorer OR m.role IN ('owner', 'admin'))))`;

/**
 * One key by lookup prefix, with its hash, account and whether it or any creator up the chain is
 * revoked or was made by a user who can no longer stand behind it (`userKeyDead`). The walk up the
 * chain has no depth limit (a chain deeper than any limit must still lose its rights when an
 * ancestor is revoked); UNION, not UNION ALL, ends it even on a cycle.
 */
export async function findKeyForAuth(db: Queryable, lookupPrefix: string): Promise<KeyAuthRow | null> {
  const r = await db.query<KeyAuthRow>(
    `SELECT ${KEY_COLUMNS}, k.key_hash, a.name AS account_name, a.status AS account_status,
            (coalesce(chain.revoked, false) OR ${userKeyDead('k')}) AS creator_revoked
       FROM api_keys k
       JOIN accounts a ON a.id = k.account_id
       LEFT JOIN LATERAL (
         WITH RECURSIVE up (id, parent, revoked) AS (
           SELECT p.id, p.created_by_key_id, p.revoked_at IS NOT NULL OR ${userKeyDead('p')}
             FROM api_keys p WHERE p.id = k.created_by_key_id
           UNION
           SELECT p.id, p.created_by_key_id, p.revoked_at IS NOT NULL OR ${userKeyDead('p')}
             FROM up JOIN api_keys p ON p.id = up.parent
         )
         SELECT bool_or(up.revoked) AS revoked FROM up
       ) chain ON true
      WHERE k.lookup_prefix = $1`,
    [lookupPrefix],
  );
  return r.rows[0] ?? null;
}

/**
 * Whether a key still has its rights now (not revoked nor expired, no creator up its chain revoked
 * or unable to stand behind it, its account active): what authentication checks, asked again at
 * the end of a long request before a secret leaves it.
 */
export async function keyStillValid(db: Queryable, id: string): Promise<boolean> {
  const r = await db.query<{ p: string }>('SELECT lookup_prefix AS p FROM api_keys WHERE id = $1', [id]);
  const prefix = r.rows[0]?.p;
  const k = prefix ? await findKeyForAuth(db, prefix) : null;
  return (
    k !== null &&
    k.id === id &&
    k.revoked_at === null &&
    k.expires_at.getTime() > Date.now() &&
    !k.creator_revoked &&
    k.account_status === 'active'
  );
}

/**
 * How many keys stand above this one in its created_by chain (an operator key: 0). Unbounded
 * and cycle-safe like the authentication walk.
 */
export async function keyChainDepth(db: Queryable, id: string): Promise<number> {
  const r = await db.query<{ depth: number }>(
    `WITH RECURSIVE up (id, parent) AS (
       SELECT id, created_by_key_id FROM api_keys WHERE id = $1
       UNION
       SELECT p.id, p.created_by_key_id FROM up JOIN api_keys p ON p.id = up.parent
     ) SELECT (count(*) - 1)::int AS depth FROM up`,
    [id],
  );
  return r.rows[0]?.depth ?? 0;
}

export type KeyFilter = {
  accountId: string;
  /** Only keys this key created (a database-scoped admin manages only its own children). */
  createdBy?: string | null;
};

export async function getKey(db: Queryable, f: KeyFilter, id: string): Promise<KeyRow | null> {
  const r = await db.query<KeyRow>(
    `SELECT ${KEY_COLUMNS} FROM api_keys k
      WHERE k.id = $1 AND k.account_id = $2 AND ($3::uuid IS NULL OR k.created_by_key_id = $3)`,
    [id, f.accountId, f.createdBy ?? null],
  );
  return r.rows[0] ?? null;
}

/** Newest first, keyset-paginated over (created_at, id). */
export async function listKeys(
  db: Queryable,
  f: KeyFilter,
  page: { limit: number; after: PageCursor | null },
): Promise<KeyRow[]> {
  const r = await db.query<KeyRow>(
    `SELECT ${KEY_COLUMNS} FROM api_keys k
      WHERE k.account_id = $1 AND ($2::uuid IS NULL OR k.created_by_key_id = $2)
        AND ($3::bigint IS NULL
             OR (k.created_at, k.id) < (timestamptz 'epoch' + $3::bigint * interval '1 microsecond', $4::uuid))
      ORDER BY k.created_at DESC, k.id DESC
      LIMIT $5`,
    [f.accountId, f.createdBy ?? null, page.after?.ts ?? null, page.after?.id ?? null, page.limit],
  );
  return r.rows;
}

/**
 * Revokes a key (idempotent: the first revocation time is kept). Callers then evict it —
 * and every key it created — from every server's cache (keyChainPrefixes + notifyKeysChanged
 * in the same transaction, so the NOTIFY is delivered when the revocation commits).
 */
export async function revokeKey(db: Queryable, f: KeyFilter, id: string): Promise<KeyRow | null> {
  const r = await db.query<KeyRow>(
    `WITH k AS (
       UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
        WHERE id = $1 AND account_id = $2 AND ($3::uuid IS NULL OR created_by_key_id = $3)
        RETURNING *
     ) SELECT ${KEY_COLUMNS} FROM k`,
    [id, f.accountId, f.createdBy ?? null],
  );
  return r.rows[0] ?? null;
}

/**
 * Prefixes of the keys the roots select and of every key those created, transitively and however
 * deep (for cache eviction: a descendant left cached would outlive its ancestor's revocation).
 */
async function prefixesDown(
  db: Queryable,
  root: 'id' | 'created_by_user_id',
  value: string,
): Promise<string[]> {
  const r = await db.query<{ lookup_prefix: string }>(
    `WITH RECURSIVE down (id, lookup_prefix) AS (
       SELECT id, lookup_prefix FROM api_keys WHERE ${root} = $1
       UNION
       SELECT c.id, c.lookup_prefix FROM down JOIN api_keys c ON c.created_by_key_id = down.id
     ) SELECT lookup_prefix FROM down`,
    [value],
  );
  return r.rows.map((x) => x.lookup_prefix);
}

/** A key and every key it created. */
export const keyChainPrefixes = (db: Queryable, id: string) => prefixesDown(db, 'id', id);

/** The keys a user created and every key those created. */
export const keyPrefixesOfUser = (db: Queryable, userId: string) =>
  prefixesDown(db, 'created_by_user_id', userId);

/** Sends one NOTIFY per batch of prefixes (payloads stay far below the 8000-byte limit). */
export async function notifyKeysChanged(db: Queryable, prefixes: readonly string[]): Promise<void> {
  for (let i = 0; i < prefixes.length; i += 400) {
    await db.query('SELECT pg_notify($1, $2)', [KEYS_CHANNEL, prefixes.slice(i, i + 400).join(',')]);
  }
}

/** Every replica drops every cached key of an account (after a suspension or a policy change). */
export async function notifyAccountChanged(db: Queryable, accountId: string): Promise<void> {
  await db.query('SELECT pg_notify($1, $2)', [KEYS_CHANNEL, `account:${accountId}`]);
}

/**
 * Batched last-use recording: one statement for many keys. Never moves last_used_at
 * backwards (another replica may have flushed a later use). Returns the keys used for the
 * first time.
 */
export async function recordKeyUse(
  db: Queryable,
  uses: readonly { keyId: string; at: Date; ip: string | null }[],
): Promise<string[]> {
  if (uses.length === 0) return [];
  const r = await db.query<{ id: string }>(
    `WITH v AS (
       SELECT * FROM unnest($1::uuid[], $2::timestamptz[], $3::inet[]) AS v(id, at, ip)
     ), prev AS (
       SELECT p.id, p.last_used_at FROM api_keys p JOIN v ON v.id = p.id ORDER BY p.id FOR UPDATE OF p
     )
     UPDATE api_keys k
        SET last_used_at = greatest(k.last_used_at, v.at),
            last_used_ip = CASE WHEN k.last_used_at IS NULL OR v.at >= k.last_used_at
                                THEN coalesce(v.ip, k.last_used_ip) ELSE k.last_used_ip END
       FROM v, prev
      WHERE k.id = v.id AND prev.id = v.id
      RETURNING k.id, prev.last_used_at IS NULL AS first_use`,
    [uses.map((u) => u.keyId), uses.map((u) => u.at), uses.map((u) => u.ip)],
  );
  return (r.rows as { id: string; first_use: boolean }[]).filter((x) => x.first_use).map((x) => x.id);
}

/** Account and last-use IP of keys, for their audit events. */
export async function keysForAudit(
  db: Queryable,
  ids: readonly string[],
): Promise<{ id: string; account_id: string; last_used_ip: string | null }[]> {
  if (ids.length === 0) return [];
  const r = await db.query<{ id: string; account_id: string; last_used_ip: string | null }>(
    'SELECT id, account_id, host(last_used_ip) AS last_used_ip FROM api_keys WHERE id = ANY($1::uuid[]) ORDER BY id',
    [ids],
  );
  return r.rows;
}

/**
 * Account policy `key_idle_revoke_days`: revokes keys not used (or, if never used, not
 * created) within that many days. Returns the revoked keys' ids.
 */
export async function revokeIdleKeys(db: Queryable): Promise<{ id: string; account_id: string }[]> {
  const r = await db.query<{ id: string; account_id: string }>(
    `UPDATE api_keys k SET revoked_at = now()
       FROM accounts a
      WHERE a.id = k.account_id AND a.key_idle_revoke_days IS NOT NULL
        AND k.revoked_at IS NULL AND NOT k.decoy
        AND coalesce(k.last_used_at, k.created_at) < now() - make_interval(days => a.key_idle_revoke_days)
      RETURNING k.id, k.account_id`,
  );
  return r.rows;
}
