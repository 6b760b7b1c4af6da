/**
 * API key validation latency (KeyAuthenticator.authenticate: checksum, cache, constant-time hash
 * comparison, state checks) on a cache hit and on a miss (row + creator chain from the control DB).
 * Goal: p99 < 1 ms on a hit.
 *
 *   node bench/key-validation.bench.ts [hits=200000] [misses=3000]
 *
 * Starts its own throwaway cluster; prints per-case figures and a final JSON line.
 */
import { createAuditService } from '../src/server/modules/audit/audit.service.ts';
import { createKeyAuthenticator } from '../src/server/modules/keys/keys.authenticator.ts';
import { createOperatorKey } from '../src/server/modules/keys/keys.service.ts';
import { createLogger } from '../src/shared/logger.ts';
import { startKeysBenchCluster } from './keys-kit.ts';
import { summarize } from './stats.ts';

const HITS = Number(process.argv[2] ?? 200_000);
const MISSES = Number(process.argv[3] ?? 3_000);
const cluster = await startKeysBenchCluster();
const log = createLogger('bench', 'silent');
const audit = createAuditService({ db: cluster.db });
const base = { db: cluster.db, log, audit, databaseUrl: cluster.controlUrl, usageFlushMs: 60_000 };
const cached = createKeyAuthenticator(base);
const uncached = createKeyAuthenticator({ ...base, cacheTtlMs: 0 });
try {
  await Promise.all([cached.listenerReady(), uncached.listenerReady()]);
  const { key } = await createOperatorKey(cluster.db, { accountName: 'bench', level: 'admin' });
  const time = async (n: number, svc: typeof cached): Promise<number[]> => {
    const out = new Array<number>(n);
    for (let i = 0; i < n; i++) {
      const t0 = process.hrtime.bigint();
      const r = await svc.authenticate(key, '127.0.0.1');
      out[i] = Number(process.hrtime.bigint() - t0) / 1e6;
      if (!r.ok) throw new Error(`refused: ${r.reason}`);
    }
    return out;
  };
  await time(5_000, cached); // warm-up (JIT, first load into the cache)
  await time(200, uncached);
  const hit = summarize(await time(HITS, cached));
  const miss = summarize(await time(MISSES, uncached));
  const fmt = (s: ReturnType<typeof summarize>) =>
    `p50 ${(s.median * 1000).toFixed(1)} µs · p99 ${(s.p99 * 1000).toFixed(1)} µs · max ${s.max.toFixed(2)} ms (n=${s.n})`;
  process.stdout.write(`cache hit:  ${fmt(hit)}\ncache miss: ${fmt(miss)}\n`);
  process.stdout.write(
    `${JSON.stringify({
      bench: 'key-validation',
      hit_p50_ms: hit.median,
      hit_p99_ms: hit.p99,
      miss_p50_ms: miss.median,
      miss_p99_ms: miss.p99,
      goal_hit_p99_lt_1ms: hit.p99 < 1,
    })}\n`,
  );
} finally {
  await cached.close();
  await uncached.close();
  await cluster.stop();
}
