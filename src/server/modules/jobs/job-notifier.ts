import pg from 'pg';
import type { Logger } from 'pino';
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
 * One LISTEN connection per server process. Each NOTIFY names a node; its waiting
 * long-polls wake at once. If the connection drops it is re-established with backoff;
 * meanwhile waiters fall back to short timeouts.
 */
export function createJobNotifier(connectionString: string, log: Logger): JobNotifier {
  const waiters = new Map<string, Set<() => void>>();
  let client: pg.Client | null = null;
  let closed = false;
  let isConnected = false;
  let retryMs = 100;
  let reconnectTimer: NodeJS.Timeout | undefined;

  const wake = (nodeId: string) => {
    const set = waiters.get(nodeId);
    if (!set) return;
    waiters.delete(nodeId);
    for (const fn of set) fn();
  };

  const connect = async () => {
    if (closed) return;
    const c = new pg.Client({ connectionString, application_name: 'bulwark-server-listen' });
    c.on('error', (err) => {
      log.warn({ err: { message: err.message } }, 'job listener connection lost');
      isConnected = false;
      c.end().catch(() => {});
      schedule();
    });
    c.on('notification', (msg) => {
      if (msg.channel === JOBS_CHANNEL && msg.payload) wake(msg.payload);
    });
    try {
      await c.connect();
      await c.query(`LISTEN ${JOBS_CHANNEL}`);
      client = c;
      isConnected = true;
      retryMs = 100;
      // Anything enqueued while we were disconnected: let every waiter re-check.
      for (const id of [...waiters.keys()]) wake(id);
    } catch (err) {
      log.warn({ err: { message: (err as Error).message } }, 'job listener could not connect');
      c.end().catch(() => {});
      schedule();
    }
  };

  const schedule = () => {
    if (closed || reconnectTimer) return;
    reconnectTimer = setTimeout(() => {
      reconnectTimer = undefined;
      void connect();
    }, retryMs);
    retryMs = Math.min(retryMs * 2, 5_000);
  };

  void connect();

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
          const bounded = isConnected ? ms : Math.min(ms, 1_000);
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
    connected: () => isConnected,
    async close() {
      closed = true;
      clearTimeout(reconnectTimer);
      for (const id of [...waiters.keys()]) wake(id);
      await client?.end().catch(() => {});
    },
  };
}
