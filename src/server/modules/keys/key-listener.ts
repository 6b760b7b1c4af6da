import pg from 'pg';
import type { Logger } from 'pino';
import { KEYS_CHANNEL } from './keys.repo.ts';

export type KeyListener = {
  connected(): boolean;
  /** Resolves once the first LISTEN is in place (or after `timeoutMs`). */
  ready(timeoutMs?: number): Promise<boolean>;
  close(): Promise<void>;
};

export type KeyListenerHandlers = {
  /** One or more lookup prefixes to drop (payload: comma-separated prefixes). */
  evict(prefix: string): void;
  /** `account:<uuid>`: every key of that account (suspension, policy change). */
  evictAccount(accountId: string): void;
  /** The connection was (re)established: anything may have been missed, drop everything. */
  clear(): void;
};

const PREFIX = /^[0-9A-Za-z]{12}$/;
const ACCOUNT = /^account:([0-9a-f-]{36})$/;

/**
 * One LISTEN connection per server process on `bulwark_keys` (same pattern as the job
 * notifier): reconnects with backoff, and clears the whole cache when it (re)connects.
 */
export function createKeyListener(
  connectionString: string,
  log: Logger,
  h: KeyListenerHandlers,
): KeyListener {
  let client: pg.Client | null = null;
  let closed = false;
  let isConnected = false;
  let retryMs = 100;
  let reconnectTimer: NodeJS.Timeout | undefined;
  let markReady: (v: boolean) => void = () => {};
  const firstReady = new Promise<boolean>((resolve) => {
    markReady = resolve;
  });

  const onPayload = (payload: string) => {
    if (payload === '*') return h.clear();
    for (const part of payload.split(',')) {
      const account = ACCOUNT.exec(part);
      if (account) h.evictAccount(account[1]!);
      else if (PREFIX.test(part)) h.evict(part);
    }
  };

  const connect = async () => {
    if (closed) return;
    const c = new pg.Client({ connectionString, application_name: 'bulwark-server-keys' });
    c.on('error', (err) => {
      log.warn({ err: { message: err.message } }, 'key revocation listener connection lost');
      isConnected = false;
      h.clear();
      c.end().catch(() => {});
      schedule();
    });
    c.on('notification', (msg) => {
      if (msg.channel === KEYS_CHANNEL && msg.payload) onPayload(msg.payload);
    });
    try {
      await c.connect();
      await c.query(`LISTEN ${KEYS_CHANNEL}`);
      if (closed) {
        await c.end().catch(() => {});
        return;
      }
      client = c;
      h.clear();
      isConnected = true;
      retryMs = 100;
      markReady(true);
    } catch (err) {
      log.warn({ err: { message: (err as Error).message } }, 'key revocation listener could not connect');
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
    connected: () => isConnected,
    ready(timeoutMs = 5_000) {
      let timer: NodeJS.Timeout | undefined;
      return Promise.race([
        firstReady,
        new Promise<boolean>((resolve) => {
          timer = setTimeout(() => resolve(false), timeoutMs);
        }),
      ]).finally(() => clearTimeout(timer));
    },
    async close() {
      closed = true;
      isConnected = false;
      clearTimeout(reconnectTimer);
      markReady(false);
      await client?.end().catch(() => {});
    },
  };
}
