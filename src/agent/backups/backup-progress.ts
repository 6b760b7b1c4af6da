/**
 * Progress of a running backup, restore or drill (issue 15): the job's own view of the storage
 * tracks the archive bytes written (dump) and read (verify, restore) by the streams' own counters,
 * the steps the handlers already announce (`onStep`) name the phase, and the agent reports both to
 * the server about once a second (and at each phase change). Reports are best effort: a lost one
 * is only a stale number in the API.
 */
import { BACKUP_PHASES, type BackupProgress } from '../../shared/contracts/backups.ts';
import type { JobContext, JobHandler } from '../jobs/job-context.ts';
import type { BackupJobDeps } from './backup-deps.ts';
import type { BackupStorage } from './backup-storage.ts';

type Phase = BackupProgress['phase'];
const isPhase = (s: string): s is Phase => (BACKUP_PHASES as readonly string[]).includes(s);

export type ProgressReporter = {
  phase(step: string): void;
  /** Sizes the phase's total (an archive opened for reading). */
  total(bytes: number | null): void;
  /** A stream of this phase: its bytes so far (read or written), sampled at each report. */
  track(bytes: () => number): void;
  stop(): Promise<void>;
};

/**
 * Samples the tracked streams about once a second (the furthest one: a restore reads the archive's
 * head for its table of contents, then the whole of it) and reports when something changed.
 */
export function progressReporter(
  send: NonNullable<JobContext['progress']>,
  everyMs = 1_000,
): ProgressReporter {
  let phase: Phase | null = null;
  let total: number | null = null;
  let tracked: (() => number)[] = [];
  let sent = '';
  let inFlight: Promise<void> = Promise.resolve();
  const report = () => {
    if (!phase) return;
    const done = tracked.reduce((m, f) => Math.max(m, f()), 0);
    const p = { phase, done_bytes: done, total_bytes: total === null ? null : Math.max(total, done) };
    const key = JSON.stringify(p);
    if (key === sent) return;
    sent = key;
    // One report at a time, in order.
    inFlight = inFlight.then(() => send(p)).catch(() => {});
  };
  const timer = setInterval(report, everyMs);
  timer.unref?.();
  return {
    phase(step) {
      if (!isPhase(step)) return;
      report();
      phase = step;
      total = null;
      tracked = [];
      report();
    },
    total(bytes) {
      total = bytes;
    },
    track(bytes) {
      tracked.push(bytes);
    },
    async stop() {
      clearInterval(timer);
      await inFlight;
    },
  };
}

const numberOr0 = (v: unknown) => (typeof v === 'number' && Number.isFinite(v) ? v : 0);

/**
 * The storage as one job sees it: the streams it opens or writes are tracked by their own byte
 * counters (`bytesRead` / `bytesWritten`), sampled — nothing is added to the data path.
 */
export function countingStorage(storage: BackupStorage, r: ProgressReporter): BackupStorage {
  return {
    ...storage,
    async create(ref, expectedBytes) {
      const pending = await storage.create(ref, expectedBytes);
      const ws = pending.stream as { bytesWritten?: unknown };
      r.track(() => numberOr0(ws.bytesWritten));
      return pending;
    },
    async open(ref) {
      const opened = await storage.open(ref);
      r.total(opened.size);
      return {
        ...opened,
        stream: (start?: number) => {
          const source = opened.stream(start);
          const rs = source as { bytesRead?: unknown };
          r.track(() => numberOr0(rs.bytesRead));
          return source;
        },
      };
    },
  };
}

/** A backup handler that reports its progress when the runner offers it (per job: its own counters). */
export function withProgress(deps: BackupJobDeps, make: (d: BackupJobDeps) => JobHandler): JobHandler {
  const plain = make(deps);
  return async (payload, ctx) => {
    if (!ctx.progress) return plain(payload, ctx);
    const r = progressReporter(ctx.progress);
    const jobDeps: BackupJobDeps = {
      ...deps,
      storage: countingStorage(deps.storage, r),
      onStep: async (kind, step) => {
        r.phase(step);
        await deps.onStep?.(kind, step);
      },
    };
    try {
      return await make(jobDeps)(payload, ctx);
    } finally {
      await r.stop();
    }
  };
}
