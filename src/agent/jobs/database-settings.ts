import { allowlistPayloadSchema, limitsPayloadSchema } from '../../shared/contracts/jobs.ts';
import { roleNames } from '../../shared/identifiers.ts';
import { normaliseAllowlist } from '../pgbouncer/pooler-state.ts';
import { applyLimits, inTransaction, NotOursError, roleOwnership } from '../postgres/tenant-sql.ts';
import { classify, type DatabaseJobDeps, parsePayload } from './database-common.ts';
import type { JobHandler } from './job-context.ts';

/**
 * `database.allowlist`: replaces the database's allowlist (normalised, de-duplicated, expired
 * entries dropped). When an address range is removed, PgBouncer's connections for the database
 * are killed too, so a client from a range no longer allowed does not keep its session.
 */
export function databaseAllowlist(deps: DatabaseJobDeps): JobHandler {
  return async (payload) => {
    const p = parsePayload(allowlistPayloadSchema, payload);
    try {
      const before = deps.pooler.state().databases[p.name];
      if (!before) throw new NotOursError(`database ${p.name} is not on this node's pooler`);
      const entries = normaliseAllowlist(p.allowlist, (deps.now ?? Date.now)());
      const { state } = await deps.pooler.update((s) => {
        const db = s.databases[p.name];
        if (!db) throw new NotOursError(`database ${p.name} is not on this node's pooler`);
        return { ...s, databases: { ...s.databases, [p.name]: { ...db, allowlist: entries } } };
      });
      const kept = new Set(entries.map((e) => e.cidr));
      if (before.allowlist.some((e) => !kept.has(e.cidr))) await deps.pooler.disconnect(p.name);
      return { entries: state.databases[p.name]?.allowlist ?? [] };
    } catch (err) {
      throw classify(err);
    }
  };
}

/** `database.limits`: connection limits and timeouts of the database's roles. */
export function databaseLimits(): JobHandler {
  return async (payload, ctx) => {
    const p = parsePayload(limitsPayloadSchema, payload);
    const roles = roleNames(p.name);
    try {
      await inTransaction(ctx.admin, async (c) => {
        const owned = await roleOwnership(c, [roles.owner, roles.reader, roles.migrator], p.database_id);
        for (const [name, s] of owned)
          if (s !== 'ours') throw new NotOursError(`role ${name} is not this database's`);
        await applyLimits(c, roles, p.limits);
      });
      return { limits: p.limits };
    } catch (err) {
      throw classify(err);
    }
  };
}
