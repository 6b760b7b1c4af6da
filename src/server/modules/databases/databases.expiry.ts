import type { Logger } from 'pino';
import { JOB_KINDS } from '../../../shared/contracts/jobs.ts';
import { type Db, withTx } from '../../db/pool.ts';
import type { AuditService } from '../audit/audit.service.ts';
import { enqueueJob } from '../jobs/jobs.repo.ts';
import * as repo from './databases.repo.ts';

const BATCH = 200;

/**
 * Expired allowlist entries are removed from the stored row, not only hidden: each sweep
 * rewrites the rows that hold one (locked, SKIP LOCKED: replicas may sweep at once), queues a
 * `database.allowlist` job so the node's state agrees (the agent also drops them itself at the
 * exact expiry), and records `database.allowlist_expired`. Returns how many databases changed.
 */
export async function sweepExpiredAllowlists(
  deps: { db: Db; log: Logger; audit: Pick<AuditService, 'record'> },
  now = new Date(),
): Promise<number> {
  let changed = 0;
  for (;;) {
    const n = await withTx(deps.db, async (tx) => {
      const rows = await repo.lockExpiredAllowlists(tx, now, BATCH);
      for (const row of rows) {
        const expired = row.allowlist.filter(
          (e) => e.expires_at !== null && Date.parse(e.expires_at) <= now.getTime(),
        );
        const kept = row.allowlist.filter(
          (e) => e.expires_at === null || Date.parse(e.expires_at) > now.getTime(),
        );
        await repo.setAllowlist(tx, row.id, kept);
        await enqueueJob(tx, {
          nodeId: row.node_id,
          accountId: row.account_id,
          kind: JOB_KINDS.allowlist,
          payload: {
            database_id: row.id,
            name: row.name,
            allowlist: kept.map((e) => ({ cidr: e.cidr, expires_at: e.expires_at })),
          },
        });
        await deps.audit.record(tx, {
          action: 'database.allowlist_expired',
          actorType: 'system',
          accountId: row.account_id,
          targetType: 'database',
          targetId: row.id,
          details: {
            name: row.name,
            removed: expired.map((e) => ({ cidr: e.cidr, expires_at: e.expires_at })),
          },
        });
      }
      return rows.length;
    });
    changed += n;
    if (n < BATCH) break;
  }
  if (changed) deps.log.info({ databases: changed }, 'expired allowlist entries removed');
  return changed;
}

/** What the expiry schedule reads the time from and sets its timer with (tests pass their own). */
export type ExpiryClock = {
  now(): number;
  /** Calls `fn` after `ms`; returns a function that cancels it. */
  schedule(fn: () => void, ms: number): () => void;
};

const systemClock: ExpiryClock = {
  now: () => Date.now(),
  schedule(fn, ms) {
    const timer = setTimeout(fn, ms);
    timer.unref();
    return () => clearTimeout(timer);
  },
};

/**
 * Runs the sweep at the next expiry (read from the control DB) and at least every `maxWaitMs`
 * (entries written by another replica); `poke()` after a write re-plans at once.
 */
export function createAllowlistExpiry(
  deps: Parameters<typeof sweepExpiredAllowlists>[0] & { maxWaitMs?: number; clock?: ExpiryClock },
) {
  const maxWait = deps.maxWaitMs ?? 60_000;
  const clock = deps.clock ?? systemClock;
  let cancel: () => void = () => {};
  let stopped = false;
  let running: Promise<void> = Promise.resolve();

  const plan = async () => {
    if (stopped) return;
    const now = new Date(clock.now());
    const next = await repo.nextAllowlistExpiry(deps.db, now);
    const wait = next === null ? maxWait : Math.max(0, Math.min(maxWait, next.getTime() - now.getTime() + 5));
    cancel();
    if (stopped) return;
    cancel = clock.schedule(() => void run(), wait);
  };
  const run = () => {
    running = running
      .then(async () => {
        if (stopped) return;
        await sweepExpiredAllowlists(deps, new Date(clock.now()));
        await plan();
      })
      .catch((err: Error) => {
        deps.log.warn({ err: { message: err.message } }, 'allowlist expiry sweep failed; will retry');
        if (!stopped) {
          cancel();
          cancel = clock.schedule(() => void run(), Math.min(maxWait, 5_000));
        }
      });
    return running;
  };
  return {
    /** Sweeps once now, then keeps to the schedule. */
    start: () => run(),
    /** Re-plans after an allowlist write (an earlier expiry may now be due). */
    poke: () => {
      running = running.then(plan).catch(() => {});
    },
    /** Resolves when the work started so far (a sweep, a re-plan) is done. */
    settled: () => running,
    async stop() {
      stopped = true;
      cancel();
      await running;
    },
  };
}
