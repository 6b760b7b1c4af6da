/**
 * The agent's own end of just-in-time logins: at start, and at the exact instant the earliest
 * live login's VALID UNTIL passes, every just-in-time login of its databases (found by its marker
 * in PostgreSQL, the source of truth) whose time is up is revoked — NOLOGIN, out of PgBouncer, sessions
 * terminated, dropped (jobs/access-revoke.ts). It needs nothing from the server, so credentials
 * end on time while the control plane is down. The server's own sweeper later queues an
 * `access.revoke` for the same login, which then finds nothing left to do.
 */
import type pg from 'pg';
import type { Logger } from 'pino';
import { isJitLoginOf } from '../../shared/access-login.ts';
import { type AccessRevokeDeps, revokeAccessLogin } from '../jobs/access-revoke.ts';
import { nextExpiry } from '../pgbouncer/pooler-state.ts';
import { listAccessRoles } from '../postgres/access-sql.ts';

export type AccessExpiry = {
  /** Revokes what is due now, then keeps to the schedule. */
  start(): Promise<void>;
  /** Re-plans after a grant (its expiry may be the earliest). */
  poke(): void;
  /** Revokes every login whose time is up; returns their names. */
  sweep(): Promise<string[]>;
  stop(): Promise<void>;
};

export function createAccessExpiry(
  deps: AccessRevokeDeps & {
    admin: pg.Pool;
    log: Logger;
    now?: () => number;
    /** Upper bound between two checks (a login made behind the agent's back, a missed timer). */
    maxWaitMs?: number;
    /** Wait after a failed sweep before the next try. */
    retryMs?: number;
  },
): AccessExpiry {
  const now = deps.now ?? Date.now;
  const maxWait = deps.maxWaitMs ?? 60_000;
  const retry = deps.retryMs ?? 5_000;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  let chain: Promise<unknown> = Promise.resolve();
  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = chain.then(fn, fn);
    chain = run.catch(() => {});
    return run;
  };

  const arm = (ms: number) => {
    clearTimeout(timer);
    if (stopped) return;
    timer = setTimeout(() => void tick(), Math.max(0, Math.min(ms, maxWait)));
    timer.unref();
  };

  /**
   * The just-in-time logins of this agent's databases (those in its pooler state). A login of a
   * database no longer here (deleted: nothing left to connect to) is left to the server's
   * `access.revoke`, and a cluster shared with another agent keeps each agent to its own.
   */
  const ownRoles = async () => {
    const names = Object.keys(deps.pooler.state().databases);
    const roles = await listAccessRoles(deps.admin);
    return roles.filter((r) => names.some((n) => isJitLoginOf(n, r.login)));
  };

  /** Revokes what is due; returns the next expiry still ahead (PostgreSQL or pooler state). */
  const sweepOnce = async (): Promise<{ revoked: string[]; next: number | null }> => {
    const t = now();
    const roles = await ownRoles();
    const revoked: string[] = [];
    let next = nextExpiry(deps.pooler.state(), t);
    let failure: Error | null = null;
    for (const r of roles) {
      const until = r.validUntil?.getTime() ?? Number.NEGATIVE_INFINITY;
      // A just-in-time login without VALID UNTIL is not one we made: end it all the same.
      if (until > t) {
        if (next === null || until < next) next = until;
        continue;
      }
      try {
        const out = await revokeAccessLogin(deps, { login: r.login });
        revoked.push(r.login);
        deps.log.info({ login: r.login, ...out }, 'just-in-time login expired and revoked');
      } catch (err) {
        failure ??= err as Error;
        deps.log.error(
          { login: r.login, err: { message: (err as Error).message } },
          'expired login not revoked',
        );
      }
    }
    if (failure) throw failure;
    return { revoked, next };
  };

  const tick = () =>
    serial(async () => {
      if (stopped) return [];
      try {
        const { revoked, next } = await sweepOnce();
        // +1 ms: PostgreSQL refuses a login only once now() is past VALID UNTIL.
        arm(next === null ? maxWait : next - now() + 1);
        return revoked;
      } catch (err) {
        deps.log.warn({ err: { message: (err as Error).message } }, 'access expiry sweep failed; will retry');
        arm(retry);
        return [];
      }
    });

  return {
    start: async () => {
      await tick();
    },
    poke: () => {
      void serial(async () => {
        if (stopped) return;
        const t = now();
        const roles = await ownRoles().catch(() => []);
        let next = nextExpiry(deps.pooler.state(), t);
        for (const r of roles) {
          const until = r.validUntil?.getTime() ?? t;
          if (next === null || until < next) next = until;
        }
        arm(next === null ? maxWait : next - t + 1);
      });
    },
    sweep: async () => {
      const out = await serial(sweepOnce);
      return out.revoked;
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await chain;
    },
  };
}
