/**
 * Provisioning latency: `POST /v1/databases` over HTTP with a real key, waiting for `ready` and
 * answered with the credentials (`wait_ms`, `reveal`: ADR 0034) → a client connects through
 * PgBouncer with them and runs `SELECT 1`. Also, alternating with it, the way without a wait
 * (create, wait on the row, reveal and connection info). Two paths, N databases each (ADR 0028, ADR 0034):
 *   - warm: the agent's warm pool (3 spares) hands one out; each run starts with the pool full
 *     again (the refill is background work, never part of a create);
 *   - cold: the pool off (0): roles, CREATE DATABASE, grants, schema setup.
 * Median and p95 of each, against the floor measured on the same cluster in the same run: the
 * raw SQL of CREATE ROLE + CREATE DATABASE (template0) + the GRANTs, issued directly, interleaved
 * with the API runs so that both see the same load on a shared host. Also prints where the
 * agent's time went (`steps_ms` of each create job, medians) and the load average.
 *
 *   node bench/provision-latency.bench.ts [databases=30]
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { agentConfigSchema } from '../src/agent/config.ts';
import { startAgent } from '../src/agent/main.ts';
import { SPARE_PREFIX } from '../src/agent/postgres/spare-sql.ts';
import { startDataPlane } from '../src/embedded/data-plane.ts';
import { dataLayout } from '../src/embedded/layout.ts';
import { resolveServiceUser } from '../src/embedded/service-user.ts';
import { serverConfigSchema } from '../src/server/config.ts';
import { createKeyringFile } from '../src/server/crypto/secret-box.ts';
import { startServer } from '../src/server/main.ts';
import { DATABASE_STATUS_CHANNEL } from '../src/server/modules/databases/databases.jobs.ts';
import { createOperatorKey } from '../src/server/modules/keys/keys.service.ts';
import { generateToken, hashToken } from '../src/shared/api-key.ts';
import { quoteIdent, quoteLiteral } from '../src/shared/identifiers.ts';
import { createLogger } from '../src/shared/logger.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import { freePort } from '../test/helpers/ports.ts';
import { summarize } from './stats.ts';

const N = Number(process.argv[2] ?? 30);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 3);
const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'bench-provision-'));
const layout = dataLayout(dir);
const ports = { postgres: await freePort(), pooler: await freePort() };
const dp = await startDataPlane({ layout, ports, user: resolveServiceUser(), log: () => {} });
const silent = createLogger('bench', 'silent');
createKeyringFile(layout.masterKeyring);
const server = await startServer(
  serverConfigSchema.parse({
    databaseUrl: dp.controlUrl,
    dataDir: layout.server,
    port: 0,
    logLevel: 'silent',
    masterKeyFile: layout.masterKeyring,
    poolerPort: ports.pooler,
    poolerSslmode: 'disable',
    rateLimitKeyPerMinute: 1_000_000,
  }),
  { log: silent },
);
const db = new pg.Pool({ connectionString: dp.controlUrl, max: 2 });
db.on('error', () => {});
let agent: Awaited<ReturnType<typeof startAgent>> | undefined;
const POOL = 3;
try {
  const enrollment = generateToken('bwe_');
  await db.query(
    "INSERT INTO node_enrollments (token_hash, node_name, expires_at) VALUES ($1, 'bench', now() + interval '1 hour')",
    [hashToken(enrollment)],
  );
  /** The agent with a warm pool of `size` (a restart on the same state dir keeps its enrollment). */
  const startBenchAgent = (size: number) =>
    startAgent(
      agentConfigSchema.parse({
        serverUrl: server.url,
        stateDir: layout.agent,
        enrollmentToken: enrollment,
        adminDatabaseUrl: dp.adminUrl,
        poolerDir: layout.pooler,
        poolerPort: ports.pooler,
        poolerAdminPassword: dp.poolerAdminPassword,
        logLevel: 'silent',
        warmPoolSize: size,
      }),
      { log: silent },
    );
  agent = await startBenchAgent(POOL);
  const { key } = await createOperatorKey(db, { accountName: 'bench', level: 'admin' });
  const api = async <T>(method: string, url: string, body?: unknown): Promise<T> => {
    const res = await fetch(`${server.url}${url}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    const json = (await res.json()) as T;
    if (!res.ok) throw new Error(`${method} ${url}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  };

  const listener = new pg.Client({ connectionString: dp.controlUrl });
  listener.on('error', () => {});
  await listener.connect();
  let wake: () => void = () => {};
  listener.on('notification', () => wake());
  await listener.query(`LISTEN ${DATABASE_STATUS_CHANNEL}`);
  /** Waits (bounded) until no job is queued or running: one measurement never overlaps another's job. */
  const jobsDone = async () => {
    for (let i = 0; i < 600; i++) {
      const r = await db.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM jobs WHERE status IN ('queued', 'running')",
      );
      if (r.rows[0]!.n === 0) return;
      await new Promise((res) => setTimeout(res, 20));
    }
  };
  type Credentials = { password: string; connection: { user: string; database: string } };
  /**
   * The client's login through PgBouncer with the credentials and `SELECT 1`: the measurement ends
   * there (ms since `t0`). Outside it, the database goes again (its job finished before the next
   * measurement), so the node's connection budget holds every database of the run.
   */
  const connectAndDrop = async (name: string, t0: number, { password, connection }: Credentials) => {
    const c = new pg.Client({
      host: '127.0.0.1',
      port: ports.pooler,
      user: connection.user,
      password,
      database: connection.database,
    });
    await c.connect();
    await c.query('SELECT 1');
    const ms = performance.now() - t0;
    await c.end();
    await api('DELETE', `/v1/databases/${name}`, { confirm: name });
    await jobsDone();
    return ms;
  };
  /**
   * One database from the API call to a working query through PgBouncer, in ms: one
   * `POST /v1/databases` that waits for `ready` and answers with the credentials (`wait_ms`,
   * `reveal`), then the client's login through PgBouncer with them and `SELECT 1`.
   */
  const provision = async (name: string): Promise<number> => {
    const t0 = performance.now();
    const d = await api<{ status: string; failure_reason?: string; credentials?: Credentials }>(
      'POST',
      '/v1/databases',
      { name, wait_ms: 30_000, reveal: true },
    );
    if (d.status !== 'ready' || !d.credentials) throw new Error(`${name}: ${d.status} ${d.failure_reason}`);
    return connectAndDrop(name, t0, d.credentials);
  };
  /**
   * The same the way a client without `wait_ms` does it: the create (answered at once), a wait on
   * the row (woken by the job's NOTIFY), then the reveal and the connection info at once.
   * Reported beside the above.
   */
  const provisionPolled = async (name: string): Promise<number> => {
    const t0 = performance.now();
    const { id } = await api<{ id: string }>('POST', '/v1/databases', { name });
    // Watch the row the API serves, woken by the job's NOTIFY (a busy poll would steal the CPU
    // the agent and PostgreSQL need on 2 vCPUs); a 1 s re-check covers a lost notification.
    for (let i = 0; ; i++) {
      const woken = new Promise<void>((res) => {
        wake = res;
        setTimeout(res, 1_000).unref();
      });
      const r = await db.query<{ status: string; failure_reason: string | null }>(
        'SELECT status, failure_reason FROM databases WHERE id = $1',
        [id],
      );
      const row = r.rows[0]!;
      if (row.status === 'ready') break;
      if (row.status === 'failed' || i > 60) throw new Error(`${name}: ${row.status} ${row.failure_reason}`);
      await woken;
    }
    const [{ password }, connection] = await Promise.all([
      api<{ password: string }>('POST', `/v1/databases/${name}/credentials/reveal`),
      api<Credentials['connection']>('GET', `/v1/databases/${name}/connection`),
    ]);
    return connectAndDrop(name, t0, { password, connection });
  };
  // Floor: the raw statements on the same cluster (one owner role, the database, the grants).
  const admin = new pg.Client({ connectionString: dp.adminUrl });
  await admin.connect();
  const floor = async (name: string): Promise<{ ms: number; createDb: number }> => {
    const role = quoteIdent(`${name}_owner`);
    const verifier = quoteLiteral(scramVerifier(`pw-${name}-${Math.random()}`));
    const t0 = performance.now();
    await admin.query(`CREATE ROLE ${role} LOGIN PASSWORD ${verifier}`);
    const tdb = performance.now();
    await admin.query(`CREATE DATABASE ${quoteIdent(name)} OWNER ${role} TEMPLATE template0`);
    const createDb = performance.now() - tdb;
    await admin.query(`REVOKE ALL ON DATABASE ${quoteIdent(name)} FROM PUBLIC`);
    await admin.query(`GRANT CONNECT, TEMPORARY ON DATABASE ${quoteIdent(name)} TO ${role}`);
    return { ms: performance.now() - t0, createDb };
  };
  /** Ready spares of the warm pool, as the catalog holds them. */
  const readySpares = async () =>
    Number(
      (
        await admin.query<{ n: number }>(
          `SELECT count(*)::int AS n FROM pg_database
            WHERE starts_with(datname::text, $1) AND shobj_description(oid, 'pg_database') LIKE 'bulwark:spare:ready:%'`,
          [SPARE_PREFIX],
        )
      ).rows[0]!.n,
    );
  /** Waits (bounded) until the pool is full again: a create never competes with its refill. */
  const poolFull = async (want: number) => {
    for (let i = 0; i < 600 && (await readySpares()) < want; i++) await new Promise((r) => setTimeout(r, 50));
    // The refill's last statements (its steward session ending) settle.
    await new Promise((r) => setTimeout(r, 100));
  };
  /** One phase: N databases through the API, each followed by the floor (interleaved). */
  const phase = async (label: string, pool: number) => {
    for (let i = 0; i < WARMUP; i++) {
      if (pool > 0) await poolFull(pool);
      await provision(`${label}_warmup_${i}`);
      await floor(`floor_${label}_warmup_${i}`);
    }
    const apiMs: number[] = [];
    const polledMs: number[] = [];
    const floorMs: number[] = [];
    const floorCreateDbMs: number[] = [];
    for (let i = 0; i < N; i++) {
      if (pool > 0) await poolFull(pool);
      apiMs.push(await provision(`${label}_${i}`));
      const f = await floor(`floor_${label}_${i}`);
      floorMs.push(f.ms);
      floorCreateDbMs.push(f.createDb);
      if (pool > 0) await poolFull(pool);
      polledMs.push(await provisionPolled(`${label}_p_${i}`));
    }
    const jobs = await db.query<{ ms: number; probe: number; steps: Record<string, number> | null }>(
      `SELECT extract(epoch FROM finished_at - created_at) * 1000 AS ms, (result->>'pooler_probe_ms')::float AS probe,
              result->'steps_ms' AS steps
         FROM jobs WHERE kind = 'database.create' AND payload->>'name' ~ $1`,
      [`^${label}_[0-9]+$`],
    );
    // Where the agent's time went, per step (medians; steps overlap, see database-create.ts).
    const stepNames = [...new Set(jobs.rows.flatMap((r) => Object.keys(r.steps ?? {})))];
    const steps = Object.fromEntries(
      stepNames.map((k) => [
        k,
        Math.round(summarize(jobs.rows.map((r) => r.steps?.[k] ?? 0)).median * 100) / 100,
      ]),
    );
    const a = summarize(apiMs);
    const polled = summarize(polledMs);
    const f = summarize(floorMs);
    const jobMs = summarize(jobs.rows.map((r) => Number(r.ms)));
    const probeMs = summarize(jobs.rows.map((r) => Number(r.probe)));
    console.log(
      `\n${label} path (warm pool ${pool}), ${N} databases; load average ${os
        .loadavg()
        .map((l) => l.toFixed(2))
        .join(' ')}`,
    );
    console.log(`  agent steps (median ms): ${JSON.stringify(steps)}`);
    console.log(
      `  API → ready → connected through PgBouncer: median ${a.median.toFixed(1)} ms, p95 ${a.p95.toFixed(1)} ms`,
    );
    console.log(
      `  the same as create, wait on the row, reveal + connection info: median ${polled.median.toFixed(1)} ms, p95 ${polled.p95.toFixed(1)} ms (${(polled.median / f.median).toFixed(2)}x)`,
    );
    console.log(
      `  SQL floor (CREATE ROLE + CREATE DATABASE + GRANTs), same phase: median ${f.median.toFixed(1)} ms, p95 ${f.p95.toFixed(1)} ms (its CREATE DATABASE: median ${summarize(floorCreateDbMs).median.toFixed(1)} ms)`,
    );
    console.log(
      `  create job (queued → agent done): median ${jobMs.median.toFixed(1)} ms; its PgBouncer proving login: median ${probeMs.median.toFixed(1)} ms`,
    );
    console.log(
      `  ratio: median ${(a.median / f.median).toFixed(2)}x, p95 ${(a.p95 / f.p95).toFixed(2)}x (goal ≤ ${pool > 0 ? '1.0' : '1.5'}x)`,
    );
    return {
      api: a,
      polled,
      floor: f,
      job: jobMs,
      probe: probeMs,
      steps,
      ratio: a.median / f.median,
      ratio_polled: polled.median / f.median,
    };
  };
  const loadBefore = os.loadavg();
  const warm = await phase('warm', POOL);
  // The cold path: the same agent restarted with the pool off (it removes its spares first).
  await agent.stop();
  agent = await startBenchAgent(0);
  for (let i = 0; i < 600 && (await readySpares()) > 0; i++) await new Promise((r) => setTimeout(r, 50));
  const cold = await phase('cold', 0);
  await admin.end();
  await listener.end();
  console.log(
    JSON.stringify({
      bench: 'provision-latency',
      databases: N,
      load_before: loadBefore,
      load_after: os.loadavg(),
      warm,
      cold,
    }),
  );
} catch (err) {
  console.error('bench failed:', err);
  process.exitCode = 1;
} finally {
  await agent?.stop();
  await db.end();
  server.app.server.closeAllConnections();
  await server.close();
  await dp.stop();
  await fs.rm(dir, { recursive: true, force: true });
}
