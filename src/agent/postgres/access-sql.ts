/**
 * The SQL of just-in-time logins (issue 14): a temporary LOGIN role per access grant, a member of
 * the database's `<db>_reader` (or `<db>_migrator`), with a password (its SCRAM verifier) that
 * PostgreSQL refuses after `VALID UNTIL`. Run by the admin on the maintenance database
 * (cluster-level statements only); every identifier through quoteIdent, every literal through
 * quoteLiteral.
 *
 * Ownership: each login carries `COMMENT ON ROLE … IS 'bulwark:access:<database id>:<grant id>'`,
 * set in the transaction that creates it. A role without that marker is never adopted, altered or
 * dropped. The marker differs from the database roles' (`bulwark:database:<id>`), so nothing
 * that handles a database's five roles can take a login for one of them, nor the other way round.
 */
import type pg from 'pg';
import type { ExecutionCapability } from '../../shared/execution-token.ts';
import { quoteIdent, quoteLiteral, type RoleNames } from '../../shared/identifiers.ts';
import { inTransaction, NotOursError, type Queryable, roleOwnership } from './tenant-sql.ts';

export const ACCESS_MARKER_PREFIX = 'bulwark:access:';
export const accessMarker = (databaseId: string, grantId: string) =>
  `${ACCESS_MARKER_PREFIX}${databaseId}:${grantId}`;

const UUID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
const MARKER = new RegExp(`^bulwark:access:(${UUID}):(${UUID})$`);

/** The database and grant of a just-in-time login's marker, or null when it is not one. */
export function parseAccessMarker(marker: string | null): { databaseId: string; grantId: string } | null {
  const m = marker === null ? null : MARKER.exec(marker);
  return m ? { databaseId: m[1]!, grantId: m[2]! } : null;
}

/** Sessions a just-in-time login may hold at once (PostgreSQL's CONNECTION LIMIT). */
export const ACCESS_CONNECTION_LIMIT = 2;

const q = quoteIdent;
const ATTRIBUTES = `NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT CONNECTION LIMIT ${ACCESS_CONNECTION_LIMIT}`;

export type AccessRole = {
  login: string;
  marker: string | null;
  canLogin: boolean;
  validUntil: Date | null;
};

/** Every role carrying a just-in-time marker, with its expiry. */
export async function listAccessRoles(db: Queryable): Promise<AccessRole[]> {
  const r = await db.query<{
    login: string;
    marker: string | null;
    can_login: boolean;
    valid_until: Date | null;
  }>(
    `SELECT a.rolname::pg_catalog.text AS login, pg_catalog.shobj_description(a.oid, 'pg_authid') AS marker,
            a.rolcanlogin AS can_login, a.rolvaliduntil AS valid_until
       FROM pg_catalog.pg_roles a
      WHERE pg_catalog.starts_with(pg_catalog.shobj_description(a.oid, 'pg_authid'), $1)`,
    [ACCESS_MARKER_PREFIX],
  );
  return r.rows.map((x) => ({
    login: x.login,
    marker: x.marker,
    canLogin: x.can_login,
    validUntil: x.valid_until,
  }));
}

/** One role by name: missing, or its marker and whether it may log in. */
export async function findAccessRole(db: Queryable, login: string): Promise<AccessRole | null> {
  const r = await db.query<{ marker: string | null; can_login: boolean; valid_until: Date | null }>(
    `SELECT pg_catalog.shobj_description(a.oid, 'pg_authid') AS marker, a.rolcanlogin AS can_login,
            a.rolvaliduntil AS valid_until
       FROM pg_catalog.pg_roles a WHERE a.rolname OPERATOR(pg_catalog.=) $1`,
    [login],
  );
  const row = r.rows[0];
  return row ? { login, marker: row.marker, canLogin: row.can_login, validUntil: row.valid_until } : null;
}

/** The stored SCRAM verifier of a role (the admin is a superuser and may read pg_authid). */
export async function storedVerifier(db: Queryable, login: string): Promise<string | null> {
  const r = await db.query<{ pw: string | null }>(
    'SELECT rolpassword AS pw FROM pg_catalog.pg_authid WHERE rolname OPERATOR(pg_catalog.=) $1',
    [login],
  );
  return r.rows[0]?.pw ?? null;
}

export type AccessGrantInput = {
  databaseId: string;
  grantId: string;
  login: string;
  capability: ExecutionCapability;
  verifier: string;
  validUntil: Date;
  roles: RoleNames;
};

/**
 * Creates the login (or finds it, ours for this grant, from an earlier attempt, and sets it
 * again): LOGIN with the verifier as password, VALID UNTIL, a connection limit, a member of the
 * capability's role only. A migrator login acts as `<db>_migrator` from its first statement
 * (`ALTER ROLE … SET role`), so what it creates belongs to the migrator and the login can be
 * dropped. The database's roles must be ours; a login name taken by anything else is refused.
 */
export async function ensureAccessRole(
  pool: pg.Pool,
  input: AccessGrantInput,
): Promise<'created' | 'exists'> {
  const { roles, login } = input;
  const member = input.capability === 'migrator' ? roles.migrator : roles.reader;
  const other = input.capability === 'migrator' ? roles.reader : roles.migrator;
  return inTransaction(pool, async (c) => {
    const owned = await roleOwnership(c, [roles.reader, roles.migrator], input.databaseId);
    for (const [name, state] of owned)
      if (state !== 'ours') throw new NotOursError(`role ${name} is ${state}, not this database's`);
    const existing = await findAccessRole(c, login);
    const marker = accessMarker(input.databaseId, input.grantId);
    if (existing && existing.marker !== marker)
      throw new NotOursError(`role ${login} already exists and is not this grant's`);
    const password = `PASSWORD ${quoteLiteral(input.verifier)} VALID UNTIL ${quoteLiteral(input.validUntil.toISOString())}`;
    const sql: string[] = [];
    if (!existing) {
      sql.push(`CREATE ROLE ${q(login)} LOGIN ${password} ${ATTRIBUTES} IN ROLE ${q(member)}`);
      sql.push(`COMMENT ON ROLE ${q(login)} IS ${quoteLiteral(marker)}`);
    } else {
      sql.push(`ALTER ROLE ${q(login)} LOGIN ${password} ${ATTRIBUTES}`);
      sql.push(`GRANT ${q(member)} TO ${q(login)}`);
      sql.push(`REVOKE ${q(other)} FROM ${q(login)}`);
      sql.push(`ALTER ROLE ${q(login)} RESET ALL`);
    }
    if (input.capability === 'migrator')
      sql.push(`ALTER ROLE ${q(login)} SET role = ${quoteLiteral(member)}`);
    // One round trip (simple protocol) inside the transaction.
    await c.query(sql.join(';\n'));
    return existing ? 'exists' : 'created';
  });
}

/**
 * Whether `login` may be revoked by us: 'missing', ours (a just-in-time marker, and the exact
 * one when `marker` is given), or a NotOursError.
 */
async function revocable(db: Queryable, login: string, marker?: string): Promise<AccessRole | null> {
  const role = await findAccessRole(db, login);
  if (!role) return null;
  if (parseAccessMarker(role.marker) === null || (marker !== undefined && role.marker !== marker))
    throw new NotOursError(`role ${login} is not a just-in-time login of this grant; left alone`);
  return role;
}

/** Step 1 of a revocation: no new session (PostgreSQL refuses the login from now on). */
export async function disableAccessLogin(
  pool: pg.Pool,
  login: string,
  marker?: string,
): Promise<'disabled' | 'missing'> {
  const role = await revocable(pool, login, marker);
  if (!role) return 'missing';
  if (role.canLogin) await pool.query(`ALTER ROLE ${q(login)} NOLOGIN`);
  return 'disabled';
}

/**
 * Terminates every backend of the login, waiting (bounded) for each to be gone. PgBouncer's
 * server connections for the login are among them, so its clients are cut as well.
 */
export async function terminateAccessSessions(pool: pg.Pool, login: string): Promise<number> {
  const r = await pool.query<{ n: number }>(
    `SELECT pg_catalog.count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(pid, 5000))::pg_catalog.int4 AS n
       FROM pg_catalog.pg_stat_activity
      WHERE pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
        AND usename OPERATOR(pg_catalog.=) $1`,
    [login],
  );
  return r.rows[0]?.n ?? 0;
}

/**
 * The last step: DROP ROLE. A login that owns something (or holds privileges) cannot be dropped:
 * it stays NOLOGIN and the caller says so ('owns_objects'); nothing of it is reassigned.
 */
export async function dropAccessLogin(
  pool: pg.Pool,
  login: string,
  marker?: string,
): Promise<'dropped' | 'missing' | 'owns_objects'> {
  const role = await revocable(pool, login, marker);
  if (!role) return 'missing';
  try {
    await pool.query(`DROP ROLE ${q(login)}`);
    return 'dropped';
  } catch (err) {
    // 2BP01 dependent_objects_still_exist: it owns objects or holds privileges somewhere.
    if ((err as { code?: string }).code === '2BP01') return 'owns_objects';
    throw err;
  }
}
