import { bytes } from '../../lib/format.ts';

/** What a running backup or restore reports (`progress` in the API; null unless running). */
export type JobProgress = {
  phase: string;
  done_bytes: number;
  total_bytes: number | null;
  updated_at: string;
} | null;

const PHASES: Record<string, string> = {
  snapshot: 'Taking a snapshot',
  dump: 'Dumping',
  commit: 'Saving the archive',
  verify: 'Verifying the archive',
  offsite: 'Copying off-site',
  verify_offsite: 'Verifying the off-site copy',
  target: 'Preparing the target',
  restore: 'Restoring',
  check: 'Checking the result',
  swap: 'Swapping in',
  drop: 'Cleaning up',
};

/** A running job's phase and bytes, with a bar when the archive's size is known. */
export function JobProgressLine({ progress }: { progress: JobProgress | undefined }) {
  if (!progress) return null;
  const label = PHASES[progress.phase] ?? progress.phase;
  const total = progress.total_bytes;
  return (
    <div className="small job-progress" data-phase={progress.phase}>
      <span>{label}</span>{' '}
      {total ? (
        <>
          <progress max={total} value={Math.min(progress.done_bytes, total)} aria-label={label} />{' '}
          <span className="muted">
            {bytes(progress.done_bytes)} of {bytes(total)}
          </span>
        </>
      ) : progress.done_bytes > 0 ? (
        <span className="muted">{bytes(progress.done_bytes)}</span>
      ) : null}
    </div>
  );
}
