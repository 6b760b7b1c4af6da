/**
 * Governance policies (issue 14): versioned rows per account (migration 0021). The active
 * policy is the highest version; none means the built-in rules (version 0, policy null).
 */
import type { GovernancePolicy } from '../../../shared/policy/governance.ts';
import type { Queryable } from '../../db/pool.ts';

export type PolicyAuthor = { kind: 'user' | 'key'; id: string; name: string } | null;

export type PolicyVersionRow = {
  version: number;
  source: string;
  source_sha256: Buffer;
  compiled: GovernancePolicy;
  created_at: Date;
  applied_by: PolicyAuthor;
};

const AUTHOR_COLUMNS = `p.version, p.source_sha256, p.created_at,
  CASE WHEN p.created_by_user_id IS NOT NULL THEN
         json_build_object('kind', 'user', 'id', p.created_by_user_id, 'name', coalesce(u.username, 'user'))
       WHEN p.created_by_key_id IS NOT NULL THEN
         json_build_object('kind', 'key', 'id', p.created_by_key_id, 'name', k.name)
  END AS applied_by`;

const COLUMNS = `${AUTHOR_COLUMNS}, p.source, p.compiled`;

const FROM = `governance_policies p
  LEFT JOIN users u ON u.id = p.created_by_user_id
  LEFT JOIN api_keys k ON k.id = p.created_by_key_id`;

/** The policy requests are decided with: version 0 and null when the account never applied one. */
export async function activePolicy(
  db: Queryable,
  accountId: string,
): Promise<{ version: number; policy: GovernancePolicy | null }> {
  const r = await db.query<{ version: number; compiled: GovernancePolicy }>(
    `SELECT version, compiled FROM governance_policies
      WHERE account_id = $1 ORDER BY version DESC LIMIT 1`,
    [accountId],
  );
  const row = r.rows[0];
  return row ? { version: row.version, policy: row.compiled } : { version: 0, policy: null };
}

/** The active version (or the one named) with its source and author; null when none. */
export async function policyRow(
  db: Queryable,
  accountId: string,
  version: number | null = null,
): Promise<PolicyVersionRow | null> {
  const r = await db.query<PolicyVersionRow>(
    `SELECT ${COLUMNS} FROM ${FROM}
      WHERE p.account_id = $1 AND ($2::integer IS NULL OR p.version = $2)
      ORDER BY p.version DESC LIMIT 1`,
    [accountId, version],
  );
  return r.rows[0] ?? null;
}

/** Newest first, older than `before` when given, at most `limit` (no source: a history, not a download). */
export async function listPolicyVersions(
  db: Queryable,
  accountId: string,
  limit: number,
  before: number | null,
): Promise<Omit<PolicyVersionRow, 'source' | 'compiled'>[]> {
  const r = await db.query<Omit<PolicyVersionRow, 'source' | 'compiled'>>(
    `SELECT ${AUTHOR_COLUMNS} FROM ${FROM}
      WHERE p.account_id = $1 AND ($3::integer IS NULL OR p.version < $3)
      ORDER BY p.version DESC LIMIT $2`,
    [accountId, limit, before],
  );
  return r.rows;
}

export type InsertPolicy = {
  accountId: string;
  source: string;
  sourceSha256: Buffer;
  compiled: GovernancePolicy;
  createdByUserId: string | null;
  createdByKeyId: string | null;
};

/**
 * Appends the next version. Call inside a transaction: the account row is locked first so two
 * concurrent applies get consecutive versions instead of one failing on the unique key.
 */
export async function insertPolicyVersion(tx: Queryable, p: InsertPolicy): Promise<number> {
  await tx.query('SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE', [p.accountId]);
  const r = await tx.query<{ version: number }>(
    `INSERT INTO governance_policies
       (account_id, version, source, source_sha256, compiled, created_by_user_id, created_by_key_id)
     SELECT $1, coalesce(max(version), 0) + 1, $2, $3, $4, $5, $6
       FROM governance_policies WHERE account_id = $1
     RETURNING version`,
    [p.accountId, p.source, p.sourceSha256, JSON.stringify(p.compiled), p.createdByUserId, p.createdByKeyId],
  );
  return r.rows[0]!.version;
}
