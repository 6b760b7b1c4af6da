import type { Logger } from 'pino';
import { createPgListener, type PgListener } from '../../db/pg-listener.ts';
import { JOBS_CHANNEL } from './jobs.repo.ts';

export type JobNotifier = {
  /** Registers interest before a claim attempt, so a NOTIFY in between is not lost. */
  subscribe(nodeId: string): {
    wait(ms: number, signal?: AbortSignal): Promise<'notified' | 'timeout' | 'aborted'>;
    cancel(): void;
  };
  /** Wakes local waiters directly (used when this process enqueued the job itself). */
  wake(nodeId: string): void;
  connected(): boolean;
  close(): Promise<void>;
};

/**
 * Wakes waiting long-polls: each NOTIFY on `bulwark_jobs` names a node, and that node's
 * waiters wake at once. Uses the process's shared LISTEN connection (or its own when given
 * a URL). While the connection is down, waiters fall back to short timeouts; on reconnect
 * every waiter re-checks, since anything sent meanwhile was missed.
 */
export function createJobNotifier(
  source: string | PgListener,
  log: Logger,
  /** Another channel whose payloads are keys to wake (e.g. a database's status changed). */
  channel: string = JOBS_CHANNEL,
): JobNotifier {
  const waiters = new Map<string, Set<() => void>>();
  const own = typeof source === 'string' ? createPgListener(source, log, 'jobs') : null;
  const listener = typeof source === 'string' ? own! : source;

  const wake = (nodeId: string) => {
    const set = waiters.get(nodeId);
    if (!set) return;
    waiters.delete(nodeId);
    for (const fn of set) fn();
  };
  listener.on(channel, wake);
  listener.onConnect(() => {
    for (const id of [...waiters.keys()]) wake(id);
  });

  return {
    subscribe(nodeId) {
      let resolveFn: (() => void) | null = null;
      let fired = false;
      const fire = () => {
        fired = true;
        resolveFn?.();
      };
      let set = waiters.get(nodeId);
      if (!set) {
        set = new Set();
        waiters.set(nodeId, set);
      }
      set.add(fire);
      const cancel = () => {
        const s = waiters.get(nodeId);
        s?.delete(fire);
        if (s && s.size === 0) waiters.delete(nodeId);
      };
      return {
        cancel,
        wait(ms, signal) {
          if (fired) return Promise.resolve('notified' as const);
          // Without a live listener, do not trust a long wait.
          const bounded = listener.connected() ? ms : Math.min(ms, 1_000);
          return new Promise((resolve) => {
            const done = (r: 'notified' | 'timeout' | 'aborted') => {
              clearTimeout(timer);
              signal?.removeEventListener('abort', onAbort);
              cancel();
              resolve(r);
            };
            const onAbort = () => done('aborted');
            const timer = setTimeout(() => done('timeout'), Math.max(0, bounded));
            resolveFn = () => done('notified');
            if (signal?.aborted) done('aborted');
            else signal?.addEventListener('abort', onAbort, { once: true });
          });
        },
      };
    },
    wake,
    connected: () => listener.connected(),
    async close() {
      for (const id of [...waiters.keys()]) wake(id);
      await own?.close();
    },
  };
}
