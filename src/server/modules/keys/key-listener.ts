import type { PgListener } from '../../db/pg-listener.ts';
import { KEYS_CHANNEL } from './keys.repo.ts';

export type KeyListenerHandlers = {
  /** One lookup prefix to drop (a payload may carry several, comma-separated). */
  evict(prefix: string): void;
  /** `account:<uuid>`: every key of that account (suspension, policy change). */
  evictAccount(accountId: string): void;
  /** The connection was (re)established or lost: anything may have been missed, drop everything. */
  clear(): void;
};

const PREFIX = /^[0-9A-Za-z]{12}$/;
const ACCOUNT = /^account:([0-9a-f-]{36})$/;

/**
 * Revocations on `bulwark_keys` evict cache entries on every server process; the cache is
 * cleared whenever the listen connection is (re)established or lost.
 */
export function listenForKeyChanges(listener: PgListener, h: KeyListenerHandlers): void {
  listener.on(KEYS_CHANNEL, (payload) => {
    if (payload === '*') return h.clear();
    for (const part of payload.split(',')) {
      const account = ACCOUNT.exec(part);
      if (account) h.evictAccount(account[1]!);
      else if (PREFIX.test(part)) h.evict(part);
    }
  });
  listener.onConnect(h.clear);
  listener.onDisconnect(h.clear);
}
