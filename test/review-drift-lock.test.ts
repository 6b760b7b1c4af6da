import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import pg from 'pg';
import type { JobContext } from '../src/agent/jobs/job-context.ts';
import { pinnedOptions } from '../src/agent/postgres/steward.ts';
import { DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import { testEnv } from './helpers/env.ts';
import { startTenantKit, type Tenant, type TenantKit } from './helpers/tenant-kit.ts';

// Outside review (second round): one tenant makes `doctor --fix` fail for every database.
//
// A tenant owner keeps its own pg_authid row locked (`BEGIN; ALTER ROLE <self> PASSWORD …`,
// left open with idle_in_transaction_session_timeout = 0 in its session). `node.drift_fix`
// walks the databases in one loop without a per-database catch: its `ALTER ROLE <owner> RESET
// ALL` waits for the lock_timeout (60 s on the agent), throws, and the whole job fails — every
// database after that one stays unrepaired (seen on a running stack: a planted
// `public.pg_get_userbyid(oid)` shadow in another database was not dropped; the job retried,
// blocking the agent's serial job loop for another 60 s each time). The agent's admin pool is
// reproduced with its pinned options and a 2 s lock_timeout to keep the test short.

let tk: TenantKit;
let kit: TenantKit['kit'];
let jobs: TenantKit['jobs'];
let pinnedAdmin: pg.Pool;
before(async () => {
  tk = await startTenantKit();
  ({ kit, jobs } = tk);
  pinnedAdmin = new pg.Pool({
    connectionString: testEnv().adminUrl,
    max: 4,
    options: pinnedOptions({ lock_timeout: '2000' }),
  });
  pinnedAdmin.on('error', () => {});
});
after(async () => {
  await pinnedAdmin?.end();
  await tk?.close();
});

const create = (prefix: string) => tk.create(prefix);
const login = (t: Tenant) => tk.loginOwner(t);

test("a tenant's lock on its own role does not stop drift repair of the other databases", async () => {
  const locker = await create('alock');
  const other = await create('zfix');
  const o = await login(other);
  await o.query(
    `CREATE FUNCTION public.pg_get_userbyid(oid) RETURNS name LANGUAGE sql AS $$ SELECT 'x'::name $$`,
  );
  await o.end();

  const l = await login(locker);
  try {
    await l.query('SET idle_in_transaction_session_timeout = 0');
    await l.query('BEGIN');
    await l.query(`ALTER ROLE ${locker.user} PASSWORD 'tenant-chosen-password'`);

    const ctx: JobContext = { ...kit.ctx(), admin: pinnedAdmin };
    const payload = {
      known_databases: [locker.name, other.name],
      databases: [locker, other].map((d) => ({ id: d.id, name: d.name, limits: DEFAULT_LIMITS })),
    };
    let failure: string | null = null;
    const t0 = Date.now();
    const result = (await jobs.get('node.drift_fix')!(payload, ctx).catch((err: Error) => {
      failure = err.message;
      return null;
    })) as { fixed: string[]; findings: { kind: string; object: string; detail: string }[] } | null;
    // The job itself completes: the locked database is a bounded finding, the other is fixed.
    assert.equal(failure, null);
    assert.ok(result?.fixed.includes(other.name), JSON.stringify(result?.fixed));
    assert.ok(!result?.fixed.includes(locker.name), JSON.stringify(result?.fixed));
    assert.ok(
      result?.findings.some(
        (f) =>
          f.kind === 'repair_failed' && f.object.startsWith(`${locker.name}:`) && f.detail.length <= 1000,
      ),
      JSON.stringify(result?.findings),
    );
    // Each lock wait is bounded by the lock_timeout (2 s here): a few of them, not a hang.
    assert.ok(Date.now() - t0 < 20_000, `drift_fix took ${Date.now() - t0} ms`);
    const c = await kit.connectAdmin(other.name);
    try {
      const left = await c.query(
        `SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
          WHERE n.nspname = 'public' AND p.proname = 'pg_get_userbyid'`,
      );
      assert.equal(
        left.rowCount,
        0,
        `the other database's shadow was not repaired (drift_fix: ${failure ?? 'no error'})`,
      );
    } finally {
      await c.end();
    }
  } finally {
    await l.query('ROLLBACK').catch(() => {});
    await l.end().catch(() => {});
  }
});
