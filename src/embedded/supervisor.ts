import type { ChildProcess } from 'node:child_process';

/**
 * Restarts one child of `bulwark up` when it dies, with exponential backoff.
 *
 * - The first restart waits `initialDelayMs`; each further crash doubles the wait up to
 *   `maxDelayMs`. A child that stayed up `stableAfterMs` after it was ready starts again from
 *   `initialDelayMs` when it next dies.
 * - A child is counted as running again only once `start` resolves (it waits for readiness:
 *   the server's /ready, the agent's ready file, a login to PostgreSQL or PgBouncer).
 *   A start that fails (exit, timeout) counts as one more crash.
 * - After `maxCrashes` crashes within `crashWindowMs` the supervisor gives up on that child
 *   (reported once as `gave_up`); what happens then is the caller's decision.
 */
export type RestartPolicy = {
  initialDelayMs: number;
  maxDelayMs: number;
  stableAfterMs: number;
  maxCrashes: number;
  crashWindowMs: number;
};

/** 0.5 s, 1, 2, 4, 8, 16, 30, 30 … s; reset after 60 s of stable running; give up at 10 crashes in 10 min. */
export const RESTART_POLICY: RestartPolicy = Object.freeze({
  initialDelayMs: 500,
  maxDelayMs: 30_000,
  stableAfterMs: 60_000,
  maxCrashes: 10,
  crashWindowMs: 10 * 60_000,
});

export type ChildExit = { code: number | null; signal: NodeJS.Signals | null };

export type SupervisorEvent =
  | {
      kind: 'crashed';
      name: string;
      exit: ChildExit;
      uptimeMs: number;
      crashesInWindow: number;
      restartInMs: number;
    }
  | { kind: 'restart_failed'; name: string; error: string; crashesInWindow: number; restartInMs: number }
  | { kind: 'restarted'; name: string; pid: number | undefined; restarts: number; downMs: number }
  | { kind: 'gave_up'; name: string; crashesInWindow: number; windowMs: number };

export type Supervised = {
  /** The child running now (or being started), if any. */
  current(): ChildProcess | null;
  /** Restarts nothing from now on; the current child keeps running (first step of a shutdown). */
  hold(): void;
  /** Stops supervising, then stops the current child (also one still starting). Idempotent. */
  stop(): Promise<void>;
  /** Settles when supervision ends: stopped, or given up. */
  done: Promise<'stopped' | 'gave_up'>;
};

export type SuperviseOptions = {
  name: string;
  /** The first child, already started and ready. */
  first: ChildProcess;
  /**
   * Starts a new child and resolves once it is ready; rejects (having stopped it) otherwise.
   * `track` must be called with the child as soon as it is spawned, so stop() can reach it.
   */
  start(track: (child: ChildProcess) => void): Promise<ChildProcess>;
  stopChild(child: ChildProcess): Promise<void>;
  onEvent(e: SupervisorEvent): void;
  policy?: RestartPolicy;
  now?: () => number;
};

function exitOf(child: ChildProcess): Promise<ChildExit> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) {
      resolve({ code: child.exitCode, signal: child.signalCode });
      return;
    }
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}

export function supervise(opts: SuperviseOptions): Supervised {
  const policy = opts.policy ?? RESTART_POLICY;
  const now = opts.now ?? Date.now;
  const stopping = new AbortController();
  let current: ChildProcess | null = opts.first;
  let readyAt = now();
  let consecutive = 0;
  let restarts = 0;
  const crashes: number[] = [];

  /** Counts one crash; returns the wait before the next start, or null to give up. */
  const countCrash = (uptimeMs: number): { delay: number; inWindow: number } | null => {
    const t = now();
    crashes.push(t);
    while (crashes.length > 0 && (crashes[0] ?? t) <= t - policy.crashWindowMs) crashes.shift();
    if (uptimeMs >= policy.stableAfterMs) consecutive = 0;
    consecutive += 1;
    if (crashes.length >= policy.maxCrashes) return null;
    const delay = Math.min(policy.initialDelayMs * 2 ** (consecutive - 1), policy.maxDelayMs);
    return { delay, inWindow: crashes.length };
  };

  /** Too many crashes in the window: the child stays down, and that is said once. */
  const giveUp = (): 'gave_up' => {
    current = null;
    opts.onEvent({
      kind: 'gave_up',
      name: opts.name,
      crashesInWindow: crashes.length,
      windowMs: policy.crashWindowMs,
    });
    return 'gave_up';
  };

  const run = async (): Promise<'stopped' | 'gave_up'> => {
    for (;;) {
      const child: ChildProcess = current ?? opts.first;
      const exit = await exitOf(child);
      if (stopping.signal.aborted) return 'stopped';
      const downSince = now();
      let next = countCrash(downSince - readyAt);
      if (!next) return giveUp();
      opts.onEvent({
        kind: 'crashed',
        name: opts.name,
        exit,
        uptimeMs: downSince - readyAt,
        crashesInWindow: next.inWindow,
        restartInMs: next.delay,
      });
      for (;;) {
        await sleep(next.delay, stopping.signal);
        if (stopping.signal.aborted) return 'stopped';
        try {
          const started = await opts.start((c) => {
            current = c;
          });
          current = started;
          if (stopping.signal.aborted) {
            await opts.stopChild(started);
            return 'stopped';
          }
          readyAt = now();
          restarts += 1;
          opts.onEvent({
            kind: 'restarted',
            name: opts.name,
            pid: started.pid,
            restarts,
            downMs: readyAt - downSince,
          });
          break;
        } catch (err) {
          if (stopping.signal.aborted) return 'stopped';
          next = countCrash(0);
          if (!next) return giveUp();
          opts.onEvent({
            kind: 'restart_failed',
            name: opts.name,
            // First line only: the rest may be a log tail, which has no place in the audit log.
            error: ((err as Error).message.split('\n')[0] ?? '').slice(0, 300),
            crashesInWindow: next.inWindow,
            restartInMs: next.delay,
          });
        }
      }
    }
  };
  const done = run();

  return {
    current: () => current,
    done,
    hold() {
      stopping.abort();
    },
    async stop() {
      stopping.abort();
      const c = current;
      if (c) await opts.stopChild(c);
      await done;
    },
  };
}
