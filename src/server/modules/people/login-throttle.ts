/**
 * Failed sign-ins slow down, per username and per source address, through the `login_throttle`
 * table (so every server replica sees the same counts). A username counts after 5 failures, an
 * address after 20 (several people may share one); from then on each failure pushes the next
 * allowed attempt 1 s · 2^n later, up to 15 minutes. A success clears the username's count, not
 * the address's (one good account must not unlock guessing at others from the same address).
 *
 * The username is stored and logged only as a keyed hash: what was typed into the username field
 * is sometimes a password.
 */
import { createHmac, hkdfSync, randomBytes } from 'node:crypto';
import type { Keyring } from '../../crypto/secret-box.ts';
import type { Queryable } from '../../db/pool.ts';
import { clientNetworkKey } from '../../http/client-network.ts';
import * as repo from './users.repo.ts';

export const THROTTLE_POLICY = Object.freeze({
  user: { free: 5, baseMs: 1_000, maxMs: 15 * 60_000 },
  ip: { free: 20, baseMs: 1_000, maxMs: 15 * 60_000 },
});

/**
 * The key of the username hash: derived (HKDF-SHA256) from the master keyring's first key, so every
 * replica of an install computes the same hash and it survives restarts; a rotation keeps that key
 * until the operator drops it (the counts and log hashes then start afresh). Without a keyring: a
 * random key of this process (counts per replica, hashes per run).
 */
export function usernameKeyFrom(keyring: Keyring | null): Buffer {
  if (!keyring) return randomBytes(32);
  const ids = [...keyring.keys.keys()].sort((a, b) => a.length - b.length || a.localeCompare(b));
  const ikm = keyring.keys.get(ids[0]!)!;
  return Buffer.from(hkdfSync('sha256', ikm, Buffer.alloc(0), 'bulwark login-throttle username v1', 32));
}

const PRUNE_EVERY = 100;
const PRUNE_AFTER_MS = 86_400_000;
const PRUNE_BATCH = 1_000;

type ThrottleKey = { scope: repo.ThrottleScope; key: string };

export type LoginThrottle = ReturnType<typeof createLoginThrottle>;

export function createLoginThrottle(deps: { usernameKey: Buffer }) {
  let attempts = 0;
  const tagOf = (username: string) =>
    createHmac('sha256', deps.usernameKey).update(`login-username:${username}`).digest('base64url');

  return {
    /** A short keyed hash of what was typed as a username: for log lines (never the text itself). */
    usernameTag: (username: string) => tagOf(username).slice(0, 12),

    keysFor(username: string, sourceIp: string): { user: ThrottleKey; ip: ThrottleKey } {
      return {
        user: { scope: 'user', key: tagOf(username) },
        ip: { scope: 'ip', key: clientNetworkKey(sourceIp) },
      };
    },

    /**
     * Takes an attempt on every key, counted as a failure until `refund` or `succeed`: 0 when
     * taken, else the milliseconds until the busiest key allows one (nothing is then counted).
     */
    async take(db: Queryable, keys: ThrottleKey[], now: Date): Promise<number> {
      const taken: ThrottleKey[] = [];
      for (const k of keys) {
        const next = await repo.takeThrottleAttempt(db, k, THROTTLE_POLICY[k.scope], now);
        if (next) {
          for (const t of taken) await repo.refundThrottleAttempt(db, t);
          return Math.max(1, next.getTime() - now.getTime());
        }
        taken.push(k);
      }
      // Every so many attempts, rows idle for a day (all past their delay) are dropped.
      if (++attempts % PRUNE_EVERY === 0)
        await repo.pruneThrottle(db, new Date(now.getTime() - PRUNE_AFTER_MS), PRUNE_BATCH);
      return 0;
    },

    /** Gives the attempts back: it was no failure (no password checked, or a code is asked for). */
    async refund(db: Queryable, keys: ThrottleKey[]): Promise<void> {
      for (const k of keys) await repo.refundThrottleAttempt(db, k);
    },

    /** A sign-in: the username's count starts afresh; the address's attempt is given back. */
    async succeed(db: Queryable, keys: { user: ThrottleKey; ip: ThrottleKey }): Promise<void> {
      await repo.clearThrottle(db, keys.user);
      await repo.refundThrottleAttempt(db, keys.ip);
    },
  };
}
