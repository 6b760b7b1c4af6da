import type { JobHandler } from '../jobs/job-context.ts';

/**
 * When the sampler runs: every interval, and soon after a database is made on this node (so the
 * dashboard shows a new database's size and connections within seconds, not up to an interval
 * later). Requests for an early round are coalesced: at most one pending, and never sooner than
 * `minGapMs` after the previous round — a burst of creates costs one extra round, not one each.
 */
export function createSampleSchedule(deps: {
  sample: () => Promise<void>;
  intervalMs: number;
  /** Delay of an early round after it is asked for. */
  soonMs?: number;
  /** Least time between two rounds started by `soon()`. */
  minGapMs?: number;
  now?: () => number;
}) {
  const now = deps.now ?? Date.now;
  const soonMs = deps.soonMs ?? 1_000;
  const minGapMs = deps.minGapMs ?? 5_000;
  let lastRun = Number.NEGATIVE_INFINITY;
  let pending: NodeJS.Timeout | null = null;
  let interval: NodeJS.Timeout | null = null;
  let stopped = false;

  const run = () => {
    lastRun = now();
    return deps.sample();
  };

  return {
    start(): void {
      void run();
      interval = setInterval(() => void run(), deps.intervalMs);
    },
    /** An early round, coalesced with any already pending and spaced from the last one. */
    soon(): void {
      if (stopped || pending) return;
      const wait = Math.max(soonMs, lastRun + minGapMs - now());
      pending = setTimeout(() => {
        pending = null;
        if (!stopped) void run();
      }, wait);
    },
    stop(): void {
      stopped = true;
      if (interval) clearInterval(interval);
      if (pending) clearTimeout(pending);
      interval = pending = null;
    },
  };
}

/** The job handlers, with `database.create` asking for an early sampling round once it succeeded. */
export function sampleAfterCreate(
  handlers: Map<string, JobHandler>,
  soon: () => void,
): Map<string, JobHandler> {
  const create = handlers.get('database.create');
  if (!create) return handlers;
  return new Map(handlers).set('database.create', async (payload, ctx) => {
    const result = await create(payload, ctx);
    soon();
    return result;
  });
}
