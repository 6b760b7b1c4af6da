import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import type pg from 'pg';
import type { ExplorerExecutor } from '../src/agent/explorer/explorer-executor.ts';
import type { ExplorerOutcome, QueryPayload } from '../src/shared/contracts/explorer-channel.ts';
import { loadExplorerParser } from '../src/shared/sql/explorer-validator.ts';
import { adminPool, createTenant, queryPayload, type Tenant, testExecutor } from './helpers/explorer.ts';

// Review of the derived explorer allowlist (ADR 0012), as a tenant owner and as a read-only,
// database-scoped explorer key, through the agent's executor against the test cluster. Each test
// below failed on the code it was written against. The memory bound is the cluster's (each
// PostgreSQL process under RLIMIT_DATA, `BULWARK_PG_BACKEND_MEMORY_MB`); the temp-file bound the
// explorer role's temp_file_limit. age(xid) showing the cluster's transaction counter is accepted
// and documented (docs/security.md): a tenant's own sessions see it too.

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

// A tenant's range subtype_diff (the planner calls it with no EXECUTE check, so it ran as
// <db>_explorer): the template's guard now refuses such a range and drift reports existing ones —
// tested with a real owner login in test/review-drift-extension.test.ts.

test('one explorer query cannot make PostgreSQL hold more than its per-process bound (2 GiB by default; array_agg of large values)', async () => {
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
  // 28 values of 100 MB: without the bound the array is refused only at the end (over 1 GB), after
  // all 2.8 GB were kept.
  const [out, peak] = await peakWhile(
    run("select array_length(array_agg(repeat('x', 100000000)), 1) from generate_series(1, 28)", {
      statement_timeout_ms: 15_000,
    }),
    vmHwmBytes,
  );
  assert.equal(out.kind, 'error');
  // Out of memory (the process's bound), not "array size exceeds the maximum" after holding it all.
  if (out.kind === 'error') assert.equal(out.error.sqlstate, '53200', JSON.stringify(out.error));
  assert.ok(
    peak < 2.125 * 1024 ** 3,
    `the explorer's backend peaked at ${(peak / 1024 ** 3).toFixed(2)} GiB for one query`,
  );
});

test('one explorer query cannot fill the disk with temporary files (a sort over 1 GB)', async () => {
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
