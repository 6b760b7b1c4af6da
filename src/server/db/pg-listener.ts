import pg from 'pg';
import type { Logger } from 'pino';

export type PgListener = {
  /** Calls `handler` with each payload NOTIFYed on `channel` (LISTEN is issued on every connect). */
  on(channel: string, handler: (payload: string) => void): void;
  /** Called after every (re)connection: anything sent meanwhile was missed. */
  onConnect(handler: () => void): void;
  /** Called when the connection is lost. */
  onDisconnect(handler: () => void): void;
  connected(): boolean;
  /** Resolves true once the first LISTEN is in place, false after `timeoutMs` or on close. */
  ready(timeoutMs?: number): Promise<boolean>;
  close(): Promise<void>;
};

const CHANNEL = /^[a-z][a-z0-9_]{0,62}$/;

/**
 * One dedicated LISTEN connection: reconnects with exponential backoff (100 ms → 5 s) and
 * tells its users when it (re)connects or drops, so caches can be cleared and waiters
 * re-checked. Channels are registered before or after connecting.
 */
export function createPgListener(connectionString: string, log: Logger, name: string): PgListener {
  const handlers = new Map<string, ((payload: string) => void)[]>();
  const connectHandlers: (() => void)[] = [];
  const disconnectHandlers: (() => void)[] = [];
  let client: pg.Client | null = null;
  let closed = false;
  let isConnected = false;
  let retryMs = 100;
  let reconnectTimer: NodeJS.Timeout | undefined;
  let markReady: (v: boolean) => void = () => {};
  const firstReady = new Promise<boolean>((resolve) => {
    markReady = resolve;
  });

  const lost = () => {
    const was = isConnected;
    isConnected = false;
    if (was) for (const h of disconnectHandlers) h();
  };

  const schedule = () => {
    if (closed || reconnectTimer) return;
    reconnectTimer = setTimeout(() => {
      reconnectTimer = undefined;
      void connect();
    }, retryMs);
    retryMs = Math.min(retryMs * 2, 5_000);
  };

  const connect = async () => {
    if (closed) return;
    const c = new pg.Client({ connectionString, application_name: `bulwark-${name}` });
    c.on('error', (err) => {
      log.warn({ err: { message: err.message }, listener: name }, 'listen connection lost');
      lost();
      c.end().catch(() => {});
      schedule();
    });
    c.on('notification', (msg) => {
      if (!msg.payload) return;
      for (const h of handlers.get(msg.channel) ?? []) h(msg.payload);
    });
    try {
      await c.connect();
      for (const channel of handlers.keys()) await c.query(`LISTEN ${channel}`);
      if (closed) {
        await c.end().catch(() => {});
        return;
      }
      client = c;
      isConnected = true;
      retryMs = 100;
      for (const h of connectHandlers) h();
      markReady(true);
    } catch (err) {
      log.warn({ err: { message: (err as Error).message }, listener: name }, 'listen connection failed');
      c.end().catch(() => {});
      schedule();
    }
  };

  queueMicrotask(() => void connect());

  return {
    on(channel, handler) {
      if (!CHANNEL.test(channel)) throw new Error(`invalid channel name: ${channel}`);
      const list = handlers.get(channel);
      if (list) {
        list.push(handler);
        return;
      }
      handlers.set(channel, [handler]);
      if (client && isConnected) {
        client.query(`LISTEN ${channel}`).catch((err: Error) => {
          log.warn({ err: { message: err.message }, listener: name }, 'LISTEN failed');
        });
      }
    },
    onConnect: (h) => connectHandlers.push(h),
    onDisconnect: (h) => disconnectHandlers.push(h),
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
      lost();
      clearTimeout(reconnectTimer);
      markReady(false);
      await client?.end().catch(() => {});
    },
  };
}
