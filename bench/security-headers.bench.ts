/**
 * Security headers: our `onSend` hook (src/server/http/security-headers.ts) versus
 * `@fastify/helmet` configured to send the same headers, and no headers at all, on three
 * otherwise identical Fastify apps serving a small JSON route, in the same run.
 *
 *   node bench/security-headers.bench.ts [requests=20000] [rounds=7]
 *
 * Each app listens on loopback; one keep-alive connection sends the requests one after another
 * from this same process, so a figure is the whole round trip (client and server) and the
 * difference between two sides is what their hooks cost. (`app.inject()` is not used: with
 * Fastify 5.12 / light-my-request 6.8 the heap grew ~10 kB per inject, even on a bare app.)
 * Rounds rotate the order of the three apps. Prints per-round µs per request, medians, the
 * extra cost of each side over the bare app, and a JSON line.
 */
import http from 'node:http';
import helmet from '@fastify/helmet';
import Fastify, { type FastifyInstance } from 'fastify';
import { registerSecurityHeaders, SECURITY_HEADERS } from '../src/server/http/security-headers.ts';

const REQUESTS = Number(process.argv[2] ?? 10_000);
const ROUNDS = Number(process.argv[3] ?? 7);

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2;
}

async function app(kind: 'bare' | 'ours' | 'helmet'): Promise<FastifyInstance> {
  const a = Fastify({ logger: false });
  if (kind === 'ours') registerSecurityHeaders(a);
  if (kind === 'helmet') {
    // Exactly our headers: helmet's extras (legacy headers we do not send) are switched off.
    await a.register(helmet, {
      contentSecurityPolicy: {
        useDefaults: false,
        directives: {
          defaultSrc: ["'none'"],
          frameAncestors: ["'none'"],
          baseUri: ["'none'"],
          formAction: ["'none'"],
        },
      },
      strictTransportSecurity: { maxAge: 31_536_000, includeSubDomains: true, preload: false },
      xFrameOptions: { action: 'deny' },
      referrerPolicy: { policy: 'no-referrer' },
      crossOriginOpenerPolicy: { policy: 'same-origin' },
      crossOriginResourcePolicy: { policy: 'same-origin' },
      crossOriginEmbedderPolicy: false,
      originAgentCluster: false,
      xDnsPrefetchControl: false,
      xDownloadOptions: false,
      xPermittedCrossDomainPolicies: false,
      xXssProtection: false,
    });
    // What helmet does not send.
    a.addHook('onSend', async (_req, reply, payload) => {
      reply.header('permissions-policy', SECURITY_HEADERS['permissions-policy']!);
      if (!reply.hasHeader('cache-control')) reply.header('cache-control', 'no-store');
      return payload;
    });
  }
  a.get('/health', async () => ({ status: 'ok', version: '0.1.0' }));
  await a.listen({ host: '127.0.0.1', port: 0 });
  return a;
}

const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
const get = (a: FastifyInstance) =>
  new Promise<http.IncomingMessage>((resolve, reject) => {
    const { port } = a.server.address() as { port: number };
    http
      .get({ host: '127.0.0.1', port, path: '/health', agent }, (res) => {
        res.resume();
        res.on('end', () => resolve(res));
      })
      .on('error', reject);
  });

/**
 * Wall-clock and CPU µs per request over `REQUESTS` sequential requests (CPU time of this
 * process, client and server both: steadier than wall time on a loaded host).
 */
async function round(a: FastifyInstance): Promise<{ wall: number; cpu: number }> {
  const t0 = process.hrtime.bigint();
  const c0 = process.cpuUsage();
  for (let i = 0; i < REQUESTS; i++) {
    const res = await get(a);
    if (res.statusCode !== 200) throw new Error(`status ${res.statusCode}`);
  }
  const c = process.cpuUsage(c0);
  return {
    wall: Number(process.hrtime.bigint() - t0) / 1000 / REQUESTS,
    cpu: (c.user + c.system) / REQUESTS,
  };
}

const apps = { bare: await app('bare'), ours: await app('ours'), helmet: await app('helmet') };
// Both sides really send the same headers, with the same values.
const sent = { ours: (await get(apps.ours)).headers, helmet: (await get(apps.helmet)).headers };
// Helmet joins CSP directives with ';' where ours has '; ' (the same policy).
const same = (x: unknown, y: string) => String(x).replaceAll('; ', ';') === y.replaceAll('; ', ';');
for (const kind of ['ours', 'helmet'] as const)
  for (const [k, v] of Object.entries(SECURITY_HEADERS))
    if (!same(sent[kind][k], v)) throw new Error(`${kind}: ${k} is ${String(sent[kind][k])}, expected ${v}`);
const names = (h: http.IncomingHttpHeaders) => Object.keys(h).sort().join(' ');
if (names(sent.ours) !== names(sent.helmet))
  throw new Error(`different header sets:\n${names(sent.ours)}\n${names(sent.helmet)}`);
const order = ['bare', 'ours', 'helmet'] as const;
type Kind = (typeof order)[number];
const wall: Record<Kind, number[]> = { bare: [], ours: [], helmet: [] };
const cpu: Record<Kind, number[]> = { bare: [], ours: [], helmet: [] };
for (const kind of order) await round(apps[kind]); // warm-up
for (let r = 0; r < ROUNDS; r++) {
  const rotated = order.map((_, i) => order[(i + r) % order.length]!);
  for (const kind of rotated) {
    const x = await round(apps[kind]);
    wall[kind].push(x.wall);
    cpu[kind].push(x.cpu);
  }
  process.stdout.write(
    `round ${r + 1}: ${order.map((k) => `${k} ${wall[k].at(-1)!.toFixed(1)} µs (CPU ${cpu[k].at(-1)!.toFixed(1)})`).join(' · ')}\n`,
  );
}
const med = (x: Record<Kind, number[]>) => ({
  bare: median(x.bare),
  ours: median(x.ours),
  helmet: median(x.helmet),
});
const w = med(wall);
const c = med(cpu);
const fixed = (n: number) => Number(n.toFixed(1));
for (const [label, m] of [
  ['wall', w],
  ['CPU', c],
] as const)
  process.stdout.write(
    `median ${label} µs/request: bare ${m.bare.toFixed(1)} · ours ${m.ours.toFixed(1)} (+${(m.ours - m.bare).toFixed(1)}) · ` +
      `helmet ${m.helmet.toFixed(1)} (+${(m.helmet - m.bare).toFixed(1)})\n`,
  );
process.stdout.write(
  `${JSON.stringify({
    bench: 'security-headers',
    wall_us_bare: fixed(w.bare),
    wall_us_ours: fixed(w.ours),
    wall_us_helmet: fixed(w.helmet),
    cpu_us_bare: fixed(c.bare),
    cpu_us_ours: fixed(c.ours),
    cpu_us_helmet: fixed(c.helmet),
    cpu_added_us_ours: fixed(c.ours - c.bare),
    cpu_added_us_helmet: fixed(c.helmet - c.bare),
    cpu_helmet_over_ours: Number((c.helmet / c.ours).toFixed(3)),
    requests: REQUESTS,
    rounds: ROUNDS,
  })}\n`,
);
agent.destroy();
for (const a of Object.values(apps)) await a.close();
