import type { Tx } from '../../db/pool.ts';
import type { JobRow } from './jobs.repo.ts';

/**
 * What a result check kept out of the stored result (e.g. a password the agent set): handed to
 * the finished hooks of the same transaction, never written to `jobs.result`.
 */
export type WithheldResult = Readonly<Record<string, unknown>>;

/**
 * Runs inside the transaction that finished a job (succeeded or dead), so the state a job
 * drives (a database becoming ready, a backup recorded …) changes atomically with the job.
 */
export type JobFinishedHook = (tx: Tx, job: JobRow, withheld: WithheldResult) => Promise<void>;

/**
 * Runs before a result (already checked against its kind's schema) is stored, in the same
 * transaction, with the job still running and locked: refuses it (`reason`, the job is failed for
 * good like any invalid result) or says what is stored and what is withheld.
 */
type JobResultCheck = (
  tx: Tx,
  job: JobRow,
  result: Record<string, unknown>,
) => Promise<
  { ok: true; stored: Record<string, unknown>; withheld?: WithheldResult } | { ok: false; reason: string }
>;

export type JobHooks = {
  /**
   * Registers a hook for every job kind that starts with `prefix` (e.g. `database.`); `check`
   * vets those kinds' results before they are stored, `committed` runs after the transaction that
   * finished the job committed (in-process wake-ups; it must not throw).
   */
  register(
    prefix: string,
    hook: JobFinishedHook,
    opts?: { check?: JobResultCheck; committed?: (job: JobRow) => void },
  ): void;
  /** The registered checks of the job's kind, in turn: the first refusal wins. */
  checkResult: JobResultCheck;
  /** Calls the hooks of a finished job; a job still queued for retry is not finished. */
  onJobFinished(tx: Tx, job: JobRow, withheld?: WithheldResult): Promise<void>;
  /** After the commit that finished a job (its `committed` callbacks). */
  committed(job: JobRow): void;
};

export function createJobHooks(): JobHooks {
  const hooks: {
    prefix: string;
    hook: JobFinishedHook;
    check?: JobResultCheck | undefined;
    committed?: ((job: JobRow) => void) | undefined;
  }[] = [];
  return {
    register(prefix, hook, opts = {}) {
      hooks.push({ prefix, hook, check: opts.check, committed: opts.committed });
    },
    async checkResult(tx, job, result) {
      let stored = result;
      let withheld: Record<string, unknown> = {};
      for (const h of hooks) {
        if (!h.check || !job.kind.startsWith(h.prefix)) continue;
        const verdict = await h.check(tx, job, stored);
        if (!verdict.ok) return verdict;
        stored = verdict.stored;
        withheld = { ...withheld, ...verdict.withheld };
      }
      return { ok: true, stored, withheld };
    },
    async onJobFinished(tx, job, withheld = {}) {
      if (job.status !== 'succeeded' && job.status !== 'dead') return;
      for (const h of hooks) if (job.kind.startsWith(h.prefix)) await h.hook(tx, job, withheld);
    },
    committed(job) {
      if (job.status !== 'succeeded' && job.status !== 'dead') return;
      for (const h of hooks) if (h.committed && job.kind.startsWith(h.prefix)) h.committed(job);
    },
  };
}
