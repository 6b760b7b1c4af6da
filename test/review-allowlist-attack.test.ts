import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import type pg from 'pg';
import type { ExplorerExecutor } from '../src/agent/explorer/explorer-executor.ts';
import type { ExplorerOutcome, QueryPayload } from '../src/shared/contracts/explorer-channel.ts';
import { loadExplorerParser } from '../src/shared/sql/explorer-validator.ts';
import {
  adminPool,
  assertSessionClean,
  createTenant,
  queryPayload,
  type Tenant,
  testExecutor,
} from './helpers/explorer.ts';

// Review of the derived explorer allowlist (ADR 0012), as a tenant owner and as a read-only,
// database-scoped explorer key, through the agent's executor against the test cluster. Each test
// below failed on the code it was written against; the ones marked `todo` need a fix outside
// src/shared/sql (described in the todo and in the review report).

let admin: pg.Pool;
let t: Tenant;
let ex: ExplorerExecutor;

before(async () => {
  await loadExplorerParser();
  admin = adminPool();
  t = await createTenant(admin, 'rva');
  ex = testExecutor(admin, { maxConnections: 1 });
  await run('select 1'); // the first use prepares the explorer role (LOGIN, EXECUTE revoked)
  await ex.settled();
});

after(async () => {
  await ex?.close();
  await t?.drop();
  await admin?.end();
});

function run(sql: string, over: Partial<QueryPayload> = {}): Promise<ExplorerOutcome> {
  return ex.runQuery(queryPayload(t, sql, over), new AbortController().signal);
}

/** Highest value `sample()` returned, polled every 100 ms while `work` runs. */
async function peakWhile<T>(work: Promise<T>, sample: () => Promise<number>): Promise<[T, number]> {
  let peak = 0;
  let done = false;
  const poll = (async () => {
    while (!done) {
      peak = Math.max(peak, await sample().catch(() => 0));
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  try {
    return [await work, peak];
  } finally {
    done = true;
    await poll;
  }
}

test("a tenant's range subtype_diff function does not run in the explorer without EXECUTE", {
  todo:
    "the planner calls a range type's subtype_diff through the type cache (no EXECUTE check) when it " +
    'estimates && / << on a column with statistics: owner code runs as <db>_explorer with no grant. ' +
    'Fix outside src/shared/sql: the template guard (event trigger) refuses CREATE TYPE … AS RANGE ' +
    'whose subtype_diff is not a pg_catalog function, and drift reports existing ones',
}, async () => {
  // The owner plants a range type whose subtype_diff is its own PL/pgSQL function (harmless for
  // the owner's ANALYZE, which runs as the owner; loud for anyone else), and has statistics made.
  await t.asOwner(`
      CREATE FUNCTION public.plant_diff(a int4, b int4) RETURNS float8 LANGUAGE plpgsql IMMUTABLE AS $$
      BEGIN
        IF current_user = '${t.roles.owner}' THEN RETURN b - a; END IF;
        RAISE EXCEPTION 'PLANTED subtype_diff ran as %', current_user;
      END $$;
      CREATE TYPE public.prange AS RANGE (subtype = int4, subtype_diff = public.plant_diff);
      CREATE TABLE public.spans (r public.prange);
      INSERT INTO public.spans SELECT public.prange(g, g + 5) FROM generate_series(1, 2000) g;
      ANALYZE public.spans;
    `);
  const priv = await t.asAdmin(
    `SELECT has_function_privilege($1, 'public.plant_diff(int4,int4)', 'EXECUTE') AS ok`,
    [t.roles.explorer],
  );
  assert.equal(priv.rows[0].ok, false, 'the explorer must not hold EXECUTE on the planted function');
  // Both statements pass the gate (a public type, allowed operators) and call no function.
  for (const sql of [
    "select count(*) from spans where r && '[10,20)'::prange",
    "select count(*) from spans where r << '[10,20)'::prange",
  ]) {
    const out = await run(sql);
    assert.ok(
      !JSON.stringify(out).includes('PLANTED'),
      `${sql}: the owner's subtype_diff ran: ${JSON.stringify(out)}`,
    );
    await assertSessionClean(ex, t, sql);
  }
});

test('one explorer query cannot make PostgreSQL hold more than the documented 1 GB (array_agg of large values)', {
  todo:
    'array_agg keeps every value until the end: 20 × 100 MB took 2 GB of backend memory in 4 s here ' +
    '(~15 GB within the 30 s maximum timeout, 8 at once per account): the OOM killer then ends a ' +
    'backend and PostgreSQL restarts every tenant. Fix outside src/shared/sql: start the postmaster ' +
    'with RLIMIT_DATA/RLIMIT_AS (e.g. 2 GiB per backend; shared memory is not counted) so PostgreSQL ' +
    'answers "out of memory" (53200) to that query only; document the bound in security.md',
}, async () => {
  const pids = async () =>
    (await admin.query('SELECT pid FROM pg_stat_activity WHERE usename = $1', [t.roles.explorer])).rows.map(
      (r: { pid: number }) => r.pid,
    );
  const vmHwmBytes = async () => {
    let max = 0;
    for (const pid of await pids()) {
      try {
        const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
        if (m) max = Math.max(max, Number(m[1]) * 1024);
      } catch {
        // the backend ended between the two reads
      }
    }
    return max;
  };
  // 14 values of 100 MB: the array is refused at the end (over 1 GB), after all were kept.
  const [out, peak] = await peakWhile(
    run("select array_length(array_agg(repeat('x', 100000000)), 1) from generate_series(1, 14)", {
      statement_timeout_ms: 15_000,
    }),
    vmHwmBytes,
  );
  assert.equal(out.kind, 'error');
  assert.ok(
    peak < 1.125 * 1024 ** 3,
    `the explorer's backend peaked at ${(peak / 1024 ** 3).toFixed(2)} GiB for one query`,
  );
});

test('one explorer query cannot fill the disk with temporary files (a sort over 1 GB)', {
  todo:
    'no temp_file_limit applies to <db>_explorer: a read-level key wrote ~3 GB of pgsql_tmp in 10 s ' +
    'here (~9 GB per 30 s query, 8 at once per account). Fix outside src/shared/sql: the agent sets ' +
    "ALTER ROLE <db>_explorer SET temp_file_limit = '512MB' (superuser-only, so the explorer cannot " +
    'raise it) when it prepares the role, checks it in the guard, and drift reports it',
}, async () => {
  const tempBytes = async () =>
    Number((await admin.query('SELECT coalesce(sum(size), 0)::bigint AS n FROM pg_ls_tmpdir()')).rows[0].n);
  const [out, peak] = await peakWhile(
    run(
      'select count(distinct x) from (select repeat(md5(g::text), 100) x from generate_series(1, 400000) g) s',
      { statement_timeout_ms: 20_000 },
    ),
    tempBytes,
  );
  assert.ok(peak < 1024 ** 3, `the explorer wrote ${(peak / 1024 ** 3).toFixed(2)} GiB of temporary files`);
  assert.equal(out.kind, 'error', 'the sort should have been stopped by a temp-file limit');
  if (out.kind === 'error') assert.equal(out.error.sqlstate, '53400');
});

test("the explorer does not read the cluster's transaction counter through age(xid)", {
  todo:
    'age(xid) is STABLE and answers the cluster-wide next xid minus its argument: polled, it shows every ' +
    "tenant's write activity — what mxid_age is denied for. The gate sees names, so closing it means " +
    'denying `age` (also refusing age(timestamp), which users expect) or accepting and documenting it: a ' +
    'policy decision for the allowlist owner (explorer-function-policy.ts)',
}, async () => {
  const other = await createTenant(admin, 'rvxid');
  try {
    const ask = async () => {
      const out = await run("select age('3'::xid) as a");
      return out.kind === 'rows' ? Number(out.output.rows[0]?.[0]) : null;
    };
    const before = await ask();
    // Another account writes, in ten transactions of its own.
    for (let i = 0; i < 10; i++)
      await other.asOwner(`CREATE TABLE IF NOT EXISTS w (n int); INSERT INTO w VALUES (${i})`);
    const after = await ask();
    assert.ok(
      before === null || after === null || after - before < 10,
      `another account's ten transactions showed through age(xid): ${before} → ${after}`,
    );
  } finally {
    await other.drop();
  }
});
