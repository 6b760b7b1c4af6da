/**
 * The SQL that makes, changes and removes a tenant database and its five roles. Every
 * identifier goes through quoteIdent (names are validated by the job contract first); the
 * only literals (SCRAM verifiers, integer settings, our markers) go through quoteLiteral. Every
 * function is idempotent, so a job killed anywhere can simply run again.
 *
 * Ownership: each role we create carries the comment `bulwark:database:<database id>`, set
 * in the same transaction as CREATE ROLE, and so does the database. A role or database without
 * our marker is never adopted, altered or dropped (a name collision is a clean, permanent
 * failure). A database is ours when our marked steward owns it, or (created before the steward
 * existed) our marked owner does; such a legacy database is moved to the steward.
 *
 * Who runs what (steward.ts): functions taking the admin pool run on the maintenance database
 * (cluster-level statements only); setupSchema runs in a steward session inside the tenant
 * database. Every catalog object is written `pg_catalog.`-qualified; the sessions also pin
 * search_path = pg_catalog, pg_temp at login.
 */
import type pg from 'pg';
import type { DatabaseLimits } from '../../shared/contracts/jobs.ts';
import { quoteIdent, quoteLiteral, type RoleNames } from '../../shared/identifiers.ts';
import { scramVerifier } from '../../shared/scram.ts';
import { tenantTemplate } from './catalog-visibility.ts';
import { stewardPassword } from './steward.ts';

export class NotOursError extends Error {}

export type Queryable = Pick<pg.ClientBase, 'query'>;

export const roleMarker = (databaseId: string) => `bulwark:database:${databaseId}`;
export const MARKER_PREFIX = 'bulwark:database:';

/** Fixed settings of the roles the limits API does not cover (documented in docs). */
export const FIXED_LIMITS = {
  migratorConnectionLimit: 5,
  explorerStatementTimeoutMs: 10_000,
  /**
   * temp_file_limit of the explorer role, in kB (512 MB): a sort or hash past it fails with 53400
   * instead of writing gigabytes of temporary files. Superuser-only, so the explorer (and the
   * tenant owner) cannot raise it.
   */
  explorerTempFileLimitKb: 524_288,
  /** The agent opens at most a few steward sessions per database at once. */
  stewardConnectionLimit: 8,
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
    `SELECT r.rolname::text AS rolname, pg_catalog.shobj_description(r.oid, 'pg_authid') AS marker
       FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) ANY($1::pg_catalog.text[])`,
    [names],
  );
  const out = new Map<string, RoleState>(names.map((n) => [n, 'missing']));
  for (const row of r.rows) out.set(row.rolname, row.marker === roleMarker(databaseId) ? 'ours' : 'foreign');
  return out;
}

export const BASE_ATTRIBUTES = 'NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS';

/**
 * The steward's attributes, password and memberships. INHERIT (not NOINHERIT): on PostgreSQL 15
 * the database owner's right over the new database's `public` schema (owned by the implicit
 * role pg_database_owner) is an inherited privilege, so a NOINHERIT steward could not hand the
 * schema to `<db>_owner` (measured: "must be owner of schema public"). It inherits nothing else
 * than what `SET ROLE <db>_owner` / `<db>_migrator` would give it anyway.
 */
export function stewardStatements(roles: RoleNames, verifier: string): string[] {
  const s = q(roles.steward);
  return [
    `ALTER ROLE ${s} LOGIN ${BASE_ATTRIBUTES} INHERIT CONNECTION LIMIT ${FIXED_LIMITS.stewardConnectionLimit} PASSWORD ${quoteLiteral(verifier)}`,
    `ALTER ROLE ${s} RESET ALL`,
    `GRANT ${q(roles.owner)}, ${q(roles.migrator)} TO ${s}`,
  ];
}

/**
 * The cold path's first step (ADR 0037): every role name checked (another database's role: not
 * ours), and the steward — the database's owner — made if missing, with our marker, so that
 * CREATE DATABASE can start while `ensureRoles` does the rest beside it. Its commit does not wait
 * for the WAL flush: CREATE DATABASE's own commit, which comes after it, flushes it (a crash
 * before that loses both, and the rerun makes them again).
 */
export async function ensureStewardRole(
  pool: pg.Pool,
  input: { databaseId: string; roles: RoleNames },
): Promise<void> {
  const { roles } = input;
  await inTransaction(pool, async (c) => {
    const owned = await roleOwnership(c, Object.values(roles), input.databaseId);
    for (const [name, state] of owned)
      if (state === 'foreign')
        throw new NotOursError(`role ${name} already exists and is not this database's`);
    if (owned.get(roles.steward) !== 'missing') return;
    await c.query(
      [
        'SET LOCAL synchronous_commit = off',
        `CREATE ROLE ${q(roles.steward)} NOLOGIN`,
        `COMMENT ON ROLE ${q(roles.steward)} IS ${quoteLiteral(roleMarker(input.databaseId))}`,
      ].join(';\n'),
    );
  });
}

/**
 * Creates the five roles (or finds them, ours, from an earlier attempt) and sets their
 * attributes, the owner's password (as the verifier), the steward's derived password and the
 * limits — in one transaction. Role-level settings the tenant may have added are reset first.
 */
export async function ensureRoles(
  pool: pg.Pool,
  input: {
    databaseId: string;
    roles: RoleNames;
    verifier: string;
    limits: DatabaseLimits;
    key: Buffer;
    /** The steward's verifier when the caller computed it already (off the event loop). */
    stewardVerifier?: string;
    /**
     * Commit without waiting for the WAL flush: for a caller whose next step on the cluster is a
     * synchronous commit begun after this one (it flushes this one too) before anything relies on
     * it being durable.
     */
    asyncCommit?: boolean;
  },
): Promise<void> {
  const { roles } = input;
  await inTransaction(pool, async (c) => {
    const owned = await roleOwnership(c, Object.values(roles), input.databaseId);
    // One round trip for the rest (simple protocol; every identifier and literal is quoted).
    const sql: string[] = input.asyncCommit ? ['SET LOCAL synchronous_commit = off'] : [];
    for (const [name, state] of owned) {
      if (state === 'foreign')
        throw new NotOursError(`role ${name} already exists and is not this database's`);
      if (state === 'missing') {
        sql.push(`CREATE ROLE ${q(name)} NOLOGIN`);
        sql.push(`COMMENT ON ROLE ${q(name)} IS ${quoteLiteral(roleMarker(input.databaseId))}`);
      }
    }
    const base = `${BASE_ATTRIBUTES} INHERIT`;
    sql.push(`ALTER ROLE ${q(roles.owner)} LOGIN ${base} PASSWORD ${quoteLiteral(input.verifier)}`);
    sql.push(`ALTER ROLE ${q(roles.reader)} LOGIN ${base}`);
    sql.push(`ALTER ROLE ${q(roles.migrator)} LOGIN ${base}`);
    sql.push(`ALTER ROLE ${q(roles.explorer)} NOLOGIN ${base}`);
    for (const role of [roles.owner, roles.reader, roles.migrator, roles.explorer])
      sql.push(`ALTER ROLE ${q(role)} RESET ALL`);
    sql.push(...explorerSettingStatements(roles));
    sql.push(...limitStatements(roles, input.limits));
    const steward =
      input.stewardVerifier ?? scramVerifier(stewardPassword(input.key, input.databaseId, roles));
    sql.push(...stewardStatements(roles, steward));
    // Governed migrations run as the migrator and must change the tables the tenant created as
    // the owner (ADR 0021); the execution executor grants the same to older databases lazily.
    sql.push(`GRANT ${q(roles.owner)} TO ${q(roles.migrator)}`);
    await c.query(sql.join(';\n'));
  });
}

/**
 * The steward alone (for a database created before it existed, or whose steward lost its login):
 * created with our marker if missing, then its attributes, derived password and memberships.
 * The other roles must be ours already.
 */
export async function ensureSteward(
  pool: pg.Pool,
  input: { databaseId: string; roles: RoleNames; key: Buffer },
): Promise<void> {
  const { roles } = input;
  await inTransaction(pool, async (c) => {
    const owned = await roleOwnership(c, [roles.owner, roles.migrator, roles.steward], input.databaseId);
    const sql: string[] = [];
    for (const [name, state] of owned) {
      if (state === 'foreign' || (state === 'missing' && name !== roles.steward))
        throw new NotOursError(`role ${name} is ${state}, not this database's`);
      if (state === 'missing') {
        sql.push(`CREATE ROLE ${q(name)} NOLOGIN`);
        sql.push(`COMMENT ON ROLE ${q(name)} IS ${quoteLiteral(roleMarker(input.databaseId))}`);
      }
    }
    sql.push(...stewardStatements(roles, scramVerifier(stewardPassword(input.key, input.databaseId, roles))));
    await c.query(sql.join(';\n'));
  });
}

/**
 * Connection limits and timeouts of the login roles (see src/shared/contracts/jobs.ts for which role gets what).
 * Whatever else the tenant set on them (`ALTER ROLE self SET …`) goes first.
 */
export async function applyLimits(c: Queryable, roles: RoleNames, limits: DatabaseLimits): Promise<void> {
  const reset = [roles.owner, roles.reader, roles.migrator].map((r) => `ALTER ROLE ${q(r)} RESET ALL`);
  await c.query([...reset, ...limitStatements(roles, limits)].join(';\n'));
}

export function explorerSettingStatements(roles: RoleNames): string[] {
  return [
    `ALTER ROLE ${q(roles.explorer)} SET default_transaction_read_only = on`,
    `ALTER ROLE ${q(roles.explorer)} SET statement_timeout = ${lit(FIXED_LIMITS.explorerStatementTimeoutMs)}`,
    `ALTER ROLE ${q(roles.explorer)} SET temp_file_limit = ${lit(FIXED_LIMITS.explorerTempFileLimitKb)}`,
  ];
}

export function limitStatements(roles: RoleNames, limits: DatabaseLimits): string[] {
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

/**
 * The role-level settings (`ALTER ROLE … SET`, any database) we give each of a database's roles,
 * as PostgreSQL lists them in pg_db_role_setting.setconfig. Anything else is drift.
 */
export function expectedRoleSettings(roles: RoleNames, limits: DatabaseLimits): Map<string, string[]> {
  const stmt = String(Math.trunc(limits.statement_timeout_ms));
  const idle = String(Math.trunc(limits.idle_in_transaction_timeout_ms));
  return new Map([
    [roles.owner, [`statement_timeout=${stmt}`, `idle_in_transaction_session_timeout=${idle}`]],
    [roles.reader, [`statement_timeout=${stmt}`, `idle_in_transaction_session_timeout=${idle}`]],
    [roles.migrator, ['statement_timeout=0', `idle_in_transaction_session_timeout=${idle}`]],
    [
      roles.explorer,
      [
        'default_transaction_read_only=on',
        `statement_timeout=${FIXED_LIMITS.explorerStatementTimeoutMs}`,
        `temp_file_limit=${FIXED_LIMITS.explorerTempFileLimitKb}`,
      ],
    ],
    [roles.steward, []],
  ]);
}

/**
 * Puts a database's settings back to ours (from the maintenance database, as the admin):
 * no database-level settings, no per-database settings of any role in it (nor of our roles in
 * any other database), and the role-level
 * settings of our roles exactly as expectedRoleSettings (when limits are known).
 */
/**
 * SQL: a `pg_db_role_setting` row (alias `s`) that can take effect — a database-wide one, or a
 * role's that may connect to that database. Any role may `ALTER ROLE self IN DATABASE <any>
 * SET …`: a tenant's owner can put rows on every database of the node, which never apply (its
 * role has no CONNECT there). Checks that compare a database's settings (a spare's, a move's
 * fingerprint, drift) look only at these; `resetSettings` still clears them all.
 */
export const effectiveSetting = (s: string): string =>
  `(${s}.setrole OPERATOR(pg_catalog.=) 0 OR pg_catalog.has_database_privilege(${s}.setrole, ${s}.setdatabase, 'CONNECT'))`;

export async function resetSettings(
  pool: pg.Pool,
  name: string,
  roles: RoleNames,
  limits: DatabaseLimits | null,
): Promise<void> {
  // Any role's settings in this database, and our roles' settings in any database.
  const perDb = await pool.query<{ datname: string; role: string | null }>(
    `SELECT d.datname::pg_catalog.text AS datname,
            CASE WHEN s.setrole OPERATOR(pg_catalog.=) 0 THEN NULL
                 ELSE pg_catalog.pg_get_userbyid(s.setrole)::pg_catalog.text END AS role
       FROM pg_catalog.pg_db_role_setting s
       JOIN pg_catalog.pg_database d ON d.oid OPERATOR(pg_catalog.=) s.setdatabase
      WHERE d.datname OPERATOR(pg_catalog.=) $1
         OR pg_catalog.pg_get_userbyid(s.setrole) OPERATOR(pg_catalog.=) ANY($2::pg_catalog.text[])`,
    [name, Object.values(roles)],
  );
  const sql: string[] = [];
  for (const r of perDb.rows) {
    if (r.role === null) sql.push(`ALTER DATABASE ${q(r.datname)} RESET ALL`);
    else sql.push(`ALTER ROLE ${q(r.role)} IN DATABASE ${q(r.datname)} RESET ALL`);
  }
  if (limits) {
    for (const role of Object.values(roles)) sql.push(`ALTER ROLE ${q(role)} RESET ALL`);
    sql.push(...explorerSettingStatements(roles), ...limitStatements(roles, limits));
  }
  if (sql.length > 0) await pool.query(sql.join(';\n'));
}

export type DatabaseState = 'missing' | 'ours' | 'legacy' | 'foreign';

/**
 * Whether a database is ours: owned by our marked steward ('ours'), by our marked owner (a
 * 'legacy' database from before the steward), by anything else ('foreign'), or absent.
 */
export async function databaseOwnership(
  db: Queryable,
  name: string,
  roles: RoleNames,
  databaseId: string,
): Promise<DatabaseState> {
  const r = await db.query<{ owner: string; marker: string | null }>(
    `SELECT a.rolname::pg_catalog.text AS owner, pg_catalog.shobj_description(a.oid, 'pg_authid') AS marker
       FROM pg_catalog.pg_database d JOIN pg_catalog.pg_roles a ON a.oid OPERATOR(pg_catalog.=) d.datdba
      WHERE d.datname OPERATOR(pg_catalog.=) $1`,
    [name],
  );
  const row = r.rows[0];
  if (!row) {
    const exists = await db.query(
      'SELECT 1 FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.=) $1',
      [name],
    );
    return exists.rows.length > 0 ? 'foreign' : 'missing';
  }
  if (row.marker !== roleMarker(databaseId)) return 'foreign';
  if (row.owner === roles.steward) return 'ours';
  if (row.owner === roles.owner) return 'legacy';
  return 'foreign';
}

/**
 * CREATE DATABASE (outside a transaction) owned by the steward, with our marker; an existing
 * one is accepted only if it is ours, and a legacy one (owned by `<db>_owner`) is moved to the
 * steward. Database-level settings are reset either way.
 */
export async function ensureDatabase(
  pool: pg.Pool,
  name: string,
  roles: RoleNames,
  databaseId: string,
): Promise<'created' | 'exists'> {
  const state = await databaseOwnership(pool, name, roles, databaseId);
  if (state === 'foreign') throw new NotOursError(`database ${name} already exists and is not ours`);
  if (state === 'missing') {
    // Our template (catalog-visibility.ts) hides other tenants' sessions and settings.
    const template = q(await tenantTemplate(pool));
    await pool.query(
      `CREATE DATABASE ${q(name)} OWNER ${q(roles.steward)} TEMPLATE ${template} ENCODING 'UTF8'`,
    );
  }
  const sql = [`COMMENT ON DATABASE ${q(name)} IS ${quoteLiteral(roleMarker(databaseId))}`];
  if (state === 'legacy') sql.unshift(`ALTER DATABASE ${q(name)} OWNER TO ${q(roles.steward)}`);
  if (state !== 'missing') sql.push(`ALTER DATABASE ${q(name)} RESET ALL`);
  await pool.query(sql.join(';\n'));
  return state === 'missing' ? 'created' : 'exists';
}

/**
 * Database-level privileges: nothing for PUBLIC; CONNECT, CREATE and TEMPORARY for the tenant's
 * owner (what it had as the database's owner, minus changing the database itself); CONNECT for
 * the reader, migrator and explorer. The steward has everything as the owner.
 */
export async function grantDatabase(pool: pg.Pool, name: string, roles: RoleNames): Promise<void> {
  const others = [roles.reader, roles.migrator, roles.explorer].map(q).join(', ');
  // Three statements in one simple-protocol message: one implicit transaction, one round trip.
  await pool.query(
    [
      `REVOKE ALL ON DATABASE ${q(name)} FROM PUBLIC`,
      `GRANT CONNECT, CREATE, TEMPORARY ON DATABASE ${q(name)} TO ${q(roles.owner)}`,
      `GRANT CONNECT ON DATABASE ${q(name)} TO ${others}`,
    ].join(';\n'),
  );
}

/**
 * Inside the tenant database, on a steward session: schema public belongs to the owner and
 * nobody else; the reader and explorer read, the migrator also creates, and future tables of the
 * owner and the migrator are readable by reader and explorer. The steward hands the schema to the
 * owner (it may: it owns the database, and is a member of the owner), then acts as the owner.
 */
export async function setupSchema(c: Queryable, roles: RoleNames): Promise<void> {
  const o = q(roles.owner);
  const r = q(roles.reader);
  const m = q(roles.migrator);
  const e = q(roles.explorer);
  const current = await c.query<{ owner: string }>(
    `SELECT pg_catalog.pg_get_userbyid(nspowner)::pg_catalog.text AS owner
       FROM pg_catalog.pg_namespace WHERE nspname OPERATOR(pg_catalog.=) 'public'`,
  );
  const owner = current.rows[0]?.owner;
  const sql = [
    'BEGIN',
    ...(owner === undefined ? [`CREATE SCHEMA public AUTHORIZATION ${o}`] : []),
    ...(owner !== undefined && owner !== roles.owner ? [`ALTER SCHEMA public OWNER TO ${o}`] : []),
    `SET LOCAL ROLE ${o}`,
    'REVOKE ALL ON SCHEMA public FROM PUBLIC',
    `GRANT USAGE ON SCHEMA public TO ${r}, ${e}, ${m}`,
    `GRANT CREATE ON SCHEMA public TO ${m}`,
    `ALTER DEFAULT PRIVILEGES FOR ROLE ${o} IN SCHEMA public GRANT SELECT ON TABLES TO ${r}, ${e}`,
    `SET LOCAL ROLE ${m}`,
    `ALTER DEFAULT PRIVILEGES FOR ROLE ${m} IN SCHEMA public GRANT SELECT ON TABLES TO ${r}, ${e}`,
    `ALTER DEFAULT PRIVILEGES FOR ROLE ${m} IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ${o}`,
    `ALTER DEFAULT PRIVILEGES FOR ROLE ${m} IN SCHEMA public GRANT USAGE ON SEQUENCES TO ${o}`,
    'RESET ROLE',
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

/**
 * Terminates every backend of the given roles (and, if named, of the database). `waitMs`: wait up
 * to that long for each to be gone (it has flushed its statistics and released its locks by then);
 * without it, the signal is sent and not waited for.
 */
export async function terminateSessions(
  pool: pg.Pool,
  opts: { roles: string[]; database?: string; waitMs?: number },
): Promise<number> {
  const r = await pool.query<{ n: number }>(
    `SELECT pg_catalog.count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(pid, $3))::pg_catalog.int4 AS n
       FROM pg_catalog.pg_stat_activity
      WHERE pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
        AND (usename OPERATOR(pg_catalog.=) ANY($1::pg_catalog.name[]) OR datname OPERATOR(pg_catalog.=) $2)`,
    [opts.roles, opts.database ?? null, opts.waitMs ?? 0],
  );
  return r.rows[0]?.n ?? 0;
}

/**
 * Ends the PostgreSQL sessions of these users in this database (what PgBouncer holds as their
 * server connections there; a cut needs them gone before its KILL, see pooler-manager.ts).
 */
export async function terminatePoolerSessions(
  pool: pg.Pool,
  database: string,
  users: readonly string[],
): Promise<number> {
  const r = await pool.query<{ n: number }>(
    `SELECT pg_catalog.count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(pid))::pg_catalog.int4 AS n
       FROM pg_catalog.pg_stat_activity
      WHERE pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
        AND datname OPERATOR(pg_catalog.=) $1 AND usename OPERATOR(pg_catalog.=) ANY($2::pg_catalog.name[])`,
    [database, users],
  );
  return r.rows[0]?.n ?? 0;
}

/**
 * Terminates the sessions of the given roles that may hold a lock on them: an open transaction
 * that wrote something (a row lock on pg_authid or pg_db_role_setting needs a transaction id —
 * `BEGIN; ALTER ROLE self …` left open) or a lock on one of the roles as a shared object. Waits
 * (bounded) for each to be gone, so the caller's retry no longer queues behind it. Only for
 * operations that cut those sessions anyway (rotation).
 */
export async function terminateLockHolders(pool: pg.Pool, roles: string[]): Promise<number> {
  const r = await pool.query<{ n: number }>(
    `SELECT pg_catalog.count(*) FILTER (WHERE pg_catalog.pg_terminate_backend(a.pid, 5000))::pg_catalog.int4 AS n
       FROM pg_catalog.pg_stat_activity a
      WHERE a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
        AND a.usename OPERATOR(pg_catalog.=) ANY($1::pg_catalog.name[])
        AND (a.backend_xid IS NOT NULL
             OR EXISTS (SELECT 1 FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_authid o ON o.oid OPERATOR(pg_catalog.=) l.objid
                         WHERE l.pid OPERATOR(pg_catalog.=) a.pid AND l.locktype OPERATOR(pg_catalog.=) 'object'
                           AND l.classid OPERATOR(pg_catalog.=) 'pg_catalog.pg_authid'::pg_catalog.regclass
                           AND o.rolname OPERATOR(pg_catalog.=) ANY($1::pg_catalog.name[])))`,
    [roles],
  );
  return r.rows[0]?.n ?? 0;
}

/** Drops the database if it is ours (or legacy ours); false when there was nothing to drop. */
export async function dropDatabase(
  pool: pg.Pool,
  name: string,
  roles: RoleNames,
  databaseId: string,
): Promise<boolean> {
  const state = await databaseOwnership(pool, name, roles, databaseId);
  if (state === 'missing') return false;
  if (state === 'foreign') throw new NotOursError(`database ${name} is not ours; not dropped`);
  await pool.query(`DROP DATABASE IF EXISTS ${q(name)} WITH (FORCE)`);
  return true;
}

/** Drops those of the roles that carry our marker; foreign roles are left alone. */
export async function dropOurRoles(pool: pg.Pool, roles: RoleNames, databaseId: string): Promise<string[]> {
  const dropped: string[] = [];
  await inTransaction(pool, async (c) => {
    const owned = await roleOwnership(c, Object.values(roles), databaseId);
    // The steward goes last: it may still hold the others (membership is dropped with it anyway).
    for (const [name, state] of owned) {
      if (state !== 'ours') continue;
      await c.query(`DROP ROLE ${q(name)}`);
      dropped.push(name);
    }
  });
  return dropped;
}
