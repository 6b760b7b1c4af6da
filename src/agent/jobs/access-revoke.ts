import type pg from 'pg';
import type { Logger } from 'pino';
import { EXECUTION_JOB_KINDS, revokeAccessPayloadSchema } from '../../shared/contracts/execution.ts';
import type { PoolerManager } from '../pgbouncer/pooler-manager.ts';
import {
  accessMarker,
  disableAccessLogin,
  dropAccessLogin,
  terminateAccessSessions,
} from '../postgres/access-sql.ts';
import { classify, parsePayload } from './database-common.ts';
import type { JobHandler } from './job-context.ts';

/** What the access jobs and the agent's own expiry use. */
export type AccessRevokeDeps = {
  pooler: PoolerManager;
  /** Test hook called before each step; a throw here is an agent killed at that step. */
  onStep?: (kind: string, step: string) => void | Promise<void>;
};

export const REVOKE_STEPS = ['nologin', 'pooler', 'terminate', 'drop'] as const;

export type RevokeOutcome = {
  dropped: boolean;
  terminated_sessions: number;
  /** The login owns objects or holds privileges: left NOLOGIN, never dropped or reassigned. */
  owns_objects: boolean;
};

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
 * refuses new sessions), then out of PgBouncer's auth and hba files (reload proven), then its
 * backends terminated (PgBouncer's server connections for it die with them, and its clients with
 * those), then DROP ROLE. A login that owns something stays NOLOGIN (`owns_objects`). Only a role
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
