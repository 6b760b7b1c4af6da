import { isReservedDatabaseName, roleNames } from '../../shared/identifiers.ts';
import { normaliseAllowlist } from '../pgbouncer/pooler-state.ts';
import {
  dropOurRoles,
  ensureDatabase,
  ensureRoles,
  grantDatabase,
  NotOursError,
  setupSchema,
} from '../postgres/tenant-sql.ts';
import { type CreateResult, createPayloadSchema, JOB_KINDS } from './contract.ts';
import {
  classify,
  coversLoopback,
  type DatabaseJobDeps,
  parsePayload,
  proveThroughPooler,
} from './database-common.ts';
import { type JobHandler, PermanentJobError } from './job-context.ts';

/** The steps of `database.create`, in order; each is idempotent, so a rerun resumes anywhere. */
export const CREATE_STEPS = ['roles', 'database', 'grants', 'schema', 'pooler', 'probe', 'done'] as const;

/**
 * `database.create`: four roles, the database, its privileges, the pooler entry, then a login
 * through PgBouncer as the owner. Ready only when that login works. A name collision with
 * something that is not ours fails permanently and removes what this job made.
 */
export function databaseCreate(deps: DatabaseJobDeps): JobHandler {
  const step = (name: (typeof CREATE_STEPS)[number]) => deps.onStep?.(JOB_KINDS.create, name);
  return async (payload, ctx) => {
    const p = parsePayload(createPayloadSchema, payload);
    if (isReservedDatabaseName(p.name)) throw new PermanentJobError(`database name ${p.name} is reserved`);
    const roles = roleNames(p.name);
    const now = deps.now ?? Date.now;
    let probeMs: number;
    try {
      await step('roles');
      await ensureRoles(ctx.admin, {
        databaseId: p.database_id,
        roles,
        verifier: p.verifier,
        limits: p.limits,
      });
      await step('database');
      await ensureDatabase(ctx.admin, p.name, roles.owner);
      await step('grants');
      await grantDatabase(ctx.admin, p.name, roles);
      await step('schema');
      const c = await deps.connectAdmin(p.name);
      try {
        await setupSchema(c, roles);
      } finally {
        await c.end().catch(() => {});
      }
      await step('pooler');
      const allowlist = normaliseAllowlist(p.allowlist, now());
      const login = { database: p.name, user: roles.owner };
      // The proving login comes from 127.0.0.1: open it in the same reload when not allowed anyway.
      const loopback = !coversLoopback(allowlist.map((e) => e.cidr));
      try {
        await deps.pooler.update(
          (s) => ({
            ...s,
            databases: {
              ...s.databases,
              [p.name]: { name: p.name, owner: roles.owner, verifier: p.verifier, allowlist },
            },
          }),
          loopback ? { loopbackFor: login } : {},
        );
        await step('probe');
        probeMs = await proveThroughPooler(deps, ctx, login);
      } finally {
        if (loopback) await deps.pooler.endLoopback(p.name);
      }
    } catch (err) {
      if (err instanceof NotOursError) {
        // Clean failure: nothing of ours stays behind (the database, if any, is not ours).
        await dropOurRoles(ctx.admin, roles, p.database_id);
      }
      throw classify(err);
    }
    await step('done');
    const result: CreateResult = { name: p.name, roles, pooler_probe_ms: Math.round(probeMs * 100) / 100 };
    return result;
  };
}
