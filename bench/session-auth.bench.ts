/**
 * Signed-in users' request throughput: `GET /v1/databases/:name` with an access token (JWT: the
 * verified-token cache, then the session lookup through its cache, the account pick, the per-user
 * rate limit) versus an API key versus the same handler and response schema mounted without
 * authentication, on the same fully wired app in the same run.
 * Goal: JWT ≥ 0.85× unauthenticated (like keys).
 *
 *   node bench/session-auth.bench.ts [seconds=5] [rounds=4] [connections=50]
 *
 * Starts its own throwaway cluster; autocannon runs in a child process on loopback; rounds rotate
 * the order of the three. Prints per-round figures, medians, the ratios and a JSON line.
 */
import path from 'node:path';
import { serverConfigSchema } from '../src/server/config.ts';
import { createKeyringFile } from '../src/server/crypto/secret-box.ts';
import { createServerContext } from '../src/server/main.ts';
import { createLogger } from '../src/shared/logger.ts';
import { autocannon, median, type Run } from './autocannon-kit.ts';
import { benchDatabaseRoute, startKeysBenchCluster } from './keys-kit.ts';

const SECONDS = Number(process.argv[2] ?? 5);
const ROUNDS = Number(process.argv[3] ?? 4);
const CONNECTIONS = Number(process.argv[4] ?? 50);
const LOAD = { connections: CONNECTIONS, seconds: SECONDS };
const config = (dataDir: string, databaseUrl: string) =>
  serverConfigSchema.parse({
    databaseUrl,
    dataDir,
    port: 0,
    logLevel: 'silent',
    rateLimitKeyPerMinute: 10_000_000,
    masterKeyFile: path.join(dataDir, 'master-keyring.json'),
  });
const cluster = await startKeysBenchCluster();
createKeyringFile(path.join(cluster.dir, 'master-keyring.json'));
let ctx: Awaited<ReturnType<typeof createServerContext>> | undefined;
try {
  ctx = await createServerContext({
    config: config(cluster.dir, cluster.controlUrl),
    db: cluster.db,
    log: createLogger('bench', 'silent'),
  });
  const { key, caller: fixed } = await benchDatabaseRoute(ctx, cluster.db);
  // A signed-in member of the same account (inserted directly, as a sign-in would have made it).
  const user = await cluster.db.query<{ id: string }>(
    "INSERT INTO users (username) VALUES ('bench_user') RETURNING id",
  );
  await cluster.db.query("INSERT INTO memberships (account_id, user_id, role) VALUES ($1, $2, 'member')", [
    fixed.accountId,
    user.rows[0]!.id,
  ]);
  const session = await ctx.sessions.issue({ userId: user.rows[0]!.id, sourceIp: '127.0.0.1' });
  const base = await ctx.app.listen({ host: '127.0.0.1', port: 0 });
  const variants = {
    jwt: { url: `${base}/v1/databases/bench_db`, headers: [`authorization=Bearer ${session.access_token}`] },
    key: { url: `${base}/v1/databases/bench_db`, headers: [`authorization=Bearer ${key}`] },
    open: { url: `${base}/bench/databases/bench_db`, headers: [] as string[] },
  };
  type Name = keyof typeof variants;
  const names: Name[] = ['jwt', 'key', 'open'];
  for (const n of names) await autocannon(variants[n].url, variants[n].headers, LOAD); // warm-up
  const rps: Record<Name, number[]> = { jwt: [], key: [], open: [] };
  const cpu: Record<Name, number[]> = { jwt: [], key: [], open: [] };
  const jwtRatios: number[] = [];
  const keyRatios: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    // Rotate the order each round: a drift in machine load does not favour one variant.
    const order = names.map((_, j) => names[(i + j) % names.length]!);
    const round = {} as Record<Name, Run>;
    for (const n of order) {
      const r = await autocannon(variants[n].url, variants[n].headers, LOAD);
      if (r.non2xx) throw new Error(`${n}: ${r.non2xx} non-2xx responses`);
      round[n] = r;
      rps[n].push(r.rps);
      cpu[n].push(r.cpuUsPerReq);
    }
    jwtRatios.push(round.jwt.rps / round.open.rps);
    keyRatios.push(round.key.rps / round.open.rps);
    process.stdout.write(
      `round ${i + 1}: ${names.map((n) => `${n} ${round[n].rps.toFixed(0)} req/s (p99 ${round[n].p99} ms, ${round[n].cpuUsPerReq.toFixed(1)} µs CPU/req)`).join(' · ')}\n`,
    );
  }
  const jwtRatio = median(jwtRatios);
  const keyRatio = median(keyRatios);
  process.stdout.write(
    `median: jwt ${median(rps.jwt).toFixed(0)} · key ${median(rps.key).toFixed(0)} · unauthenticated ${median(rps.open).toFixed(0)} req/s; jwt/unauth ${jwtRatio.toFixed(3)}, key/unauth ${keyRatio.toFixed(3)} (median of rounds)\n`,
  );
  process.stdout.write(
    `${JSON.stringify({
      bench: 'session-auth',
      jwt_rps: Math.round(median(rps.jwt)),
      key_rps: Math.round(median(rps.key)),
      unauthenticated_rps: Math.round(median(rps.open)),
      jwt_ratio: Number(jwtRatio.toFixed(3)),
      key_ratio: Number(keyRatio.toFixed(3)),
      server_cpu_us_per_req: {
        jwt: Number(median(cpu.jwt).toFixed(1)),
        key: Number(median(cpu.key).toFixed(1)),
        unauthenticated: Number(median(cpu.open).toFixed(1)),
      },
      goal_jwt_ratio_gte_0_85: jwtRatio >= 0.85,
      connections: CONNECTIONS,
      seconds: SECONDS,
      rounds: ROUNDS,
    })}\n`,
  );
} finally {
  await ctx?.close();
  await cluster.stop();
}
