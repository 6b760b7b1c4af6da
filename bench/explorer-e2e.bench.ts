/**
 * Explorer end-to-end latency vs the same SELECT over a plain `pg` connection, same run.
 *
 *   plain       one persistent pg connection to the tenant database, the SELECT as is
 *   plain_http  the same SELECT on that connection behind a route of the same server (same
 *               API key, auth hook and plugins), rows returned as JSON: "a plain SELECT plus HTTP"
 *   http_floor  an authenticated API call that reads one control-DB row (GET one database)
 *   executor    the agent's explorer executor (explorer login, READ ONLY, SET LOCALs, guard, the
 *               wrapped SELECT with fetch count 0 under the wire byte budget; ROLLBACK + DISCARD
 *               ALL off the response path)
 *   fresh       a new SCRAM login as the explorer per query (what pooling avoids)
 *   channel     POST /v1/databases/:name/explorer/query → validation → the agent's explorer
 *               channel → executor → outcome back → audit → response (the product path)
 *   queue       the same request with no channel on the server: a job, the agent's long-poll,
 *               rows handed back through the UNLOGGED table (the fallback path)
 *
 * It also prints the plan of the 200,000-row aggregate as the explorer runs it (EXPLAIN ANALYZE
 * through the executor's guarded transaction, fetch count 0): `Workers Launched` shows whether
 * PostgreSQL ran it in parallel.
 *
 * Last, the CPU time per query of the whole process tree (server, agent, PostgreSQL) for the main
 * variants, read from /proc (10 ms ticks, over 100 queries each).
 *
 *   node bench/explorer-e2e.bench.ts [runs=200]
 */
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { createExplorerExecutor } from '../src/agent/explorer/explorer-executor.ts';
import { explorerPassword, loadExplorerKey } from '../src/agent/explorer/explorer-role.ts';
import { connectSteward } from '../src/agent/postgres/steward.ts';
import { ensureDatabase, ensureRoles, grantDatabase, setupSchema } from '../src/agent/postgres/tenant-sql.ts';
import { startDataPlane } from '../src/embedded/data-plane.ts';
import { dataLayout } from '../src/embedded/layout.ts';
import { resolveServiceUser } from '../src/embedded/service-user.ts';
import { serverConfigSchema } from '../src/server/config.ts';
import { migrate } from '../src/server/db/migrate.ts';
import { createPool } from '../src/server/db/pool.ts';
import { createServerContext } from '../src/server/main.ts';
import { insertDatabase, markReady } from '../src/server/modules/databases/databases.repo.ts';
import { createOperatorKey } from '../src/server/modules/keys/keys.service.ts';
import { DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import { roleNames } from '../src/shared/identifiers.ts';
import { createLogger } from '../src/shared/logger.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import { createExplorerValidator, loadExplorerParser } from '../src/shared/sql/explorer-validator.ts';
import { freePort } from '../test/helpers/ports.ts';
import { summarize } from './stats.ts';

const N = Number(process.argv[2] ?? 200);
const WARMUP = 20;
const SQL = 'select id, name, amount from items where id <= 50 order by id';
/** A query that does real work (an aggregate over 200,000 rows): the fixed cost weighs less. */
const HEAVY = 'select kind, count(*) as n, avg(amount) as mean from events group by kind order by kind';
const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'bench-explorer-'));
const layout = dataLayout(dir);
const pgPort = await freePort();
const dp = await startDataPlane({
  layout,
  ports: { postgres: pgPort, pooler: await freePort() },
  user: resolveServiceUser(),
  log: () => {},
});
const silent = createLogger('bench', 'silent');
const keyFile = path.join(dir, 'master-key.json');
const { createKeyringFile } = await import('../src/server/crypto/secret-box.ts');
createKeyringFile(keyFile);
const serverConfig = serverConfigSchema.parse({
  databaseUrl: dp.controlUrl,
  dataDir: layout.server,
  port: 0,
  logLevel: 'silent',
  masterKeyFile: keyFile,
  rateLimitKeyPerMinute: 1_000_000,
  rateLimitIpPerMinute: 1_000_000,
});
const serverDb = createPool(serverConfig.databaseUrl, serverConfig.dbPoolMax, silent);
await migrate(serverDb);
const ctx = await createServerContext({ config: serverConfig, db: serverDb, log: silent });
// The baseline route: the same SELECT on a plain connection, behind the same auth and plugins.
let plainForHttp: pg.Client | null = null;
ctx.app.post('/v1/bench/plain-select', async (req) => {
  if (!plainForHttp) throw new Error('not ready');
  const text = (req.body as { sql?: string }).sql === HEAVY ? HEAVY : SQL;
  const r = await plainForHttp.query({ text, rowMode: 'array' });
  return { columns: r.fields.map((f) => f.name), rows: r.rows, row_count: r.rowCount };
});
const server = {
  url: await ctx.app.listen({ host: '127.0.0.1', port: 0 }),
  close: async () => {
    await ctx.close();
    await serverDb.end();
  },
};
const control = new pg.Pool({ connectionString: dp.controlUrl, max: 4 });
control.on('error', () => {});
const admin = new pg.Pool({ connectionString: dp.adminUrl, max: 4 });
admin.on('error', () => {});
const tenantUrl = (db: string) => dp.adminUrl.replace(/\/[^/]*$/, `/${db}`);
const connectAdmin = async (db: string) => {
  const c = new pg.Client({ connectionString: tenantUrl(db) });
  c.on('error', () => {});
  await c.connect();
  return c;
};
const time = async (fn: () => Promise<unknown>): Promise<number> => {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
};
const sample = async (fn: () => Promise<unknown>): Promise<number[]> => {
  for (let i = 0; i < WARMUP; i++) await fn();
  const out: number[] = [];
  for (let i = 0; i < N; i++) out.push(await time(fn));
  return out;
};

try {
  await loadExplorerParser();
  // The product path: a node with a real agent, the database row, an admin key.
  await control.query(
    "INSERT INTO node_enrollments (token_hash, node_name, expires_at) VALUES ($1, 'bench', now() + interval '1 hour')",
    [(await import('../src/shared/api-key.ts')).hashToken('bwe_'.padEnd(47, 'B'))],
  );
  // The agent runs in its own process, as `bulwark up` runs it (the server and agent do not share
  // an event loop); first with its explorer channel, later without (the job-queue fallback).
  const agentDir = path.join(dir, 'agent');
  const startAgentProcess = async (channel: boolean, enrollmentToken?: string) => {
    const child = spawn(process.execPath, [path.join(import.meta.dirname, '../src/cli/index.ts'), 'agent'], {
      env: {
        PATH: process.env.PATH,
        BULWARK_SERVER_URL: server.url,
        BULWARK_AGENT_STATE_DIR: agentDir,
        BULWARK_AGENT_ADMIN_DATABASE_URL: dp.adminUrl,
        BULWARK_LOG_LEVEL: 'silent',
        BULWARK_AGENT_EXPLORER_CHANNEL: String(channel),
        ...(enrollmentToken ? { BULWARK_ENROLLMENT_TOKEN: enrollmentToken } : {}),
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const deadline = Date.now() + 30_000;
    while (!existsSync(path.join(agentDir, 'ready'))) {
      if (Date.now() > deadline || child.exitCode !== null) throw new Error('the agent did not start');
      await new Promise((r) => setTimeout(r, 20));
    }
    return {
      stop: async () => {
        const exited = new Promise((r) => child.once('exit', r));
        child.kill('SIGTERM');
        await exited;
      },
    };
  };
  const agent = await startAgentProcess(true, 'bwe_'.padEnd(47, 'B'));
  const nodeId = (await control.query<{ id: string }>("SELECT id FROM nodes WHERE name = 'bench'")).rows[0]!
    .id;
  for (let i = 0; ctx.explorerChannels.pick(nodeId) === null; i++) {
    if (i > 1_000) throw new Error('the agent opened no explorer channel');
    await new Promise((r) => setTimeout(r, 10));
  }
  // A tenant database made by the databases agent's SQL (roles keyed by the agent's key, schema set
  // up in a steward session), with a 100-row and a 200,000-row table.
  const key32 = await loadExplorerKey(agentDir);
  const name = `bench_${randomBytes(4).toString('hex')}`;
  const id = randomUUID();
  const roles = roleNames(name);
  await ensureRoles(admin, {
    databaseId: id,
    roles,
    verifier: scramVerifier('x'.repeat(20)),
    limits: DEFAULT_LIMITS,
    key: key32,
  });
  await ensureDatabase(admin, name, roles, id);
  await grantDatabase(admin, name, roles);
  const steward = await connectSteward(
    { pgHost: '127.0.0.1', pgPort, key: key32 },
    { databaseId: id, name, roles },
  );
  try {
    await setupSchema(steward, roles);
  } finally {
    await steward.end();
  }
  const setup = await connectAdmin(name);
  await setup.query(`SET ROLE ${roles.owner}`);
  await setup.query(
    "CREATE TABLE items (id int PRIMARY KEY, name text, amount numeric(10,2)); INSERT INTO items SELECT g, 'item ' || g, g * 1.25 FROM generate_series(1, 100) g",
  );
  await setup.query(
    "CREATE TABLE events (id int PRIMARY KEY, kind text, amount numeric(10,2)); INSERT INTO events SELECT g, 'k' || (g % 5), g % 1000 FROM generate_series(1, 200000) g; ANALYZE events",
  );
  await setup.end();

  const { key, account } = await createOperatorKey(control, { accountName: 'bench', level: 'admin' });
  await insertDatabase(control, {
    id,
    accountId: account.id,
    nodeId,
    name,
    passwordSealed: 'unused',
    allowlist: [],
    limits: { ...DEFAULT_LIMITS },
  });
  await markReady(control, id);

  const plain = await connectAdmin(name);
  // The agent's own explorer key (key32, above): both executors log in with the same derived password.
  const executor = createExplorerExecutor({
    admin,
    connectAdmin,
    pgHost: '127.0.0.1',
    pgPort,
    key: key32,
    log: silent,
    validate: createExplorerValidator().validate,
  });
  // The plan the explorer gets for the aggregate: EXPLAIN ANALYZE of the exact wrapped statement,
  // in the executor's guarded transaction (the gate refuses ANALYZE; this bench-only executor
  // skips the gate, nothing else).
  const explain = createExplorerExecutor({
    admin,
    connectAdmin,
    pgHost: '127.0.0.1',
    pgPort,
    key: key32,
    log: silent,
    validate: () => ({ ok: true, kind: 'explain', redacted: '' }),
  });
  const plan = await explain.runQuery(
    {
      database_id: id,
      name,
      sql: `explain (analyze, costs off, timing off) SELECT * FROM (\n${HEAVY}\n) AS bulwark_q LIMIT 1001`,
      sql_redacted: '',
      row_limit: 1_000,
      byte_limit: 1024 * 1024,
      statement_timeout_ms: 5_000,
    },
    new AbortController().signal,
  );
  await explain.close();
  const planLines = plan.kind === 'rows' ? plan.output.rows.map((r) => String(r[0])) : [JSON.stringify(plan)];
  const workers =
    planLines.find((l) => /Workers Launched/.test(l))?.trim() ?? 'Workers Launched: none (not parallel)';
  const payload = {
    database_id: id,
    name,
    sql: SQL,
    sql_redacted: '',
    row_limit: 1_000,
    byte_limit: 10 * 1024 * 1024,
    statement_timeout_ms: 5_000,
  };
  const never = new AbortController().signal;
  const post = async (route: string, sql: string, rows: number) => {
    const res = await fetch(`${server.url}${route}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ sql }),
    });
    const body = (await res.json()) as { row_count?: number };
    if (res.status !== 200 || body.row_count !== rows) throw new Error(`${route} answered ${res.status}`);
  };
  const explorerRoute = `/v1/databases/${name}/explorer/query`;
  const http = () => post(explorerRoute, SQL, 50);
  const fresh = async () => {
    const c = new pg.Client({
      host: '127.0.0.1',
      port: pgPort,
      database: name,
      user: roles.explorer,
      password: explorerPassword(key32, id, roles.explorer),
    });
    await c.connect();
    await c.query(SQL);
    await c.end();
  };

  const plainHttp = () => post('/v1/bench/plain-select', SQL, 50);
  plainForHttp = await connectAdmin(name);

  // Interleaved rounds (a noisy shared host drifts): every variant gets a slice of each round.
  const variants = {
    plain: () => plain.query(SQL),
    plain_http: plainHttp,
    executor: async () => {
      const out = await executor.runQuery(payload, never);
      if (out.kind !== 'rows' || out.output.row_count !== 50) throw new Error('executor failed');
    },
    channel: http,
    plain_heavy: () => plain.query(HEAVY),
    executor_heavy: async () => {
      const out = await executor.runQuery({ ...payload, sql: HEAVY }, never);
      if (out.kind !== 'rows' || out.output.row_count !== 5) throw new Error('executor failed');
    },
    plain_http_heavy: () => post('/v1/bench/plain-select', HEAVY, 5),
    channel_heavy: () => post(explorerRoute, HEAVY, 5),
    http_floor: async () => {
      const res = await fetch(`${server.url}/v1/databases/${name}`, {
        headers: { authorization: `Bearer ${key}` },
      });
      await res.text();
    },
  };
  const ROUNDS = 5;
  const samples: Record<string, number[]> = {};
  for (const [k, fn] of Object.entries(variants)) {
    samples[k] = [];
    for (let i = 0; i < WARMUP; i++) await fn();
  }
  for (let r = 0; r < ROUNDS; r++) {
    for (const [k, fn] of Object.entries(variants)) {
      for (let i = 0; i < Math.ceil(N / ROUNDS); i++) samples[k]!.push(await time(fn));
    }
  }
  // CPU per query of this process tree (the server in this process, the agent, PostgreSQL and its
  // backends), from /proc: steadier than wall time on a shared host, and it shows what runs beside
  // the query (audit writes, the chainer, the channel's frames) and competes for the same cores.
  const treeCpu = async (): Promise<Record<'server' | 'agent' | 'pg', number>> => {
    const procs: { pid: number; ppid: number; ms: number; comm: string }[] = [];
    for (const d of await fs.readdir('/proc')) {
      if (!/^\d+$/.test(d)) continue;
      try {
        const t = await fs.readFile(`/proc/${d}/stat`, 'utf8');
        const f = t.slice(t.lastIndexOf(')') + 2).split(' ');
        const ms = ((Number(f[11]) + Number(f[12])) * 1000) / 100; // utime + stime, USER_HZ = 100
        procs.push({
          pid: Number(d),
          ppid: Number(f[1]),
          ms,
          comm: t.slice(t.indexOf('(') + 1, t.lastIndexOf(')')),
        });
      } catch {} // gone meanwhile
    }
    const tree = new Set([process.pid]);
    for (let grew = true; grew; ) {
      grew = false;
      for (const p of procs)
        if (!tree.has(p.pid) && tree.has(p.ppid)) {
          tree.add(p.pid);
          grew = true;
        }
    }
    const out = { server: 0, agent: 0, pg: 0 };
    for (const p of procs) {
      if (!tree.has(p.pid)) continue;
      if (p.pid === process.pid) out.server += p.ms;
      else if (p.comm.startsWith('node') || p.comm === 'MainThread') out.agent += p.ms;
      else out.pg += p.ms;
    }
    return out;
  };
  const CPU_RUNS = 100;
  const cpu: Record<string, { total: number; server: number; agent: number; pg: number }> = {};
  for (const k of [
    'plain_http',
    'executor',
    'channel',
    'plain_http_heavy',
    'executor_heavy',
    'channel_heavy',
  ] as const) {
    const before = await treeCpu();
    for (let i = 0; i < CPU_RUNS; i++) await variants[k]();
    const after = await treeCpu();
    const per = (x: 'server' | 'agent' | 'pg') => (after[x] - before[x]) / CPU_RUNS;
    cpu[k] = {
      total: per('server') + per('agent') + per('pg'),
      server: per('server'),
      agent: per('agent'),
      pg: per('pg'),
    };
  }
  await executor.close();
  await agent.stop();
  // Both executors above held explorer connections; the role's connection limit is 4.
  const freshMs = await sample(fresh);

  // The fallback: the same agent with its channel off, so the request goes through the job queue.
  const queued = await startAgentProcess(false);
  const queueMs = await sample(http);
  await queued.stop();
  await plain.end();
  await plainForHttp.end();

  const [p, ph, e, ch, hf, pH, phH, chH] = [
    'plain',
    'plain_http',
    'executor',
    'channel',
    'http_floor',
    'plain_heavy',
    'plain_http_heavy',
    'channel_heavy',
  ].map((k) => summarize(samples[k]!)) as ReturnType<typeof summarize>[];
  const eH = summarize(samples.executor_heavy!);
  const f = summarize(freshMs);
  const q = summarize(queueMs);
  const fmt = (x: { median: number; p95: number }) =>
    `median ${x.median.toFixed(2)} ms, p95 ${x.p95.toFixed(2)} ms`;
  const line = (label: string, x: { median: number; p95: number }, extra = '') =>
    console.log(`${label.padEnd(44)}${fmt(x)}${extra ? `  (${extra})` : ''}`);
  const vs = (x: { median: number }, base: { median: number }, what: string) =>
    `${(x.median / base.median).toFixed(2)}x ${what}`;
  // The issue's figure, read strictly: end to end ≤ 1.5 × the plain SELECT + an authenticated API call.
  const goal = (plain: { median: number }) => 1.5 * plain.median + hf!.median;
  console.log(`explorer plan of the aggregate: ${workers}`);
  line('plain pg SELECT (50 rows)', p!);
  line('the same SELECT behind an API route', ph!);
  line('authenticated API call (one row read)', hf!);
  line('agent executor (pooled explorer)', e!, vs(e!, p!, 'plain'));
  line('fresh explorer login per query', f);
  line('explorer end to end, channel', ch!, `${vs(ch!, ph!, 'plain+HTTP')}; goal ${goal(p!).toFixed(2)} ms`);
  line('explorer end to end, job queue', q, vs(q, ph!, 'plain+HTTP'));
  line('plain pg aggregate (200k rows)', pH!);
  line('the same aggregate behind an API route', phH!);
  line('agent executor, aggregate', eH, vs(eH, pH!, 'plain'));
  line(
    'explorer end to end, aggregate, channel',
    chH!,
    `${vs(chH!, phH!, 'plain+HTTP')}; goal ${goal(pH!).toFixed(2)} ms`,
  );
  for (const [k, c] of Object.entries(cpu))
    console.log(
      `CPU per query, ${k.padEnd(18)}${c.total.toFixed(2)} ms (server + bench client ${c.server.toFixed(2)}, agent ${c.agent.toFixed(2)}, PostgreSQL ${c.pg.toFixed(2)})`,
    );
  console.log(
    JSON.stringify({
      bench: 'explorer-e2e',
      cpu_per_query_ms: cpu,
      runs: N,
      sql: SQL,
      heavy_sql: HEAVY,
      plain: p,
      plain_http: ph,
      http_floor: hf,
      executor: e,
      fresh_login: f,
      channel: ch,
      executor_heavy: eH,
      queue: q,
      plain_heavy: pH,
      plain_http_heavy: phH,
      channel_heavy: chH,
      executor_ratio: e!.median / p!.median,
      channel_vs_plain_http: ch!.median / ph!.median,
      channel_vs_goal: ch!.median / goal(p!),
      queue_vs_plain_http: q.median / ph!.median,
      heavy_channel_vs_plain_http: chH!.median / phH!.median,
      heavy_channel_vs_goal: chH!.median / goal(pH!),
      heavy_plan_workers: workers,
    }),
  );
} catch (err) {
  console.error('bench failed:', err);
  process.exitCode = 1;
} finally {
  await control.end();
  await admin.end();
  await server.close();
  await dp.stop();
  await fs.rm(dir, { recursive: true, force: true });
}
