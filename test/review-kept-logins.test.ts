import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type pg from 'pg';
import type { ExecutionExecutor } from '../src/agent/execution/executor.ts';
import type { ExecutionOutcome } from '../src/shared/contracts/execution.ts';
import { loadExplorerParser } from '../src/shared/sql/explorer-validator.ts';
import { createExecutionHarness, type RequestSpec, signedRequest } from './helpers/execution-agent.ts';
import { adminPool, createTenant, type Tenant } from './helpers/explorer.ts';

// Review of the executor's kept <db>_reader / <db>_migrator logins (commit 98acb34): state a
// tenant's function leaves on a kept session must not reach the next execution on it.
let admin: pg.Pool;
let t: Tenant;
let h: Awaited<ReturnType<typeof createExecutionHarness>>;
let ex: ExecutionExecutor;

before(async () => {
  await loadExplorerParser();
  admin = adminPool();
  t = await createTenant(admin, 'rk');
  h = await createExecutionHarness(admin);
  ex = await h.executor();
});

after(async () => {
  await ex?.close();
  await h?.close();
  await t?.drop();
  await admin?.end();
});

const run = (spec: RequestSpec, over: { lockMs?: number } = {}, signal = new AbortController().signal) => {
  const p = signedRequest(h.ring, t, spec);
  if (over.lockMs !== undefined) p.lock_timeout_ms = over.lockMs;
  return ex.execute(p, signal);
};
/**
 * The reset runs after the answer: wait (bounded) until every login of the tenant's execution roles
 * is idle with the reset's last check as its last statement, so the one given back last is the one
 * taken next — however loaded the machine.
 */
async function settle(): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    await new Promise((r) => setTimeout(r, 25));
    const r = await admin.query(
      `SELECT count(*)::int AS n FROM pg_stat_activity
        WHERE usename = ANY($1) AND pid <> pg_backend_pid()
          AND (state <> 'idle' OR query NOT LIKE '%pg_prepared_statements%')`,
      [[t.roles.reader, t.roles.migrator]],
    );
    if (r.rows[0].n === 0 || Date.now() > deadline) return;
  }
}

function firstRow(o: ExecutionOutcome): (string | null | boolean | number)[] {
  assert.equal(o.kind, 'executed', JSON.stringify(o));
  const row = o.kind === 'executed' ? o.result?.rows[0] : undefined;
  assert.ok(row, JSON.stringify(o));
  return row as (string | null)[];
}

describe('review: kept execution logins', () => {
  test('the PRNG seed a function set (setseed) does not reach the next execution', async () => {
    // What random() answers right after setseed(0.42), on a backend of our own.
    const c = await admin.connect();
    let expected: string;
    try {
      await c.query('SELECT setseed(0.42)');
      expected = String((await c.query('SELECT random()::text AS r')).rows[0].r);
    } finally {
      c.release(true);
    }
    await t.asOwner(`CREATE OR REPLACE FUNCTION public.seed_it() RETURNS int LANGUAGE sql AS
      $$ SELECT pg_catalog.setseed(0.42); SELECT pg_catalog.pg_backend_pid() $$`);
    for (const capability of ['migrator', 'reader'] as const) {
      const planted = firstRow(await run({ sql: 'SELECT public.seed_it()', approvedRows: 0, capability }));
      await settle();
      const [pid, r] = firstRow(
        await run({
          sql: 'SELECT pg_catalog.pg_backend_pid(), pg_catalog.random()::text',
          approvedRows: 0,
          capability,
        }),
      );
      assert.equal(String(pid), String(planted[0]), `${capability}: the kept login was reused`);
      assert.notEqual(
        r,
        expected,
        `${capability}: random() after the previous execution's setseed is predictable`,
      );
    }
  });

  test('a custom setting (placeholder GUC) set by a function does not reach the next execution', async () => {
    await t.asOwner(`CREATE OR REPLACE FUNCTION public.stash_guc() RETURNS int LANGUAGE sql AS
      $$ SELECT pg_catalog.set_config('app.secret', 'token-of-the-previous-requester', false);
         SELECT pg_catalog.pg_backend_pid() $$`);
    const planted = firstRow(await run({ sql: 'SELECT public.stash_guc()', approvedRows: 0 }));
    await settle();
    const [pid, v] = firstRow(
      await run({
        sql: `SELECT pg_catalog.pg_backend_pid(), pg_catalog.current_setting('app.secret', true)`,
        approvedRows: 0,
      }),
    );
    assert.equal(String(pid), String(planted[0]));
    assert.notEqual(v, 'token-of-the-previous-requester');
  });

  test('SET ROLE through set_config does not survive: current_user and the role setting', async () => {
    await t.asOwner(`CREATE OR REPLACE FUNCTION public.become_owner() RETURNS int LANGUAGE sql AS
      $$ SELECT pg_catalog.set_config('role', '${t.roles.owner}', false); SELECT pg_catalog.pg_backend_pid() $$`);
    const planted = await run({ sql: 'SELECT public.become_owner()', approvedRows: 0 });
    assert.equal(planted.kind, 'executed', JSON.stringify(planted));
    await settle();
    const [cur, sess, role] = firstRow(
      await run({
        sql: `SELECT current_user::text, session_user::text, pg_catalog.current_setting('role')`,
        approvedRows: 0,
      }),
    );
    assert.equal(cur, t.roles.migrator);
    assert.equal(sess, t.roles.migrator);
    assert.equal(role, 'none');
  });

  test("the previous request's statement and lock timeouts do not leak", async () => {
    await t.asOwner(`CREATE OR REPLACE FUNCTION public.no_timeouts() RETURNS int LANGUAGE sql AS
      $$ SELECT pg_catalog.set_config('statement_timeout', '0', false);
         SELECT pg_catalog.set_config('lock_timeout', '0', false);
         SELECT pg_catalog.set_config('idle_in_transaction_session_timeout', '0', false);
         SELECT pg_catalog.pg_backend_pid() $$`);
    const planted = firstRow(
      await run(
        { sql: 'SELECT public.no_timeouts()', approvedRows: 0, statementTimeoutMs: 4000 },
        { lockMs: 1500 },
      ),
    );
    await settle();
    const [pid, st, lt] = firstRow(
      await run(
        {
          sql: `SELECT pg_catalog.pg_backend_pid(), pg_catalog.current_setting('statement_timeout'),
                       pg_catalog.current_setting('lock_timeout')`,
          approvedRows: 0,
          statementTimeoutMs: 7000,
        },
        { lockMs: 3333 },
      ),
    );
    assert.equal(String(pid), String(planted[0]));
    assert.equal(st, '7s');
    assert.equal(lt, '3333ms');
  });

  test('a reader keeps READ ONLY after a reader function set default_transaction_read_only off', async () => {
    await t.asOwner(`CREATE TABLE IF NOT EXISTS ro_probe (v int)`);
    await t.asOwner(`CREATE OR REPLACE FUNCTION public.rw_please() RETURNS int LANGUAGE sql AS
      $$ SELECT pg_catalog.set_config('default_transaction_read_only', 'off', false);
         SELECT pg_catalog.set_config('transaction_read_only', 'off', false);
         SELECT pg_catalog.pg_backend_pid() $$`);
    const planted = await run({ sql: 'SELECT public.rw_please()', approvedRows: 0, capability: 'reader' });
    await settle();
    const [ro] = firstRow(
      await run({
        sql: `SELECT pg_catalog.current_setting('transaction_read_only')`,
        approvedRows: 0,
        capability: 'reader',
      }),
    );
    assert.equal(ro, 'on', JSON.stringify(planted));
  });

  test('a cancelled execution leaves no kept login behind', async () => {
    const ac = new AbortController();
    const pending = run({ sql: 'SELECT pg_catalog.pg_sleep(5)', approvedRows: 0 }, {}, ac.signal);
    let pid: number | null = null;
    for (let i = 0; i < 40 && pid === null; i++) {
      await new Promise((r) => setTimeout(r, 50));
      const r = await admin.query(
        `SELECT pid FROM pg_stat_activity WHERE usename = $1 AND query LIKE '%pg_sleep(5)%' AND state = 'active'`,
        [t.roles.migrator],
      );
      pid = r.rows[0]?.pid ?? null;
    }
    assert.ok(pid, 'the sleeping backend');
    ac.abort();
    const o = await pending;
    assert.equal(o.kind, 'failed', JSON.stringify(o));
    await settle();
    const [next] = firstRow(await run({ sql: 'SELECT pg_catalog.pg_backend_pid()', approvedRows: 0 }));
    assert.notEqual(String(next), String(pid), 'the cancelled backend was reused');
  });

  test('closing the executor while a reset is in flight leaves no login open', async () => {
    await settle(); // the previous test's last reset
    await ex.close();
    const e2 = await h.executor(); // a new replay cache: `ex` is replaced after this test
    try {
      const o = await e2.execute(
        signedRequest(h.ring, t, {
          sql: 'SELECT pg_catalog.pg_backend_pid()',
          approvedRows: 0,
          capability: 'reader',
        }),
        new AbortController().signal,
      );
      const [pid] = firstRow(o);
      await e2.close(); // the give() (DISCARD ALL, check) is still on its way
      await new Promise((r) => setTimeout(r, 500));
      const r = await admin.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1', [
        Number(pid),
      ]);
      assert.equal(r.rows[0].n, 0, 'a login kept after close()');
    } finally {
      ex = await h.executor();
    }
  });

  test('a kept login whose backend died is replaced, not an error', async () => {
    const [pid] = firstRow(await run({ sql: 'SELECT pg_catalog.pg_backend_pid()', approvedRows: 0 }));
    await settle();
    await admin.query('SELECT pg_terminate_backend($1, 5000)', [Number(pid)]);
    const o = await run({ sql: 'SELECT pg_catalog.pg_backend_pid()', approvedRows: 0 });
    const [next] = firstRow(o);
    assert.notEqual(String(next), String(pid));
  });

  test('a burst of executions leaves at most two kept logins per role (migrator CONNECTION LIMIT 5)', async () => {
    await settle(); // the previous test's last reset
    const outs = await Promise.all(
      Array.from({ length: 5 }, () =>
        run({ sql: 'SELECT pg_catalog.pg_sleep(0.3), pg_catalog.pg_backend_pid()', approvedRows: 0 }),
      ),
    );
    for (const o of outs) assert.equal(o.kind, 'executed', JSON.stringify(o));
    await settle();
    // The logins past the bound are closed, not kept: a backend that is ending can still show in
    // pg_stat_activity for a moment, so the count is read until it settles (bounded).
    const count = () =>
      admin.query<{ usename: string; n: number; busy: number }>(
        `SELECT usename, count(*)::int AS n, count(*) FILTER (WHERE state <> 'idle' OR backend_xid IS NOT NULL)::int AS busy
           FROM pg_stat_activity WHERE usename = ANY($1) GROUP BY usename`,
        [[t.roles.reader, t.roles.migrator]],
      );
    let r = await count();
    for (let i = 0; i < 100 && r.rows.some((row) => row.n > 2 || row.busy > 0); i++) {
      await new Promise((res) => setTimeout(res, 50));
      r = await count();
    }
    for (const row of r.rows) {
      assert.ok(row.n <= 2, `${row.usename}: ${row.n} kept`);
      assert.equal(row.busy, 0);
    }
    // And the burst can be repeated: the kept ones are taken first, nothing piles up.
    const again = await Promise.all(
      Array.from({ length: 5 }, () => run({ sql: 'SELECT pg_catalog.pg_sleep(0.2)', approvedRows: 0 })),
    );
    for (const o of again) assert.equal(o.kind, 'executed', JSON.stringify(o));
  });

  test('a dry run that sets session state through a function leaves none of it', async () => {
    await t.asOwner(`CREATE OR REPLACE FUNCTION public.dry_state() RETURNS int LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM pg_catalog.set_config('search_path', 'pg_temp, public', false);
        PERFORM pg_catalog.pg_advisory_lock_shared(77);
        EXECUTE 'LISTEN chan';
        RETURN pg_catalog.pg_backend_pid();
      END $$`);
    const planted = firstRow(
      await run({ sql: 'SELECT public.dry_state()', approvedRows: 0, mode: 'dry_run' }),
    );
    await settle();
    const [pid, sp, locks, chans] = firstRow(
      await run({
        sql: `SELECT pg_catalog.pg_backend_pid(), pg_catalog.current_setting('search_path'),
                     (SELECT pg_catalog.count(*) FROM pg_catalog.pg_locks WHERE locktype = 'advisory'
                       AND pid = pg_catalog.pg_backend_pid()),
                     (SELECT pg_catalog.count(*) FROM pg_catalog.pg_listening_channels())`,
        approvedRows: 0,
      }),
    );
    assert.equal(String(pid), String(planted[0]));
    assert.equal(sp, 'public');
    assert.equal(String(locks), '0');
    assert.equal(String(chans), '0');
  });

  test("the previous execution's changed-row counters do not change the next one's count", async () => {
    await t.asOwner('CREATE TABLE IF NOT EXISTS counted (id int PRIMARY KEY, n int NOT NULL)');
    await t.asOwner('INSERT INTO counted SELECT g, 0 FROM generate_series(1, 10) g ON CONFLICT DO NOTHING');
    const a = await run({
      sql: 'UPDATE counted SET n = n + 1 WHERE id <= 3 RETURNING pg_catalog.pg_backend_pid()',
      approvedRows: 3,
    });
    const [pidA] = firstRow(a);
    await new Promise((r) => setTimeout(r, 30)); // reused before the backend flushes its counters
    const b = await run({
      sql: 'UPDATE counted SET n = n + 1 WHERE id IN (4, 5) RETURNING pg_catalog.pg_backend_pid()',
      approvedRows: 2,
    });
    const [pidB] = firstRow(b);
    assert.equal(String(pidB), String(pidA), 'the same kept backend');
    assert.equal(b.kind === 'executed' ? b.affected_rows : -1, 2);
    // A dry run's rolled-back writes on the same backend, then a real one.
    const d = await run({
      sql: 'UPDATE counted SET n = n + 1 RETURNING 1',
      approvedRows: 10,
      mode: 'dry_run',
    });
    assert.equal(d.kind === 'executed' ? d.affected_rows : -1, 10, JSON.stringify(d));
    await new Promise((r) => setTimeout(r, 30));
    const e = await run({ sql: 'UPDATE counted SET n = n + 1 WHERE id = 6 RETURNING 1', approvedRows: 1 });
    assert.equal(e.kind === 'executed' ? e.affected_rows : -1, 1, JSON.stringify(e));
  });

  test('a kept reader login is never handed to a migrator request, nor the reverse', async () => {
    const q = 'SELECT pg_catalog.pg_backend_pid(), current_user::text';
    const [rPid, rUser] = firstRow(await run({ sql: q, approvedRows: 0, capability: 'reader' }));
    await settle();
    const [mPid, mUser] = firstRow(await run({ sql: q, approvedRows: 0, capability: 'migrator' }));
    await settle();
    const [r2Pid, r2User] = firstRow(await run({ sql: q, approvedRows: 0, capability: 'reader' }));
    assert.equal(rUser, t.roles.reader);
    assert.equal(mUser, t.roles.migrator);
    assert.equal(r2User, t.roles.reader);
    assert.notEqual(String(mPid), String(rPid));
    assert.notEqual(String(mPid), String(r2Pid));
  });
});
