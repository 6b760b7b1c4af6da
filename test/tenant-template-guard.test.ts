import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { after, before, test } from 'node:test';
import type { DriftFinding } from '../src/agent/postgres/drift.ts';
import { DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import { testEnv } from './helpers/env.ts';
import { startTenantKit, type Tenant, type TenantKit } from './helpers/tenant-kit.ts';

// What the tenant template adds to every tenant database (catalog-visibility.ts): the generated
// list of hidden statistics accessors and the extension guard. Neither may break the tenant's own
// tools (psql's catalog queries, pg_dump), nor be undone by the tenant.

let tk: TenantKit;
let kit: TenantKit['kit'];
let jobs: TenantKit['jobs'];
before(async () => {
  tk = await startTenantKit();
  ({ kit, jobs } = tk);
});
after(async () => {
  await tk?.close();
});

const create = () => tk.create('tguard');

async function asOwner(t: Tenant, sql: string) {
  const c = await tk.loginOwner(t);
  try {
    return await c.query(sql);
  } finally {
    await c.end().catch(() => {});
  }
}

test('the hidden list covers the stats family and keeps what psql, pg_dump and the explorer use', async () => {
  const t = await create();
  const r = await asOwner(
    t,
    `SELECT o FROM unnest(ARRAY[
        'pg_stat_get_backend_idset()', 'pg_stat_get_backend_pid(integer)', 'pg_stat_get_backend_dbid(integer)',
        'pg_stat_get_backend_userid(integer)', 'pg_stat_get_backend_activity(integer)',
        'pg_stat_get_backend_client_addr(integer)', 'pg_stat_get_activity(integer)',
        'pg_stat_get_progress_info(text)', 'pg_stat_get_db_xact_commit(oid)', 'pg_stat_get_db_tuples_inserted(oid)',
        'pg_stat_get_db_numbackends(oid)']) AS o
      WHERE has_function_privilege(o, 'EXECUTE')
     UNION ALL
     SELECT o FROM unnest(ARRAY['pg_stat_activity', 'pg_stat_database', 'pg_stat_database_conflicts', 'pg_stat_ssl',
        'pg_stat_gssapi', 'pg_stat_progress_vacuum', 'pg_stat_progress_copy', 'pg_stat_replication',
        'pg_db_role_setting']) AS o
      WHERE has_table_privilege(o, 'SELECT')`,
  );
  assert.deepEqual(r.rows, [], 'still usable by a tenant');
  // Kept: this session, this database's tables, and what the explorer's leftover check reads.
  const kept = await asOwner(
    t,
    `SELECT pg_backend_pid() > 0 AS pid,
            (SELECT count(*) >= 0 FROM pg_locks) AS locks,
            (SELECT count(*) >= 0 FROM pg_prepared_statements) AS prepared,
            (SELECT count(*) >= 0 FROM pg_cursors) AS cursors,
            (SELECT count(*) >= 0 FROM pg_stat_user_tables) AS tables,
            (SELECT count(*) > 0 FROM pg_database) AS databases,
            (SELECT count(*) > 0 FROM pg_roles) AS roles`,
  );
  assert.deepEqual(kept.rows[0], {
    pid: true,
    locks: true,
    prepared: true,
    cursors: true,
    tables: true,
    databases: true,
    roles: true,
  });
  // psql's \l, \dt, \df and pg_dump, as the tenant.
  await asOwner(t, 'CREATE TABLE public.t (id int); CREATE EXTENSION pgcrypto');
  const env = { ...process.env, PGPASSWORD: t.password };
  const conn = ['-h', '127.0.0.1', '-p', String(testEnv().pgPort), '-U', t.roles.owner, '-d', t.name];
  for (const meta of ['\\l', '\\dt', '\\df', '\\du', '\\dx', '\\dn'])
    await new Promise<void>((resolve, reject) =>
      execFile('psql', [...conn, '-X', '-v', 'ON_ERROR_STOP=1', '-c', meta], { env }, (err, _o, stderr) =>
        err ? reject(new Error(`psql ${meta}: ${stderr}`)) : resolve(),
      ),
    );
  const dump = await new Promise<string>((resolve, reject) =>
    execFile('pg_dump', [...conn], { env, maxBuffer: 16 << 20 }, (err, out, stderr) =>
      err ? reject(new Error(`pg_dump: ${stderr}`)) : resolve(out),
    ),
  );
  assert.match(dump, /CREATE TABLE public\.t/);
});

test('the tenant cannot drop, disable or replace the extension guard', async () => {
  const t = await create();
  for (const sql of [
    'DROP EVENT TRIGGER bulwark_extension_guard',
    'ALTER EVENT TRIGGER bulwark_extension_guard DISABLE',
    'ALTER EVENT TRIGGER bulwark_extension_guard OWNER TO CURRENT_USER',
    `CREATE OR REPLACE FUNCTION bulwark_guard.extension_guard() RETURNS event_trigger LANGUAGE plpgsql AS $$ BEGIN END $$`,
    'DROP SCHEMA bulwark_guard CASCADE',
    'SET session_replication_role = replica',
  ]) {
    const err = await asOwner(t, sql).then(
      () => null,
      (e: Error) => e.message,
    );
    assert.ok(err !== null, `the tenant ran: ${sql}`);
  }
  // A normal trusted extension still installs (in the tenant's schema) and drops.
  await asOwner(t, 'CREATE EXTENSION hstore; DROP EXTENSION hstore');
  const payload = {
    known_databases: [t.name],
    databases: [{ id: t.id, name: t.name, limits: DEFAULT_LIMITS }],
  };
  const { findings } = (await jobs.get('node.drift')!(payload, kit.ctx())) as { findings: DriftFinding[] };
  assert.deepEqual(
    findings.filter((f) => f.object.startsWith(`${t.name}:`) || f.object === t.name),
    [],
  );
});
