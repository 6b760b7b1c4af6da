/**
 * The logins governed SQL runs as (ADR 0021): `<db>_reader` and `<db>_migrator` themselves, with a
 * password only this agent knows — HMAC-SHA256(agent key, "bulwark-execution:" + database id +
 * role), like the explorer's and the steward's (postgres/steward.ts): nothing per database is
 * stored and only the SCRAM verifier reaches PostgreSQL. Neither role is in PgBouncer's auth file:
 * they log in on the loopback PostgreSQL port only, never as a superuser or the steward.
 *
 * Preparation (lazy, cached per database and role, redone after 5 minutes or when a login is
 * refused): the database and the three roles must carry our marker; the role gets the password's
 * verifier; the migrator is made a member of `<db>_owner`, so that a migration can change (ALTER,
 * UPDATE, DROP) the tables the tenant created as the owner — the migrator is the platform's
 * stand-in for the tenant's schema owner. ensureRoles grants the same membership to new databases.
 */
import { createHmac } from 'node:crypto';
import type pg from 'pg';
import type { ExecutionCapability } from '../../shared/execution-token.ts';
import { quoteIdent as q, quoteLiteral, type RoleNames } from '../../shared/identifiers.ts';
import { scramVerifier } from '../../shared/scram.ts';
import { databaseOwnership, roleOwnership } from '../postgres/tenant-sql.ts';

/** A database or role is not ours (or missing): the execution is refused, nothing runs. */
export class NotPreparedError extends Error {}

/** The login's attributes: never more than a plain role; INHERIT, so the migrator acts as the owner. */
const ATTRIBUTES = 'NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS INHERIT';

export function executionPassword(key: Buffer, databaseId: string, role: string): string {
  return createHmac('sha256', key).update(`bulwark-execution:${databaseId}:${role}`).digest('base64url');
}

export type ExecutionRoles = {
  /** Makes the role's login ready (cached); `force` redoes it (a refused login). */
  prepare(
    target: { databaseId: string; name: string; roles: RoleNames; capability: ExecutionCapability },
    force?: boolean,
  ): Promise<{ user: string; password: string }>;
};

export function createExecutionRoles(deps: {
  admin: pg.Pool;
  key: Buffer;
  reprepareMs?: number;
}): ExecutionRoles {
  const reprepareMs = deps.reprepareMs ?? 300_000;
  const prepared = new Map<string, number>();
  return {
    async prepare(t, force = false) {
      const user = t.roles[t.capability];
      const password = executionPassword(deps.key, t.databaseId, user);
      const cacheKey = `${t.databaseId}:${user}`;
      const at = prepared.get(cacheKey);
      if (!force && at !== undefined && Date.now() - at < reprepareMs) return { user, password };
      const owned = await roleOwnership(
        deps.admin,
        [t.roles.owner, t.roles.reader, t.roles.migrator],
        t.databaseId,
      );
      for (const [role, state] of owned)
        if (state !== 'ours') throw new NotPreparedError(`role ${role} is ${state}, not this database's`);
      const db = await databaseOwnership(deps.admin, t.name, t.roles, t.databaseId);
      if (db !== 'ours' && db !== 'legacy')
        throw new NotPreparedError(`database ${t.name} does not exist or is not ours`);
      // The attributes are ours to hold (ensureRoles sets them; a tenant cannot change them): said again.
      const sql = [
        `ALTER ROLE ${q(user)} LOGIN ${ATTRIBUTES} PASSWORD ${quoteLiteral(scramVerifier(password))}`,
      ];
      if (t.capability === 'migrator') sql.push(`GRANT ${q(t.roles.owner)} TO ${q(t.roles.migrator)}`);
      // Simple protocol, one implicit transaction; a GRANT already held is a notice, not an error.
      await deps.admin.query(sql.join(';\n'));
      if (prepared.size > 10_000) prepared.clear();
      prepared.set(cacheKey, Date.now());
      return { user, password };
    },
  };
}
