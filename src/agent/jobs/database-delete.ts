import { deletePayloadSchema, JOB_KINDS } from '../../shared/contracts/jobs.ts';
import { roleNames } from '../../shared/identifiers.ts';
import { claimedSpareOf } from '../postgres/spare-sql.ts';
import {
  databaseOwnership,
  dropDatabase,
  dropOurRoles,
  roleOwnership,
  terminateSessions,
} from '../postgres/tenant-sql.ts';
import { classify, type DatabaseJobDeps, parsePayload } from './database-common.ts';
import type { JobHandler } from './job-context.ts';

export const DELETE_STEPS = ['pooler', 'terminate', 'database', 'roles'] as const;

/**
 * `database.delete`: access is cut first (pooler entry removed and proven gone, PgBouncer's
 * connections killed, every backend terminated), then the database and our roles are dropped.
 * Only what carries our marker is touched; a rerun after a crash finishes the job.
 */
export function databaseDelete(deps: DatabaseJobDeps): JobHandler {
  const step = (name: (typeof DELETE_STEPS)[number]) => deps.onStep?.(JOB_KINDS.delete, name);
  return async (payload, ctx) => {
    const parsed = parsePayload(deletePayloadSchema, payload);
    // A create whose claim of a spare committed but which never reported (its every attempt
    // died after the claim) left the database under the spare's name, which the server never
    // learnt: found by its marker for this id, under another name than the job's (ADR 0034).
    // Both go when both exist (a rerun that went cold while an earlier attempt's claim was still
    // in flight could leave one of each): each drop touches only what carries this id's marker.
    const claimed = await claimedSpareOf(ctx.admin, parsed.database_id, parsed.name);
    let dropped = false;
    try {
      for (const name of claimed === null ? [parsed.name] : [claimed, parsed.name])
        dropped = (await dropOne({ ...parsed, name }, ctx)) || dropped;
      return { dropped };
    } catch (err) {
      throw classify(err);
    }
  };

  async function dropOne(p: { database_id: string; name: string }, ctx: Parameters<JobHandler>[1]) {
    const roles = roleNames(p.name);
    const state = await databaseOwnership(ctx.admin, p.name, roles, p.database_id);
    // A database of that name that is not ours (e.g. the reason our create failed) is left
    // alone; what is ours (roles with our marker, our pooler entry) is still removed, so the
    // failed record can be deleted.
    const owner = state === 'ours' || state === 'legacy';
    const owned = await roleOwnership(ctx.admin, Object.values(roles), p.database_id);
    const ours = [...owned].filter(([, s]) => s === 'ours').map(([n]) => n);
    // Nothing of ours under that name (e.g. the generated name of a create a spare served): no
    // cut of a database that never existed.
    if (state === 'missing' && ours.length === 0 && !deps.pooler.state().databases[p.name]) return false;

    await step('pooler');
    if (deps.pooler.state().databases[p.name]) {
      await deps.pooler.update((s) => {
        const { [p.name]: _gone, ...rest } = s.databases;
        return { ...s, databases: rest };
      });
    }
    await deps.pooler.disconnect(p.name);
    await step('terminate');
    await terminateSessions(ctx.admin, { roles: ours, ...(owner ? { database: p.name } : {}) });
    await step('database');
    const dropped = owner ? await dropDatabase(ctx.admin, p.name, roles, p.database_id) : false;
    await step('roles');
    await dropOurRoles(ctx.admin, roles, p.database_id);
    return dropped;
  }
}
