import type { Tx } from '../../db/pool.ts';
import type { JobRow } from './jobs.repo.ts';

/**
 * Runs inside the transaction that finished a job (succeeded or dead), so the state a job
 * drives (a database becoming ready, a backup recorded …) changes atomically with the job.
 */
export type JobFinishedHook = (tx: Tx, job: JobRow) => Promise<void>;

export type JobHooks = {
  /** Registers a hook for every job kind that starts with `prefix` (e.g. `database.`). */
  register(prefix: string, hook: JobFinishedHook): void;
  /** Calls the hooks of a finished job; a job still queued for retry is not finished. */
  onJobFinished(tx: Tx, job: JobRow): Promise<void>;
};

export function createJobHooks(): JobHooks {
  const hooks: { prefix: string; hook: JobFinishedHook }[] = [];
  return {
    register(prefix, hook) {
      hooks.push({ prefix, hook });
    },
    async onJobFinished(tx, job) {
      if (job.status !== 'succeeded' && job.status !== 'dead') return;
      for (const h of hooks) if (job.kind.startsWith(h.prefix)) await h.hook(tx, job);
    },
  };
}
