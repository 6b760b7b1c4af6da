import { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { RateLimitStore } from './rate-limit.ts';

/**
 * Fixed-window counters shared by every server replica, in Redis. One Lua script counts and
 * starts the window atomically (INCRBY, then PEXPIRE only when the window is new), so two
 * replicas never both start a window or lose an increment.
 *
 * If Redis cannot be reached the store fails OPEN (the request is counted as the first of a
 * window) and says so in the log: a Redis outage must not become an API outage. Authentication,
 * scoping and every other check still apply; only the counting is lost meanwhile.
 */
const INCREMENT = `
local c = redis.call('INCRBY', KEYS[1], ARGV[1])
if c == tonumber(ARGV[1]) then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[2]); ttl = tonumber(ARGV[2]) end
return {c, ttl}`;

const PREFIX = 'bulwark:rl:';

export function createRedisRateLimitStore(url: string, log: Logger): RateLimitStore {
  const redis = new Redis(url, {
    lazyConnect: false,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: 2_000,
    commandTimeout: 500,
    retryStrategy: (times) => Math.min(100 * 2 ** times, 5_000),
  });
  let warned = 0;
  const failOpen = (err: unknown, windowMs: number, cost: number) => {
    if (Date.now() - warned > 10_000) {
      warned = Date.now();
      log.warn({ err: { message: (err as Error).message } }, 'rate-limit store unreachable; not counting');
    }
    return { count: cost, resetAt: Date.now() + windowMs };
  };
  redis.on('error', () => {});

  return {
    async increment(key, windowMs, cost = 1) {
      try {
        const [count, ttl] = (await redis.eval(
          INCREMENT,
          1,
          PREFIX + key,
          String(cost),
          String(windowMs),
        )) as [number, number];
        return { count, resetAt: Date.now() + ttl };
      } catch (err) {
        return failOpen(err, windowMs, cost);
      }
    },
    async peek(key) {
      try {
        const [count, ttl] = await Promise.all([redis.get(PREFIX + key), redis.pttl(PREFIX + key)]);
        if (count === null || ttl < 0) return null;
        return { count: Number(count), resetAt: Date.now() + ttl };
      } catch {
        return null;
      }
    },
    async close() {
      redis.disconnect();
    },
  };
}
