import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { DEFAULT_LIMITS } from '../src/agent/jobs/contract.ts';
import { databaseHandlers } from '../src/agent/jobs/database-handlers.ts';
import type { JobHandler } from '../src/agent/jobs/job-context.ts';
import { ensureTenantTemplate, refuseMaintenanceLogins } from '../src/agent/postgres/catalog-visibility.ts';
import { roleNames } from '../src/shared/identifiers.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import { testEnv } from './helpers/env.ts';
import {
  databaseJobKit,
  newPassword,
  type PrivatePooler,
  startPrivatePooler,
  uniqueName,
} from './pooler-harness.ts';

// Outside review (second round): the issue-10 fix "tenants saw each other" revoked PUBLIC's
// pg_stat_activity, pg_stat_get_activity(integer) and pg_db_role_setting in the tenant template,
// but the per-backend accessors that pg_stat_activity is built from are still PUBLIC:
// pg_stat_get_backend_idset() with pg_stat_get_backend_userid / _dbid / _pid lists every live
// session of every other tenant (which role, which database, its PID), and pg_stat_database /
// pg_stat_get_db_* give every other tenant's activity counters (commits, rows inserted and
// fetched, live backends): a side channel on other tenants' business, readable through the
// pooler by any tenant role.

let p: PrivatePooler;
let kit: ReturnType<typeof databaseJobKit>;
let jobs: Map<string, JobHandler>;
before(async () => {
  p = await startPrivatePooler();
  const pooler = p.manager();
  await pooler.start();
  kit = databaseJobKit(p, pooler);
  jobs = new Map(databaseHandlers(kit.deps));
  await ensureTenantTemplate(kit.admin, kit.connectAdmin);
  await refuseMaintenanceLogins(kit.admin);
});
after(async () => {
  await kit.close();
  await p.stop();
});

async function create(): Promise<{ name: string; user: string; password: string }> {
  const name = uniqueName('vis');
  const password = newPassword();
  await jobs.get('database.create')!(
    {
      database_id: randomUUID(),
      name,
      verifier: scramVerifier(password),
      allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
      limits: DEFAULT_LIMITS,
    },
    kit.ctx(password),
  );
  return { name, user: roleNames(name).owner, password };
}

async function login(t: { name: string; user: string; password: string }): Promise<pg.Client> {
  const c = new pg.Client({
    host: '127.0.0.1',
    port: testEnv().pgPort,
    database: t.name,
    user: t.user,
    password: t.password,
  });
  c.on('error', () => {});
  await c.connect();
  return c;
}

test("a tenant cannot list another tenant's sessions or read its activity counters", async () => {
  const attacker = await create();
  const victim = await create();
  const v = await login(victim);
  const a = await login(attacker);
  try {
    await v.query('CREATE TABLE orders (id int); INSERT INTO orders SELECT generate_series(1, 1000)');
    const sessions = await a
      .query<{ who: string | null; db: string | null }>(
        `SELECT pg_stat_get_backend_userid(s.id)::regrole::text AS who,
              (SELECT datname FROM pg_database WHERE oid = pg_stat_get_backend_dbid(s.id))::text AS db
         FROM pg_stat_get_backend_idset() AS s(id)`,
      )
      .catch((err: Error) => ({ rows: [], refused: err.message }));
    const seen = sessions.rows.filter((r) => r.who === victim.user || r.db === victim.name);
    assert.deepEqual(seen, [], `the attacker sees the victim's live sessions: ${JSON.stringify(seen)}`);

    const counters = await a
      .query<{ datname: string; tup_inserted: string }>(
        'SELECT datname, tup_inserted FROM pg_stat_database WHERE datname = $1',
        [victim.name],
      )
      .catch(() => ({ rows: [] }));
    assert.deepEqual(
      counters.rows,
      [],
      `the attacker reads the victim's activity counters: ${JSON.stringify(counters.rows)}`,
    );
  } finally {
    await a.end().catch(() => {});
    await v.end().catch(() => {});
  }
});
