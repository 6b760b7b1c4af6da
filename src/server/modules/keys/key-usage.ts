import { isIP } from 'node:net';
import type { Logger } from 'pino';

export type KeyUsageRecorder = {
  /** Remembers the latest use of a key in memory (no I/O on the request path). */
  note(keyId: string, ip: string): void;
  /** Writes everything noted so far in one statement. */
  flush(): Promise<void>;
  /** Stops the timer and flushes what is left. */
  close(): Promise<void>;
};

/**
 * last_used_at / last_used_ip without a write per request: uses are kept in a map (the
 * latest per key) and flushed in one batched UPDATE every `intervalMs` and on close.
 */
export function createKeyUsageRecorder(deps: {
  write: (uses: { keyId: string; at: Date; ip: string | null }[]) => Promise<string[]>;
  onFirstUse: (keyIds: string[]) => void;
  log: Logger;
  intervalMs: number;
}): KeyUsageRecorder {
  // Raw facts only on the request path (a number and a string); converted at flush time.
  let pending = new Map<string, { at: number; ip: string }>();
  let running: Promise<void> | null = null;

  const flush = async (): Promise<void> => {
    if (running) await running;
    if (pending.size === 0) return;
    const batch = pending;
    pending = new Map();
    running = (async () => {
      try {
        const first = await deps.write(
          [...batch].map(([keyId, u]) => ({ keyId, at: new Date(u.at), ip: isIP(u.ip) ? u.ip : null })),
        );
        if (first.length) deps.onFirstUse(first);
      } catch (err) {
        deps.log.warn(
          { err: { message: (err as Error).message }, keys: batch.size },
          'key usage flush failed',
        );
        // Keep the newer of what failed and what arrived meanwhile; retried on the next tick.
        for (const [id, u] of batch) if (!pending.has(id)) pending.set(id, u);
      }
    })();
    try {
      await running;
    } finally {
      running = null;
    }
  };

  const timer = setInterval(() => void flush(), deps.intervalMs);
  timer.unref();

  return {
    note(keyId, ip) {
      pending.set(keyId, { at: Date.now(), ip });
    },
    flush,
    async close() {
      clearInterval(timer);
      await flush();
    },
  };
}
