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
 * Hardening, re-applied on every preparation: the explorer loses EXECUTE on every routine in
 * schema public (hidden calls through `t.f` attribute notation, operators, domain checks and
 * views run user code), while the database's other roles keep exactly the access they had
 * through PUBLIC; default privileges do the same for routines created later.
 */
import { createHmac, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import { quoteIdent as q, quoteLiteral, type RoleNames } from '../../shared/identifiers.ts';
import { scramVerifier } from '../../shared/scram.ts';
import { PermanentJobError } from '../jobs/job-context.ts';
import { databaseOwner, roleOwnership } from '../postgres/tenant-sql.ts';

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
  return createHmac('sha256', key).update(`bulwark-explorer:${databaseId}:${role}`).digest('base64url');
}

/**
 * Makes `<db>_explorer` a login with `password`, after checking that the database and its roles
 * are ours (markers), then revokes its EXECUTE on the database's routines. Idempotent.
 */
export async function prepareExplorerRole(
  deps: { admin: pg.Pool; connectAdmin(database: string): Promise<pg.Client> },
  input: { databaseId: string; name: string; roles: RoleNames; password: string },
): Promise<void> {
  const { roles } = input;
  const owned = await roleOwnership(deps.admin, [roles.owner, roles.explorer], input.databaseId);
  for (const [role, state] of owned) {
    if (state !== 'ours') throw new PermanentJobError(`role ${role} is ${state}, not this database's`);
  }
  if ((await databaseOwner(deps.admin, input.name)) !== roles.owner) {
    throw new PermanentJobError(`database ${input.name} does not exist or is not ours`);
  }
  const verifier = scramVerifier(input.password);
  await deps.admin.query(
    `ALTER ROLE ${q(roles.explorer)} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS ` +
      `CONNECTION LIMIT ${EXPLORER_CONNECTION_LIMIT} PASSWORD ${quoteLiteral(verifier)}`,
  );
  const c = await deps.connectAdmin(input.name);
  try {
    await revokeRoutines(c, roles);
  } finally {
    await c.end().catch(() => {});
  }
}

/** PUBLIC's (and the explorer's own) EXECUTE on public routines → the other three roles only. */
async function revokeRoutines(c: pg.Client, roles: RoleNames): Promise<void> {
  const others = [roles.owner, roles.reader, roles.migrator].map(q).join(', ');
  const e = q(roles.explorer);
  await c.query('BEGIN');
  try {
    const r = await c.query<{ sig: string; public_exec: boolean; explorer_exec: boolean }>(
      `SELECT format('%I.%I(%s)', n.nspname, p.proname, pg_get_function_identity_arguments(p.oid)) AS sig,
              EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                       WHERE a.grantee = 0 AND a.privilege_type = 'EXECUTE') AS public_exec,
              EXISTS (SELECT 1 FROM aclexplode(coalesce(p.proacl, acldefault('f', p.proowner))) a
                       WHERE a.grantee = $1::regrole AND a.privilege_type = 'EXECUTE') AS explorer_exec
         FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public'`,
      [roles.explorer],
    );
    for (const f of r.rows) {
      // `sig` is built by format('%I…') and pg_get_function_identity_arguments: quoted by PostgreSQL.
      if (f.public_exec) {
        await c.query(`REVOKE EXECUTE ON ROUTINE ${f.sig} FROM PUBLIC`);
        await c.query(`GRANT EXECUTE ON ROUTINE ${f.sig} TO ${others}`);
      }
      if (f.explorer_exec) await c.query(`REVOKE EXECUTE ON ROUTINE ${f.sig} FROM ${e}`);
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
