import type { Queryable } from '../db/pool.ts';

export type IdempotencyRecord = {
  request_hash: Buffer;
  response_status: number | null;
  response_body: unknown;
};

/**
 * Claims (account, key) for a new request: drops an expired record, or an unfinished one
 * older than `staleMs` (its request died), then inserts a placeholder. Returns null when the
 * claim succeeded, or the record that is already there.
 */
export async function claimIdempotencyKey(
  db: Queryable,
  r: { accountId: string; key: string; requestHash: Buffer; ttlMs: number; staleMs: number },
): Promise<IdempotencyRecord | null> {
  await db.query(
    `DELETE FROM idempotency_keys
      WHERE account_id = $1 AND key = $2
        AND (expires_at <= now()
             OR (response_status IS NULL AND created_at < now() - $3::bigint * interval '1 millisecond'))`,
    [r.accountId, r.key, r.staleMs],
  );
  const inserted = await db.query(
    `INSERT INTO idempotency_keys (account_id, key, request_hash, expires_at)
     VALUES ($1, $2, $3, now() + $4::bigint * interval '1 millisecond')
     ON CONFLICT (account_id, key) DO NOTHING`,
    [r.accountId, r.key, r.requestHash, r.ttlMs],
  );
  if (inserted.rowCount === 1) return null;
  const existing = await db.query<IdempotencyRecord>(
    'SELECT request_hash, response_status, response_body FROM idempotency_keys WHERE account_id = $1 AND key = $2',
    [r.accountId, r.key],
  );
  // Gone in between (expired and deleted by another request): report it as still in progress.
  return existing.rows[0] ?? { request_hash: r.requestHash, response_status: null, response_body: null };
}

export async function completeIdempotencyKey(
  db: Queryable,
  r: { accountId: string; key: string; status: number; body: unknown },
): Promise<void> {
  await db.query(
    `UPDATE idempotency_keys SET response_status = $3, response_body = $4
      WHERE account_id = $1 AND key = $2 AND response_status IS NULL`,
    [r.accountId, r.key, r.status, JSON.stringify(r.body)],
  );
}

/** The request failed: free the key so that a retry runs it again. */
export async function releaseIdempotencyKey(
  db: Queryable,
  r: { accountId: string; key: string },
): Promise<void> {
  await db.query(
    'DELETE FROM idempotency_keys WHERE account_id = $1 AND key = $2 AND response_status IS NULL',
    [r.accountId, r.key],
  );
}

export async function deleteExpiredIdempotencyKeys(db: Queryable): Promise<number> {
  const r = await db.query('DELETE FROM idempotency_keys WHERE expires_at <= now()');
  return r.rowCount ?? 0;
}
