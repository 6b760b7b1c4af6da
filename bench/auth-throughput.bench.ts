/**
 * Authenticated request throughput: `GET /v1/databases/:name` with an API key (auth hook:
 * checksum, cached lookup, constant-time hash check, per-key rate limit, batched last-use;
 * then the handler's own account-scoped lookup in the control DB) versus the same handler
 * and response schema mounted without authentication, on the same fully wired app (same
 * hooks: request id, security headers, metrics), in the same run.
 * Goal: authenticated ≥ 0.85× unauthenticated.
 *
 *   node bench/auth-throughput.bench.ts [seconds=5] [rounds=5] [connections=50]
 *
 * Starts its own throwaway cluster; autocannon runs in a child process on loopback; rounds
 * alternate between the two routes. Prints per-round figures, medians, the ratio and a JSON line.
 */
import { serverConfigSchema } from '../src/server/config.ts';
import { createServerContext } from '../src/server/main.ts';
import { createLogger } from '../src/shared/logger.ts';
import { autocannon, median } from './autocannon-kit.ts';
import { benchDatabaseRoute, startKeysBenchCluster } from './keys-kit.ts';

const SECONDS = Number(process.argv[2] ?? 5);
const ROUNDS = Number(process.argv[3] ?? 5);
const CONNECTIONS = Number(process.argv[4] ?? 50);
const LOAD = { connections: CONNECTIONS, seconds: SECONDS };
const config = (dataDir: string, databaseUrl: string) =>
  serverConfigSchema.parse({
    databaseUrl,
    dataDir,
    port: 0,
    logLevel: 'silent',
    rateLimitKeyPerMinute: 10_000_000,
  });
const cluster = await startKeysBenchCluster();
let ctx: Awaited<ReturnType<typeof createServerContext>> | undefined;
try {
  ctx = await createServerContext({
    config: config(cluster.dir, cluster.controlUrl),
    db: cluster.db,
    log: createLogger('bench', 'silent'),
  });
  const { key } = await benchDatabaseRoute(ctx, cluster.db);
  const base = await ctx.app.listen({ host: '127.0.0.1', port: 0 });
  const authed = { url: `${base}/v1/databases/bench_db`, headers: [`authorization=Bearer ${key}`] };
  const open = { url: `${base}/bench/databases/bench_db`, headers: [] as string[] };
  await autocannon(authed.url, authed.headers, LOAD); // warm-up
  await autocannon(open.url, open.headers, LOAD);
  const a: number[] = [];
  const o: number[] = [];
  const ratios: number[] = [];
  const cpuA: number[] = [];
  const cpuO: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    // ABBA order: a drift in machine load does not favour one side.
    const first = i % 2 === 0;
    const ra = first ? await autocannon(authed.url, authed.headers, LOAD) : undefined;
    const ro = await autocannon(open.url, open.headers, LOAD);
    const rb = ra ?? (await autocannon(authed.url, authed.headers, LOAD));
    if (rb.non2xx || ro.non2xx) throw new Error(`non-2xx responses: auth ${rb.non2xx}, open ${ro.non2xx}`);
    a.push(rb.rps);
    o.push(ro.rps);
    ratios.push(rb.rps / ro.rps);
    cpuA.push(rb.cpuUsPerReq);
    cpuO.push(ro.cpuUsPerReq);
    process.stdout.write(
      `round ${i + 1}: authenticated ${rb.rps.toFixed(0)} req/s (p99 ${rb.p99} ms, ${rb.cpuUsPerReq.toFixed(1)} µs CPU/req) · unauthenticated ${ro.rps.toFixed(0)} req/s (p99 ${ro.p99} ms, ${ro.cpuUsPerReq.toFixed(1)} µs CPU/req)\n`,
    );
  }
  const ratio = median(ratios);
  process.stdout.write(
    `median: authenticated ${median(a).toFixed(0)} · unauthenticated ${median(o).toFixed(0)} · ratio (median of rounds) ${ratio.toFixed(3)}\n`,
  );
  process.stdout.write(
    `${JSON.stringify({
      bench: 'auth-throughput',
      authenticated_rps: Math.round(median(a)),
      unauthenticated_rps: Math.round(median(o)),
      ratio: Number(ratio.toFixed(3)),
      server_cpu_us_per_req_authenticated: Number(median(cpuA).toFixed(1)),
      server_cpu_us_per_req_unauthenticated: Number(median(cpuO).toFixed(1)),
      cpu_ratio: Number((median(cpuO) / median(cpuA)).toFixed(3)),
      goal_ratio_gte_0_85: ratio >= 0.85,
      connections: CONNECTIONS,
      seconds: SECONDS,
      rounds: ROUNDS,
    })}\n`,
  );
} finally {
  await ctx?.close();
  await cluster.stop();
}
