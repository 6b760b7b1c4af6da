/**
 * Dry runs in flight per database in this process (issue 14): at most `max` (2) at once. A dry run
 * holds one of the database's migrator connections on the node (its connection limit is 5) for up
 * to its statement timeout; executions are never limited here, so a burst of long dry runs cannot
 * take every connection and hold approved executions back. Beyond the limit a preflight or a
 * re-run dry run is 503 `retry` with `Retry-After`; a request's dry run at creation or edit is
 * skipped and says so (dry_run_error), to be run again with POST …/dry-run.
 */
import { AppError } from '../../../shared/errors.ts';

export const DRY_RUNS_PER_DATABASE = 2;
/** A dry run's statement timeout, and how long the API waits for its answer. */
export const DRY_RUN_TIMEOUT_MS = 10_000;
export const DRY_RUN_WAIT_MS = 15_000;
/** Seconds a refused dry run is told to wait (Retry-After). */
export const DRY_RUN_RETRY_AFTER_S = 5;

export type DryRunSlots = {
  /** A slot for `databaseId`, or null when `max` dry runs of it are in flight. Release exactly once. */
  tryAcquire(databaseId: string): (() => void) | null;
  /** In flight now (tests and metrics). */
  inFlight(databaseId: string): number;
};

export function createDryRunSlots(max = DRY_RUNS_PER_DATABASE): DryRunSlots {
  const busy = new Map<string, number>();
  return {
    tryAcquire(databaseId) {
      const n = busy.get(databaseId) ?? 0;
      if (n >= max) return null;
      busy.set(databaseId, n + 1);
      let released = false;
      return () => {
        if (released) return;
        released = true;
        const left = (busy.get(databaseId) ?? 1) - 1;
        if (left <= 0) busy.delete(databaseId);
        else busy.set(databaseId, left);
      };
    },
    inFlight: (databaseId) => busy.get(databaseId) ?? 0,
  };
}

/** The 503 of a dry run refused for want of a slot (the route sets Retry-After from details). */
export const dryRunsBusy = () =>
  new AppError(
    'retry',
    `${DRY_RUNS_PER_DATABASE} dry runs of this database are already running; retry in a few seconds`,
    { retry_after_s: DRY_RUN_RETRY_AFTER_S, limit: DRY_RUNS_PER_DATABASE },
  );

/** What a request shows when its dry run at creation or edit found no slot (nothing ran). */
export const DRY_RUN_BUSY_ERROR = {
  sqlstate: '53300',
  message: `Not dry-run: ${DRY_RUNS_PER_DATABASE} dry runs of this database were already running. Run the dry run again (POST …/dry-run).`,
};
