/**
 * The explorer's own login: `<db>_explorer` (created NOLOGIN by the database jobs, with SELECT on
 * public only and `default_transaction_read_only`) gets LOGIN with a password only this agent
 * knows, so explorer queries run on a connection that IS that role — there is no superuser
 * session underneath that `RESET ROLE` could return to (docs/adr/0008-explorer-execution.md).
 *
 * The password is HMAC-SHA256(agent explorer key, database id + role): nothing per database is
 * stored, the key is 32 random bytes in the agent's state dir (0600), and only the SCRAM
 * verifier reaches PostgreSQL. The role is reachable on the loopback PostgreSQL port only (it
 * is not in PgBouncer's auth file).
 *
 * Hardening, re-applied on every preparation: the explorer loses EXECUTE on every routine of the
 * tenant's, in every schema (hidden calls through `t.f` attribute notation, operators, domain
 * checks and views run user code), while the database's other roles keep exactly the access
 * they had through PUBLIC; default privileges do the same for routines created later. That
 * work runs in a steward session (postgres/steward.ts), never as the cluster's superuser.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import { quoteIdent as q, quoteLiteral, type RoleNames } from '../../shared/identifiers.ts';
import { scramVerifier } from '../../shared/scram.ts';
import { PermanentJobError } from '../jobs/job-context.ts';
import {
  type ClusterAccess,
  connectSteward,
  derivedRolePassword,
  isLoginRefused,
} from '../postgres/steward.ts';
import {
  databaseOwnership,
  ensureDatabase,
  ensureSteward,
  grantDatabase,
  NotOursError,
  roleOwnership,
} from '../postgres/tenant-sql.ts';

/** Connection limit of the explorer login (the agent's own pool uses at most 2). */
const EXPLORER_CONNECTION_LIMIT = 4;

/** Reads (or creates, 0600) the agent's explorer key. */
export async function loadExplorerKey(stateDir: string): Promise<Buffer> {
  const file = path.join(stateDir, 'explorer-key');
  try {
    const raw = (await fs.readFile(file, 'utf8')).trim();
    if (!/^[0-9a-f]{64}$/.test(raw)) throw new Error(`${file} is not a 32-byte hex key`);
    return Buffer.from(raw, 'hex');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  await fs.mkdir(stateDir, { recursive: true, mode: 0o700 });
  const key = randomBytes(32);
  try {
    await fs.writeFile(file, `${key.toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
    return key;
  } catch (err) {
    // Another process created it first: use theirs.
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return loadExplorerKey(stateDir);
    throw err;
  }
}

/** The explorer role's password for one database (never stored, never logged). */
export function explorerPassword(key: Buffer, databaseId: string, role: string): string {
  return derivedRolePassword(key, 'explorer', databaseId, role);
}

/** What preparing the explorer needs: the admin pool (maintenance database) and the cluster access. */
export type ExplorerRoleDeps = { admin: pg.Pool } & ClusterAccess;

/**
 * Makes `<db>_explorer` a login with `password`, after checking that the database and its roles
 * are ours (markers), then revokes its EXECUTE on the database's routines in a steward session.
 * A legacy database (owned by `<db>_owner`, no steward yet) gets its steward first. Idempotent.
 */
export async function prepareExplorerRole(
  deps: ExplorerRoleDeps,
  input: { databaseId: string; name: string; roles: RoleNames; password: string },
): Promise<void> {
  const { roles } = input;
  const owned = await roleOwnership(deps.admin, [roles.owner, roles.explorer], input.databaseId);
  for (const [role, state] of owned) {
    if (state !== 'ours') throw new PermanentJobError(`role ${role} is ${state}, not this database's`);
  }
  const state = await databaseOwnership(deps.admin, input.name, roles, input.databaseId);
  if (state !== 'ours' && state !== 'legacy') {
    throw new PermanentJobError(`database ${input.name} does not exist or is not ours`);
  }
  const verifier = scramVerifier(input.password);
  await deps.admin.query(
    `ALTER ROLE ${q(roles.explorer)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS ` +
      `CONNECTION LIMIT ${EXPLORER_CONNECTION_LIMIT} PASSWORD ${quoteLiteral(verifier)}`,
  );
  const target = { databaseId: input.databaseId, name: input.name, roles };
  let c: pg.Client;
  try {
    if (state === 'legacy') throw Object.assign(new Error('no steward yet'), { code: '28000' });
    c = await connectSteward(deps, target);
  } catch (err) {
    if (!isLoginRefused(err)) throw err;
    // No steward (legacy database) or its password is not ours any more: (re)make it, move the
    // database to it, and log in again.
    try {
      await ensureSteward(deps.admin, { ...target, key: deps.key });
      await ensureDatabase(deps.admin, input.name, roles, input.databaseId);
      await grantDatabase(deps.admin, input.name, roles);
    } catch (e) {
      if (e instanceof NotOursError) throw new PermanentJobError(e.message);
      throw e;
    }
    c = await connectSteward(deps, target);
  }
  try {
    await revokeRoutines(c, roles);
  } finally {
    await c.end().catch(() => {});
  }
}

/** Schemas whose routines are the system's, not the tenant's. */
const SYSTEM_SCHEMAS = `('pg_catalog', 'information_schema', 'pg_toast')`;

/**
 * PUBLIC's (and the explorer's own) EXECUTE on the tenant's routines → the other three roles
 * only, in every schema but the system ones (a view in public may call `s.f()` from a schema
 * the owner made, through PUBLIC's default EXECUTE). Runs as the steward, which acts for the
 * owner and the migrator; a routine of a superuser (a trusted extension's C code) keeps its
 * grants; one of any other role the steward cannot speak for refuses the preparation.
 */
async function revokeRoutines(c: pg.Client, roles: RoleNames): Promise<void> {
  const others = [roles.owner, roles.reader, roles.migrator].map(q).join(', ');
  const e = q(roles.explorer);
  await c.query('BEGIN');
  try {
    const r = await c.query<{
      sig: string;
      owner: string;
      owner_super: boolean;
      public_exec: boolean;
      explorer_exec: boolean;
    }>(
      `SELECT pg_catalog.format('%I.%I(%s)', n.nspname, p.proname,
                                pg_catalog.pg_get_function_identity_arguments(p.oid)) AS sig,
              o.rolname::pg_catalog.text AS owner, o.rolsuper AS owner_super,
              EXISTS (SELECT 1 FROM pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) a
                       WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') AS public_exec,
              EXISTS (SELECT 1 FROM pg_catalog.aclexplode(coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner))) a
                       WHERE a.grantee = $1::pg_catalog.regrole AND a.privilege_type = 'EXECUTE') AS explorer_exec
         FROM pg_catalog.pg_proc p
         JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
         JOIN pg_catalog.pg_roles o ON o.oid = p.proowner
        WHERE n.nspname NOT IN ${SYSTEM_SCHEMAS} AND n.nspname !~ '^pg_(toast_)?temp_'`,
      [roles.explorer],
    );
    const speaksFor = new Set([roles.owner, roles.migrator]);
    for (const f of r.rows) {
      if (!f.public_exec && !f.explorer_exec) continue;
      if (!speaksFor.has(f.owner)) {
        if (f.owner_super) continue;
        throw new PermanentJobError(
          `routine ${f.sig} belongs to ${f.owner}, whose grants the platform cannot restrict; ` +
            'the explorer stays off for this database until it is dropped or given to the owner',
        );
      }
      // `sig` is built by format('%I…') and pg_get_function_identity_arguments: quoted by PostgreSQL.
      await c.query(`SET LOCAL ROLE ${q(f.owner)}`);
      if (f.public_exec) {
        await c.query(`REVOKE EXECUTE ON ROUTINE ${f.sig} FROM PUBLIC`);
        await c.query(`GRANT EXECUTE ON ROUTINE ${f.sig} TO ${others}`);
      }
      if (f.explorer_exec) await c.query(`REVOKE EXECUTE ON ROUTINE ${f.sig} FROM ${e}`);
      await c.query('RESET ROLE');
    }
    for (const creator of [roles.owner, roles.migrator].map(q)) {
      await c.query(`ALTER DEFAULT PRIVILEGES FOR ROLE ${creator} REVOKE EXECUTE ON ROUTINES FROM PUBLIC`);
      await c.query(`ALTER DEFAULT PRIVILEGES FOR ROLE ${creator} GRANT EXECUTE ON ROUTINES TO ${others}`);
    }
    await c.query('COMMIT');
  } catch (err) {
    await c.query('ROLLBACK').catch(() => {});
    throw err;
  }
}
