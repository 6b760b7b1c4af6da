/**
 * A reviewer's attack on a move's pre-copy (ADR 0031 amended), kept as tests: the change
 * fingerprint (move-fingerprint.ts) as a NON-superuser tenant whose objects are read by a
 * non-superuser steward (a member of the owner, as tenant-sql.ts makes it).
 *
 * Findings, fixed: (1, high) a `setval(s, n, false)` — of a never-used or restarted sequence, whose
 * last value pg_sequences does not show — after the pre-copy's snapshot left the fingerprint
 * unchanged, and the target kept the old sequence (now every sequence's (last_value, is_called) is
 * read from the sequence itself); (2) a tenant holding a lock on a sequence (`BEGIN; ALTER
 * SEQUENCE …` and sleep) hung the fingerprint, and with it the node's job runner (now it runs with a
 * lock timeout and the pre-copy copies frozen instead); a sequence the steward may not read is an
 * error, never "unchanged". Held: ALTER SEQUENCE RESTART, lo_put into an existing large object.
 * The two-node versions are in review-precopy-attack.e2e.test.ts.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { databaseFingerprint } from '../src/agent/jobs/move-fingerprint.ts';
import { testEnv } from './helpers/env.ts';

const env = testEnv();
const tag = randomBytes(4).toString('hex');
const name = `rpfp_${tag}`;
const owner = `rpfp_${tag}_owner`;
const steward = `rpfp_${tag}_steward`;
const pw = `pw_${tag}`;
let admin: pg.Client;
let inside: pg.Client;

const urlOf = (db: string, user?: string) => {
  const u = new URL(env.adminUrl);
  u.pathname = `/${db}`;
  if (user) {
    u.username = user;
    u.password = pw;
  }
  return u.toString();
};
const connect = async (db: string, user?: string) => {
  const c = new pg.Client({ connectionString: urlOf(db, user) });
  c.on('error', () => {});
  await c.connect();
  return c;
};
const fingerprint = () => databaseFingerprint(admin, inside, name);

async function asTenantThenTerminated(sql: string): Promise<unknown[]> {
  const c = await connect(name, owner);
  const r = await c.query(sql);
  const { pid } = (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!;
  const ended = await admin.query<{ ok: boolean }>('SELECT pg_terminate_backend($1, 5000) AS ok', [pid]);
  assert.equal(ended.rows[0]!.ok, true);
  await c.end().catch(() => {});
  return Array.isArray(r) ? r.map((x) => x.rows) : [r.rows];
}

before(async () => {
  admin = new pg.Client({ connectionString: env.adminUrl });
  await admin.connect();
  await admin.query(`CREATE ROLE ${owner} LOGIN PASSWORD '${pw}' NOSUPERUSER NOCREATEDB NOCREATEROLE`);
  await admin.query(
    `CREATE ROLE ${steward} LOGIN PASSWORD '${pw}' NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT`,
  );
  await admin.query(`GRANT ${owner} TO ${steward}`);
  await admin.query(`CREATE DATABASE ${name} OWNER ${steward} TEMPLATE template0`);
  await admin.query(`REVOKE ALL ON DATABASE ${name} FROM PUBLIC`);
  await admin.query(`GRANT CONNECT, CREATE, TEMPORARY ON DATABASE ${name} TO ${owner}`);
  const s = await connect(name, steward);
  await s.query(`ALTER SCHEMA public OWNER TO ${owner}`);
  await s.end();
  const setup = await connect(name, owner);
  await setup.query(`
    CREATE TABLE items (id bigserial PRIMARY KEY, label text NOT NULL);
    INSERT INTO items (label) SELECT 'i' || g FROM generate_series(1, 10) g;
    CREATE SEQUENCE fresh;          -- never used: (1, is_called = false)
    CREATE SEQUENCE restarted;      -- used, then restarted: is_called = false
    SELECT nextval('restarted');
    SELECT setval('restarted', 50, false);
    CREATE SEQUENCE altered;
    SELECT setval('altered', 10, false);`);
  await setup.end();
  inside = await connect(name, steward);
});

after(async () => {
  await inside?.end().catch(() => {});
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {});
  await admin.query(`DROP ROLE IF EXISTS ${steward}`).catch(() => {});
  await admin.query(`DROP OWNED BY ${owner}`).catch(() => {});
  await admin.query(`DROP ROLE IF EXISTS ${owner}`).catch(() => {});
  await admin.end();
});

test('setval of a never-used sequence (is_called false) changes the fingerprint', async () => {
  const before = await fingerprint();
  await asTenantThenTerminated(`SELECT setval('fresh', 1000, false)`);
  assert.notEqual(await fingerprint(), before);
});

test('setval of a restarted sequence to another value, still not called, changes the fingerprint', async () => {
  const before = await fingerprint();
  await asTenantThenTerminated(`SELECT setval('restarted', 5000, false)`);
  assert.notEqual(await fingerprint(), before);
});

test('ALTER SEQUENCE RESTART on a sequence not called changes the fingerprint', async () => {
  const before = await fingerprint();
  await asTenantThenTerminated(`ALTER SEQUENCE altered RESTART WITH 777`);
  assert.notEqual(await fingerprint(), before);
});

test('lo_put into an existing large object changes the fingerprint', async () => {
  const [[{ oid }]] = (await asTenantThenTerminated(
    `SELECT lo_from_bytea(0, '\\xdeadbeef'::bytea) AS oid`,
  )) as [[{ oid: number }]];
  const before = await fingerprint();
  await asTenantThenTerminated(`SELECT lo_put(${oid}, 0, '\\x01'::bytea)`);
  assert.notEqual(await fingerprint(), before);
});

test('a tenant holding a lock on a sequence makes the fingerprint fail at its lock timeout, never hang', async () => {
  const holder = await connect(name, owner);
  try {
    await holder.query('SET statement_timeout = 0');
    await holder.query('BEGIN');
    await holder.query('ALTER SEQUENCE fresh RENAME TO fresh_held');
    const t0 = performance.now();
    await assert.rejects(databaseFingerprint(admin, inside, name, { lockTimeoutMs: 300 }), /lock timeout/);
    assert.ok(performance.now() - t0 < 5_000);
  } finally {
    await holder.query('ROLLBACK').catch(() => {});
    await holder.end().catch(() => {});
  }
  // The session is usable again and the fingerprint readable once the lock is gone.
  assert.match(await fingerprint(), /^[0-9a-f]{64}$/);
});

test('a sequence the steward may not read fails the fingerprint instead of passing as unchanged', async () => {
  await asTenantThenTerminated(
    `CREATE SEQUENCE hidden; SELECT nextval('hidden'); REVOKE ALL ON SEQUENCE hidden FROM ${owner}; GRANT UPDATE ON SEQUENCE hidden TO ${owner}`,
  );
  await assert.rejects(fingerprint(), /permission denied for sequence hidden/);
});
