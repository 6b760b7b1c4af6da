/**
 * Expiry of governed requests (issue 14): pending requests past their lifetime and approved ones
 * past their approval's are marked `expired` (audited `request.expired`), in bounded batches on an
 * interval. Execution checks the times itself, so a request the sweeper has not reached yet still
 * cannot run.
 */
import type { Logger } from 'pino';
import { type Db, withTx } from '../../db/pool.ts';
import type { AuditService } from '../audit/audit.service.ts';
import * as repo from './requests.repo.ts';

const BATCH = 200;

export function createRequestSweeper(deps: {
  db: Db;
  log: Logger;
  audit: Pick<AuditService, 'record'>;
  intervalMs?: number;
}) {
  const { db, log } = deps;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<number> | null = null;

  /** One pass: at most `rounds` batches. Returns how many requests expired. */
  const sweep = async (rounds = 5): Promise<number> => {
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
    return total;
  };

  const tick = () => {
    if (running) return;
    running = sweep().catch((err: Error) => {
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
