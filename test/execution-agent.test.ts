import assert from 'node:assert/strict';
import { createPrivateKey, generateKeyPairSync, sign } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type pg from 'pg';
import type { ExecutionExecutor } from '../src/agent/execution/executor.ts';
import { defaultHandlers } from '../src/agent/jobs/registry.ts';
import { findDrift } from '../src/agent/postgres/drift.ts';
import { createExecutionKeyRing } from '../src/server/crypto/execution-key-ring.ts';
import type { ExecutionOutcome } from '../src/shared/contracts/execution.ts';
import { executionOutcomeSchema, ROW_COUNT_MISMATCH_SQLSTATE } from '../src/shared/contracts/execution.ts';
import { checkJobResult, DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import { createLogger } from '../src/shared/logger.ts';
import { CONTROL_DB, CONTROL_ROLE } from '../src/shared/platform-names.ts';
import { loadExplorerParser } from '../src/shared/sql/explorer-validator.ts';
import { createExecutionHarness, type RequestSpec, signedRequest } from './helpers/execution-agent.ts';
import {
  adminPool,
  clusterAccess,
  connectAdmin,
  createTenant,
  TEST_AGENT_KEY,
  type Tenant,
} from './helpers/explorer.ts';

// The agent's executor of governed SQL against the real cluster: tokens signed by a key ring
// whose public key the agent pinned; every refusal leaves the database untouched.
let admin: pg.Pool;
let t: Tenant;
let h: Awaited<ReturnType<typeof createExecutionHarness>>;
let ex: ExecutionExecutor;

before(async () => {
  await loadExplorerParser();
  admin = adminPool();
  t = await createTenant(admin, 'xa');
  // The tenant's own table, created as the owner (the migrator must be able to change it).
  await t.asOwner(
    'CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL); INSERT INTO items SELECT g, 0 FROM generate_series(1, 10) g',
  );
  h = await createExecutionHarness(admin);
  ex = await h.executor();
});

after(async () => {
  await h?.close();
  await t?.drop();
  await admin?.end();
});

const run = (spec: RequestSpec, executor = ex, signal = new AbortController().signal) =>
  executor.execute(signedRequest(h.ring, t, spec), signal);

/** The table's state: what a statement that ran would have changed. */
const contents = async () => JSON.stringify((await t.asAdmin('SELECT id, qty FROM items ORDER BY id')).rows);

function refusedWith(o: ExecutionOutcome, reason: string) {
  assert.equal(o.kind, 'refused', JSON.stringify(o));
  if (o.kind === 'refused') assert.equal(o.refusal.reason, reason);
  assert.ok(executionOutcomeSchema.safeParse(o).success);
}

const WRITE = 'UPDATE items SET qty = qty + 1 WHERE id <= 3';

describe('refusals: nothing is executed', () => {
  test('forged, tampered, expired, replayed, misdirected and forbidden tokens are refused', async () => {
    const before = await contents();
    // Another key (the agent never pinned it).
    const other = createExecutionKeyRing({ dir: await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-other-')) });
    refusedWith(await run({ sql: WRITE, approvedRows: 3, ring: other }), 'unknown_kid');
    // Another key claiming the pinned kid.
    const p = signedRequest(h.ring, t, { sql: WRITE, approvedRows: 3 });
    const [head, body] = p.token.split('.') as [string, string, string];
    const rogue = generateKeyPairSync('ed25519').privateKey;
    const forged = `${head}.${body}.${sign(null, Buffer.from(`${head}.${body}`), createPrivateKey(rogue.export({ format: 'pem', type: 'pkcs8' }))).toString('base64url')}`;
    refusedWith(await ex.execute({ ...p, token: forged }, new AbortController().signal), 'bad_signature');
    // Tampered SQL: signed for one statement, sent with another.
    const tampered = signedRequest(h.ring, t, { sql: WRITE, approvedRows: 3 });
    refusedWith(
      await ex.execute({ ...tampered, sql: 'UPDATE items SET qty = 99' }, new AbortController().signal),
      'sql_mismatch',
    );
    // Expired and not yet valid: the token's clock 6 minutes off either way…
    const now = Math.floor(Date.now() / 1000);
    refusedWith(await run({ sql: WRITE, claims: { iat: now - 660, exp: now - 360 } }), 'expired');
    refusedWith(await run({ sql: WRITE, claims: { iat: now + 360, exp: now + 660 } }), 'not_yet_valid');
    // …or the agent's.
    const late = await h.executor({ now: () => Date.now() + 6 * 60_000 });
    refusedWith(await run({ sql: WRITE }, late), 'expired');
    const early = await h.executor({ now: () => Date.now() - 6 * 60_000 });
    refusedWith(await run({ sql: WRITE }, early), 'not_yet_valid');
    ex = await h.executor();
    // Another database, another node.
    refusedWith(await run({ sql: WRITE, claims: { database: 'other_db' } }), 'wrong_database');
    refusedWith(await run({ sql: WRITE, claims: { node: 'node-exec-b' } }), 'wrong_node');
    // A capability this node's config forbids (an operator set `reader`).
    const readerOnly = await h.executor({ capabilities: ['reader'] });
    refusedWith(await run({ sql: WRITE, capability: 'migrator' }, readerOnly), 'capability_forbidden');
    ex = await h.executor();
    // A token of another mode: a dry run's token cannot execute.
    refusedWith(await run({ sql: WRITE, claims: { mode: 'dry_run' } }), 'wrong_mode');
    // The payload's capability differs from the signed one.
    const cap = signedRequest(h.ring, t, { sql: WRITE, capability: 'reader' });
    refusedWith(
      await ex.execute({ ...cap, capability: 'migrator' }, new AbortController().signal),
      'capability_mismatch',
    );
    assert.equal(await contents(), before);
  });

  test('a replayed jti is refused, also after an agent restart (same state dir)', async () => {
    const p = signedRequest(h.ring, t, {
      sql: 'UPDATE items SET qty = qty + 1 WHERE id = 10',
      approvedRows: 1,
    });
    const first = await ex.execute(p, new AbortController().signal);
    assert.equal(first.kind, 'executed', JSON.stringify(first));
    const once = await contents();
    // Another token with the same jti (signed again): refused.
    const jti = JSON.parse(Buffer.from(p.token.split('.')[1]!, 'base64url').toString()).jti as string;
    const now = Math.floor(Date.now() / 1000);
    const resigned = signedRequest(h.ring, t, {
      sql: p.sql,
      approvedRows: 1,
      claims: { jti, request_id: p.request_id, iat: now - 7, exp: now + 200 },
    });
    assert.notEqual(resigned.token, p.token);
    refusedWith(
      await ex.execute({ ...resigned, request_id: p.request_id }, new AbortController().signal),
      'replayed',
    );
    // The very same token again in this process (a retried delivery): what happened, run once.
    assert.deepEqual(await ex.execute(p, new AbortController().signal), first);
    ex = await h.executor(); // a new process: its replay cache is read back from the file
    refusedWith(await ex.execute(p, new AbortController().signal), 'replayed');
    assert.equal(await contents(), once);
  });

  test('SQL the agent will not run: transaction control, CONCURRENTLY mixed with others', async () => {
    const before = await contents();
    refusedWith(await run({ sql: `${WRITE}; COMMIT` }), 'sql');
    refusedWith(await run({ sql: 'CREATE INDEX CONCURRENTLY items_q ON items (qty); SELECT 1' }), 'sql');
    refusedWith(
      await run({ sql: 'CREATE INDEX CONCURRENTLY items_q ON items (qty)', mode: 'dry_run' }),
      'sql',
    );
    assert.equal(await contents(), before);
    const idx = await t.asAdmin("SELECT count(*)::int AS n FROM pg_indexes WHERE indexname = 'items_q'");
    assert.equal(idx.rows[0].n, 0);
  });
});

describe('runs', () => {
  test('execute commits and reports counts', async () => {
    const o = await run({ sql: WRITE, approvedRows: 3 });
    assert.equal(o.kind, 'executed', JSON.stringify(o));
    if (o.kind !== 'executed') return;
    assert.equal(o.committed, true);
    assert.equal(o.affected_rows, 3);
    assert.deepEqual(o.statements, [{ command: 'UPDATE', row_count: 3, plan: null }]);
    const r = await t.asAdmin('SELECT sum(qty)::int AS s FROM items WHERE id <= 3');
    assert.ok(r.rows[0].s >= 3);
  });

  test('a dry run rolls back and reports counts and a plan', async () => {
    const before = await contents();
    const o = await run({ sql: `${WRITE}; SELECT count(*) FROM items`, mode: 'dry_run', explain: true });
    assert.equal(o.kind, 'executed', JSON.stringify(o));
    if (o.kind !== 'executed') return;
    assert.equal(o.committed, false);
    assert.equal(o.affected_rows, 3);
    assert.equal(o.statements[0]?.command, 'UPDATE');
    const plan = JSON.parse(o.statements[0]?.plan ?? 'null');
    assert.equal(plan[0].Plan['Node Type'], 'ModifyTable');
    assert.equal(o.result?.rows[0]?.[0], 10);
    assert.equal(await contents(), before);
  });

  test('a row count other than the approved one rolls back, with both numbers', async () => {
    const before = await contents();
    const o = await run({ sql: WRITE, approvedRows: 2 });
    assert.equal(o.kind, 'failed', JSON.stringify(o));
    if (o.kind !== 'failed') return;
    assert.equal(o.error.sqlstate, ROW_COUNT_MISMATCH_SQLSTATE);
    assert.deepEqual(o.mismatch, { approved_rows: 2, affected_rows: 3 });
    assert.equal(o.rolled_back, true);
    assert.equal(await contents(), before);
  });

  test('the reader runs READ ONLY: it reads, and a write fails', async () => {
    const read = await run({ sql: 'SELECT id, qty FROM items ORDER BY id', capability: 'reader' });
    assert.equal(read.kind, 'executed', JSON.stringify(read));
    if (read.kind === 'executed') {
      assert.equal(read.result?.row_count, 10);
      assert.deepEqual(read.result?.columns, [
        { name: 'id', type: 'integer' },
        { name: 'qty', type: 'integer' },
      ]);
    }
    const before = await contents();
    const o = await run({ sql: 'UPDATE items SET qty = 5 WHERE id = 1', capability: 'reader' });
    assert.equal(o.kind, 'failed', JSON.stringify(o));
    if (o.kind === 'failed') assert.equal(o.error.sqlstate, '25006');
    assert.equal(await contents(), before);
  });

  test("the migrator changes the owner's table (ALTER and UPDATE)", async () => {
    const o = await run({
      sql: "ALTER TABLE items ADD COLUMN note text; UPDATE items SET note = 'n' WHERE id = 1",
      approvedRows: 1,
    });
    assert.equal(o.kind, 'executed', JSON.stringify(o));
    const r = await t.asAdmin('SELECT note FROM items WHERE id = 1');
    assert.equal(r.rows[0].note, 'n');
  });

  test('a failure in a later statement rolls back every statement, with where it failed', async () => {
    const before = await contents();
    const sql = 'UPDATE items SET qty = 100 WHERE id = 1;\nSELECT 1 / 0';
    const o = await run({ sql, approvedRows: 1 });
    assert.equal(o.kind, 'failed', JSON.stringify(o));
    if (o.kind !== 'failed') return;
    assert.equal(o.error.sqlstate, '22012');
    assert.equal(o.error.statement_index, 1);
    assert.equal(o.rolled_back, true);
    assert.equal(await contents(), before);
  });

  test("an error's position is in the request's text; the lock timeout is honoured", async () => {
    const sql = 'UPDATE items SET qty = 1 WHERE id = 1;\nSELECT nope FROM items';
    const o = await run({ sql, approvedRows: 1 });
    if (o.kind !== 'failed') assert.fail(JSON.stringify(o));
    assert.equal(o.error.sqlstate, '42703');
    assert.equal(o.error.statement_index, 1);
    assert.equal(o.error.position, sql.indexOf('nope'));
    // A row held by another session: the update waits lock_timeout (2 s here), then fails.
    const holder = await connectAdmin(t.name);
    try {
      await holder.query('BEGIN');
      await holder.query('SELECT * FROM items WHERE id = 2 FOR UPDATE');
      const t0 = Date.now();
      const locked = await run({ sql: 'UPDATE items SET qty = 3 WHERE id = 2', approvedRows: 1 });
      if (locked.kind !== 'failed') assert.fail(JSON.stringify(locked));
      assert.equal(locked.error.sqlstate, '55P03');
      assert.ok(Date.now() - t0 < 6_000);
    } finally {
      await holder.query('ROLLBACK').catch(() => {});
      await holder.end();
    }
  });

  test('CONCURRENTLY alone runs outside a transaction', async () => {
    const o = await run({ sql: 'CREATE INDEX CONCURRENTLY items_qty ON items (qty)' });
    assert.equal(o.kind, 'executed', JSON.stringify(o));
    if (o.kind === 'executed') assert.equal(o.statements[0]?.command, 'CREATE INDEX');
    const r = await t.asAdmin(
      "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = 'items_qty'",
    );
    assert.equal(r.rows[0]?.indisvalid, true);
  });

  test('result rows are capped by rows and by bytes; a huge value never reaches the agent', async () => {
    const many = await run({
      sql: "SELECT g, repeat('x', 100) FROM generate_series(1, 500) g",
      capability: 'reader',
      rowLimit: 10,
    });
    assert.equal(many.kind, 'executed', JSON.stringify(many).slice(0, 500));
    if (many.kind === 'executed') {
      assert.equal(many.result?.rows.length, 10);
      assert.equal(many.result?.truncated_by, 'rows');
      assert.equal(many.statements[0]?.row_count, 500);
    }
    const wide = await run({
      sql: "SELECT g, repeat('y', 1000) FROM generate_series(1, 500) g",
      capability: 'reader',
      byteLimit: 4096,
    });
    if (wide.kind !== 'executed') assert.fail(JSON.stringify(wide));
    assert.equal(wide.result?.truncated_by, 'bytes');
    assert.ok((wide.result?.rows.length ?? 99) < 5);
    const heapBefore = process.memoryUsage().heapUsed;
    const huge = await run({
      sql: "SELECT repeat('z', 64 * 1024 * 1024)",
      capability: 'reader',
      byteLimit: 65536,
    });
    if (huge.kind !== 'executed') assert.fail(JSON.stringify(huge).slice(0, 500));
    assert.equal(huge.result?.rows.length, 0);
    assert.equal(huge.result?.truncated_by, 'bytes');
    assert.ok(process.memoryUsage().heapUsed - heapBefore < 32 * 1024 * 1024);
  });

  test('the statement timeout is honoured, and a cancel stops the statement', async () => {
    const t0 = Date.now();
    const o = await run({ sql: 'SELECT pg_sleep(5)', capability: 'reader', statementTimeoutMs: 300 });
    assert.equal(o.kind, 'failed', JSON.stringify(o));
    if (o.kind === 'failed') assert.equal(o.error.sqlstate, '57014');
    assert.ok(Date.now() - t0 < 3_000);
    const before = await contents();
    const controller = new AbortController();
    const pending = run({ sql: `${WRITE}; SELECT pg_sleep(10)`, approvedRows: 3 }, ex, controller.signal);
    setTimeout(() => controller.abort(), 500);
    const t1 = Date.now();
    const c = await pending;
    assert.equal(c.kind, 'failed', JSON.stringify(c));
    if (c.kind === 'failed') assert.equal(c.error.sqlstate, '57014');
    assert.ok(Date.now() - t1 < 4_000);
    assert.equal(await contents(), before);
  });

  test('the request.execute job (fallback delivery) runs the same executor; its result is the outcome', async () => {
    const handler = defaultHandlers({ execution: ex }).get('request.execute');
    assert.ok(handler);
    const payload = signedRequest(h.ring, t, {
      sql: 'UPDATE items SET qty = 42 WHERE id = 9',
      approvedRows: 1,
    });
    const ctx = { admin, log: createLogger('job', 'silent'), signal: new AbortController().signal };
    const result = await handler(payload, ctx);
    assert.equal(result.kind, 'executed', JSON.stringify(result));
    assert.equal(checkJobResult('request.execute', result).ok, true);
    // The job retried (its `complete` call failed): answered with what happened, not run again.
    assert.deepEqual(await handler(payload, ctx), result);
    // Re-leased after the agent died (a new process): the replay cache refuses it: run once.
    ex = await h.executor();
    const restarted = defaultHandlers({ execution: ex }).get('request.execute')!;
    const again = await restarted(payload, ctx);
    assert.deepEqual(again.kind === 'refused' && again.refusal, {
      reason: 'replayed',
      message: 'the execution token was already used',
    });
    const r = await t.asAdmin('SELECT qty FROM items WHERE id = 9');
    assert.equal(r.rows[0].qty, 42);
  });

  test('drift finds nothing in a database whose reader and migrator ran governed SQL', async () => {
    const findings = await findDrift(
      { admin, cluster: clusterAccess(TEST_AGENT_KEY), ownerVerifier: () => null },
      [{ name: t.name, id: t.id, limits: DEFAULT_LIMITS }],
      { databases: [CONTROL_DB], roles: [CONTROL_ROLE] },
    );
    // This test's tenant is made without the cluster's tenant template (its two findings are about that).
    const template = new Set(['tenant_guard', 'catalog_visibility']);
    const mine = findings.filter((f) => `${f.object} ${f.detail}`.includes(t.name) && !template.has(f.kind));
    assert.deepEqual(mine, []);
  });

  test('a kept execution login carries nothing of what ran on it; at most two per role, idle', async () => {
    // The tenant plants a function that leaves session state behind when the migrator runs it.
    await t.asOwner(`CREATE OR REPLACE FUNCTION public.leave_state() RETURNS int LANGUAGE plpgsql AS $$
      BEGIN
        PERFORM pg_catalog.set_config('search_path', 'pg_temp, public', false);
        PERFORM pg_catalog.set_config('statement_timeout', '0', false);
        PERFORM pg_catalog.pg_advisory_lock(4242);
        CREATE TEMP TABLE IF NOT EXISTS stash (v int);
        RETURN pg_catalog.pg_backend_pid();
      END $$`);
    const planted = await run({ sql: 'SELECT public.leave_state()', approvedRows: 0 });
    assert.equal(planted.kind, 'executed', JSON.stringify(planted));
    // The next execution of the same role gets the kept login (same backend), reset.
    // The reset runs after the answer: wait (bounded) until the kept login's last statement is its check.
    for (let i = 0; i < 400; i++) {
      const busy = await admin.query(
        `SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1
            AND (state <> 'idle' OR query NOT LIKE '%pg_prepared_statements%')`,
        [Number(planted.kind === 'executed' ? planted.result?.rows[0]?.[0] : 0)],
      );
      if (busy.rows[0].n === 0) break;
      await new Promise((r) => setTimeout(r, 25));
    }
    const seen = await run({
      sql: `SELECT pg_catalog.pg_backend_pid() AS pid, pg_catalog.current_setting('search_path') AS sp,
                   pg_catalog.current_setting('statement_timeout') AS st,
                   (SELECT pg_catalog.count(*) FROM pg_catalog.pg_locks
                     WHERE locktype = 'advisory' AND pid = pg_catalog.pg_backend_pid()) AS locks,
                   pg_catalog.to_regclass('pg_temp.stash') IS NULL AS no_temp`,
      approvedRows: 0,
      statementTimeoutMs: 7000,
    });
    assert.equal(seen.kind, 'executed', JSON.stringify(seen));
    const row = seen.kind === 'executed' ? seen.result?.rows[0] : undefined;
    assert.ok(row, JSON.stringify(seen));
    const [pid, searchPath, timeout, locks, noTemp] = row;
    const firstPid = planted.kind === 'executed' ? planted.result?.rows[0]?.[0] : undefined;
    assert.equal(String(pid), String(firstPid), 'the second execution ran on the kept login');
    assert.equal(searchPath, 'public', 'the pinned search_path, not what the tenant set');
    assert.equal(timeout, '7s', "this request's statement timeout");
    assert.equal(String(locks), '0', 'no advisory lock survived');
    assert.equal(noTemp, true, 'no temporary table survived');
    // What stays is idle, outside any transaction, and bounded (two per database and role). The
    // reset after the last answer may still be running: wait for it (bounded).
    let r!: { rows: { n: number; busy: number }[] };
    for (let i = 0; i < 200; i++) {
      r = await admin.query(
        `SELECT count(*)::int AS n, count(*) FILTER (WHERE state <> 'idle' OR backend_xid IS NOT NULL)::int AS busy
           FROM pg_stat_activity WHERE usename = ANY($1) AND pid <> pg_backend_pid()`,
        [[t.roles.reader, t.roles.migrator]],
      );
      if (r.rows[0]!.busy === 0) break;
      await new Promise((res) => setTimeout(res, 25));
    }
    const kept = r.rows[0]!;
    assert.ok(kept.n <= 4, `kept logins: ${kept.n}`);
    assert.equal(kept.busy, 0);
  });
});
