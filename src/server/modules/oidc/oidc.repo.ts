/**
 * The SQL of OIDC sign-in: sign-ins in progress (`oidc_flows`, taken once by their callback),
 * the install secret that keys the subject hash, and the users an identity maps to. The IdP
 * subject never reaches this file: only its HMAC does.
 */
import type { Queryable, Tx } from '../../db/pool.ts';
import type { OidcRole } from './oidc.config.ts';

export type FlowRow = {
  binding_hash: Buffer;
  invite_hash: Buffer | null;
  redirect: string | null;
  expires_at: Date;
};

/** Stores a new flow; flows past their expiry are swept by the same statement (a bounded batch). */
export async function insertFlow(
  db: Queryable,
  f: {
    stateHash: Buffer;
    bindingHash: Buffer;
    inviteHash: Buffer | null;
    redirect: string | null;
    expiresAt: Date;
    now: Date;
  },
): Promise<void> {
  await db.query(
    `WITH swept AS (
       DELETE FROM oidc_flows WHERE state_hash IN (
         SELECT state_hash FROM oidc_flows WHERE expires_at < $6 ORDER BY expires_at LIMIT 100)
     )
     INSERT INTO oidc_flows (state_hash, binding_hash, invite_hash, redirect, expires_at) VALUES ($1, $2, $3, $4, $5)`,
    [f.stateHash, f.bindingHash, f.inviteHash, f.redirect, f.expiresAt, f.now],
  );
}

/** Takes a flow by deleting it: a state is usable once, whatever happens next. */
export async function takeFlow(db: Queryable, stateHash: Buffer): Promise<FlowRow | null> {
  const r = await db.query<FlowRow>(
    'DELETE FROM oidc_flows WHERE state_hash = $1 RETURNING binding_hash, invite_hash, redirect, expires_at',
    [stateHash],
  );
  return r.rows[0] ?? null;
}

/** Serialises the creation of an install secret among replicas (transaction-scoped). */
export async function lockInstallSecrets(tx: Tx): Promise<void> {
  await tx.query("SELECT pg_advisory_xact_lock(hashtext('bulwark.install_secrets'))");
}

export async function findInstallSecret(db: Queryable, name: string): Promise<string | null> {
  const r = await db.query<{ secret_sealed: string }>(
    'SELECT secret_sealed FROM install_secrets WHERE name = $1',
    [name],
  );
  return r.rows[0]?.secret_sealed ?? null;
}

export async function insertInstallSecret(tx: Tx, name: string, sealed: string): Promise<void> {
  await tx.query('INSERT INTO install_secrets (name, secret_sealed) VALUES ($1, $2)', [name, sealed]);
}

export type IdentityUser = { user_id: string; status: 'active' | 'suspended' };

export async function findIdentityUser(
  db: Queryable,
  issuer: string,
  subjectHmac: Buffer,
): Promise<IdentityUser | null> {
  const r = await db.query<IdentityUser>(
    `SELECT u.id AS user_id, u.status FROM user_identities i JOIN users u ON u.id = i.user_id
      WHERE i.issuer = $1 AND i.subject_hmac = $2`,
    [issuer, subjectHmac],
  );
  return r.rows[0] ?? null;
}

/** The ids of the accounts of these names (unknown names are absent). */
export async function accountIdsByName(
  db: Queryable,
  names: readonly string[],
): Promise<Map<string, string>> {
  const r = await db.query<{ id: string; name: string }>(
    'SELECT id, name FROM accounts WHERE name = ANY($1::text[])',
    [names],
  );
  return new Map(r.rows.map((a) => [a.name, a.id]));
}

/**
 * A new user (no username, no password) with this identity. Null when the identity was created
 * by a concurrent sign-in in the meantime (the caller rolls back and signs that user in).
 */
export async function insertOidcUser(
  tx: Tx,
  x: {
    issuer: string;
    subjectHmac: Buffer;
    platformAdmin: boolean;
    email: string | null;
    displayName: string | null;
  },
): Promise<string | null> {
  const user = await tx.query<{ id: string }>('INSERT INTO users (platform_admin) VALUES ($1) RETURNING id', [
    x.platformAdmin,
  ]);
  const userId = user.rows[0]!.id;
  const identity = await tx.query(
    `INSERT INTO user_identities (user_id, issuer, subject_hmac, email, display_name) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (issuer, subject_hmac) DO NOTHING`,
    [userId, x.issuer, x.subjectHmac, x.email, x.displayName],
  );
  return identity.rowCount === 1 ? userId : null;
}

export async function insertMembership(
  tx: Tx,
  accountId: string,
  userId: string,
  role: OidcRole,
): Promise<void> {
  await tx.query(
    `INSERT INTO memberships (account_id, user_id, role) VALUES ($1, $2, $3)
     ON CONFLICT (account_id, user_id) DO NOTHING`,
    [accountId, userId, role],
  );
}

/** Keeps what the IdP says about an identity (only when the operator opted in). */
export async function updateIdentityProfile(
  db: Queryable,
  x: { issuer: string; subjectHmac: Buffer; email: string | null; displayName: string | null },
): Promise<void> {
  await db.query(
    'UPDATE user_identities SET email = $3, display_name = $4 WHERE issuer = $1 AND subject_hmac = $2',
    [x.issuer, x.subjectHmac, x.email, x.displayName],
  );
}
