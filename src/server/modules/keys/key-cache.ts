import type { KeyAuthRow } from './keys.repo.ts';

export type KeyCacheOptions = {
  ttlMs: number;
  maxEntries: number;
  /** While false (the revocation listener is down), nothing is served from the cache. */
  trusted: () => boolean;
  now?: () => number;
};

export type KeyCache = ReturnType<typeof createKeyCache>;

/**
 * In-process cache of key rows by lookup prefix, for authentication. Bounded in size and
 * time (TTL), evicted by revocation NOTIFYs, and bypassed entirely while the listener that
 * delivers those NOTIFYs is down, so a revoked key is never honoured from a stale entry.
 *
 * `load` is single-flight per prefix; a load that started before an eviction is used for
 * the request that asked but not cached (it may predate the revocation).
 */
export function createKeyCache(opts: KeyCacheOptions) {
  const now = opts.now ?? Date.now;
  const entries = new Map<string, { row: KeyAuthRow; fetchedAt: number }>();
  const inflight = new Map<string, Promise<KeyAuthRow | null>>();
  let epoch = 0;
  const stats = { hits: 0, misses: 0, evictions: 0 };

  const evict = (prefix: string) => {
    epoch++;
    // A load already under way may predate the revocation: later requests must not join it.
    inflight.delete(prefix);
    if (entries.delete(prefix)) stats.evictions++;
  };

  return {
    stats,
    size: () => entries.size,

    async get(
      prefix: string,
      load: (prefix: string) => Promise<KeyAuthRow | null>,
    ): Promise<KeyAuthRow | null> {
      const trusted = opts.trusted();
      if (trusted) {
        const hit = entries.get(prefix);
        if (hit && now() - hit.fetchedAt < opts.ttlMs) {
          stats.hits++;
          return hit.row;
        }
        if (hit) entries.delete(prefix);
      }
      stats.misses++;
      const pending = inflight.get(prefix);
      if (pending) return pending;
      const startedAt = epoch;
      const p = load(prefix)
        .then((row) => {
          if (row && trusted && opts.trusted() && epoch === startedAt) {
            if (entries.size >= opts.maxEntries) {
              // Oldest insertion first (Map order): a cheap LRU-ish bound.
              const oldest = entries.keys().next();
              if (!oldest.done) entries.delete(oldest.value);
            }
            entries.set(prefix, { row, fetchedAt: now() });
          }
          return row;
        })
        .finally(() => {
          if (inflight.get(prefix) === p) inflight.delete(prefix);
        });
      inflight.set(prefix, p);
      return p;
    },

    evict,

    /** Every key of an account (e.g. the account was suspended). */
    evictAccount(accountId: string) {
      epoch++;
      inflight.clear();
      for (const [prefix, e] of entries) if (e.row.account_id === accountId) entries.delete(prefix);
    },

    clear() {
      epoch++;
      inflight.clear();
      entries.clear();
    },
  };
}
