import { JOB_KINDS, rotatePayloadSchema } from '../../shared/contracts/jobs.ts';
import { roleNames } from '../../shared/identifiers.ts';
import { isLockTimeout } from '../postgres/steward.ts';
import {
  NotOursError,
  roleOwnership,
  setOwnerPassword,
  terminateLockHolders,
  terminateSessions,
} from '../postgres/tenant-sql.ts';
import { classify, type DatabaseJobDeps, parsePayload, proveThroughPooler } from './database-common.ts';
import type { JobHandler } from './job-context.ts';

export const ROTATE_STEPS = ['password', 'pooler', 'cut', 'probe'] as const;

/**
 * `database.rotate`: the owner's new verifier goes to PostgreSQL and to the pooler (reload
 * proven), then every existing session of the owner is cut — server backends terminated and
 * PgBouncer's client and server connections for the database killed — and a login with the
 * new password through PgBouncer proves the change. When the owner keeps its own role locked
 * (an open `ALTER ROLE self …`), the sessions holding the lock are cut first (they would be cut
 * anyway); the agent never waits longer than the pinned lock_timeout behind a tenant.
 */
export function databaseRotate(deps: DatabaseJobDeps): JobHandler {
  const step = (name: (typeof ROTATE_STEPS)[number]) => deps.onStep?.(JOB_KINDS.rotate, name);
  return async (payload, ctx) => {
    const p = parsePayload(rotatePayloadSchema, payload);
    const roles = roleNames(p.name);
    try {
      const owned = await roleOwnership(ctx.admin, [roles.owner], p.database_id);
      if (owned.get(roles.owner) !== 'ours')
        throw new NotOursError(`role ${roles.owner} is not this database's`);
      if (!deps.pooler.state().databases[p.name])
        throw new NotOursError(`database ${p.name} is not on this node's pooler`);
      await step('password');
      try {
        await setOwnerPassword(ctx.admin, roles.owner, p.verifier);
      } catch (err) {
        // The owner holds its own role's row (`BEGIN; ALTER ROLE self …` left open). The
        // rotation cuts the owner's sessions anyway: cut the ones holding locks now and try
        // once more (the wait is bounded by the pinned lock_timeout; a failure is retried later).
        if (!isLockTimeout(err)) throw err;
        const cut = await terminateLockHolders(ctx.admin, [roles.owner]);
        ctx.log.warn({ database: p.name, terminated: cut }, 'owner role locked by its own session; cut it');
        await setOwnerPassword(ctx.admin, roles.owner, p.verifier);
      }
      await step('pooler');
      await deps.pooler.update((s) => {
        const db = s.databases[p.name];
        if (!db) throw new NotOursError(`database ${p.name} is not on this node's pooler`);
        return { ...s, databases: { ...s.databases, [p.name]: { ...db, verifier: p.verifier } } };
      });
      await step('cut');
      const terminated = await terminateSessions(ctx.admin, { roles: [roles.owner] });
      await deps.pooler.disconnect(p.name);
      await step('probe');
      await proveThroughPooler(deps, ctx, { database: p.name, user: roles.owner });
      return { rotated_at: new Date().toISOString(), terminated_sessions: terminated };
    } catch (err) {
      throw classify(err);
    }
  };
}
