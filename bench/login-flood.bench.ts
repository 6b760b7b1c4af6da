/**
 * Password sign-in under a flood of bad logins: does argon2 starve the server? A probe calls
 * `GET /v1/whoami` with an API key (4 at a time) alone, then while a flood of bad logins runs
 * (each from a fresh loopback address and a fresh username, so no throttle stops it: each costs a
 * full argon2id verification, or a 429 when too many already wait, see password-gate.ts), in alternating rounds. Reports the probe's p50/p99 both
 * ways, the server's event-loop delay, and the flood's logins per second and p99.
 * Goal: the probe's p99 under the flood within 2× its baseline p99 of the same run.
 *
 *   node bench/login-flood.bench.ts [seconds=5] [rounds=4] [flood-concurrency=16]
 *
 * Starts its own throwaway cluster; the probe and the flood run in child processes (this file
 * with `--client`), so their own work does not compete with the server's event loop.
 */
import { spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import http from 'node:http';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { serverConfigSchema } from '../src/server/config.ts';
import { withTx } from '../src/server/db/pool.ts';
import { createServerContext } from '../src/server/main.ts';
import { createOperatorKey } from '../src/server/modules/keys/keys.service.ts';
import { createLocalUser } from '../src/server/modules/people/users.service.ts';
import { createLogger } from '../src/shared/logger.ts';
import { startKeysBenchCluster } from './keys-kit.ts';
import { summarize } from './stats.ts';

type ClientArgs = {
  mode: 'probe' | 'flood';
  base: string;
  seconds: number;
  concurrency: number;
  key: string;
};
type ClientResult = { latencies: number[]; statuses: Record<string, number> };

function post(base: URL, path: string, body: string, localAddress: string): Promise<number> {
  return request(
    base,
    { method: 'POST', path, headers: { 'content-type': 'application/json' }, localAddress },
    body,
  );
}

function request(
  base: URL,
  opts: { method: string; path: string; headers: Record<string, string>; localAddress?: string },
  body?: string,
): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: base.hostname, port: base.port, agent: false, ...opts }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function runClient(a: ClientArgs): Promise<ClientResult> {
  const base = new URL(a.base);
  const until = Date.now() + a.seconds * 1000;
  const latencies: number[] = [];
  const statuses: Record<string, number> = {};
  const worker = async () => {
    while (Date.now() < until) {
      const t0 = performance.now();
      const status =
        a.mode === 'probe'
          ? await request(base, {
              method: 'GET',
              path: '/v1/whoami',
              headers: { authorization: `Bearer ${a.key}` },
            })
          : await post(
              base,
              '/v1/auth/login',
              JSON.stringify({ username: `flood-${randomInt(1e12)}`, password: 'not the password at all' }),
              `127.${randomInt(1, 255)}.${randomInt(0, 256)}.${randomInt(1, 255)}`,
            );
      latencies.push(performance.now() - t0);
      statuses[status] = (statuses[status] ?? 0) + 1;
    }
  };
  await Promise.all(Array.from({ length: a.concurrency }, worker));
  return { latencies, statuses };
}

if (process.argv[2] === '--client') {
  const result = await runClient(JSON.parse(process.argv[3]!) as ClientArgs);
  // Exit only once the whole result is written (a pipe takes it in pieces).
  process.stdout.write(JSON.stringify(result), () => process.exit(0));
  await new Promise(() => {});
}

const SECONDS = Number(process.argv[2] ?? 5);
const ROUNDS = Number(process.argv[3] ?? 4);
const FLOOD = Number(process.argv[4] ?? 16);

function client(args: ClientArgs): Promise<ClientResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [import.meta.filename, '--client', JSON.stringify(args)], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    let out = '';
    child.stdout.on('data', (d) => {
      out += d;
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) return reject(new Error(`client exited ${code}`));
      resolve(JSON.parse(out) as ClientResult);
    });
  });
}

const median = (xs: number[]) => summarize(xs).median;
const cluster = await startKeysBenchCluster();
let ctx: Awaited<ReturnType<typeof createServerContext>> | undefined;
try {
  const config = serverConfigSchema.parse({
    databaseUrl: cluster.controlUrl,
    dataDir: cluster.dir,
    port: 0,
    logLevel: 'silent',
    rateLimitKeyPerMinute: 10_000_000,
    rateLimitIpPerMinute: 10_000_000,
  });
  ctx = await createServerContext({ config, db: cluster.db, log: createLogger('bench', 'silent') });
  const { key } = await createOperatorKey(cluster.db, { accountName: 'bench', level: 'admin' });
  await withTx(cluster.db, (tx) =>
    createLocalUser(tx, { username: 'bench-user', password: 'bench user password 1', platformAdmin: false }),
  );
  const base = await ctx.app.listen({ host: '127.0.0.1', port: 0 });
  const probe = (): ClientArgs => ({ mode: 'probe', base, seconds: SECONDS, concurrency: 4, key });
  const flood = (): ClientArgs => ({ mode: 'flood', base, seconds: SECONDS, concurrency: FLOOD, key });
  const loop = monitorEventLoopDelay({ resolution: 5 });
  const phase = async (withFlood: boolean) => {
    loop.reset();
    loop.enable();
    const [p, f] = await Promise.all([client(probe()), withFlood ? client(flood()) : Promise.resolve(null)]);
    loop.disable();
    return {
      probe: summarize(p.latencies),
      flood: f,
      loopP99: loop.percentile(99) / 1e6,
      loopMax: loop.max / 1e6,
    };
  };
  await phase(true); // warm-up
  const base99: number[] = [];
  const flood99: number[] = [];
  const loginRps: number[] = [];
  const loginP99: number[] = [];
  const busyRps: number[] = [];
  for (let i = 0; i < ROUNDS; i++) {
    const first = i % 2 === 0;
    const a = first ? await phase(false) : undefined;
    const b = await phase(true);
    const alone = a ?? (await phase(false));
    const f = b.flood!;
    // 401: verified and refused; 429: refused at once, too many verifications waiting (password-gate.ts).
    const bad = Object.entries(f.statuses).filter(([s]) => s !== '401' && s !== '429');
    if (bad.length) throw new Error(`flood answers other than 401/429: ${JSON.stringify(f.statuses)}`);
    const verified = f.statuses['401'] ?? 0;
    const busy = f.statuses['429'] ?? 0;
    const logins = summarize(f.latencies);
    base99.push(alone.probe.p99);
    flood99.push(b.probe.p99);
    loginRps.push(verified / SECONDS);
    busyRps.push(busy / SECONDS);
    loginP99.push(logins.p99);
    process.stdout.write(
      `round ${i + 1}: probe alone p50 ${alone.probe.median.toFixed(2)} p99 ${alone.probe.p99.toFixed(2)} ms (loop p99 ${alone.loopP99.toFixed(1)} ms) · ` +
        `under flood p50 ${b.probe.median.toFixed(2)} p99 ${b.probe.p99.toFixed(2)} ms (loop p99 ${b.loopP99.toFixed(1)} ms, max ${b.loopMax.toFixed(1)}) · ` +
        `flood ${(verified / SECONDS).toFixed(0)} logins/s verified (+${(busy / SECONDS).toFixed(0)}/s refused busy), p99 ${logins.p99.toFixed(1)} ms\n`,
    );
  }
  const ratio = median(flood99) / median(base99);
  process.stdout.write(
    `median: probe p99 alone ${median(base99).toFixed(2)} ms, under flood ${median(flood99).toFixed(2)} ms (×${ratio.toFixed(2)}); ` +
      `${median(loginRps).toFixed(0)} bad logins/s verified, ${median(busyRps).toFixed(0)}/s refused busy, p99 ${median(loginP99).toFixed(1)} ms\n`,
  );
  process.stdout.write(
    `${JSON.stringify({
      bench: 'login-flood',
      probe_p99_ms_alone: Number(median(base99).toFixed(2)),
      probe_p99_ms_flood: Number(median(flood99).toFixed(2)),
      ratio: Number(ratio.toFixed(2)),
      bad_logins_per_s: Math.round(median(loginRps)),
      busy_refusals_per_s: Math.round(median(busyRps)),
      login_p99_ms: Number(median(loginP99).toFixed(1)),
      goal_ratio_lte_2: ratio <= 2,
      flood_concurrency: FLOOD,
      seconds: SECONDS,
      rounds: ROUNDS,
    })}\n`,
  );
} finally {
  await ctx?.close();
  await cluster.stop();
}
