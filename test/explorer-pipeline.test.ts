import assert from 'node:assert/strict';
import net from 'node:net';
import { after, before, test } from 'node:test';
import type pg from 'pg';
import { type ExplorerExecutor, GUARD_ASSERT } from '../src/agent/explorer/explorer-executor.ts';
import type { ExplorerOutcome, QueryPayload } from '../src/shared/contracts/explorer-channel.ts';
import { loadExplorerParser } from '../src/shared/sql/explorer-validator.ts';
import { waitForRunningStatement } from './helpers/db.ts';
import { testEnv } from './helpers/env.ts';
import {
  adminPool,
  assertSessionClean,
  connectAdmin,
  createTenant,
  queryPayload,
  setupCanary,
  type Tenant,
  testExecutor,
} from './helpers/explorer.ts';

// The explorer executor's pipeline (ADR 0008 point 4): BEGIN, limits, guard assert, DECLARE and
// the first FETCH in one write; a failed guard stops the user's statement inside PostgreSQL.
let admin: pg.Pool;
let t: Tenant;
let relay: Relay;
let ex: ExplorerExecutor;

/** The gate switched off: what the run-time layers do on their own. */
const noGate = {
  validate: () => ({ ok: true as const, kind: 'select' as const, redacted: '' }),
};

/**
 * A TCP relay in front of PostgreSQL counting round trips: client bytes that follow an answer
 * of the server (or open the connection) start a new one.
 */
type Relay = { port: number; trips: number; close(): Promise<void> };
async function startRelay(host: string, port: number): Promise<Relay> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const upstream = net.connect(port, host);
    let answered = true;
    for (const s of [client, upstream]) {
      s.setNoDelay(true);
      sockets.add(s);
      s.on('error', () => {});
      s.on('close', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    client.on('data', (d) => {
      if (answered) relayState.trips++;
      answered = false;
      upstream.write(d);
    });
    upstream.on('data', (d) => {
      answered = true;
      client.write(d);
    });
  });
  await new Promise<void>((res) => server.listen(0, '127.0.0.1', res));
  const relayState: Relay = {
    port: (server.address() as net.AddressInfo).port,
    trips: 0,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((res) => server.close(res));
    },
  };
  return relayState;
}

before(async () => {
  await loadExplorerParser();
  admin = adminPool();
  t = await createTenant(admin, 'exl');
  await setupCanary(t);
  const u = new URL(testEnv().adminUrl);
  relay = await startRelay(u.hostname, Number(u.port));
  ex = testExecutor(admin, { maxConnections: 1, pgHost: '127.0.0.1', pgPort: relay.port });
});

after(async () => {
  await ex?.close();
  await relay?.close();
  await t?.drop();
  await admin?.end();
});

const payload = (sql: string, over: Partial<QueryPayload> = {}): QueryPayload => queryPayload(t, sql, over);

const run = (e: ExplorerExecutor, sql: string, over: Partial<QueryPayload> = {}): Promise<ExplorerOutcome> =>
  e.runQuery(payload(sql, over), new AbortController().signal);

test('50 rows come back with the right columns, types and values', async () => {
  const out = await run(
    ex,
    "select g as n, 'row ' || g as label, g % 2 = 0 as even, g * 1.5 as x from generate_series(1, 50) g",
  );
  assert.ok(out.kind === 'rows', JSON.stringify(out));
  assert.deepEqual(out.output.columns, [
    { name: 'n', type: 'integer' },
    { name: 'label', type: 'text' },
    { name: 'even', type: 'boolean' },
    { name: 'x', type: 'numeric' },
  ]);
  const want = Array.from({ length: 50 }, (_, i) => [
    i + 1,
    `row ${i + 1}`,
    (i + 1) % 2 === 0,
    ((i + 1) * 1.5).toFixed(1),
  ]);
  assert.deepEqual(out.output.rows, want);
  assert.equal(out.output.truncated, false);
  await assertSessionClean(ex, t, '50 rows');
});

test('round trips: one for a result of any length, two for EXPLAIN, one for the reset', async () => {
  // Warm: the connection is logged in and the column types (int, text) are cached.
  await run(ex, 'select id, secret from canary order by id');
  await ex.settled();
  const trips = async (sql: string) => {
    relay.trips = 0;
    const out = await run(ex, sql);
    const onPath = relay.trips;
    await ex.settled();
    return { out, onPath, reset: relay.trips - onPath };
  };
  const short = await trips('select id, secret from canary where id <= 2 order by id');
  assert.ok(short.out.kind === 'rows' && short.out.output.row_count === 2, JSON.stringify(short.out));
  assert.deepEqual([short.onPath, short.reset], [1, 1]);
  const seven = await trips("select g, 'x' || g from generate_series(1, 7) g");
  assert.ok(seven.out.kind === 'rows' && seven.out.output.row_count === 7);
  assert.equal(seven.onPath, 1);
  // No cursor: the whole result (up to the row cap + 1) comes back in the same round trip.
  const fifty = await trips("select g, 'x' || g from generate_series(1, 50) g");
  assert.ok(fifty.out.kind === 'rows' && fifty.out.output.row_count === 50);
  assert.equal(fifty.onPath, 1);
  // EXPLAIN cannot be wrapped, so it is sent only once the guarded transaction stands.
  const plan = await trips('explain select * from canary');
  assert.ok(plan.out.kind === 'rows' && plan.out.output.row_count >= 1, JSON.stringify(plan.out));
  assert.equal(plan.onPath, 2);
  await assertSessionClean(ex, t, 'round trips');
});

test('the guard assert raises inside PostgreSQL when any rail does not hold', async () => {
  const c = await connectAdmin(t.name);
  try {
    const role = (await c.query<{ u: string }>('SELECT current_user::text AS u')).rows[0]!.u;
    const limits = `SELECT set_config('statement_timeout', '300', true), set_config('lock_timeout', '300', true),
      set_config('idle_in_transaction_session_timeout', '5300', true),
      set_config('search_path', 'public', true), set_config('standard_conforming_strings', 'on', true)`;
    const guard = async (begin: string, extra: string | null, params: string[]) => {
      await c.query(begin);
      try {
        await c.query(limits);
        if (extra) await c.query(extra);
        return (await c.query({ text: GUARD_ASSERT, values: params, rowMode: 'array' })).rows[0]?.[0];
      } catch (err) {
        return (err as { code?: string }).code;
      } finally {
        await c.query('ROLLBACK');
      }
    };
    const ok = [role, '300', '300', '5300'];
    assert.equal(await guard('BEGIN READ ONLY', null, ok), 1);
    const broken: [string, string, string | null, string[]][] = [
      ['read write', 'BEGIN', null, ok],
      ['another role', 'BEGIN READ ONLY', null, ['someone_else', '300', '300', '5300']],
      ['search_path', 'BEGIN READ ONLY', "SELECT set_config('search_path', 'public, pg_temp', true)", ok],
      ['strings', 'BEGIN READ ONLY', "SELECT set_config('standard_conforming_strings', 'off', true)", ok],
      ['encoding', 'BEGIN READ ONLY', "SELECT set_config('client_encoding', 'LATIN1', true)", ok],
      ['statement timeout', 'BEGIN READ ONLY', null, [role, '301', '300', '5300']],
      ['lock timeout', 'BEGIN READ ONLY', "SELECT set_config('lock_timeout', '0', true)", ok],
    ];
    for (const [label, begin, extra, params] of broken) {
      assert.equal(await guard(begin, extra, params), '22P02', label);
    }
  } finally {
    await c.end();
  }
});

test('a failed guard stops the statement inside PostgreSQL: the table is never scanned', async () => {
  const probe = await createTenant(admin, 'exg');
  try {
    await probe.asOwner('CREATE TABLE probe (x int); INSERT INTO probe VALUES (1)');
    // Refused by the gate; would take a lock and scan `probe` if it ran.
    const sql = 'select pg_advisory_lock(77), x from probe';
    const scans = async () => {
      // Backends flush their statistics when they exit: wait for every explorer backend to go.
      for (let i = 0; ; i++) {
        const r = await admin.query(
          'SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = $1 AND usename = $2',
          [probe.name, probe.roles.explorer],
        );
        if (r.rows[0].n === 0) break;
        assert.ok(i < 250, 'explorer backends did not exit');
        await new Promise((res) => setTimeout(res, 20));
      }
      const r = await probe.asAdmin(
        "SELECT seq_scan::int AS n FROM pg_stat_user_tables WHERE relname = 'probe'",
      );
      return r.rows[0].n as number;
    };
    const before = await scans();
    // The measure works: the statement, run, scans the table once.
    const control = testExecutor(admin, { maxConnections: 1, ...noGate });
    const ran = await control.runQuery(
      { ...payload(sql), database_id: probe.id, name: probe.name },
      new AbortController().signal,
    );
    assert.ok(ran.kind === 'rows' && ran.output.row_count === 1, JSON.stringify(ran));
    await control.close();
    assert.equal(await scans(), before + 1);
    // Same pooled login, but the guard expects another role (the payload names another database).
    const guarded = testExecutor(admin, { maxConnections: 1, ...noGate });
    const p = { ...payload('select 1'), database_id: probe.id, name: probe.name };
    assert.equal((await guarded.runQuery(p, new AbortController().signal)).kind, 'rows');
    const refused = await guarded
      .runQuery({ ...p, sql, name: `${probe.name}x` }, new AbortController().signal)
      .catch((err: Error) => err);
    await guarded.settled();
    await assertSessionClean(guarded, probe, 'failed guard');
    await guarded.close();
    assert.equal(await scans(), before + 1, 'the statement ran although the guard failed');
    assert.match(
      String(refused instanceof Error ? refused.message : JSON.stringify(refused)),
      /guard rails did not hold/,
    );
  } finally {
    await probe.drop();
  }
});

test('user SQL errors keep their SQLSTATE and 0-based position, wherever they happen', async () => {
  const parse = await run(ex, 'select id, nosuch from canary');
  assert.ok(parse.kind === 'error', JSON.stringify(parse));
  assert.equal(parse.error.sqlstate, '42703');
  assert.equal(parse.error.position, 'select id, '.length);
  const raw = testExecutor(admin, { maxConnections: 1, ...noGate });
  const syntax = await run(raw, 'select id fro canary');
  await raw.close();
  assert.ok(syntax.kind === 'error' && syntax.error.sqlstate === '42601', JSON.stringify(syntax));
  assert.equal(syntax.error.position, 'select id fro '.length);
  // In the first (pipelined) FETCH, and in a later one.
  const first = await run(ex, 'select 1 / (id - 2) from canary order by id');
  assert.ok(first.kind === 'error' && first.error.sqlstate === '22012', JSON.stringify(first));
  const later = await run(ex, 'select 1 / (g - 20) from generate_series(1, 50) g');
  assert.ok(later.kind === 'error' && later.error.sqlstate === '22012', JSON.stringify(later));
  const explain = await run(ex, 'explain select nosuch from canary');
  assert.ok(explain.kind === 'error' && explain.error.sqlstate === '42703', JSON.stringify(explain));
  assert.equal(explain.error.position, 'explain select '.length);
  await assertSessionClean(ex, t, 'errors');
  const again = await run(ex, 'select count(*) from canary');
  assert.ok(again.kind === 'rows' && again.output.rows[0]?.[0] === 3);
});

test('an abort cancels the running statement on the backend', async () => {
  const controller = new AbortController();
  const t0 = performance.now();
  const pending = ex.runQuery(
    payload('select count(*) from generate_series(1, 1e10) as aborted_by_signal', {
      statement_timeout_ms: 10_000,
    }),
    controller.signal,
  );
  await waitForRunningStatement(t.name, { user: t.roles.explorer, text: 'aborted_by_signal' });
  controller.abort();
  const out = await pending;
  assert.ok(out.kind === 'error' && out.error.sqlstate === '57014', JSON.stringify(out));
  assert.ok(performance.now() - t0 < 3_000);
  await assertSessionClean(ex, t, 'cancelled');
});

test('a cancelled connection is closed, not reused: a late cancel cannot reach the next query', async () => {
  const noGateExecutor = testExecutor(admin, { maxConnections: 1, ...noGate });
  const pid = async () => {
    const out = await noGateExecutor.runQuery(
      payload('select pg_backend_pid()'),
      new AbortController().signal,
    );
    assert.ok(out.kind === 'rows', JSON.stringify(out));
    return out.output.rows[0]?.[0];
  };
  const before = await pid();
  await noGateExecutor.settled();
  assert.equal(await pid(), before, 'an uncancelled connection is reused');
  await noGateExecutor.settled();
  const controller = new AbortController();
  const pending = noGateExecutor.runQuery(
    payload('select count(*) from generate_series(1, 1e10) as cancelled_then_closed', {
      statement_timeout_ms: 10_000,
    }),
    controller.signal,
  );
  await waitForRunningStatement(t.name, { user: t.roles.explorer, text: 'cancelled_then_closed' });
  controller.abort();
  assert.ok((await pending).kind === 'error');
  await noGateExecutor.settled();
  const next = await pid();
  await noGateExecutor.close();
  assert.ok(next !== undefined && next !== before, `the cancelled backend ${before} was reused`);
});

test('concurrent first queries of a database share one preparation of its explorer role', async () => {
  const fresh = testExecutor(admin);
  try {
    const outs = await Promise.all(
      Array.from({ length: 6 }, (_, i) =>
        fresh.runQuery(payload(`select ${i} as n`), new AbortController().signal),
      ),
    );
    outs.forEach((out, i) => {
      assert.ok(out.kind === 'rows', JSON.stringify(out));
      assert.equal(out.output.rows[0]?.[0], i);
    });
  } finally {
    await fresh.close();
  }
});
