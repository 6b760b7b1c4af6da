/**
 * The SQL that makes, changes and removes a tenant database and its four roles. Every
 * identifier goes through quoteIdent (names are validated by the job contract first); the
 * only literals (a SCRAM verifier, integer settings) go through quoteLiteral. Every function
 * is idempotent, so a job killed anywhere can simply run again.
 *
 * Ownership: each role we create carries the comment `bulwark:database:<database id>`, set
 * in the same transaction as CREATE ROLE. A role or database without our marker is never
 * adopted, altered or dropped (a name collision is a clean, permanent failure).
 */
import type pg from 'pg';
import { quoteIdent, quoteLiteral, type RoleNames } from '../../shared/identifiers.ts';
import type { DatabaseLimits } from '../jobs/contract.ts';

export class NotOursError extends Error {}

export type Queryable = Pick<pg.ClientBase, 'query'>;

export const roleMarker = (databaseId: string) => `bulwark:database:${databaseId}`;

/** Fixed settings of the roles the limits API does not cover (documented in docs). */
export const FIXED_LIMITS = {
  migratorConnectionLimit: 5,
  explorerStatementTimeoutMs: 10_000,
} as const;

const q = quoteIdent;
const lit = (n: number) => quoteLiteral(String(Math.trunc(n)));

export async function inTransaction<T>(pool: pg.Pool, fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
  const c = await pool.connect();
  try {
    await c.query('BEGIN');
    const out = await fn(c);
    await c.query('COMMIT');
    return out;
  } catch (err) {
    await c.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    c.release();
  }
}

type RoleState = 'missing' | 'ours' | 'foreign';

/** For each role name: missing, ours (our marker for this database id) or foreign. */
export async function roleOwnership(
  db: Queryable,
  names: string[],
  databaseId: string,
): Promise<Map<string, RoleState>> {
  const r = await db.query<{ rolname: string; marker: string | null }>(
    `SELECT rolname, shobj_description(oid, 'pg_authid') AS marker FROM pg_roles WHERE rolname = ANY($1)`,
    [names],
  );
  const out = new Map<string, RoleState>(names.map((n) => [n, 'missing']));
  for (const row of r.rows) out.set(row.rolname, row.marker === roleMarker(databaseId) ? 'ours' : 'foreign');
  return out;
}

/**
 * Creates the four roles (or finds them, ours, from an earlier attempt) and sets their
 * attributes, the owner's password (as the verifier) and the limits — in one transaction.
 */
export async function ensureRoles(
  pool: pg.Pool,
  input: { databaseId: string; roles: RoleNames; verifier: string; limits: DatabaseLimits },
): Promise<void> {
  const { roles } = input;
  await inTransaction(pool, async (c) => {
    const owned = await roleOwnership(c, Object.values(roles), input.databaseId);
    // One round trip for the rest (simple protocol; every identifier and literal is quoted).
    const sql: string[] = [];
    for (const [name, state] of owned) {
      if (state === 'foreign')
        throw new NotOursError(`role ${name} already exists and is not this database's`);
      if (state === 'missing') {
        sql.push(`CREATE ROLE ${q(name)} NOLOGIN`);
        sql.push(`COMMENT ON ROLE ${q(name)} IS ${quoteLiteral(roleMarker(input.databaseId))}`);
      }
    }
    const base = 'NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT';
    sql.push(`ALTER ROLE ${q(roles.owner)} LOGIN ${base} PASSWORD ${quoteLiteral(input.verifier)}`);
    sql.push(`ALTER ROLE ${q(roles.reader)} LOGIN ${base}`);
    sql.push(`ALTER ROLE ${q(roles.migrator)} LOGIN ${base}`);
    sql.push(`ALTER ROLE ${q(roles.explorer)} NOLOGIN ${base}`);
    sql.push(`ALTER ROLE ${q(roles.explorer)} SET default_transaction_read_only = on`);
    sql.push(
      `ALTER ROLE ${q(roles.explorer)} SET statement_timeout = ${lit(FIXED_LIMITS.explorerStatementTimeoutMs)}`,
    );
    sql.push(...limitStatements(roles, input.limits));
    await c.query(sql.join(';\n'));
  });
}

/** Connection limits and timeouts of the login roles (see contract.ts for which role gets what). */
export async function applyLimits(c: Queryable, roles: RoleNames, limits: DatabaseLimits): Promise<void> {
  await c.query(limitStatements(roles, limits).join(';\n'));
}

function limitStatements(roles: RoleNames, limits: DatabaseLimits): string[] {
  const stmt = lit(limits.statement_timeout_ms);
  const idle = lit(limits.idle_in_transaction_timeout_ms);
  return [
    `ALTER ROLE ${q(roles.owner)} CONNECTION LIMIT ${Math.trunc(limits.owner_connection_limit)}`,
    `ALTER ROLE ${q(roles.reader)} CONNECTION LIMIT ${Math.trunc(limits.reader_connection_limit)}`,
    `ALTER ROLE ${q(roles.migrator)} CONNECTION LIMIT ${FIXED_LIMITS.migratorConnectionLimit}`,
    ...[roles.owner, roles.reader].map((role) => `ALTER ROLE ${q(role)} SET statement_timeout = ${stmt}`),
    `ALTER ROLE ${q(roles.migrator)} SET statement_timeout = 0`,
    ...[roles.owner, roles.reader, roles.migrator].map(
      (role) => `ALTER ROLE ${q(role)} SET idle_in_transaction_session_timeout = ${idle}`,
    ),
  ];
}

/** The owner of a database, or null when it does not exist. */
export async function databaseOwner(db: Queryable, name: string): Promise<string | null> {
  const r = await db.query<{ owner: string }>(
    'SELECT pg_get_userbyid(datdba) AS owner FROM pg_database WHERE datname = $1',
    [name],
  );
  return r.rows[0]?.owner ?? null;
}

/** CREATE DATABASE (outside a transaction); an existing one is accepted only if our owner owns it. */
export async function ensureDatabase(
  pool: pg.Pool,
  name: string,
  owner: string,
): Promise<'created' | 'exists'> {
  const current = await databaseOwner(pool, name);
  if (current === owner) return 'exists';
  if (current !== null) throw new NotOursError(`database ${name} already exists and is not ours`);
  await pool.query(`CREATE DATABASE ${q(name)} OWNER ${q(owner)} TEMPLATE template0 ENCODING 'UTF8'`);
  return 'created';
}

/** Database-level privileges: nothing for PUBLIC, CONNECT for our four roles. */
export async function grantDatabase(pool: pg.Pool, name: string, roles: RoleNames): Promise<void> {
  const all = [roles.owner, roles.reader, roles.migrator, roles.explorer].map(q).join(', ');
  // Two statements in one simple-protocol message: one implicit transaction, one round trip.
  await pool.query(
    `REVOKE ALL ON DATABASE ${q(name)} FROM PUBLIC;\nGRANT CONNECT ON DATABASE ${q(name)} TO ${all}`,
  );
}

/**
 * Inside the tenant database (a client connected to it as the admin): schema public belongs
 * to the owner and nobody else; the reader and explorer read, the migrator also creates, and
 * future tables of the owner and the migrator are readable by reader and explorer.
 */
export async function setupSchema(c: Queryable, roles: RoleNames): Promise<void> {
  const o = q(roles.owner);
  const r = q(roles.reader);
  const m = q(roles.migrator);
  const e = q(roles.explorer);
  const sql = [
    'BEGIN',
    'REVOKE ALL ON SCHEMA public FROM PUBLIC',
    `ALTER SCHEMA public OWNER TO ${o}`,
    `GRANT USAGE ON SCHEMA public TO ${r}, ${e}, ${m}`,
    `GRANT CREATE ON SCHEMA public TO ${m}`,
    ...[o, m].map(
      (creator) =>
        `ALTER DEFAULT PRIVILEGES FOR ROLE ${creator} IN SCHEMA public GRANT SELECT ON TABLES TO ${r}, ${e}`,
    ),
    `ALTER DEFAULT PRIVILEGES FOR ROLE ${m} IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ${o}`,
    `ALTER DEFAULT PRIVILEGES FOR ROLE ${m} IN SCHEMA public GRANT USAGE ON SEQUENCES TO ${o}`,
    'COMMIT',
  ];
  try {
    // One round trip (simple protocol); an error aborts the block, rolled back below.
    await c.query(sql.join(';\n'));
  } catch (err) {
    await c.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

export async function setOwnerPassword(pool: pg.Pool, owner: string, verifier: string): Promise<void> {
  await pool.query(`ALTER ROLE ${q(owner)} PASSWORD ${quoteLiteral(verifier)}`);
}

/** Terminates every backend of the given roles (and, if named, of the database). */
export async function terminateSessions(
  pool: pg.Pool,
  opts: { roles: string[]; database?: string },
): Promise<number> {
  const r = await pool.query<{ n: number }>(
    `SELECT count(*) FILTER (WHERE pg_terminate_backend(pid))::int AS n FROM pg_stat_activity
      WHERE pid <> pg_backend_pid() AND (usename = ANY($1) OR datname = $2)`,
    [opts.roles, opts.database ?? null],
  );
  return r.rows[0]?.n ?? 0;
}

/** Drops the database if our owner role owns it; false when there was nothing (of ours) to drop. */
export async function dropDatabase(pool: pg.Pool, name: string, owner: string): Promise<boolean> {
  const current = await databaseOwner(pool, name);
  if (current === null) return false;
  if (current !== owner) throw new NotOursError(`database ${name} is not owned by ${owner}; not dropped`);
  await pool.query(`DROP DATABASE IF EXISTS ${q(name)} WITH (FORCE)`);
  return true;
}

/** Drops those of the roles that carry our marker; foreign roles are left alone. */
export async function dropOurRoles(pool: pg.Pool, roles: RoleNames, databaseId: string): Promise<string[]> {
  const dropped: string[] = [];
  await inTransaction(pool, async (c) => {
    const owned = await roleOwnership(c, Object.values(roles), databaseId);
    for (const [name, state] of owned) {
      if (state !== 'ours') continue;
      await c.query(`DROP ROLE ${q(name)}`);
      dropped.push(name);
    }
  });
  return dropped;
}
