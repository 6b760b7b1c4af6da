import type { Readable } from 'node:stream';
import type pg from 'pg';
import type { Logger } from 'pino';
import { checkJobResult } from '../../shared/contracts/jobs.ts';
import { type PolledJob, type ServerClient, ServerError } from '../server-client.ts';
import { JOB_REPORTED, type JobHandler, PermanentJobError } from './job-context.ts';
import { createJobLane, DOWNLOAD_LANE_KINDS, DOWNLOAD_LANE_MAX } from './job-lane.ts';

/** What the job runner uses: only the server calls it makes, the handlers and the admin pool. */
export type JobRunnerDeps = {
  client: Pick<
    ServerClient,
    'poll' | 'complete' | 'fail' | 'jobSecret' | 'backupKey' | 'explorerResult' | 'jobStatus'
  > &
    Partial<Pick<ServerClient, 'renewLease' | 'backupProgress' | 'streamArchive' | 'fetchMoveArchive'>>;
  handlers: ReadonlyMap<string, JobHandler>;
  admin: pg.Pool;
  log: Logger;
  /** How long one long-poll may wait on the server for a job. */
  pollWaitMs: number;
  /** Waits between failed polls; resolves at once when the signal aborts (`sleep.ts`). */
  sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Backoff after a failed poll: starts at `initialMs`, doubles up to `maxMs`. */
  backoff?: { initialMs: number; maxMs: number };
  /** `backup.download` jobs running at once in their own lane, beside the main loop (default 2). */
  downloadLaneMax?: number;
};

export type JobRunner = {
  /**
   * Polls, runs and reports jobs until `signal` aborts or the server refuses the agent's token
   * (then it resolves; the caller decides what that means). Never rejects.
   */
  run(signal: AbortSignal): Promise<void>;
  /** Runs one job and reports its outcome; never throws. */
  runJob(job: PolledJob, signal: AbortSignal): Promise<void>;
  /** `backup.download` jobs running in their lane now. */
  laneRunning(): number;
};

const clamp = (v: number, lo: number, hi: number) => Math.min(hi, Math.max(lo, v));

/**
 * Keeps a running job's lease: renews it every third of the lease (the first time after a third
 * of what the poll said was left, at most 10 s), so a job longer than the lease — a 20-minute
 * backup — is never reclaimed and run twice. A lease the server says is lost aborts the job's
 * signal (someone else may run it now); a renewal that fails otherwise is tried again at the next
 * tick, while a third of the lease is still ahead.
 */
function keepLease(
  client: JobRunnerDeps['client'],
  job: PolledJob,
  parent: AbortSignal,
  log: Logger,
): { signal: AbortSignal; stop(): void } {
  const lost = new AbortController();
  const signal = AbortSignal.any([parent, lost.signal]);
  const renew = client.renewLease;
  if (!renew) return { signal, stop: () => {} };
  const left = job.lease_expires_at ? Date.parse(job.lease_expires_at) - Date.now() : 30_000;
  let every = clamp(Number.isFinite(left) ? left / 3 : 10_000, 250, 10_000);
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const tick = async () => {
    try {
      const r = await renew(job);
      every = clamp(r.lease_ms / 3, 250, 60_000);
    } catch (err) {
      if (err instanceof ServerError && err.status === 404 && /Job lease/.test(err.message)) {
        log.warn({ job: job.id, kind: job.kind }, 'the job lease was lost; stopping the job');
        lost.abort(new Error('the job lease was lost (the server may give the job to another run)'));
        return;
      }
      log.warn({ job: job.id, err: { message: (err as Error)?.message } }, 'lease renewal failed; retrying');
    }
    if (!stopped) timer = setTimeout(tick, every);
  };
  timer = setTimeout(tick, every);
  return {
    signal,
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}

/**
 * The agent's job loop: long-poll the server, claim a job, run its kind's handler, check the
 * result against the kind's schema (the same check the server makes) and complete or fail it;
 * back off while the server cannot be reached.
 */
export function createJobRunner(deps: JobRunnerDeps): JobRunner {
  const { client, handlers, admin, log } = deps;
  const initialBackoff = deps.backoff?.initialMs ?? 100;
  const maxBackoff = deps.backoff?.maxMs ?? 5_000;

  /**
   * Whatever its handler does — reject, throw synchronously, throw a non-Error — fails that job
   * only (reported to the server when possible), never the loop.
   */
  const runJob = async (job: PolledJob, signal: AbortSignal): Promise<void> => {
    const handler = handlers.get(job.kind);
    const started = Date.now();
    if (!handler) {
      await client
        .fail(job, `this agent does not run jobs of kind ${job.kind}`, false)
        .catch((e: Error) => log.warn({ err: { message: e?.message } }, 'could not report a failure'));
      return;
    }
    const lease = keepLease(client, job, signal, log);
    const after: (() => void)[] = [];
    try {
      const result = await handler(job.payload, {
        admin,
        attempt: job.attempt,
        log: log.child({ job: job.id, kind: job.kind }),
        signal: lease.signal,
        secret: async () => (await client.jobSecret(job)).password,
        backupKey: async () => Buffer.from((await client.backupKey(job)).data_key, 'base64url'),
        sendResult: async (outcome) => {
          await client.explorerResult(job, outcome);
        },
        leaseActive: async () => (await client.jobStatus(job)).active,
        afterReport: (fn) => {
          after.push(fn);
        },
        ...(client.backupProgress
          ? {
              progress: async (p) => {
                await client
                  .backupProgress?.(job, p)
                  .catch((e: Error) =>
                    log.debug({ job: job.id, err: { message: e?.message } }, 'progress not recorded'),
                  );
              },
            }
          : {}),
        ...(client.streamArchive
          ? {
              streamArchive: (token: string, body: Readable) =>
                client.streamArchive!(job, token, body, lease.signal),
            }
          : {}),
        ...(client.fetchMoveArchive
          ? { fetchMoveArchive: () => client.fetchMoveArchive!(job, lease.signal) }
          : {}),
      });
      lease.stop();
      // Explorer jobs are completed by the server when it receives their result (one call).
      if (result !== JOB_REPORTED) {
        // The same check the server makes: a handler's malformed result fails here, visibly.
        const checked = checkJobResult(job.kind, result);
        if (!checked.ok)
          throw new PermanentJobError(`this agent produced a malformed result: ${checked.reason}`);
        await client.complete(job, checked.result);
      }
      log.info({ job: job.id, kind: job.kind, ms: Date.now() - started }, 'job done');
    } catch (err) {
      lease.stop();
      const permanent = err instanceof PermanentJobError;
      const message = (err instanceof Error ? err.message : String(err)).slice(0, 4000) || 'the job failed';
      log.warn({ job: job.id, kind: job.kind, err: { message } }, 'job failed');
      // The server refused the result and already failed the job: nothing left to report.
      if (err instanceof ServerError && err.status === 422) return;
      await client.fail(job, message, !permanent).catch((e: Error) => {
        log.warn({ err: { message: e?.message } }, 'could not report a failure; the lease will expire');
      });
    } finally {
      for (const fn of after) {
        try {
          fn();
        } catch (e) {
          log.warn({ err: { message: (e as Error)?.message } }, 'after-report hook failed');
        }
      }
    }
  };

  /**
   * Downloads last as long as their client reads (ADR 0023): they run in their own lane, so the
   * loop below never waits for one (another tenant's create is not held up by a slow reader).
   */
  const lane = createJobLane({
    kinds: DOWNLOAD_LANE_KINDS,
    max: Math.max(1, deps.downloadLaneMax ?? DOWNLOAD_LANE_MAX),
    runJob,
    fail: (job, message, retry) => client.fail(job, message, retry),
    log,
  });

  const run = async (signal: AbortSignal): Promise<void> => {
    const ended = new AbortController();
    const both = AbortSignal.any([signal, ended.signal]);
    try {
      await loop(both);
    } finally {
      // Stopping (or the token refused): the lane's jobs end too; wait for them to report.
      ended.abort(new Error('the job runner stopped'));
      await lane.drain();
    }
  };

  const loop = async (signal: AbortSignal): Promise<void> => {
    let backoff = initialBackoff;
    while (!signal.aborted) {
      try {
        const { job } = await client.poll(deps.pollWaitMs, signal);
        backoff = initialBackoff;
        if (job && lane.has(job.kind)) await lane.offer(job, signal);
        else if (job)
          await runJob(job, signal).catch((err: Error) =>
            log.error({ err: { message: err?.message } }, 'job run failed'),
          );
      } catch (err) {
        if (signal.aborted) break;
        if (err instanceof ServerError && err.status === 401) {
          log.error('the server refused this agent token (revoked or re-enrolled); stopping');
          break;
        }
        log.warn({ err: { message: (err as Error)?.message } }, 'poll failed; retrying');
        await deps.sleep(backoff, signal);
        backoff = Math.min(backoff * 2, maxBackoff);
      }
    }
  };

  return { run, runJob, laneRunning: lane.running };
}
