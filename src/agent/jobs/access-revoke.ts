import type pg from 'pg';
import type { Logger } from 'pino';
import { EXECUTION_JOB_KINDS, revokeAccessPayloadSchema } from '../../shared/contracts/execution.ts';
import { quoteIdent } from '../../shared/identifiers.ts';
import type { PoolerManager } from '../pgbouncer/pooler-manager.ts';
import {
  accessMarker,
  disableAccessLogin,
  dropAccessLogin,
  findAccessRole,
  parseAccessMarker,
  terminateAccessSessions,
} from '../postgres/access-sql.ts';
import { inTransaction, NotOursError } from '../postgres/tenant-sql.ts';
import { classify, parsePayload } from './database-common.ts';
import type { JobHandler } from './job-context.ts';

/** What the access jobs and the agent's own expiry use. */
export type AccessRevokeDeps = {
  pooler: PoolerManager;
  /** Test hook called before each step; a throw here is an agent killed at that step. */
  onStep?: (kind: string, step: string) => void | Promise<void>;
};

export const REVOKE_STEPS = ['nologin', 'memberships', 'pooler', 'terminate', 'drop'] as const;

export type RevokeOutcome = {
  dropped: boolean;
  terminated_sessions: number;
  /**
   * The login owns objects or holds privileges: left NOLOGIN and a member of no role (nor any
   * role a member of it), never dropped or reassigned.
   */
  owns_objects: boolean;
};

/**
 * Removes every role membership of a just-in-time login, both ways: the roles it is a member of
 * (`<db>_reader` or `<db>_migrator`, and any other one granted to it since) and the roles made
 * members of it. Only a role with a just-in-time marker (the exact one when `marker` is given) is
 * touched. Afterwards the login holds only PUBLIC's rights and what it owns, so anything it
 * owns that outlives it (a SECURITY DEFINER function) runs with no more than that. A session
 * that already switched to a role it was a member of keeps that role until it is terminated (the
 * next step). One transaction; checked empty at the end.
 */
export async function removeAccessMemberships(
  admin: pg.Pool,
  login: string,
  marker?: string,
): Promise<number | 'missing'> {
  return inTransaction(admin, async (c) => {
    const role = await findAccessRole(c, login);
    if (!role) return 'missing';
    if (parseAccessMarker(role.marker) === null || (marker !== undefined && role.marker !== marker))
      throw new NotOursError(`role ${login} is not a just-in-time login of this grant; left alone`);
    const edges = `SELECT r.rolname::pg_catalog.text AS role, m.rolname::pg_catalog.text AS member
         FROM pg_catalog.pg_auth_members a
         JOIN pg_catalog.pg_roles r ON r.oid OPERATOR(pg_catalog.=) a.roleid
         JOIN pg_catalog.pg_roles m ON m.oid OPERATOR(pg_catalog.=) a.member
        WHERE m.rolname OPERATOR(pg_catalog.=) $1 OR r.rolname OPERATOR(pg_catalog.=) $1`;
    const found = await c.query<{ role: string; member: string }>(edges, [login]);
    for (const e of found.rows) await c.query(`REVOKE ${quoteIdent(e.role)} FROM ${quoteIdent(e.member)}`);
    const left = await c.query(edges, [login]);
    if (left.rows.length > 0) throw new Error(`role ${login} still has ${left.rows.length} memberships`);
    return found.rows.length;
  });
}

/** Removes a just-in-time login from the pooler state (a proven reload; nothing when absent). */
export async function removeFromPooler(pooler: PoolerManager, login: string): Promise<boolean> {
  const holds = (s: ReturnType<PoolerManager['state']>) =>
    Object.values(s.databases).some((d) => d.access?.some((l) => l.login === login));
  if (!holds(pooler.state())) return false;
  await pooler.update((s) => {
    if (!holds(s)) return s;
    const databases = { ...s.databases };
    for (const [name, d] of Object.entries(databases)) {
      if (d.access?.some((l) => l.login === login))
        databases[name] = { ...d, access: d.access.filter((l) => l.login !== login) };
    }
    return { ...s, databases };
  });
  return true;
}

/**
 * Ends a just-in-time login, in an order that never leaves a way in: NOLOGIN first (PostgreSQL
 * refuses new sessions), then every role membership removed (removeAccessMemberships), then out
 * of PgBouncer's auth and hba files (reload proven), then its backends terminated (PgBouncer's
 * server connections for it die with them, and its clients with those), then DROP ROLE. A login
 * that owns something stays NOLOGIN with no membership (`owns_objects`). Only a role
 * with a just-in-time marker is touched (the exact one when `marker` is given). Idempotent: a
 * login already gone is a success with nothing dropped. When the pooler cannot be reloaded the
 * PostgreSQL steps still run, and the error is raised after them (the job is retried).
 */
export async function revokeAccessLogin(
  deps: AccessRevokeDeps & { admin: pg.Pool; log: Logger },
  input: { login: string; marker?: string },
): Promise<RevokeOutcome> {
  const step = (name: (typeof REVOKE_STEPS)[number]) => deps.onStep?.(EXECUTION_JOB_KINDS.revokeAccess, name);
  await step('nologin');
  const state = await disableAccessLogin(deps.admin, input.login, input.marker);
  await step('memberships');
  if (state !== 'missing') await removeAccessMemberships(deps.admin, input.login, input.marker);
  await step('pooler');
  let poolerError: Error | null = null;
  await removeFromPooler(deps.pooler, input.login).catch((err: Error) => {
    poolerError = err;
    deps.log.error(
      { login: input.login, err: { message: err.message } },
      'could not remove a login from the pooler',
    );
  });
  await step('terminate');
  const terminated = state === 'missing' ? 0 : await terminateAccessSessions(deps.admin, input.login);
  await step('drop');
  const dropped =
    state === 'missing' ? 'missing' : await dropAccessLogin(deps.admin, input.login, input.marker);
  if (poolerError) throw poolerError;
  return {
    dropped: dropped === 'dropped',
    terminated_sessions: terminated,
    owns_objects: dropped === 'owns_objects',
  };
}

/** `access.revoke`: the grant's login ended now (request cancelled, database deleted, expiry). */
export function accessRevoke(deps: AccessRevokeDeps & { onRevoked?: () => void }): JobHandler {
  return async (payload, ctx) => {
    const p = parsePayload(revokeAccessPayloadSchema, payload);
    try {
      const out = await revokeAccessLogin(
        { ...deps, admin: ctx.admin, log: ctx.log },
        { login: p.login, marker: accessMarker(p.database_id, p.grant_id) },
      );
      deps.onRevoked?.();
      return out;
    } catch (err) {
      throw classify(err);
    }
  };
}
