import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type pg from 'pg';
import type { ExecutionExecutor } from '../src/agent/execution/executor.ts';
import type { ExecutionOutcome } from '../src/shared/contracts/execution.ts';
import { executionOutcomeSchema, ROW_COUNT_MISMATCH_SQLSTATE } from '../src/shared/contracts/execution.ts';
import { loadExplorerParser } from '../src/shared/sql/explorer-validator.ts';
import { createExecutionHarness, type RequestSpec, signedRequest } from './helpers/execution-agent.ts';
import { adminPool, createTenant, type Tenant } from './helpers/explorer.ts';

// The approved row count binds every row the transaction changed (ADR 0021), not command tags:
// a DELETE inside a CTE or under EXPLAIN ANALYZE, and a trigger's writes, are counted by the dry
// run, and a different count at execution rolls back.
let admin: pg.Pool;
let t: Tenant;
let h: Awaited<ReturnType<typeof createExecutionHarness>>;
let ex: ExecutionExecutor;

before(async () => {
  await loadExplorerParser();
  admin = adminPool();
  t = await createTenant(admin, 'xc');
  await t.asOwner(`
    CREATE TABLE orders (id int PRIMARY KEY, amount numeric NOT NULL);
    CREATE TABLE audit_log (order_id int, at timestamptz DEFAULT now());
    CREATE FUNCTION log_order() RETURNS trigger LANGUAGE plpgsql AS
      $$ BEGIN INSERT INTO audit_log (order_id) VALUES (NEW.id); RETURN NEW; END $$;
    CREATE TRIGGER orders_log AFTER UPDATE ON orders FOR EACH ROW EXECUTE FUNCTION log_order();
  `);
  h = await createExecutionHarness(admin);
  ex = await h.executor();
});

after(async () => {
  await h?.close();
  await t?.drop();
  await admin?.end();
});

const run = (spec: RequestSpec) => ex.execute(signedRequest(h.ring, t, spec), new AbortController().signal);

/** Orders 1..n with amount 50 (rows over 15), the rest of the table emptied. */
const resetOrders = async (n: number) => {
  await t.asOwner(
    `TRUNCATE orders, audit_log; INSERT INTO orders SELECT g, 50 FROM generate_series(1, ${n}) g`,
  );
};
const orderCount = async () => (await t.asAdmin('SELECT count(*)::int AS n FROM orders')).rows[0].n as number;

function executed(o: ExecutionOutcome): Extract<ExecutionOutcome, { kind: 'executed' }> {
  assert.ok(executionOutcomeSchema.safeParse(o).success, JSON.stringify(o));
  if (o.kind !== 'executed') assert.fail(JSON.stringify(o));
  return o;
}

describe('affected rows are the rows the transaction changed', () => {
  for (const [label, sql] of [
    [
      'a DELETE in a CTE',
      'WITH d AS (DELETE FROM orders WHERE amount > 15 RETURNING 1) SELECT count(*) FROM d',
    ],
    ['EXPLAIN ANALYZE DELETE', 'EXPLAIN ANALYZE DELETE FROM orders WHERE amount > 15'],
  ] as const) {
    test(`${label}: the dry run counts it; more rows at execution roll back with both numbers`, async () => {
      await resetOrders(3);
      const dry = executed(await run({ sql, mode: 'dry_run', explain: true }));
      assert.equal(dry.committed, false);
      assert.equal(dry.affected_rows, 3);
      assert.equal(await orderCount(), 3, 'the dry run rolled back');
      // After approval for 3, more rows match: the execution deletes 5, rolls back, says so.
      await t.asOwner('INSERT INTO orders VALUES (4, 99), (5, 99)');
      const o = await run({ sql, approvedRows: 3 });
      assert.equal(o.kind, 'failed', JSON.stringify(o));
      if (o.kind !== 'failed') return;
      assert.equal(o.error.sqlstate, ROW_COUNT_MISMATCH_SQLSTATE);
      assert.deepEqual(o.mismatch, { approved_rows: 3, affected_rows: 5 });
      assert.equal(o.rolled_back, true);
      assert.equal(await orderCount(), 5);
      // The approved count, matched: committed.
      const ok = executed(await run({ sql, approvedRows: 5 }));
      assert.equal(ok.committed, true);
      assert.equal(ok.affected_rows, 5);
      assert.equal(await orderCount(), 0);
    });
  }

  test("a trigger's writes count; each statement keeps its own tag's count", async () => {
    await resetOrders(4);
    const sql = 'UPDATE orders SET amount = 1 WHERE id <= 2';
    const dry = executed(await run({ sql, mode: 'dry_run' }));
    assert.equal(dry.affected_rows, 4, '2 updated rows and the 2 rows their trigger logged');
    assert.deepEqual(dry.statements, [{ command: 'UPDATE', row_count: 2, plan: null }]);
    // Approved for the tags' 2 only: the trigger's rows make it 4, rolled back.
    const o = await run({ sql, approvedRows: 2 });
    assert.equal(o.kind, 'failed', JSON.stringify(o));
    if (o.kind === 'failed') assert.deepEqual(o.mismatch, { approved_rows: 2, affected_rows: 4 });
    const logged = await t.asAdmin('SELECT count(*)::int AS n FROM audit_log');
    assert.equal(logged.rows[0].n, 0);
    const ok = executed(await run({ sql, approvedRows: 4 }));
    assert.equal(ok.affected_rows, 4);
  });

  test('rows of a temporary table are not counted; a read changes nothing', async () => {
    await resetOrders(2);
    const dry = executed(
      await run({
        sql: 'CREATE TEMP TABLE scratch AS SELECT id FROM orders; DELETE FROM orders WHERE id IN (SELECT id FROM scratch)',
        mode: 'dry_run',
      }),
    );
    assert.equal(dry.affected_rows, 2, JSON.stringify(dry.statements));
    const read = executed(await run({ sql: 'SELECT count(*) FROM orders', capability: 'reader' }));
    assert.equal(read.affected_rows, 0);
  });
});
