/**
 * Moving a database between two nodes (issue 17, ADR 0031), in one run on one host: two data
 * planes (PostgreSQL + PgBouncer each), a server, two agents sharing one backup directory, and a
 * database of about SIZE_MB on node A. Measured:
 *   - the plain copy: `pg_dump -Fc <db on A> | pg_restore -d <empty db on B>` as the admin;
 *   - our move: POST /v1/databases/:name/move → `switched` (freeze, dump + archive + read-back,
 *     create + restore + checks + proving login on B, switch), and its write freeze (`freeze_ms`).
 * Goals: move ≤ 1.3× the plain copy; freeze < 2 s for 100 MB. Each measured once per run.
 * `--relay`: each agent has a backup directory of its own, so the target gets the archive relayed
 * through the server (the source's agent sends it; ADR 0031) instead of reading a shared store.
 * `--writes`: an application inserts a row through A's PgBouncer every 50 ms while the move runs
 * (until its first refused write): the database changes during the pre-copy, so the move makes a
 * second, frozen copy (`copies` 2) and the freeze is that copy's length — the case the pre-copy
 * does not shorten.
 *
 *   node bench/move.bench.ts [size_mb=100] [--relay] [--writes]
 */
import { spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { findPgBin } from '../src/agent/backups/pg-tools.ts';
import { agentConfigSchema } from '../src/agent/config.ts';
import { type RunningAgent, startAgent } from '../src/agent/main.ts';
import { type DataPlane, startDataPlane } from '../src/embedded/data-plane.ts';
import { dataLayout } from '../src/embedded/layout.ts';
import { resolveServiceUser } from '../src/embedded/service-user.ts';
import { serverConfigSchema } from '../src/server/config.ts';
import { createKeyringFile } from '../src/server/crypto/secret-box.ts';
import { startServer } from '../src/server/main.ts';
import { createOperatorKey } from '../src/server/modules/keys/keys.service.ts';
import { hashToken } from '../src/shared/api-key.ts';
import { createLogger } from '../src/shared/logger.ts';
import { freePort } from '../test/helpers/ports.ts';

const SIZE_MB = Number(process.argv.slice(2).find((a) => /^\d+$/.test(a)) ?? 100);
const RELAY = process.argv.includes('--relay');
const WRITES = process.argv.includes('--writes');
const pgBin = findPgBin(process.env.BULWARK_AGENT_PG_BIN);
if (!pgBin) throw new Error('pg_dump not found');
const load = () =>
  os
    .loadavg()
    .map((x) => x.toFixed(2))
    .join(' ');
const round = (x: number) => Math.round(x * 10) / 10;

const root = await fs.mkdtemp(path.join(os.tmpdir(), 'bench-move-'));
await fs.chmod(root, 0o711);
const silent = createLogger('bench', 'silent');
const planes: DataPlane[] = [];
const agents: RunningAgent[] = [];
const plane = async (name: string) => {
  const layout = dataLayout(path.join(root, name));
  const ports = { postgres: await freePort(), pooler: await freePort() };
  const dp = await startDataPlane({ layout, ports, user: resolveServiceUser(), log: () => {} });
  planes.push(dp);
  return { dp, layout, ports };
};
const a = await plane('a');
const b = await plane('b');
const masterKeyFile = path.join(root, 'master-keyring.json');
createKeyringFile(masterKeyFile);
const server = await startServer(
  serverConfigSchema.parse({
    databaseUrl: a.dp.controlUrl,
    dataDir: a.layout.server,
    port: 0,
    logLevel: 'silent',
    masterKeyFile,
    poolerPort: a.ports.pooler,
    poolerSslmode: 'disable',
  }),
  { log: silent },
);
const control = new pg.Pool({ connectionString: a.dp.controlUrl, max: 2 });
control.on('error', () => {});
const backupDir = path.join(root, 'backups');
const admins: pg.Client[] = [];
try {
  for (const [name, node] of [
    ['a', a],
    ['b', b],
  ] as const) {
    const token = `bwe_${name}`.padEnd(47, 'A');
    await control.query(
      "INSERT INTO node_enrollments (token_hash, node_name, expires_at) VALUES ($1, $2, now() + interval '1 hour')",
      [hashToken(token), name],
    );
    agents.push(
      await startAgent(
        agentConfigSchema.parse({
          serverUrl: server.url,
          stateDir: path.join(root, `agent-${name}`),
          enrollmentToken: token,
          adminDatabaseUrl: node.dp.adminUrl,
          poolerDir: node.layout.pooler,
          poolerPort: node.ports.pooler,
          poolerAdminPassword: node.dp.poolerAdminPassword,
          backupDir: RELAY ? path.join(root, `backups-${name}`) : backupDir,
          logLevel: 'silent',
          explorerChannel: false,
        }),
        { log: silent },
      ),
    );
  }
  const { key } = await createOperatorKey(control, { accountName: 'bench', level: 'admin' });
  const api = async (method: string, url: string, body?: unknown) => {
    const r = await fetch(`${server.url}${url}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    const json = (await r.json()) as Record<string, unknown>;
    if (r.status >= 400) throw new Error(`${method} ${url}: ${r.status} ${JSON.stringify(json)}`);
    return json;
  };
  const until = async <T>(what: string, fn: () => Promise<T | undefined>, ms = 900_000) => {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      const v = await fn();
      if (v !== undefined) return v;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`timed out: ${what}`);
  };

  const name = 'bench_move';
  await api('POST', '/v1/databases', { name, node: 'a' });
  await until('ready', async () =>
    (await api('GET', `/v1/databases/${name}`)).status === 'ready' ? true : undefined,
  );
  const { password } = (await api('POST', `/v1/databases/${name}/credentials/reveal`)) as {
    password: string;
  };
  const owner = new pg.Client({
    host: '127.0.0.1',
    port: a.ports.pooler,
    user: `${name}_owner`,
    database: name,
    password,
  });
  await owner.connect();
  const t0 = performance.now();
  await owner.query(`
    CREATE TABLE customers (id bigserial PRIMARY KEY, email text NOT NULL, name text, created_at timestamptz DEFAULT now());
    CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint REFERENCES customers, total numeric(12,2),
                         items jsonb, note text);
    CREATE INDEX orders_customer ON orders (customer_id);`);
  const perBatch = 50_000;
  for (let i = 0; ; i++) {
    await owner.query(
      `INSERT INTO customers (email, name) SELECT 'c' || g || '@example.com', md5(g::text) FROM generate_series(1, $1) g`,
      [perBatch / 5],
    );
    await owner.query(
      `INSERT INTO orders (customer_id, total, items, note)
       SELECT 1 + (random() * 1000)::int, round((random() * 500)::numeric, 2),
              jsonb_build_array(jsonb_build_object('sku', md5(g::text), 'qty', g % 7)), repeat(md5(random()::text), 2)
         FROM generate_series(1, $1) g`,
      [perBatch],
    );
    const size = Number((await owner.query('SELECT pg_database_size(current_database()) AS s')).rows[0].s);
    if (size >= SIZE_MB * 1048576 || i > 200) break;
  }
  const size = Number((await owner.query('SELECT pg_database_size(current_database()) AS s')).rows[0].s);
  await owner.end();
  console.log(
    `database ${round(size / 1048576)} MB on disk (filled in ${round((performance.now() - t0) / 1000)} s)`,
  );
  console.log(
    `load average at start: ${load()}; archive ${RELAY ? 'relayed through the server' : 'in a shared store'}`,
  );

  // The plain copy: pg_dump -Fc from A piped into pg_restore into an empty database on B.
  const adminB = new pg.Client({ connectionString: b.dp.adminUrl });
  await adminB.connect();
  admins.push(adminB);
  await adminB.query('CREATE DATABASE plain_copy TEMPLATE template0');
  const urlOf = (adminUrl: string, db: string) => adminUrl.replace(/\/[^/]*$/, `/${db}`);
  const tPlain = performance.now();
  await new Promise<void>((resolve, reject) => {
    const sh = spawn(
      'bash',
      [
        '-o',
        'pipefail',
        '-c',
        `"${pgBin}/pg_dump" -Fc --no-sync -d "$SRC" | "${pgBin}/pg_restore" --no-owner --no-privileges --single-transaction -d "$DST"`,
      ],
      {
        env: { ...process.env, SRC: urlOf(a.dp.adminUrl, name), DST: urlOf(b.dp.adminUrl, 'plain_copy') },
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let err = '';
    sh.stderr.on('data', (d) => {
      err += d;
    });
    sh.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`plain copy failed: ${err}`))));
  });
  const plainMs = performance.now() - tPlain;
  console.log(`plain pg_dump | pg_restore: ${round(plainMs / 1000)} s`);

  // --writes: the application keeps writing until a write is refused (the freeze cut it).
  let writes = 0;
  let writing: Promise<void> = Promise.resolve();
  const writer = WRITES
    ? new pg.Client({
        host: '127.0.0.1',
        port: a.ports.pooler,
        user: `${name}_owner`,
        database: name,
        password,
      })
    : null;
  if (writer) {
    writer.on('error', () => {});
    await writer.connect();
    await writer.query('CREATE TABLE app_log (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())');
  }
  const tMove = performance.now();
  await api('POST', `/v1/databases/${name}/move`, { node: 'b' });
  if (writer)
    writing = (async () => {
      for (;;) {
        try {
          await writer.query('INSERT INTO app_log DEFAULT VALUES');
          writes++;
        } catch {
          return;
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
  const move = await until('switched', async () => {
    const m = await api('GET', `/v1/databases/${name}/move`);
    if (m.status === 'failed') throw new Error(`move failed: ${m.error}`);
    return m.status === 'switched' ? m : undefined;
  });
  const moveMs = performance.now() - tMove;
  await writing;
  await writer?.end().catch(() => {});
  if (writer) console.log(`application writes during the move: ${writes} (until the freeze cut them)`);
  console.log(
    `move: ${round(moveMs / 1000)} s (server's duration ${round(Number(move.duration_ms) / 1000)} s), ` +
      `write freeze ${round(Number(move.freeze_ms) / 1000)} s, copies ${move.copies}, ` +
      `archive ${round(Number(move.size_bytes) / 1048576)} MB`,
  );
  console.log(
    `ratio move / plain: ${(moveMs / plainMs).toFixed(2)}x (goal ≤ 1.3x); load average at end: ${load()}`,
  );
  console.log(
    JSON.stringify({
      bench: 'move',
      size_mb: round(size / 1048576),
      plain_ms: Math.round(plainMs),
      move_ms: Math.round(moveMs),
      freeze_ms: move.freeze_ms,
      copies: move.copies,
      writes: WRITES,
      ratio: moveMs / plainMs,
    }),
  );
} catch (err) {
  console.error('bench failed:', err);
  process.exitCode = 1;
} finally {
  for (const c of admins) await c.end().catch(() => {});
  for (const ag of agents) await ag.stop().catch(() => {});
  await server.close().catch(() => {});
  await control.end().catch(() => {});
  for (const dp of planes) await dp.stop().catch(() => {});
  await fs.rm(root, { recursive: true, force: true });
}
