import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { startTenantKit, type Tenant, type TenantKit } from './helpers/tenant-kit.ts';

// Outside review (second round): the issue-10 fix "tenants saw each other" revoked PUBLIC's
// pg_stat_activity, pg_stat_get_activity(integer) and pg_db_role_setting in the tenant template,
// but the per-backend accessors that pg_stat_activity is built from are still PUBLIC:
// pg_stat_get_backend_idset() with pg_stat_get_backend_userid / _dbid / _pid lists every live
// session of every other tenant (which role, which database, its PID), and pg_stat_database /
// pg_stat_get_db_* give every other tenant's activity counters (commits, rows inserted and
// fetched, live backends): a side channel on other tenants' business, readable through the
// pooler by any tenant role.

let tk: TenantKit;
before(async () => {
  tk = await startTenantKit();
});
after(async () => {
  await tk?.close();
});

const create = () => tk.create('vis');
const login = (t: Tenant) => tk.loginOwner(t);

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
