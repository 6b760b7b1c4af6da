/**
 * Webhooks: (1) event → delivered — an API key created over HTTP (audit event `key.created`,
 * committed with the key) until a local receiver on 127.0.0.2 has the signed delivery, measured
 * from the event's own `created_at` (same clock) over N sequential events; (2) the latency of that
 * API route with 20 webhooks subscribed to every event vs none, in interleaved blocks (ABBA order),
 * same run; each block's deliveries are drained before the next block starts, so neither mode
 * inherits the other's backlog.
 *
 * As in a deployment, the receivers and the measuring client run in a separate Node process (this
 * file, forked with `--client`); this process holds PostgreSQL, PgBouncer and the server with its
 * dispatcher and delivery worker. The load average is printed at the start and at the end, and
 * for each mode the server's event-loop utilisation and delay during its blocks (is the API's
 * loop what the deliveries contend for?).
 *
 *   node bench/webhooks.bench.ts [events=100] [requests-per-mode=200]
 *   node --cpu-prof --cpu-prof-dir=/tmp/prof bench/webhooks.bench.ts …   (profiles the server side)
 */
import { fork } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { type EventLoopUtilization, monitorEventLoopDelay, performance } from 'node:perf_hooks';
import pg from 'pg';
import { startReceiver } from '../test/helpers/webhook-receiver.ts';
import { summarize } from './stats.ts';

const round = (v: number) => Math.round(v * 100) / 100;
const loadavg = () => os.loadavg().map(round);

type Plan = { url: string; key: string; events: number; perMode: number };
type Mode = 'none' | 'twenty';
type FromClient =
  | { op: 'enable'; on: boolean; seq: number }
  | { op: 'block'; mode: Mode; phase: 'start' | 'end' }
  | {
      op: 'done';
      latencies: number[];
      none: number[];
      twenty: number[];
      pacedNone: number[];
      pacedTwenty: number[];
    }
  | { op: 'error'; message: string };

if (process.argv[2] === '--client') await client();
else await main();

/** The server side: data plane, server (dispatcher + worker inside), the child's switchboard. */
async function main() {
  const N = Number(process.argv[2] ?? 100);
  const PER_MODE = Number(process.argv[3] ?? 200);
  const loadStart = loadavg();
  const [{ startDataPlane }, { dataLayout }, { resolveServiceUser }, { serverConfigSchema }] =
    await Promise.all([
      import('../src/embedded/data-plane.ts'),
      import('../src/embedded/layout.ts'),
      import('../src/embedded/service-user.ts'),
      import('../src/server/config.ts'),
    ]);
  const [{ createKeyringFile }, { startServer }, { createOperatorKey }, { createLogger }, { freePort }] =
    await Promise.all([
      import('../src/server/crypto/secret-box.ts'),
      import('../src/server/main.ts'),
      import('../src/server/modules/keys/keys.service.ts'),
      import('../src/shared/logger.ts'),
      import('../test/helpers/ports.ts'),
    ]);
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'bench-webhooks-'));
  const layout = dataLayout(dir);
  const dp = await startDataPlane({
    layout,
    ports: { postgres: await freePort(), pooler: await freePort() },
    user: resolveServiceUser(),
    log: () => {},
  });
  const masterKeyFile = path.join(dir, 'master-keyring.json');
  createKeyringFile(masterKeyFile);
  const server = await startServer(
    serverConfigSchema.parse({
      databaseUrl: dp.controlUrl,
      dataDir: layout.server,
      port: 0,
      logLevel: 'silent',
      masterKeyFile,
      rateLimitKeyPerMinute: 10_000_000,
      rateLimitIpPerMinute: 10_000_000,
      webhookAllowedHosts: ['127.0.0.2'],
    }),
    { log: createLogger('bench', 'silent') },
  );
  const db = new pg.Pool({ connectionString: dp.controlUrl, max: 2 });
  db.on('error', () => {});
  const child = fork(import.meta.filename, ['--client'], { execPath: process.execPath, execArgv: [] });
  try {
    const { key } = await createOperatorKey(db, { accountName: 'bench', level: 'admin' });
    // The server's event loop during each mode's blocks: utilisation and delay.
    const loop = {
      none: { active: 0, idle: 0, delay: monitorEventLoopDelay({ resolution: 1 }) },
      twenty: { active: 0, idle: 0, delay: monitorEventLoopDelay({ resolution: 1 }) },
    };
    let blockStart: EventLoopUtilization | null = null;
    const result = await new Promise<Extract<FromClient, { op: 'done' }>>((resolve, reject) => {
      child.on('exit', (code) => reject(new Error(`bench client exited (${code})`)));
      child.on('message', (m: FromClient) => {
        if (m.op === 'done') resolve(m);
        else if (m.op === 'error') reject(new Error(m.message));
        else if (m.op === 'block') {
          const l = loop[m.mode];
          if (m.phase === 'start') {
            blockStart = performance.eventLoopUtilization();
            l.delay.enable();
          } else if (blockStart) {
            l.delay.disable();
            const d = performance.eventLoopUtilization(blockStart);
            l.active += d.active;
            l.idle += d.idle;
          }
        } else
          db.query('UPDATE webhooks SET enabled = $1', [m.on]).then(
            () => child.send({ op: 'enabled', seq: m.seq }),
            reject,
          );
      });
      child.send({ url: server.url, key, events: N, perMode: PER_MODE } satisfies Plan);
    });
    const delivered = await db.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM webhook_deliveries WHERE status = 'succeeded'",
    );
    const e2e = summarize(result.latencies);
    const none = summarize(result.none);
    const twenty = summarize(result.twenty);
    const pacedNone = summarize(result.pacedNone);
    const pacedTwenty = summarize(result.pacedTwenty);
    const stats = (s: ReturnType<typeof summarize>) => ({
      n: s.n,
      median: round(s.median),
      p95: round(s.p95),
      p99: round(s.p99),
      max: round(s.max),
    });
    process.stdout.write(
      `${JSON.stringify(
        {
          event_to_delivered_ms: stats(e2e),
          route_post_keys_ms: {
            none: stats(none),
            twenty_webhooks: stats(twenty),
            median_ratio: round(twenty.median / none.median),
            p95_ratio: round(twenty.p95 / none.p95),
          },
          route_post_keys_paced_ms: {
            none: stats(pacedNone),
            twenty_webhooks: stats(pacedTwenty),
            median_ratio: round(pacedTwenty.median / pacedNone.median),
            p95_ratio: round(pacedTwenty.p95 / pacedNone.p95),
          },
          server_event_loop: Object.fromEntries(
            (['none', 'twenty'] as const).map((mode) => {
              const l = loop[mode];
              const busy = l.active / (l.active + l.idle);
              return [
                mode === 'none' ? 'none' : 'twenty_webhooks',
                {
                  utilization: round(busy),
                  delay_p50_ms: round(l.delay.percentile(50) / 1e6),
                  delay_p99_ms: round(l.delay.percentile(99) / 1e6),
                },
              ];
            }),
          ),
          deliveries_succeeded: delivered.rows[0]?.n,
          processes: 'server+dispatcher+worker | receivers+client (forked)',
          loadavg_start: loadStart,
          loadavg_end: loadavg(),
          cpus: os.cpus().length,
        },
        null,
        2,
      )}\n`,
    );
  } finally {
    child.removeAllListeners('exit');
    child.kill();
    await db.end();
    await server.close();
    await dp.stop();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** The child: 21 receivers' paths on one loopback listener, and the measuring HTTP client. */
async function client() {
  const plan = await new Promise<Plan>((resolve) => process.once('message', (m) => resolve(m as Plan)));
  const send = (m: FromClient) => process.send?.(m);
  const receiver = await startReceiver('127.0.0.2');
  let enableSeq = 0;
  const enableWaiters = new Map<number, () => void>();
  process.on('message', (m: { op?: string; seq?: number }) => {
    if (m.op === 'enabled' && m.seq !== undefined) enableWaiters.get(m.seq)?.();
  });
  const setEnabled = (on: boolean) =>
    new Promise<void>((resolve) => {
      const seq = ++enableSeq;
      enableWaiters.set(seq, resolve);
      send({ op: 'enable', on, seq });
    });
  // Deliveries by event id (the receivers of (1)), and a count of the twenty's (2).
  const waiting = new Map<string, (at: number, body: string) => void>();
  let fanout = 0;
  receiver.onReceived((r, p) => {
    if (p.startsWith('/w')) fanout++;
    for (const [id, fn] of waiting)
      if (r.body.includes(id)) {
        waiting.delete(id);
        fn(r.at, r.body);
      }
  });
  try {
    const auth = { authorization: `Bearer ${plan.key}` };
    const call = async (method: string, url: string, body?: object) => {
      const r = await fetch(`${plan.url}${url}`, {
        method,
        headers: body ? { ...auth, 'content-type': 'application/json' } : auth,
        ...(body ? { body: JSON.stringify(body) } : {}),
      });
      const text = await r.text();
      if (r.status >= 300) throw new Error(`${method} ${url}: ${r.status} ${text}`);
      return text ? JSON.parse(text) : null;
    };
    let seq = 0;
    const createKey = () => call('POST', '/v1/keys', { name: `bench ${++seq}`, level: 'read' });

    // (1) Event → delivered, one webhook subscribed to key.created.
    const hook = await call('POST', '/v1/webhooks', { url: receiver.url('/one'), events: ['key.created'] });
    for (let i = 0; i < 5; i++) await createKey(); // warm-up
    await new Promise((r) => setTimeout(r, 500));
    const latencies: number[] = [];
    for (let i = 0; i < plan.events; i++) {
      // The key's id is only known from the answer; a delivery may arrive before it: keep them.
      const early: { at: number; body: string }[] = [];
      const stop = receiver.onReceived((r) => early.push(r));
      const made = await createKey();
      stop();
      const got =
        early.find((r) => r.body.includes(made.id)) ??
        (await new Promise<{ at: number; body: string } | null>((resolve) => {
          const t = setTimeout(() => resolve(null), 10_000);
          waiting.set(made.id, (at, body) => {
            clearTimeout(t);
            resolve({ at, body });
          });
        }));
      if (!got) throw new Error('delivery not received within 10 s');
      latencies.push(got.at - Date.parse(JSON.parse(got.body).created_at));
    }
    await call('DELETE', `/v1/webhooks/${hook.id}`);

    // (2) The route's latency, 20 webhooks subscribed to everything vs none, ABBA blocks.
    for (let i = 0; i < 20; i++)
      await call('POST', '/v1/webhooks', { url: receiver.url(`/w${i}`), events: ['*'] });
    const samples = { none: [] as number[], twenty: [] as number[] };
    const BLOCK = 20;
    let expected = 0;
    const drained = async () => {
      const deadline = Date.now() + 60_000;
      while (fanout < expected && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
      if (fanout < expected) throw new Error(`only ${fanout} of ${expected} deliveries within 60 s`);
    };
    for (let round = 0; samples.none.length < plan.perMode; round++) {
      const order = round % 2 === 0 ? (['none', 'twenty'] as const) : (['twenty', 'none'] as const);
      for (const mode of order) {
        await setEnabled(mode === 'twenty');
        send({ op: 'block', mode, phase: 'start' });
        for (let i = 0; i < BLOCK; i++) {
          const t0 = performance.now();
          await createKey();
          samples[mode].push(performance.now() - t0);
          if (mode === 'twenty') expected += 20;
        }
        await drained();
        send({ op: 'block', mode, phase: 'end' });
      }
    }
    // (3) The same route paced: one request, then its deliveries drained (and a short pause in both
    // modes) before the next — what the request that caused the events pays itself, without the
    // previous requests' deliveries competing for the same two cores.
    const paced = { none: [] as number[], twenty: [] as number[] };
    const PACED = Math.min(plan.perMode, 100);
    for (let i = 0; paced.none.length < PACED; i++) {
      for (const mode of i % 2 === 0 ? (['none', 'twenty'] as const) : (['twenty', 'none'] as const)) {
        await setEnabled(mode === 'twenty');
        for (let j = 0; j < 5; j++) {
          const t0 = performance.now();
          await createKey();
          paced[mode].push(performance.now() - t0);
          if (mode === 'twenty') expected += 20;
          await drained();
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    }
    send({
      op: 'done',
      latencies,
      none: samples.none,
      twenty: samples.twenty,
      pacedNone: paced.none,
      pacedTwenty: paced.twenty,
    });
  } catch (err) {
    send({ op: 'error', message: (err as Error).message });
  } finally {
    await receiver.close();
    process.disconnect?.();
  }
}
