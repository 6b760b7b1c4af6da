import type { Logger } from 'pino';
import type { ExpiryClock } from '../databases/databases.expiry.ts';
import type { AccessService } from './access.service.ts';

const systemClock: ExpiryClock = {
  now: () => Date.now(),
  schedule(fn, ms) {
    const timer = setTimeout(fn, ms);
    timer.unref();
    return () => clearTimeout(timer);
  },
};

/**
 * The server's side of grant expiry: at the earliest valid_until of a live grant (read from the
 * control DB) and at least every `maxWaitMs` (grants made by another replica), expired grants are
 * marked and their `access.revoke` queued. The agent ends the login at the same instant on its
 * own; this keeps the control DB's record true and cleans up after an agent that was down.
 */
export function createAccessExpiry(deps: {
  access: Pick<AccessService, 'sweepExpired' | 'nextExpiry'>;
  log: Logger;
  maxWaitMs?: number;
  clock?: ExpiryClock;
}) {
  const maxWait = deps.maxWaitMs ?? 60_000;
  const clock = deps.clock ?? systemClock;
  let cancel: () => void = () => {};
  let stopped = false;
  let running: Promise<void> = Promise.resolve();

  const plan = async () => {
    if (stopped) return;
    const next = await deps.access.nextExpiry();
    const wait = next === null ? maxWait : Math.max(0, Math.min(maxWait, next.getTime() - clock.now() + 5));
    cancel();
    if (stopped) return;
    cancel = clock.schedule(() => void run(), wait);
  };
  const run = () => {
    running = running
      .then(async () => {
        if (stopped) return;
        await deps.access.sweepExpired(new Date(clock.now()));
        await plan();
      })
      .catch((err: Error) => {
        deps.log.warn({ err: { message: err.message } }, 'access grant expiry sweep failed; will retry');
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
    /** Re-plans after a grant was made or ended. */
    poke: () => {
      running = running.then(plan).catch(() => {});
    },
    /** Resolves when the work started so far is done. */
    settled: () => running,
    async stop() {
      stopped = true;
      cancel();
      await running;
    },
  };
}
