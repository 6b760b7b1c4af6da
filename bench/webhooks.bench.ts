/**
 * Webhooks: (1) event → delivered — an API key created over HTTP (audit event `key.created`,
 * committed with the key) until a local receiver on 127.0.0.2 has the signed delivery, measured
 * from the event's own `created_at` (same clock) over N sequential events; (2) the latency of that
 * API route with 20 webhooks subscribed to every event vs none, interleaved in blocks, same run.
 *
 *   node bench/webhooks.bench.ts [events=100] [requests-per-mode=200]
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startDataPlane } from '../src/embedded/data-plane.ts';
import { dataLayout } from '../src/embedded/layout.ts';
import { resolveServiceUser } from '../src/embedded/service-user.ts';
import { serverConfigSchema } from '../src/server/config.ts';
import { createKeyringFile } from '../src/server/crypto/secret-box.ts';
import { startServer } from '../src/server/main.ts';
import { createOperatorKey } from '../src/server/modules/keys/keys.service.ts';
import { createLogger } from '../src/shared/logger.ts';
import { freePort } from '../test/helpers/ports.ts';
import { startReceiver } from '../test/helpers/webhook-receiver.ts';
import { summarize } from './stats.ts';

const N = Number(process.argv[2] ?? 100);
const PER_MODE = Number(process.argv[3] ?? 200);
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
const silent = createLogger('bench', 'silent');
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
  { log: silent },
);
const db = new pg.Pool({ connectionString: dp.controlUrl, max: 2 });
db.on('error', () => {});
const receiver = await startReceiver('127.0.0.2');
const round = (v: number) => Math.round(v * 100) / 100;

try {
  const { key } = await createOperatorKey(db, { accountName: 'bench', level: 'admin' });
  const auth = { authorization: `Bearer ${key}` };
  const call = async (method: string, url: string, body?: object) => {
    const r = await fetch(`${server.url}${url}`, {
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
  for (let i = 0; i < N; i++) {
    const made = await createKey();
    const deadline = Date.now() + 10_000;
    let got: { at: number; body: string } | undefined;
    while (!got && Date.now() < deadline) {
      got = receiver.received.find((r) => r.body.includes(made.id));
      if (!got) await new Promise((r) => setTimeout(r, 1));
    }
    if (!got) throw new Error('delivery not received within 10 s');
    latencies.push(got.at - Date.parse(JSON.parse(got.body).created_at));
  }
  await call('DELETE', `/v1/webhooks/${hook.id}`);

  // (2) The API route's latency, 20 webhooks subscribed to everything vs none (blocks interleaved).
  const hooks: string[] = [];
  for (let i = 0; i < 20; i++)
    hooks.push((await call('POST', '/v1/webhooks', { url: receiver.url(`/w${i}`), events: ['*'] })).id);
  const setEnabled = (on: boolean) => db.query('UPDATE webhooks SET enabled = $1', [on]);
  const samples: Record<'none' | 'twenty', number[]> = { none: [], twenty: [] };
  const BLOCK = 20;
  for (let done = 0; done < PER_MODE; done += BLOCK) {
    for (const mode of ['none', 'twenty'] as const) {
      await setEnabled(mode === 'twenty');
      for (let i = 0; i < BLOCK; i++) {
        const t0 = performance.now();
        await createKey();
        samples[mode].push(performance.now() - t0);
      }
    }
  }
  const none = summarize(samples.none);
  const twenty = summarize(samples.twenty);
  const delivered = await db.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM webhook_deliveries WHERE status = 'succeeded'",
  );
  const e2e = summarize(latencies);
  process.stdout.write(
    `${JSON.stringify(
      {
        event_to_delivered_ms: {
          n: e2e.n,
          median: round(e2e.median),
          p95: round(e2e.p95),
          p99: round(e2e.p99),
          max: round(e2e.max),
        },
        route_post_keys_ms: {
          none: { n: none.n, median: round(none.median), p99: round(none.p99) },
          twenty_webhooks: { n: twenty.n, median: round(twenty.median), p99: round(twenty.p99) },
          median_ratio: round(twenty.median / none.median),
        },
        deliveries_succeeded: delivered.rows[0]?.n,
        loadavg: os.loadavg().map(round),
        cpus: os.cpus().length,
      },
      null,
      2,
    )}\n`,
  );
  void hooks;
} finally {
  await receiver.close();
  await db.end();
  await server.close();
  await dp.stop();
  await fs.rm(dir, { recursive: true, force: true });
}
