import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type pg from 'pg';
import type { ExplorerExecutor } from '../src/agent/explorer/explorer-executor.ts';
import type { ExplorerOutcome, QueryPayload } from '../src/shared/contracts/explorer-channel.ts';
import { createExplorerValidator, loadExplorerParser } from '../src/shared/sql/explorer-validator.ts';
import { ATTACKS, LEGIT } from './explorer-corpus.ts';
import {
  adminPool,
  assertSessionClean,
  createTenant,
  queryPayload,
  setupCanary,
  snapshot,
  type Tenant,
  testExecutor,
} from './helpers/explorer.ts';

// The attack corpus end to end through the agent's executor, against a real tenant database
// made by the databases agent's SQL, with a canary table and owner code that writes when run.
const TIMEOUT_MS = 300;
const OTHER_SECRET = 'OTHER-TENANT-SECRET-7f3a';
let admin: pg.Pool;
let t: Tenant;
let other: Tenant;
let ex: ExplorerExecutor;
let raw: ExplorerExecutor;
let baseline: string;
let validateExplorerSql: (sql: string) => { ok: boolean };

before(async () => {
  await loadExplorerParser();
  validateExplorerSql = createExplorerValidator({ cacheSize: 0 }).validate;
  admin = adminPool();
  [t, other] = await Promise.all([createTenant(admin), createTenant(admin, 'exo')]);
  await setupCanary(t);
  await other.asOwner(
    `CREATE TABLE other_secret (s text); INSERT INTO other_secret VALUES ('${OTHER_SECRET}')`,
  );
  ex = testExecutor(admin, { maxConnections: 1 });
  // The same executor without the parser gate: proves the run-time layers on their own.
  raw = testExecutor(admin, {
    maxConnections: 1,
    validate: (sql) => ({ ok: true, kind: /^\s*explain/i.test(sql) ? 'explain' : 'select', redacted: '' }),
  });
  await run(ex, 'select 1'); // first use prepares the role (LOGIN, EXECUTE revoked)
  await ex.settled();
  baseline = await snapshot(t);
});

after(async () => {
  await ex?.close();
  await raw?.close();
  await t?.drop();
  await other?.drop();
  await admin?.end();
});

const payload = (sql: string, over: Partial<QueryPayload> = {}): QueryPayload =>
  queryPayload(t, sql, { statement_timeout_ms: TIMEOUT_MS, ...over });

function run(e: ExplorerExecutor, sql: string, over: Partial<QueryPayload> = {}): Promise<ExplorerOutcome> {
  return e.runQuery(payload(sql, over), new AbortController().signal);
}

/** After every statement: nothing changed, no session state, nothing leaked, no hang. */
async function assertClean(e: ExplorerExecutor, label: string, out: ExplorerOutcome, ms: number) {
  assert.ok(ms < TIMEOUT_MS + 1_500, `${label}: took ${ms} ms`);
  await e.settled();
  assert.equal(await snapshot(t), baseline, `${label}: the canary or the catalogs changed`);
  await assertSessionClean(e, t, label);
  const locks = await admin.query(
    `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a USING (pid)
      WHERE a.datname = $1 AND l.locktype = 'advisory'`,
    [t.name],
  );
  assert.equal(locks.rows[0].n, 0, `${label}: an advisory lock is held`);
  const text = JSON.stringify(out);
  assert.ok(!text.includes(OTHER_SECRET) && !text.includes(other.name), `${label}: another tenant leaked`);
  assert.ok(!text.includes('SCRAM-SHA-256$'), `${label}: a password verifier leaked`);
}

test(`attack corpus (${ATTACKS.length} statements) through the agent executor changes nothing`, async () => {
  assert.ok(ATTACKS.length >= 80);
  const mismatches: string[] = [];
  for (const [sql, expect, sqlstate] of ATTACKS) {
    const verdict = validateExplorerSql(sql);
    const t0 = performance.now();
    const out = await run(ex, sql);
    const ms = performance.now() - t0;
    const got =
      out.kind === 'error'
        ? out.error.refused
          ? 'refused'
          : 'fails'
        : out.kind === 'rows' && out.output.truncated
          ? 'capped'
          : 'runs';
    if (got !== expect || verdict.ok !== (expect !== 'refused')) mismatches.push(`${sql} → ${got}`);
    if (sqlstate && out.kind === 'error' && out.error.sqlstate !== sqlstate) {
      mismatches.push(`${sql} → ${out.error.sqlstate} (wanted ${sqlstate}): ${out.error.message}`);
    }
    await assertClean(ex, sql, out, ms);
  }
  assert.deepEqual(mismatches, []);
});

/** Statements the gate refuses, run WITHOUT the gate: the run-time layers alone must hold. */
const RUNTIME_ONLY = [
  "select set_config('default_transaction_read_only', 'off', false)",
  "select set_config('search_path', 'pg_temp', false)",
  'select pg_advisory_lock(42)',
  "select lo_from_bytea(0, 'pwn')",
  "select nextval('seq')",
  'select evil(c) from canary c',
  'select evil_definer(c) from canary c',
  'insert into canary values (100, $$x$$)',
  'commit; insert into canary values (100, $$x$$)',
  'select 1; set transaction read write',
  'with x as (delete from canary returning *) select * from x',
  'select * into pwn_copy from canary',
  'select pg_sleep(10)',
  'select pg_cancel_backend(pg_backend_pid())',
  'select pg_terminate_backend(pg_backend_pid())',
  "select pg_read_file('/etc/passwd')",
  'select rolpassword from pg_authid',
  "select set_config('role', 'postgres', false)",
  "select query_to_xml('insert into canary values (100, ''x'') returning 1', true, false, '')",
  "select pg_notify('pwn', 'x')",
  'select txid_current()',
  "select pg_logical_emit_message(false, 'pwn', 'x')",
  'select * from canary for update',
  'prepare pwn as select 1',
  'listen pwn',
  'create temp table pwn_tmp as select 1',
  'explain analyze delete from canary',
  'select * from other_secret',
];

test(`run-time layers alone (${RUNTIME_ONLY.length} statements, gate bypassed) change nothing`, async () => {
  for (const sql of RUNTIME_ONLY) {
    const t0 = performance.now();
    const out = await run(raw, sql);
    await assertClean(raw, `[raw] ${sql}`, out, performance.now() - t0);
  }
});

test('legitimate analytical queries succeed with correct results', async () => {
  for (const [sql, rows] of LEGIT) {
    const out = await run(ex, sql);
    assert.equal(out.kind, 'rows', `${sql}: ${JSON.stringify(out)}`);
    if (out.kind === 'rows') assert.deepEqual(out.output.rows, rows, sql);
  }
  const typed = await run(ex, 'select id, secret, 1.5::numeric as n from canary limit 1');
  assert.ok(typed.kind === 'rows');
  if (typed.kind === 'rows') {
    assert.deepEqual(typed.output.columns, [
      { name: 'id', type: 'integer' },
      { name: 'secret', type: 'text' },
      { name: 'n', type: 'numeric' },
    ]);
  }
});

test('caps: row cap, byte cap (200 MB asked), and a function created later is not executable', async () => {
  const rows = await run(ex, 'select g from generate_series(1, 100000) g', { row_limit: 250 });
  assert.ok(rows.kind === 'rows' && rows.output.row_count === 250 && rows.output.truncated_by === 'rows');
  const t0 = performance.now();
  const bytes = await run(ex, "select repeat('x', 1000000) from generate_series(1, 200)", {
    byte_limit: 5 * 1024 * 1024,
    statement_timeout_ms: 5_000,
  });
  assert.ok(bytes.kind === 'rows' && bytes.output.truncated_by === 'bytes');
  if (bytes.kind === 'rows') assert.ok(bytes.output.row_count <= 5 && bytes.output.row_count >= 4);
  assert.ok(performance.now() - t0 < 5_000);
  await t.asOwner(`CREATE FUNCTION evil_later(c canary) RETURNS int LANGUAGE sql AS $$ SELECT 1 $$`);
  const later = await run(ex, 'select c.evil_later from canary c');
  assert.ok(later.kind === 'error' && later.error.sqlstate === '42501', JSON.stringify(later));
  const owner = await t.asOwner('SELECT c.evil_later FROM canary c LIMIT 1');
  assert.equal(owner.rows.length, 1, 'the owner keeps EXECUTE on its own function');
});
