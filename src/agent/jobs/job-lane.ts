/**
 * A side lane for jobs that last as long as someone else decides (ADR 0023): a `backup.download`
 * ends only when its client has read the whole archive, so it must never hold the agent's main
 * runner, which runs every other job one at a time. The main runner still claims every job (one
 * long-poll, one claim path); a job of a lane kind is handed here and the runner goes back to
 * polling at once. At most `max` run at a time; one more is failed at once (not retried: its
 * client is told to try again) rather than waited for. Each runs through the runner's `runJob`,
 * so its lease is renewed and its outcome reported like any job's.
 */
import type { Logger } from 'pino';
import { BACKUP_JOB_KINDS } from '../../shared/contracts/backups.ts';
import type { PolledJob } from '../server-client.ts';

export type JobLane = {
  /** True when `kind` runs in this lane. */
  has(kind: string): boolean;
  /**
   * Starts the job in the lane without waiting for it, or (the lane full) fails it; never throws,
   * never waits for the job.
   */
  offer(job: PolledJob, signal: AbortSignal): Promise<void>;
  /** Jobs running in the lane now. */
  running(): number;
  /** Resolves when every job the lane started has ended (after the signal aborted them). */
  drain(): Promise<void>;
};

export const DOWNLOAD_LANE_KINDS: readonly string[] = [BACKUP_JOB_KINDS.download];
export const DOWNLOAD_LANE_MAX = 2;

export function createJobLane(deps: {
  kinds: readonly string[];
  max: number;
  runJob: (job: PolledJob, signal: AbortSignal) => Promise<void>;
  fail: (job: PolledJob, message: string, retry: boolean) => Promise<unknown>;
  log: Logger;
}): JobLane {
  const kinds = new Set(deps.kinds);
  const active = new Set<Promise<void>>();
  return {
    has: (kind) => kinds.has(kind),
    async offer(job, signal) {
      if (active.size >= deps.max) {
        deps.log.warn({ job: job.id, kind: job.kind, running: active.size }, 'lane full; job refused');
        await deps
          .fail(job, `this node is already running ${deps.max} ${job.kind} jobs; try again shortly`, false)
          .catch((e: Error) => deps.log.warn({ err: { message: e?.message } }, 'could not report a failure'));
        return;
      }
      const p: Promise<void> = deps
        .runJob(job, signal)
        .catch((err: Error) => deps.log.error({ err: { message: err?.message } }, 'job run failed'))
        .finally(() => active.delete(p));
      active.add(p);
    },
    running: () => active.size,
    async drain() {
      while (active.size > 0) await Promise.allSettled([...active]);
    },
  };
}
