/**
 * Audit append rate under 16 concurrent writers, each committing its own transaction with one
 * event (recordAudit), while the real chainer (leader election, NOTIFY wake-up, batches) chains
 * them. Reports events/s committed, chain lag (chained_at − occurred_at: time from the writer's
 * call to the row being in the chain), and verifies the result. Baseline in the same run: the
 * same 16 writers doing their own one-row INSERT transaction into an unchained scratch table
 * (the commit-rate floor), the same event row inserted into an identical table that is never
 * chained (what the chaining itself costs), and the old design — a head row locked per event.
 *
 *   node bench/audit-append.bench.ts [seconds=3] [writers=16] [durable|nofsync]
 *
 * Three interleaved rounds of (chained, floor, locked head); medians reported.
 *
 * `nofsync` runs PostgreSQL with fsync off (the test cluster's settings): the design's own ceiling,
 * with the disk's flush latency taken out. The default is a durable cluster, as in production.
 */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { startDataPlane } from '../src/embedded/data-plane.ts';
import { dataLayout } from '../src/embedded/layout.ts';
import { resolveServiceUser } from '../src/embedded/service-user.ts';
import { migrate } from '../src/server/db/migrate.ts';
import { withTx } from '../src/server/db/pool.ts';
import { createAuditChainer } from '../src/server/modules/audit/audit.chainer.ts';
import { createCheckpointer, keyMap } from '../src/server/modules/audit/audit.checkpoints.ts';
import { verifyDatabase } from '../src/server/modules/audit/audit.export.ts';
import { AUDIT_INSERT_COLUMNS, auditInsertParams } from '../src/server/modules/audit/audit.repo.ts';
import { createAuditService, normalizeAuditEvent } from '../src/server/modules/audit/audit.service.ts';
import { nextEntry } from '../src/server/modules/audit/audit-chain.ts';
import { createLogger } from '../src/shared/logger.ts';
import { loadExplorerParser } from '../src/shared/sql/explorer-validator.ts';
import { freePort } from '../test/helpers/ports.ts';
import { summarize } from './stats.ts';

const SECONDS = Number(process.argv[2] ?? 3);
const WRITERS = Number(process.argv[3] ?? 16);
const NO_FSYNC = process.argv[4] === 'nofsync';
const ROUNDS = 3;
const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'bench-audit-'));
const layout = dataLayout(dir);
const dp = await startDataPlane({
  layout,
  ports: { postgres: await freePort(), pooler: await freePort() },
  user: resolveServiceUser(),
  unsafeFast: NO_FSYNC,
  log: () => {},
});
const log = createLogger('bench', 'silent');
const db = new pg.Pool({ connectionString: dp.controlUrl, max: WRITERS + 4 });
db.on('error', () => {});
await loadExplorerParser();

const event = (w: number, i: number) => ({
  action: 'database.credentials_revealed',
  actorType: 'key' as const,
  actorId: `key_${w}`,
  accountId: '00000000-0000-4000-8000-000000000001',
  targetType: 'database',
  targetId: `db_${i % 100}`,
  sourceIp: `10.0.${w}.${i % 256}`,
  requestId: `req-${w}-${i}`,
  details: { via: 'api', rows: i % 1000 },
});

/** Runs `op` from WRITERS concurrent loops for SECONDS; returns ops/s. */
async function drive(op: (w: number, i: number) => Promise<void>): Promise<{ n: number; perS: number }> {
  const until = Date.now() + SECONDS * 1000;
  let n = 0;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: WRITERS }, async (_, w) => {
      for (let i = 0; Date.now() < until; i++) {
        await op(w, i);
        n++;
      }
    }),
  );
  return { n, perS: n / ((performance.now() - t0) / 1000) };
}

try {
  await migrate(db);
  const checkpointer = createCheckpointer({ db, log, dataDir: layout.server });
  const audit = createAuditService({ db });
  const chainer = createAuditChainer({
    databaseUrl: dp.controlUrl,
    db,
    log,
    audit,
    checkpointer,
    checkpointIntervalMs: 3_600_000,
    retentionDays: 365,
  });
  for (let i = 0; i < 100 && !chainer.isLeader(); i++) await new Promise((r) => setTimeout(r, 20));

  await db.query('CREATE TABLE IF NOT EXISTS bench_floor (id bigserial PRIMARY KEY, body text)');
  await db.query(`CREATE TABLE IF NOT EXISTS bench_locked (seq bigint PRIMARY KEY, canonical text, hash bytea);
                  CREATE TABLE IF NOT EXISTS bench_locked_head (id int PRIMARY KEY, seq bigint, hash bytea);
                  INSERT INTO bench_locked_head VALUES (1, 0, '\\x${'00'.repeat(32)}') ON CONFLICT DO NOTHING`);
  await db.query('CREATE TABLE IF NOT EXISTS bench_events (LIKE audit_events INCLUDING ALL)');
  const append = () => drive(async (w, i) => withTx(db, (tx) => audit.record(tx, event(w, i))));
  // Standalone events (refusals, reads, reveals): group-committed; each writer resumes only once
  // its own event is durable.
  const groupedRun = () => drive(async (w, i) => audit.recordNow(event(w, i)));
  // Baseline 1: the commit floor — one INSERT per transaction into an unchained, unindexed table.
  const floorRun = () =>
    drive(async (w, i) =>
      withTx(db, async (tx) => {
        await tx.query('INSERT INTO bench_floor (body) VALUES ($1)', [JSON.stringify(event(w, i))]);
      }),
    );
  // Baseline 3: the same event row (same table shape, indexes and checks), never chained.
  const unchainedRun = () =>
    drive(async (w, i) =>
      withTx(db, async (tx) => {
        const e = normalizeAuditEvent(event(w, i));
        await tx.query(
          `INSERT INTO bench_events (${AUDIT_INSERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
          auditInsertParams(e),
        );
      }),
    );
  // Baseline 2: the rejected design — every writer locks the head row and chains in its own tx.
  const lockedRun = () =>
    drive(async (w, i) =>
      withTx(db, async (tx) => {
        const h = (
          await tx.query<{ seq: number; hash: Buffer }>(
            'SELECT seq, hash FROM bench_locked_head WHERE id = 1 FOR UPDATE',
          )
        ).rows[0]!;
        const e = nextEntry(h, normalizeAuditEvent(event(w, i)));
        await tx.query('INSERT INTO bench_locked VALUES ($1, $2, $3)', [e.seq, e.canonical, e.hash]);
        await tx.query('UPDATE bench_locked_head SET seq = $1, hash = $2 WHERE id = 1', [e.seq, e.hash]);
      }),
    );

  await append(); // warm-up
  await chainer.flush();
  const mark = (await db.query<{ m: number }>('SELECT coalesce(max(id), 0) AS m FROM audit_events')).rows[0]!
    .m;
  // Interleaved rounds: the disk's flush latency drifts (shared machine), so compare within a round.
  const rates = {
    chained: [] as number[],
    grouped: [] as number[],
    unchained: [] as number[],
    floor: [] as number[],
    locked: [] as number[],
  };
  let events = 0;
  let drainMs = 0;
  for (let round = 0; round < ROUNDS; round++) {
    const c = await append();
    events += c.n;
    const t0 = Date.now();
    while (
      (await db.query('SELECT 1 FROM audit_events WHERE seq IS NULL LIMIT 1')).rowCount &&
      Date.now() - t0 < 30_000
    ) {
      await new Promise((r) => setTimeout(r, 5));
    }
    drainMs = Math.max(drainMs, Date.now() - t0);
    rates.chained.push(c.perS);
    rates.grouped.push((await groupedRun()).perS);
    rates.floor.push((await floorRun()).perS);
    rates.unchained.push((await unchainedRun()).perS);
    rates.locked.push((await lockedRun()).perS);
  }
  const lags = (
    await db.query<{ ms: number }>(
      'SELECT extract(epoch FROM chained_at - occurred_at) * 1000 AS ms FROM audit_events WHERE id > $1',
      [mark],
    )
  ).rows.map((r) => Number(r.ms));
  await chainer.close();

  const v0 = performance.now();
  const report = await verifyDatabase(db, keyMap(checkpointer.publicKeys()));
  const verifyS = (performance.now() - v0) / 1000;
  const med = (xs: number[]) => Math.round(summarize(xs).median);
  const chained = { n: events, perS: med(rates.chained) };
  const floor = { perS: med(rates.floor) };
  const locked = { perS: med(rates.locked) };
  const unchained = { perS: med(rates.unchained) };

  const lag = summarize(lags);
  const out = {
    writers: WRITERS,
    seconds: SECONDS,
    fsync: !NO_FSYNC,
    events: chained.n,
    append_per_s: Math.round(chained.perS),
    grouped_append_per_s: med(rates.grouped),
    rounds: rates,
    chain_lag_ms: { median: lag.median, p95: lag.p95, p99: lag.p99, max: lag.max },
    drain_after_stop_ms: drainMs,
    verify: { ok: report.ok, events: report.events, per_s: Math.round(report.events / verifyS) },
    baseline_commit_floor_per_s: Math.round(floor.perS),
    baseline_unchained_event_insert_per_s: unchained.perS,
    baseline_locked_head_per_s: Math.round(locked.perS),
  };
  console.log(
    `append ${out.append_per_s}/s in the writers' own transactions, ${out.grouped_append_per_s}/s group-committed, with ${WRITERS} writers (commit floor ${out.baseline_commit_floor_per_s}/s, ` +
      `same event row unchained ${unchained.perS}/s, ` +
      `locked head ${out.baseline_locked_head_per_s}/s); chain lag median ${lag.median.toFixed(1)} ms, ` +
      `p99 ${lag.p99.toFixed(1)} ms; verify ${report.ok ? 'ok' : 'BROKEN'} ${out.verify.per_s}/s from the DB`,
  );
  console.log(JSON.stringify(out));
} finally {
  await db.end();
  await dp.stop();
  await fs.rm(dir, { recursive: true, force: true });
}
