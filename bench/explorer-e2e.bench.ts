/**
 * Explorer end-to-end latency vs the same SELECT over a plain `pg` connection, same run.
 *
 *   plain     one persistent pg connection to the tenant database, the SELECT as is
 *   executor  the agent's explorer executor (explorer login, READ ONLY, SET LOCALs, cursor,
 *             caps; ROLLBACK + DISCARD ALL off the response path)
 *   fresh     a new SCRAM login as the explorer per query (what pooling avoids)
 *   http      POST /v1/databases/:name/explorer/query with an API key → job → agent long-poll
 *             wake → executor → rows handed back → response (the whole product path)
 *
 *   node bench/explorer-e2e.bench.ts [runs=200]
 */
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { agentConfigSchema } from '../src/agent/config.ts';
import { createExplorerExecutor } from '../src/agent/explorer/explorer-executor.ts';
import { explorerPassword } from '../src/agent/explorer/explorer-role.ts';
import { DEFAULT_LIMITS } from '../src/agent/jobs/contract.ts';
import { startAgent } from '../src/agent/main.ts';
import { ensureDatabase, ensureRoles, grantDatabase, setupSchema } from '../src/agent/postgres/tenant-sql.ts';
import { startDataPlane } from '../src/embedded/data-plane.ts';
import { dataLayout } from '../src/embedded/layout.ts';
import { resolveServiceUser } from '../src/embedded/service-user.ts';
import { serverConfigSchema } from '../src/server/config.ts';
import { startServer } from '../src/server/main.ts';
import { insertDatabase, markReady } from '../src/server/modules/databases/databases.repo.ts';
import { loadExplorerParser } from '../src/server/modules/explorer/explorer.validator.ts';
import { createOperatorKey } from '../src/server/modules/keys/keys.service.ts';
import { roleNames } from '../src/shared/identifiers.ts';
import { createLogger } from '../src/shared/logger.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import { freePort } from '../test/helpers/ports.ts';
import { summarize } from './stats.ts';

const N = Number(process.argv[2] ?? 200);
const WARMUP = 20;
const SQL = 'select id, name, amount from items where id <= 50 order by id';
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
const server = await startServer(
  serverConfigSchema.parse({
    databaseUrl: dp.controlUrl,
    dataDir: layout.server,
    port: 0,
    logLevel: 'silent',
    masterKeyFile: keyFile,
    rateLimitKeyPerMinute: 1_000_000,
    rateLimitIpPerMinute: 1_000_000,
  }),
  { log: silent },
);
const control = new pg.Pool({ connectionString: dp.controlUrl, max: 4 });
control.on('error', () => {});
const admin = new pg.Pool({ connectionString: dp.adminUrl, max: 4 });
admin.on('error', () => {});
const tenantUrl = (db: string) => dp.adminUrl.replace(/\/[^/]*$/, `/${db}`);
const connectAdmin = async (db: string) => {
  const c = new pg.Client({ connectionString: tenantUrl(db) });
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
  // A tenant database made by the databases agent's SQL, with a 100-row table.
  const name = `bench_${randomBytes(4).toString('hex')}`;
  const id = randomUUID();
  const roles = roleNames(name);
  await ensureRoles(admin, {
    databaseId: id,
    roles,
    verifier: scramVerifier('x'.repeat(20)),
    limits: DEFAULT_LIMITS,
  });
  await ensureDatabase(admin, name, roles.owner);
  await grantDatabase(admin, name, roles);
  const setup = await connectAdmin(name);
  await setupSchema(setup, roles);
  await setup.query(`SET ROLE ${roles.owner}`);
  await setup.query(
    "CREATE TABLE items (id int PRIMARY KEY, name text, amount numeric(10,2)); INSERT INTO items SELECT g, 'item ' || g, g * 1.25 FROM generate_series(1, 100) g",
  );
  await setup.end();

  // The product path: a node with a real agent, the database row, an admin key.
  await control.query(
    "INSERT INTO node_enrollments (token_hash, node_name, expires_at) VALUES ($1, 'bench', now() + interval '1 hour')",
    [(await import('../src/shared/api-key.ts')).hashToken('bwe_'.padEnd(47, 'B'))],
  );
  const agent = await startAgent(
    agentConfigSchema.parse({
      serverUrl: server.url,
      stateDir: path.join(dir, 'agent'),
      enrollmentToken: 'bwe_'.padEnd(47, 'B'),
      adminDatabaseUrl: dp.adminUrl,
      logLevel: 'silent',
    }),
    { log: silent },
  );
  const nodeId = (await control.query<{ id: string }>("SELECT id FROM nodes WHERE name = 'bench'")).rows[0]!
    .id;
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
  const key32 = randomBytes(32);
  const executor = createExplorerExecutor({
    admin,
    connectAdmin,
    pgHost: '127.0.0.1',
    pgPort,
    key: key32,
    log: silent,
  });
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
  const http = async () => {
    const res = await fetch(`${server.url}/v1/databases/${name}/explorer/query`, {
      method: 'POST',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: JSON.stringify({ sql: SQL }),
    });
    const body = (await res.json()) as { row_count?: number };
    if (res.status !== 200 || body.row_count !== 50) throw new Error(`explorer answered ${res.status}`);
  };
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

  const plainMs = await sample(() => plain.query(SQL));
  const executorMs = await sample(async () => {
    const out = await executor.runQuery(payload, never);
    if (out.kind !== 'rows' || out.output.row_count !== 50) throw new Error('executor failed');
  });
  const freshMs = await sample(fresh);
  const httpMs = await sample(http);
  // HTTP alone: an authenticated API call with no database work (GET one database).
  const httpFloorMs = await sample(async () => {
    const res = await fetch(`${server.url}/v1/databases/${name}`, {
      headers: { authorization: `Bearer ${key}` },
    });
    await res.text();
  });
  await plain.end();
  await executor.close();
  await agent.stop();

  const p = summarize(plainMs);
  const e = summarize(executorMs);
  const f = summarize(freshMs);
  const h = summarize(httpMs);
  const hf = summarize(httpFloorMs);
  const fmt = (x: { median: number; p95: number }) =>
    `median ${x.median.toFixed(2)} ms, p95 ${x.p95.toFixed(2)} ms`;
  console.log(`plain pg SELECT (50 rows):          ${fmt(p)}`);
  console.log(`agent executor (pooled explorer):   ${fmt(e)}  (${(e.median / p.median).toFixed(2)}x plain)`);
  console.log(`fresh explorer login per query:     ${fmt(f)}`);
  console.log(`HTTP API call, no database work:    ${fmt(hf)}`);
  console.log(`explorer end to end (HTTP + agent): ${fmt(h)}  (${(h.median / p.median).toFixed(2)}x plain)`);
  console.log(
    JSON.stringify({
      bench: 'explorer-e2e',
      runs: N,
      sql: SQL,
      plain: p,
      executor: e,
      fresh_login: f,
      http_floor: hf,
      e2e: h,
      executor_ratio: e.median / p.median,
      e2e_ratio: h.median / p.median,
      e2e_minus_http_floor_ratio: (h.median - hf.median) / p.median,
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
