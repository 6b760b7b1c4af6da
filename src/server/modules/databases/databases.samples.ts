/**
 * Samples for the dashboard's charts: what the agents report (size and tenant connections of each
 * database on their node), kept for a bounded window and served bucketed, so a chart gets at most
 * MAX_POINTS points whatever the window and the agents' interval.
 */
import type { Logger } from 'pino';
import type { Db } from '../../db/pool.ts';
import type { Caller } from '../../http/caller.ts';
import * as repo from './databases.samples.repo.ts';
import type { DatabasesService } from './databases.service.ts';

export const SAMPLE_WINDOWS = { '1h': 3_600, '24h': 86_400, '7d': 604_800 } as const;
export type SampleWindow = keyof typeof SAMPLE_WINDOWS;

/** Points a chart gets at most: the window is cut into this many buckets. */
export const MAX_POINTS = 300;
/** Samples one agent report may carry (the agent sends a node's samples in reports of this many). */
export const MAX_SAMPLES_PER_REPORT = 1_000;
/** Pruning: at most once a minute per process, this many rows at a time (the rest next time). */
const PRUNE_EVERY_MS = 60_000;
const PRUNE_BATCH = 20_000;
/**
 * Roll-ups (migration 0016): older than an hour → 5-minute maxima; older than a day → 30-minute
 * maxima. The 24 h chart's buckets are 288 s and the 7 d chart's 2016 s wide, so they keep their
 * shape; storage per database for a week falls from ~10,000 rows (60 s samples) to ~700.
 */
export const ROLLUPS = [
  { afterSeconds: 3_600, spanSeconds: 300 },
  { afterSeconds: 86_400, spanSeconds: 1_800 },
] as const;

export function createSamplesService(deps: {
  db: Db;
  log: Logger;
  /** Finds the caller's database (a 404 for another account's, or out of a scoped caller's grants). */
  databases: Pick<DatabasesService, 'get'>;
  retentionDays: number;
  now?: () => number;
}) {
  const { db } = deps;
  const now = deps.now ?? Date.now;
  let lastPrune = 0;

  const prune = async () => {
    if (now() - lastPrune < PRUNE_EVERY_MS) return;
    lastPrune = now();
    for (const r of ROLLUPS) {
      const merged = await repo.rollUpSamples(
        db,
        new Date(now() - r.afterSeconds * 1000),
        r.spanSeconds,
        PRUNE_BATCH,
      );
      if (merged > 0) deps.log.debug({ merged, span_s: r.spanSeconds }, 'database samples rolled up');
    }
    const before = new Date(now() - deps.retentionDays * 86_400_000);
    const n = await repo.pruneSamples(db, before, PRUNE_BATCH);
    if (n > 0) deps.log.debug({ pruned: n }, 'old database samples pruned');
  };

  return {
    /** One report of a node's agent; samples of databases not on that node are ignored. */
    async record(nodeId: string, samples: readonly repo.ReportedSample[]): Promise<number> {
      const stored = samples.length ? await repo.insertSamples(db, nodeId, samples) : 0;
      // Roll-ups and the prune run beside the report, never in its way (at most once a minute).
      void prune().catch((err: Error) =>
        deps.log.warn({ err: { message: err.message } }, 'could not prune old database samples'),
      );
      return stored;
    },

    /** A database's samples over the window, at most MAX_POINTS buckets, oldest first. */
    async points(caller: Caller, name: string, window: SampleWindow) {
      const database = await deps.databases.get(caller, name);
      const seconds = SAMPLE_WINDOWS[window];
      const bucketSeconds = seconds / MAX_POINTS;
      const since = new Date(now() - seconds * 1000);
      const rows = await repo.bucketedSamples(db, database.id, since, bucketSeconds, MAX_POINTS);
      return {
        window,
        bucket_seconds: bucketSeconds,
        points: rows.map((r) => ({
          at: r.at.toISOString(),
          size_bytes: Number(r.size_bytes),
          connections: r.connections,
        })),
      };
    },
  };
}

export type SamplesService = ReturnType<typeof createSamplesService>;
