import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import fc from 'fast-check';
import type pg from 'pg';
import type { ExplorerExecutor } from '../src/agent/explorer/explorer-executor.ts';
import { ALLOWED_FUNCTIONS } from '../src/shared/sql/explorer-functions.ts';
import { createExplorerValidator, loadExplorerParser } from '../src/shared/sql/explorer-validator.ts';
import {
  adminPool,
  createTenant,
  setupCanary,
  snapshot,
  type Tenant,
  testExecutor,
} from './helpers/explorer.ts';

// Property (issue 6): any statement the validator accepts, run as the explorer role, changes
// nothing. Selects over the canary table with random functions — from the allowlist, from the
// whole pg_catalog (the gate refuses most of those; what it accepts must still be harmless), and
// from the riskiest part of the derived allowlist (issue 19): its STABLE and VOLATILE functions,
// which read the session, the clock or the catalogs, and the constructors it newly allows.
let admin: pg.Pool;
let t: Tenant;
let ex: ExplorerExecutor;
let baseline: string;
let catalogFunctions: string[];
let stableFunctions: string[];
let validateExplorerSql: (sql: string) => { ok: boolean };

/** Harmless SQL the hand-written allowlist refused (issue 19). */
const NEWLY_ALLOWED = [
  'numeric_uminus',
  'int4or',
  'int8and',
  'int4range',
  'int4multirange',
  'point',
  'box',
  'circle',
  'bpchar',
  'current_database',
  'current_schema',
  'version',
  'getdatabaseencoding',
  'to_tsvector',
];

before(async () => {
  await loadExplorerParser();
  validateExplorerSql = createExplorerValidator({ cacheSize: 0 }).validate;
  admin = adminPool();
  t = await createTenant(admin, 'exp');
  await setupCanary(t);
  ex = testExecutor(admin, { maxConnections: 1 });
  await ex.runQuery(
    {
      database_id: t.id,
      name: t.name,
      sql: 'select 1',
      sql_redacted: '',
      row_limit: 10,
      byte_limit: 1 << 20,
      statement_timeout_ms: 1_000,
    },
    new AbortController().signal,
  );
  await ex.settled();
  baseline = await snapshot(t);
  const r = await t.asAdmin(
    "SELECT DISTINCT proname FROM pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace AND proname ~ '^[a-z][a-z0-9_]*$' ORDER BY 1",
  );
  catalogFunctions = r.rows.map((x: { proname: string }) => x.proname);
  const stable = await t.asAdmin(
    "SELECT DISTINCT proname FROM pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace AND provolatile <> 'i' AND proname = ANY ($1) ORDER BY 1",
    [[...ALLOWED_FUNCTIONS]],
  );
  stableFunctions = [...stable.rows.map((x: { proname: string }) => x.proname), ...NEWLY_ALLOWED];
  assert.ok(stableFunctions.length > 100, `only ${stableFunctions.length} stable allowed functions`);
  // The owner's functions too: the gate must refuse them, the grants must stop them.
  catalogFunctions.push('evil', 'evil_definer', 'evil_eq', 'evil_check');
});

after(async () => {
  await ex?.close();
  await t?.drop();
  await admin?.end();
});

const leaf = fc.oneof(
  fc.constantFrom('c.id', 'c.secret', 'c', 'c.evil', 'c.evil_definer', 'null', 'now()', '1e6'),
  fc.integer({ min: -1000, max: 1000 }).map(String),
  fc.string({ maxLength: 12 }).map((s) => `'${s.replaceAll("'", "''")}'`),
);

function expr(functions: () => string[]): fc.Arbitrary<string> {
  const { e } = fc.letrec<{ e: string }>((tie) => ({
    e: fc.oneof(
      { depthSize: 'small', withCrossShrink: true },
      leaf,
      fc
        .tuple(fc.constantFrom(...functions()), fc.array(tie('e'), { maxLength: 3 }))
        .map(([f, args]) => `${f}(${args.join(', ')})`),
      fc
        .tuple(tie('e'), fc.constantFrom('+', '||', '=', '<', '===', '~'), tie('e'))
        .map(([a, op, b]) => `(${a} ${op} ${b})`),
      tie('e').map((a) => `(select ${a} from canary c2 limit 1)`),
    ),
  }));
  return e;
}

const statement = (functions: () => string[]) =>
  fc
    .record({
      cols: fc.array(expr(functions), { minLength: 1, maxLength: 3 }),
      where: fc.option(expr(functions)),
      cte: fc.boolean(),
      limit: fc.option(fc.integer({ min: 0, max: 50 })),
    })
    .map(({ cols, where, cte, limit }) => {
      const body = `select ${cols.join(', ')} from canary c${where ? ` where (${where}) is not null` : ''}${
        limit === null ? '' : ` limit ${limit}`
      }`;
      return cte ? `with x as (${body}) select * from x` : body;
    });

test('property: whatever the validator accepts changes nothing when run as the explorer', async () => {
  const allow = [...ALLOWED_FUNCTIONS];
  let accepted = 0;
  let ran = 0;
  await fc.assert(
    fc.asyncProperty(
      fc.oneof(
        statement(() => allow),
        statement(() => catalogFunctions),
        statement(() => stableFunctions),
      ),
      async (sql) => {
        if (!validateExplorerSql(sql).ok) return;
        accepted++;
        const out = await ex.runQuery(
          {
            database_id: t.id,
            name: t.name,
            sql,
            sql_redacted: '',
            row_limit: 100,
            byte_limit: 1 << 20,
            statement_timeout_ms: 300,
          },
          new AbortController().signal,
        );
        if (out.kind === 'rows') ran++;
        await ex.settled();
        assert.equal(await snapshot(t), baseline, `changed by: ${sql}`);
        const probe = await ex.probeSession({ database_id: t.id, name: t.name });
        assert.equal(probe.prepared + probe.advisory + probe.listening + probe.cursors + probe.temp, 0, sql);
        assert.equal(probe.readOnlyDefault, 'on');
      },
    ),
    // A fixed seed keeps CI deterministic; set BULWARK_FC_SEED to explore other inputs.
    { numRuns: 200, seed: Number(process.env.BULWARK_FC_SEED ?? 20261125) },
  );
  assert.ok(accepted >= 40, `only ${accepted} generated statements passed the gate`);
  assert.ok(ran >= 10, `only ${ran} accepted statements ran to completion`);
});
