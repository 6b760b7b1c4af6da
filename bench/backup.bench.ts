/**
 * Backup and restore throughput (issue 15), on one database of realistic rows, in one run:
 *   - our whole backup pipeline (`backup.create`: pg_dump -Fc -Z0 as the steward, SHA-256 and
 *     exact rows per table read from the stream, zstd, AES-256-GCM chunks, fsync and rename, the
 *     full read-back authenticated) against `pg_dump -Fc` with its default compression to a file —
 *     throughput (database bytes / s) and archive size; and the floor of any single-stream
 *     pipeline: `pg_dump -Fc -Z0` to /dev/null, and through the zstd program;
 *   - restore (`backup.drill`: authenticate the whole archive while the scratch database is made,
 *     table of contents, decrypt + zstd + `pg_restore --single-transaction` with the checksum
 *     checked before the last piece, the checks, drop) against what the stock tools need for the
 *     same: CREATE DATABASE, `pg_restore --single-transaction` of the -Fc file, the same exact row
 *     counts, DROP DATABASE.
 * Runs alternate (ours, theirs, ours, …) so that both see the same load on a shared host; the
 * load average is printed at start and end.
 *
 *   node bench/backup.bench.ts [size_mb=300] [runs=3]
 */
import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { closeSync, createWriteStream, existsSync, openSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { connectForTools, stewardLogin } from '../src/agent/backups/backup-deps.ts';
import { backupHandlers } from '../src/agent/backups/backup-handlers.ts';
import { countRows } from '../src/agent/backups/backup-manifest.ts';
import { createLocalStorage } from '../src/agent/backups/backup-storage.ts';
import { findPgBin, startTool } from '../src/agent/backups/pg-tools.ts';
import type { BackupCreateResult } from '../src/shared/contracts/backups.ts';
import { DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import { quoteIdent, roleNames } from '../src/shared/identifiers.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import { median, round, startPoolerBenchKit } from './pooler-kit.ts';

const SIZE_MB = Number(process.argv[2] ?? 300);
const RUNS = Number(process.argv[3] ?? 3);
const pgBin = findPgBin(process.env.BULWARK_AGENT_PG_BIN);
if (!pgBin) throw new Error('pg_dump not found');

const load = () =>
  os
    .loadavg()
    .map((x) => round(x, 2))
    .join(' ');
const loadAtStart = load();
/** The agent's own CPU (this process: hashing, zstd in the thread pool, AES, parsing), in ms. */
const cpuMs = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1000;
const kit = await startPoolerBenchKit();
const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'bench-backup-'));
try {
  const deps = {
    pooler: kit.pooler,
    poolerHost: '127.0.0.1',
    poolerPort: kit.ports.pooler,
    cluster: { pgHost: '127.0.0.1', pgPort: kit.ports.postgres, key: randomBytes(32) },
    storage: createLocalStorage(dir),
    pgBin,
    // Where a backup's time goes: the moment each step starts.
    onStep: (kind: string, step: string) => {
      if (kind === 'backup.create' || kind === 'backup.drill') marks.push([step, performance.now()]);
    },
  };
  const marks: [string, number][] = [];
  const phases: Record<string, number[]> = {};
  const restorePhases: Record<string, number[]> = {};
  const record = (into: Record<string, number[]>, end: number) =>
    marks.forEach(([step, at], j) => {
      const list = into[step] ?? [];
      list.push((marks[j + 1]?.[1] ?? end) - at);
      into[step] = list;
    });
  const { databaseHandlers } = await import('../src/agent/jobs/database-handlers.ts');
  const create = new Map(databaseHandlers(deps)).get('database.create')!;
  const jobs = new Map(backupHandlers(deps));
  const name = `bench_${randomBytes(4).toString('hex')}`;
  const id = randomUUID();
  const password = randomBytes(24).toString('base64url');
  const roles = roleNames(name);
  await create(
    {
      database_id: id,
      name,
      verifier: scramVerifier(password),
      allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
      limits: DEFAULT_LIMITS,
    },
    kit.ctx(password),
  );

  // Realistic rows: customers, orders with text, numbers, timestamps and jsonb, events; indexes.
  const { default: pg } = await import('pg');
  const owner = new pg.Client({
    host: '127.0.0.1',
    port: kit.ports.postgres,
    database: name,
    user: roles.owner,
    password,
  });
  await owner.connect();
  const t0 = performance.now();
  await owner.query(`
    SET statement_timeout = 0;
    CREATE TABLE customers (id bigserial PRIMARY KEY, email text NOT NULL, name text NOT NULL,
                            country text NOT NULL, created_at timestamptz NOT NULL);
    CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint NOT NULL, status text NOT NULL,
                         total numeric(12,2) NOT NULL, items jsonb NOT NULL, note text, created_at timestamptz NOT NULL);
    CREATE TABLE events (id bigserial PRIMARY KEY, order_id bigint, kind text NOT NULL, payload jsonb,
                         at timestamptz NOT NULL);`);
  const rowsPerMb = 5_100;
  const batches = Math.max(1, Math.round(SIZE_MB / 10));
  const per = Math.round((SIZE_MB * rowsPerMb) / batches);
  for (let b = 0; b < batches; b++) {
    await owner.query(
      `INSERT INTO customers (email, name, country, created_at)
         SELECT 'user' || g || '@example.' || (ARRAY['com','org','net','io'])[1 + g % 4],
                initcap(md5(g::text)), (ARRAY['DE','FR','US','JP','BR','IN'])[1 + g % 6],
                timestamptz '2020-01-01' + (g % 100000) * interval '17 minutes'
           FROM generate_series($1::bigint, $1::bigint + $2 / 10) g`,
      [b * per, per],
    );
    await owner.query(
      `INSERT INTO orders (customer_id, status, total, items, note, created_at)
         SELECT 1 + g % 100000, (ARRAY['new','paid','shipped','returned'])[1 + g % 4], (g % 100000) / 7.0,
                jsonb_build_array(jsonb_build_object('sku', 'SKU-' || (g % 5000), 'qty', 1 + g % 5,
                                                     'price', (g % 997) / 3.0)),
                CASE WHEN g % 3 = 0 THEN 'please deliver to the back door, ring twice ' || md5(g::text) END,
                timestamptz '2021-01-01' + g * interval '3 seconds'
           FROM generate_series($1::bigint, $1::bigint + $2 / 2) g`,
      [b * per, per],
    );
    await owner.query(
      `INSERT INTO events (order_id, kind, payload, at)
         SELECT g, (ARRAY['created','paid','packed','shipped','delivered'])[1 + g % 5],
                jsonb_build_object('by', 'svc-' || (g % 12), 'ip', '10.0.' || (g % 255) || '.' || (g % 251)),
                timestamptz '2021-01-01' + g * interval '2 seconds'
           FROM generate_series($1::bigint, $1::bigint + $2 / 2) g`,
      [b * per, per],
    );
  }
  await owner.query(
    'CREATE INDEX ON orders (customer_id); CREATE INDEX ON events (order_id); CREATE INDEX ON customers (email); ANALYZE',
  );
  const size = Number(
    (await owner.query<{ s: string }>('SELECT pg_database_size(current_database())::text AS s')).rows[0]!.s,
  );
  await owner.end();
  process.stdout.write(
    `database ${round(size / 1048576)} MB on disk (filled in ${round((performance.now() - t0) / 1000)} s)\n`,
  );

  const login = stewardLogin(deps.cluster, { databaseId: id, steward: roles.steward }, name);
  const plainFile = path.join(dir, 'plain.dump');
  const theirsDump = async () => {
    const t = performance.now();
    const dump = startTool(pgBin, 'pg_dump', ['--format=custom', '--exclude-schema=bulwark_guard'], login);
    await Promise.all([pipeline(dump.child.stdout!, createWriteStream(plainFile)), dump.exited]);
    return { ms: performance.now() - t, bytes: (await fs.stat(plainFile)).size };
  };
  // The floor of any single-stream pipeline: pg_dump -Fc -Z0 itself, its output thrown away
  // (no pipe to read), then through the zstd program at level 1 (when installed).
  const zstdBin = ['/usr/bin/zstd', '/usr/local/bin/zstd'].find((f) => existsSync(f));
  const floorDump = async (viaZstd: boolean) => {
    const t = performance.now();
    const devnull = openSync('/dev/null', 'w');
    try {
      const args = [
        '--format=custom',
        '--compress=0',
        '--exclude-schema=bulwark_guard',
        '--no-subscriptions',
      ];
      if (!viaZstd) {
        const dump = startTool(pgBin, 'pg_dump', [...args, '--no-sync', '--file=/dev/null'], login);
        await dump.exited;
      } else {
        const dump = startTool(pgBin, 'pg_dump', args, login);
        const z = spawn(zstdBin!, ['-1', '-q', '-c'], { stdio: ['pipe', devnull, 'ignore'] });
        dump.child.stdout!.pipe(z.stdin!);
        await Promise.all([dump.exited, new Promise((r) => z.once('close', r))]);
      }
    } finally {
      closeSync(devnull);
    }
    return performance.now() - t;
  };
  const floor: number[] = [];
  const floorZstd: number[] = [];
  const ours: { ms: number; bytes: number; result: BackupCreateResult; id: string; key: Buffer }[] = [];
  const oursCpu: number[] = [];
  const theirs: { ms: number; bytes: number }[] = [];
  for (let i = 0; i < RUNS; i++) {
    const bid = randomUUID();
    const key = randomBytes(32);
    marks.length = 0;
    const t = performance.now();
    const cpu = process.cpuUsage();
    const result = (await jobs.get('backup.create')!(
      { backup_id: bid, database_id: id, name },
      { ...kit.ctx(), backupKey: async () => key },
    )) as BackupCreateResult;
    ours.push({ ms: performance.now() - t, bytes: result.size_bytes, result, id: bid, key });
    oursCpu.push(cpuMs(process.cpuUsage(cpu)));
    record(phases, performance.now());
    theirs.push(await theirsDump());
    floor.push(await floorDump(false));
    if (zstdBin) floorZstd.push(await floorDump(true));
  }

  // Restores: ours (drill) against pg_restore of the -Fc file into an empty database.
  const oursRestore: number[] = [];
  const oursRestoreCpu: number[] = [];
  const theirsRestore: number[] = [];
  const plainAlone: number[] = [];
  const last = ours.at(-1)!;
  const expected = {
    sha256: last.result.sha256,
    tables: last.result.tables,
    tables_total: last.result.tables_total,
    objects: last.result.objects,
  };
  for (let i = 0; i < RUNS; i++) {
    marks.length = 0;
    const t = performance.now();
    const cpu = process.cpuUsage();
    await jobs.get('backup.drill')!(
      { backup_id: last.id, database_id: id, name, expected },
      { ...kit.ctx(), backupKey: async () => last.key },
    );
    oursRestore.push(performance.now() - t);
    oursRestoreCpu.push(cpuMs(process.cpuUsage(cpu)));
    record(restorePhases, performance.now());

    // Plain: what a restore with the stock tools needs too — an empty database made, pg_restore,
    // the same exact row counts of the same tables (ours checks them), the database dropped.
    const target = `bench_plain_${i}`;
    const t2 = performance.now();
    // Owned by the tenant's owner (schema public is then its to create in), from template0.
    await kit.admin.query(
      `CREATE DATABASE ${quoteIdent(target)} OWNER ${quoteIdent(roles.owner)} TEMPLATE template0`,
    );
    const t3 = performance.now();
    const restore = startTool(
      pgBin,
      'pg_restore',
      [
        '--single-transaction',
        '--exit-on-error',
        '--no-owner',
        // The tenant's default privileges name the migrator, which the owner cannot act for.
        '--no-privileges',
        `--role=${roles.owner}`,
        `--dbname=${target}`,
        plainFile,
      ],
      { ...login, database: target },
    );
    await restore.exited.catch((err: Error) => process.stdout.write(`plain pg_restore: ${err.message}\n`));
    plainAlone.push(performance.now() - t3);
    const counter = await connectForTools(deps.cluster, { ...login, database: target });
    await countRows(counter, expected.tables);
    await counter.end();
    await kit.admin.query(`DROP DATABASE ${quoteIdent(target)} WITH (FORCE)`);
    theirsRestore.push(performance.now() - t2);
  }

  const mbps = (ms: number) => round(size / 1048576 / (ms / 1000));
  const oMs = median(ours.map((o) => o.ms));
  const tMs = median(theirs.map((o) => o.ms));
  const fMs = median(floor);
  const steps = (p: Record<string, number[]>) =>
    Object.entries(p)
      .map(([k, v]) => `${k} ${round(median(v))}`)
      .join(', ');
  const oR = median(oursRestore);
  const tR = median(theirsRestore);
  process.stdout.write(
    [
      `load average (1, 5, 15 min) at start ${loadAtStart}, at end ${load()}`,
      `backup, ${RUNS} runs each (median):`,
      `  ours (dump, SHA-256 + rows from the stream, zstd, encrypt, fsync, read-back authenticated): ${round(oMs / 1000, 2)} s = ${mbps(oMs)} MB/s, archive ${round(ours.at(-1)!.bytes / 1048576)} MB`,
      `  pg_dump -Fc (default compression):                                   ${round(tMs / 1000, 2)} s = ${mbps(tMs)} MB/s, archive ${round(theirs.at(-1)!.bytes / 1048576)} MB`,
      `  floor: pg_dump -Fc -Z0 > /dev/null ${round(fMs / 1000, 2)} s = ${mbps(fMs)} MB/s` +
        (floorZstd.length
          ? `; pg_dump -Fc -Z0 | zstd -1 > /dev/null ${round(median(floorZstd) / 1000, 2)} s = ${mbps(median(floorZstd))} MB/s`
          : '; (no zstd program)'),
      `  throughput ratio ours/pg_dump -Fc: ${round(tMs / oMs, 2)}× (the floor's: ${round(tMs / fMs, 2)}×); size ratio: ${round(ours.at(-1)!.bytes / theirs.at(-1)!.bytes, 2)}`,
      `  our steps (median ms): ${steps(phases)}; the agent's own CPU ${round(median(oursCpu))} ms`,
      `restore, ${RUNS} runs each (median):`,
      `  ours (drill: authenticate, target made meanwhile, list, decrypt+zstd+pg_restore, checks, drop): ${round(oR / 1000, 2)} s`,
      `  plain (CREATE DATABASE, pg_restore of the -Fc file, exact row counts, DROP):           ${round(tR / 1000, 2)} s (pg_restore alone ${round(median(plainAlone) / 1000, 2)} s)`,
      `  ratio ours/plain: ${round(oR / tR, 2)}×`,
      `  our steps (median ms): ${steps(restorePhases)}; the agent's own CPU ${round(median(oursRestoreCpu))} ms`,
      `  the restore steps alone (list + decrypt+zstd+pg_restore) / pg_restore alone: ${round((median(restorePhases.list ?? [0]) + median(restorePhases.restore ?? [])) / median(plainAlone), 2)}×`,
      `  all runs (s): ours backup ${ours.map((o) => round(o.ms / 1000, 2)).join(', ')}; pg_dump ${theirs.map((o) => round(o.ms / 1000, 2)).join(', ')}; floor ${floor.map((x) => round(x / 1000, 2)).join(', ')}; ours restore ${oursRestore.map((x) => round(x / 1000, 2)).join(', ')}; plain ${theirsRestore.map((x) => round(x / 1000, 2)).join(', ')}`,
      '',
    ].join('\n'),
  );
} finally {
  await kit.stop();
  await fs.rm(dir, { recursive: true, force: true });
}
