/**
 * Expiry of governed requests (issue 14): pending requests past their lifetime and approved ones
 * past their approval's are marked `expired` (audited `request.expired`), in bounded batches on an
 * interval. Execution checks the times itself, so a request the sweeper has not reached yet still
 * cannot run.
 *
 * It also settles deliveries a server lost (it stopped while waiting for a channel answer): a
 * delivery sent down a channel and still unsettled long after any statement could have ended is
 * settled as "no outcome" (the request `failed`, "it may have run"; a dry run: nothing ran). Queued
 * deliveries are the job queue's: their job ends one way or another and its hook settles them.
 */
import type { Logger } from 'pino';
import { type Db, withTx } from '../../db/pool.ts';
import type { AuditService } from '../audit/audit.service.ts';
import * as deliveries from './requests.deliveries.repo.ts';
import type { OutcomeApplier } from './requests.outcome.ts';
import * as repo from './requests.repo.ts';

const BATCH = 200;
/** A channel delivery unsettled this long was lost (the longest statement timeout is an hour). */
const LOST_AFTER_S = 2 * 3600;

export function createRequestSweeper(deps: {
  db: Db;
  log: Logger;
  audit: Pick<AuditService, 'record'>;
  applier: Pick<OutcomeApplier, 'apply'>;
  intervalMs?: number;
}) {
  const { db, log } = deps;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<number> | null = null;
  let passes = 0;

  /**
   * One pass: at most `rounds` batches of expiries, and (`lostToo`) the lost deliveries. Returns how
   * many requests it settled.
   */
  const sweep = async (rounds = 5, lostToo = true): Promise<number> => {
    let total = 0;
    for (let i = 0; i < rounds; i++) {
      const n = await withTx(db, async (tx) => {
        const due = await repo.expireDue(tx, BATCH);
        for (const r of due)
          await deps.audit.record(tx, {
            action: 'request.expired',
            actorType: 'system',
            accountId: r.account_id,
            targetType: 'request',
            targetId: r.id,
            details: { was: r.was },
          });
        return due.length;
      });
      total += n;
      if (n < BATCH) break;
    }
    if (total) log.info({ expired: total }, 'governed requests expired');
    if (!lostToo) return total;
    const lost = await deliveries.lostDeliveries(db, LOST_AFTER_S, BATCH);
    for (const d of lost)
      await withTx(db, (tx) =>
        deps.applier.apply(
          tx,
          { id: d.id },
          d.mode === 'dry_run'
            ? { kind: 'not_taken', why: 'the server lost the dry run' }
            : { kind: 'unknown', why: 'the server lost the delivery before the node answered' },
        ),
      );
    if (lost.length) log.warn({ settled: lost.length }, 'lost request deliveries settled as without outcome');
    return total + lost.length;
  };

  const tick = () => {
    if (running) return;
    // Lost deliveries are rare: looked for on every tenth pass (the first one included).
    running = sweep(5, passes++ % 10 === 0).catch((err: Error) => {
      log.warn({ err: { message: err.message } }, 'request expiry sweep failed');
      return 0;
    });
    void running.finally(() => {
      running = null;
    });
  };

  return {
    sweep,
    start() {
      timer ??= setInterval(tick, deps.intervalMs ?? 30_000);
      timer.unref();
    },
    async stop() {
      clearInterval(timer);
      timer = undefined;
      await running;
    },
  };
}
