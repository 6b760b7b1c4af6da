/**
 * Provisioning latency: `POST /v1/databases` over HTTP with a real key, waiting for `ready` and
 * answered with the credentials (`wait_ms`, `reveal`: ADR 0034) → a client connects through
 * PgBouncer with them and runs `SELECT 1`. Also, alternating with it, the way without a wait
 * (create, wait on the row, reveal and connection info). Three paths, N databases each (ADR 0028,
 * ADR 0034, ADR 0037):
 *   - reserved: the server's reserved databases (2 per node, its default) over a warm pool of 3; a
 *     create takes one in its own transaction (no job on its path); refilled before each run;
 *   - warm: no reserves: the agent's warm pool (3 spares) hands one out; each run starts with the pool full
 *     again (the refill is background work, never part of a create);
 *   - cold: the pool off (0): roles, CREATE DATABASE, grants, schema setup.
 * Each path runs against its own real `bulwark up` (the product as installed: PostgreSQL,
 * PgBouncer, the server and the agent, each its own process; default settings, fsync on); this
 * process is only the client. Median and p95 of each, against the floor measured on the same
 * cluster in the same run: the raw SQL of CREATE ROLE + CREATE DATABASE (template0) + the GRANTs,
 * issued directly, interleaved with the API runs so that both see the same load on a shared host.
 * Also prints where the agent's time went (`steps_ms` of each create job, medians) and the load
 * average.
 *
 *   [BENCH_PHASES=reserved,warm,cold] node bench/provision-latency.bench.ts [databases=30]
 */
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { SPARE_PREFIX } from '../src/agent/postgres/spare-sql.ts';
import { DATABASE_STATUS_CHANNEL } from '../src/server/modules/databases/databases.jobs.ts';
import { quoteIdent, quoteLiteral } from '../src/shared/identifiers.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import { freePort } from '../test/helpers/ports.ts';
import { summarize } from './stats.ts';

const N = Number(process.argv[2] ?? 30);
const WARMUP = Number(process.env.BENCH_WARMUP ?? 3);
/** Which paths to run (comma-separated), in their fixed order: all three unless told. */
const PHASES = (process.env.BENCH_PHASES ?? 'reserved,warm,cold').split(',');
const CLI = path.resolve(import.meta.dirname, '../src/cli/index.ts');
const POOL = 3;
/** The server's default (BULWARK_RESERVED_DATABASES). */
const RESERVED = 2;

/**
 * A `bulwark up` of its own (temporary data dir, loopback ports) with a warm pool of `size` and
 * `reserved` reserved databases per node (ADR 0037).
 */
async function startStack(size: number, reserved: number) {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'bench-provision-'));
  const ports = { server: await freePort(), pooler: await freePort(), pg: await freePort() };
  const child = spawn(
    process.execPath,
    [CLI, 'up', '--data-dir', dir, '--port', String(ports.server)].concat([
      '--pooler-port',
      String(ports.pooler),
      '--pg-port',
      String(ports.pg),
    ]),
    {
      env: {
        ...process.env,
        BULWARK_WARM_POOL_SIZE: String(size),
        BULWARK_RESERVED_DATABASES: String(reserved),
        BULWARK_RATE_LIMIT_KEY_PER_MINUTE: '1000000',
        BULWARK_LOG_LEVEL: 'warn',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const exited = new Promise((r) => child.once('exit', r));
      child.kill('SIGINT');
      const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(timer);
    }
    await fs.rm(dir, { recursive: true, force: true });
  };
  try {
    for (let i = 0; !/Bulwark is ready/.test(out); i++) {
      if (child.exitCode !== null || i > 1_800) throw new Error(`bulwark up did not start:\n${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const key = await new Promise<string>((resolve, reject) =>
      execFile(
        process.execPath,
        [CLI, 'admin', 'create-key', '--account', 'bench', '--data-dir', dir, '--json'],
        { timeout: 30_000 },
        (err, stdout, stderr) =>
          err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(JSON.parse(stdout).key as string),
      ),
    );
    const secret = async (f: string) => (await fs.readFile(path.join(dir, 'secrets', f), 'utf8')).trim();
    return {
      url: `http://127.0.0.1:${ports.server}`,
      ports,
      key,
      controlUrl: await secret('control-database-url'),
      adminUrl: await secret('admin-database-url'),
      stop,
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/**
 * Before a phase: the previous phase's writes reach the disk (`sync`), then a pause, so a phase
 * never starts under the last one's writeback. (It did not explain why a later phase's floor can
 * run 2–4× slower than the first's — 18 → 43 → 81 ms for its CREATE DATABASE in one run, 50 → 52
 * → 38 ms in another: this host's CREATE DATABASE varies that much. Compare within a phase, and
 * run one path alone with BENCH_PHASES.)
 */
async function settle() {
  await new Promise<void>((resolve) => execFile('sync', () => resolve()));
  await new Promise((r) => setTimeout(r, 5_000));
}

/** One phase: its own stack, N databases through the API, each followed by the floor (interleaved). */
async function phase(label: string, pool: number, reserved = 0) {
  await settle();
  const stack = await startStack(pool, reserved);
  const db = new pg.Pool({ connectionString: stack.controlUrl, max: 2 });
  db.on('error', () => {});
  const admin = new pg.Client({ connectionString: stack.adminUrl });
  const listener = new pg.Client({ connectionString: stack.controlUrl });
  listener.on('error', () => {});
  try {
    await admin.connect();
    await listener.connect();
    return await measure(label, pool, reserved, { ...stack, db, admin, listener });
  } finally {
    await admin.end().catch(() => {});
    await listener.end().catch(() => {});
    await db.end().catch(() => {});
    await stack.stop();
  }
}

async function measure(
  label: string,
  pool: number,
  reserved: number,
  {
    url,
    ports,
    key,
    db,
    admin,
    listener,
  }: Awaited<ReturnType<typeof startStack>> & {
    db: pg.Pool;
    admin: pg.Client;
    listener: pg.Client;
  },
) {
  const api = async <T>(method: string, path: string, body?: unknown): Promise<T> => {
    const res = await fetch(`${url}${path}`, {
      method,
      headers: { authorization: `Bearer ${key}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    });
    const json = (await res.json()) as T;
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(json)}`);
    return json;
  };

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
  const stages: Record<string, number>[] = [];
  /** The measured creates' database ids (their create jobs name generated names, ADR 0039). */
  const measured: string[] = [];
  const provision = async (name: string): Promise<number> => {
    const t0 = performance.now();
    const d = await api<{
      id: string;
      status: string;
      failure_reason?: string;
      credentials?: Credentials;
    }>('POST', '/v1/databases', { name, wait_ms: 30_000, reveal: true });
    const answered = performance.now();
    if (d.status !== 'ready' || !d.credentials) throw new Error(`${name}: ${d.status} ${d.failure_reason}`);
    // Where the time went, from the rows' own timestamps (each the start of its transaction or
    // statement, on this host's clock): the create's transaction, the job's hand-out to the
    // agent, the agent's work up to the completion, the completion's transaction.
    const r = await db.query<{ created: number; claimed: number; finished: number }>(
      `SELECT extract(epoch FROM created_at) * 1000 AS created, extract(epoch FROM claimed_at) * 1000 AS claimed,
              extract(epoch FROM finished_at) * 1000 AS finished
         FROM jobs WHERE kind = 'database.create' AND payload->>'database_id' = $1`,
      [d.id],
    );
    const ms = await connectAndDrop(name, t0, d.credentials);
    const at = (t: number) => performance.timeOrigin + t;
    const row = r.rows[0];
    // Taken from a reserve: its create job ran before this request (none on the path).
    if (!row || Number(row.created) < at(t0))
      stages.push({
        'request → answer received (reserve taken)': answered - t0,
        'answer → client connected, SELECT 1': ms - (answered - t0),
      });
    else {
      measured.push(d.id);
      stages.push({
        'request → create transaction': Number(row.created) - at(t0),
        'create transaction → job handed out': Number(row.claimed) - Number(row.created),
        'handed out → agent reported': Number(row.finished) - Number(row.claimed),
        'reported → answer received': at(answered) - Number(row.finished),
        'answer → client connected, SELECT 1': ms - (answered - t0),
      });
    }
    return ms;
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
  /** Ready reserved databases (no account), as the control DB holds them. */
  const readyReserves = async () =>
    Number(
      (
        await db.query<{ n: number }>(
          "SELECT count(*)::int AS n FROM databases WHERE account_id IS NULL AND status = 'ready' AND deleted_at IS NULL",
        )
      ).rows[0]!.n,
    );
  /**
   * Waits (bounded) until the pool and the reserves are full again: a create never competes with
   * their refill.
   */
  const poolFull = async (want: number) => {
    for (let i = 0; i < 600 && ((await readySpares()) < want || (await readyReserves()) < reserved); i++)
      await new Promise((r) => setTimeout(r, 50));
    // The refill's last statements (its steward session ending) settle.
    await new Promise((r) => setTimeout(r, 100));
  };
  for (let i = 0; i < WARMUP; i++) {
    if (pool > 0 || reserved > 0) await poolFull(pool);
    await provision(`${label}_warmup_${i}`);
    await floor(`floor_${label}_warmup_${i}`);
  }
  const apiMs: number[] = [];
  const polledMs: number[] = [];
  const floorMs: number[] = [];
  const floorCreateDbMs: number[] = [];
  stages.length = 0;
  measured.length = 0;
  for (let i = 0; i < N; i++) {
    if (pool > 0 || reserved > 0) await poolFull(pool);
    apiMs.push(await provision(`${label}_${i}`));
    const f = await floor(`floor_${label}_${i}`);
    floorMs.push(f.ms);
    floorCreateDbMs.push(f.createDb);
    if (pool > 0 || reserved > 0) await poolFull(pool);
    polledMs.push(await provisionPolled(`${label}_p_${i}`));
  }
  const jobs = await db.query<{ ms: number; probe: number; steps: Record<string, number> | null }>(
    `SELECT extract(epoch FROM finished_at - created_at) * 1000 AS ms, (result->>'pooler_probe_ms')::float AS probe,
              result->'steps_ms' AS steps
         FROM jobs WHERE kind = 'database.create' AND payload->>'database_id' = ANY($1::text[])`,
    [measured],
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
    `\n${label} path (warm pool ${pool}, reserved ${reserved}), ${N} databases; load average ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(' ')}`,
  );
  console.log(`  agent steps (median ms): ${JSON.stringify(steps)}`);
  const stageMedians = Object.fromEntries(
    Object.keys(stages[0] ?? {}).map((k) => [
      k,
      Math.round(summarize(stages.map((st) => st[k] ?? 0)).median * 10) / 10,
    ]),
  );
  console.log(`  stages of the waiting create (median ms): ${JSON.stringify(stageMedians)}`);
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
    stages: stageMedians,
    ratio: a.median / f.median,
    ratio_polled: polled.median / f.median,
  };
}
const loadBefore = os.loadavg();
try {
  const reserved = PHASES.includes('reserved') ? await phase('reserved', POOL, RESERVED) : null;
  const warm = PHASES.includes('warm') ? await phase('warm', POOL) : null;
  const cold = PHASES.includes('cold') ? await phase('cold', 0) : null;
  console.log(
    JSON.stringify({
      bench: 'provision-latency',
      databases: N,
      topology: 'bulwark up (server, agent, PostgreSQL, PgBouncer: separate processes)',
      load_before: loadBefore,
      load_after: os.loadavg(),
      reserved,
      warm,
      cold,
    }),
  );
} catch (err) {
  console.error('bench failed:', err);
  process.exitCode = 1;
}
