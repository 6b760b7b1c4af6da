/**
 * Rate limits: fixed windows per API key (by key id), per client IP for unauthenticated
 * traffic, and a much stricter per-IP budget for authentication failures.
 *
 * The counters live behind `RateLimitStore`. The in-memory store is right for one server
 * process; with several replicas behind a proxy each would count separately, so a shared
 * store (Redis `INCR` + `PEXPIRE` in one MULTI, implementing the same interface) is the
 * multi-replica option.
 */
import type { FastifyReply } from 'fastify';
import { AppError } from '../../shared/errors.ts';
import { clientNetworkKey } from './client-network.ts';

export type RateLimitStore = {
  /** Adds `cost` to the counter of `key` in its current window; returns the new count and window end. */
  increment(key: string, windowMs: number, cost?: number): Promise<{ count: number; resetAt: number }>;
  /** Reads without counting. */
  peek(key: string): Promise<{ count: number; resetAt: number } | null>;
  close?(): Promise<void>;
};

export type RateLimitRule = { limit: number; windowMs: number };

export type RateLimitConfig = {
  /** Requests per key per window. */
  perKey: RateLimitRule;
  /** Requests per IP per window on routes that need no key. */
  perIp: RateLimitRule;
  /** Failed authentications per IP per window; past it, every keyed request from that IP is refused. */
  authFailuresPerIp: RateLimitRule;
};

/** Whose credentials failed: API keys (clients) or agent tokens; each has its own per-IP budget. */
export type AuthScope = 'key' | 'agent';
const AUTH_FAILURE_PREFIX: Record<AuthScope, string> = { key: 'af:', agent: 'afa:' };

export type RateLimitDecision = { allowed: boolean; limit: number; remaining: number; resetAt: number };

/** Fixed-window counters in a Map, bounded in size, expired entries swept as they are met. */
export function createMemoryRateLimitStore(
  opts: { maxKeys?: number; now?: () => number } = {},
): RateLimitStore {
  const now = opts.now ?? Date.now;
  const maxKeys = opts.maxKeys ?? 100_000;
  const windows = new Map<string, { count: number; resetAt: number }>();

  const sweep = (t: number) => {
    for (const [k, w] of windows) {
      if (w.resetAt <= t) windows.delete(k);
      if (windows.size < maxKeys) break;
    }
    // Still full of live windows: drop the oldest rather than grow without bound.
    while (windows.size >= maxKeys) {
      const oldest = windows.keys().next();
      if (oldest.done) break;
      windows.delete(oldest.value);
    }
  };

  return {
    async increment(key, windowMs, cost = 1) {
      const t = now();
      let w = windows.get(key);
      if (!w || w.resetAt <= t) {
        if (w) windows.delete(key);
        if (windows.size >= maxKeys) sweep(t);
        w = { count: 0, resetAt: t + windowMs };
        windows.set(key, w);
      }
      w.count += cost;
      return { count: w.count, resetAt: w.resetAt };
    },
    async peek(key) {
      const w = windows.get(key);
      return w && w.resetAt > now() ? { count: w.count, resetAt: w.resetAt } : null;
    },
  };
}

export type RateLimiter = ReturnType<typeof createRateLimiter>;

export function createRateLimiter(
  store: RateLimitStore,
  config: RateLimitConfig,
  now: () => number = Date.now,
) {
  const decide = (rule: RateLimitRule, count: number, resetAt: number): RateLimitDecision => ({
    allowed: count <= rule.limit,
    limit: rule.limit,
    remaining: Math.max(0, rule.limit - count),
    resetAt,
  });

  return {
    config,
    async hitKey(keyId: string): Promise<RateLimitDecision> {
      const w = await store.increment(`k:${keyId}`, config.perKey.windowMs);
      return decide(config.perKey, w.count, w.resetAt);
    },
    async hitIp(ip: string): Promise<RateLimitDecision> {
      const w = await store.increment(`ip:${clientNetworkKey(ip)}`, config.perIp.windowMs);
      return decide(config.perIp, w.count, w.resetAt);
    },
    /**
     * Has this IP used up its authentication-failure budget? (Does not count.) API keys and
     * agent tokens have separate budgets: clients failing from an address (the agent's own
     * loopback, or an untrusted proxy's) never spend the agent's.
     */
    async authFailuresExceeded(ip: string, scope: AuthScope = 'key'): Promise<RateLimitDecision | null> {
      const w = await store.peek(`${AUTH_FAILURE_PREFIX[scope]}${clientNetworkKey(ip)}`);
      if (!w || w.count < config.authFailuresPerIp.limit) return null;
      return { allowed: false, limit: config.authFailuresPerIp.limit, remaining: 0, resetAt: w.resetAt };
    },
    async recordAuthFailure(ip: string, scope: AuthScope = 'key'): Promise<void> {
      await store.increment(
        `${AUTH_FAILURE_PREFIX[scope]}${clientNetworkKey(ip)}`,
        config.authFailuresPerIp.windowMs,
      );
    },
    /** Sets `RateLimit-*` headers; throws the 429 (`rate_limited`, with `Retry-After`) when refused. */
    apply(reply: FastifyReply, d: RateLimitDecision): void {
      const resetS = Math.max(0, Math.ceil((d.resetAt - now()) / 1000));
      reply.header('ratelimit-limit', d.limit);
      reply.header('ratelimit-remaining', d.remaining);
      reply.header('ratelimit-reset', resetS);
      if (!d.allowed) {
        reply.header('retry-after', Math.max(1, resetS));
        throw new AppError('rate_limited', 'Too many requests; retry later');
      }
    },
  };
}
