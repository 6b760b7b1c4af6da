/**
 * The login pg_restore uses: a temporary role that is a member of the target's `<db>_owner` and
 * nothing else, made for one restore and dropped after it.
 *
 * Why not the steward with `--role=<owner>`: a restore runs tenant code (a CHECK constraint, a
 * default or a generated column calls the tenant's functions during COPY), and a function that
 * says `RESET ROLE` returns to the session's login — the steward would then act as the database's
 * owner, read pg_db_role_setting, change database-level settings (tested by
 * test/backups-agent-failures.test.ts). This login is a NOINHERIT member of the owner: pg_restore's
 * `--role` (SET ROLE) works, and `RESET ROLE` leads to a role with no privileges of its own beyond
 * CONNECT — less than the owner, never more.
 *
 * The role: `bulwark_rs_<storage tag>_<16 hex>`, LOGIN NOINHERIT with a random password (only its SCRAM verifier reaches
 * PostgreSQL), no attributes, CONNECTION LIMIT 4, VALID UNTIL a day, CONNECT on the target only,
 * marked `bulwark:restore:<database id>`. If tenant code made objects as it, the role cannot be
 * dropped: it is made NOLOGIN and the restore fails; the start-up sweep drops such roles once
 * their objects are gone (the scratch database of a failed restore is dropped at once).
 */
import { randomBytes } from 'node:crypto';
import type pg from 'pg';
import { quoteIdent, quoteLiteral } from '../../shared/identifiers.ts';
import { scramVerifier } from '../../shared/scram.ts';
import { PermanentJobError } from '../jobs/job-context.ts';
import type { ClusterAccess } from '../postgres/steward.ts';
import type { PgLogin } from './pg-tools.ts';

const PREFIX = 'bulwark_rs_';
const MARKER = 'bulwark:restore:';

export async function withRestoreLogin<T>(
  admin: pg.Pool,
  cluster: Pick<ClusterAccess, 'pgHost' | 'pgPort'>,
  target: { database: string; databaseId: string; owner: string; tag: string },
  fn: (login: PgLogin) => Promise<T>,
): Promise<T> {
  const role = `${PREFIX}${target.tag}_${randomBytes(8).toString('hex')}`;
  const password = randomBytes(24).toString('base64url');
  const r = quoteIdent(role);
  const until = new Date(Date.now() + 86_400_000).toISOString();
  await admin.query(
    [
      `CREATE ROLE ${r} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT ` +
        `CONNECTION LIMIT 4 VALID UNTIL ${quoteLiteral(until)} PASSWORD ${quoteLiteral(scramVerifier(password))} ` +
        `IN ROLE ${quoteIdent(target.owner)}`,
      `COMMENT ON ROLE ${r} IS ${quoteLiteral(`${MARKER}${target.databaseId}`)}`,
      `GRANT CONNECT ON DATABASE ${quoteIdent(target.database)} TO ${r}`,
    ].join(';\n'),
  );
  let result: T;
  try {
    result = await fn({
      host: cluster.pgHost,
      port: cluster.pgPort,
      database: target.database,
      user: role,
      password,
    });
  } catch (err) {
    await dropRestoreLogin(admin, role, target.database).catch(() => {});
    throw err;
  }
  if (!(await dropRestoreLogin(admin, role, target.database)))
    throw new PermanentJobError(
      'tenant code run by the restore made objects of its own login (a function that resets its role): restore refused',
    );
  return result;
}

/** Ends the login's sessions and drops it; false (left NOLOGIN) when it owns something. */
async function dropRestoreLogin(admin: pg.Pool, role: string, database: string): Promise<boolean> {
  const r = quoteIdent(role);
  await admin.query(`ALTER ROLE ${r} NOLOGIN`);
  await admin.query(
    `SELECT pg_catalog.pg_terminate_backend(pid, 5000) FROM pg_catalog.pg_stat_activity
      WHERE usename OPERATOR(pg_catalog.=) $1`,
    [role],
  );
  await admin.query(`REVOKE CONNECT ON DATABASE ${quoteIdent(database)} FROM ${r}`).catch(() => {});
  try {
    await admin.query(`DROP ROLE ${r}`);
    return true;
  } catch (err) {
    if ((err as { code?: string }).code === '2BP01') return false;
    throw err;
  }
}

/** Drops this storage's (`tag`) restore logins left behind (a crash); returns how many. */
export async function sweepRestoreLogins(admin: pg.Pool, tag: string): Promise<number> {
  if (!/^[0-9a-f]{8}$/.test(tag)) throw new Error('invalid storage tag');
  const r = await admin.query<{ name: string }>(
    `SELECT rolname::pg_catalog.text AS name FROM pg_catalog.pg_roles
      WHERE rolname::pg_catalog.text LIKE 'bulwark\\_rs\\_' || $1 || '\\_%'
        AND pg_catalog.shobj_description(oid, 'pg_authid') LIKE 'bulwark:restore:%'`,
    [tag],
  );
  let dropped = 0;
  for (const { name } of r.rows) {
    await admin.query(
      `SELECT pg_catalog.pg_terminate_backend(pid, 5000) FROM pg_catalog.pg_stat_activity
        WHERE usename OPERATOR(pg_catalog.=) $1`,
      [name],
    );
    try {
      await admin.query(`DROP ROLE ${quoteIdent(name)}`);
      dropped += 1;
    } catch (err) {
      // Still owns objects or holds privileges in some database: tried again at the next start.
      if ((err as { code?: string }).code !== '2BP01') throw err;
      await admin.query(`ALTER ROLE ${quoteIdent(name)} NOLOGIN`);
    }
  }
  return dropped;
}
