/**
 * The change fingerprint a move's pre-copy relies on (src/agent/jobs/move-fingerprint.ts), against
 * the run's real PostgreSQL: every kind of change a dump would carry changes it once the session
 * that made it has been terminated (as the freeze does, waiting for it to be gone) — even a session
 * still connected and idle, whose counts were not flushed yet — and reads, other databases' work
 * and autovacuum's statistics do not.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import pg from 'pg';
import {
  databaseFingerprint,
  otherSessions,
  waitForSettledCounts,
} from '../src/agent/jobs/move-fingerprint.ts';
import { testEnv } from './helpers/env.ts';

const env = testEnv();
const name = `fp_${randomBytes(4).toString('hex')}`;
const other = `fp_other_${randomBytes(4).toString('hex')}`;
let admin: pg.Client;
let inside: pg.Client;

const urlOf = (db: string) => {
  const u = new URL(env.adminUrl);
  u.pathname = `/${db}`;
  return u.toString();
};
const connect = async (db: string) => {
  const c = new pg.Client({ connectionString: urlOf(db) });
  c.on('error', () => {});
  await c.connect();
  return c;
};
const fingerprint = () => databaseFingerprint(admin, inside, name);

/** Runs `sql` in a session of its own that stays connected (its counts unflushed), then ends it as the freeze does. */
async function inSessionThenTerminated(sql: string, db = name): Promise<void> {
  const c = await connect(db);
  await c.query(sql);
  const { pid } = (await c.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]!;
  const ended = await admin.query<{ ok: boolean }>('SELECT pg_terminate_backend($1, 5000) AS ok', [pid]);
  assert.equal(ended.rows[0]!.ok, true);
  await c.end().catch(() => {});
}

before(async () => {
  admin = new pg.Client({ connectionString: env.adminUrl });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name} TEMPLATE template0`);
  await admin.query(`CREATE DATABASE ${other} TEMPLATE template0`);
  const setup = await connect(name);
  await setup.query(`
    CREATE TABLE items (id bigserial PRIMARY KEY, label text NOT NULL);
    CREATE TABLE loose (v int);
    INSERT INTO items (label) SELECT 'i' || g FROM generate_series(1, 100) g;
    INSERT INTO loose SELECT g FROM generate_series(1, 10) g;
    CREATE TABLE wide (t text);
    INSERT INTO wide SELECT repeat(md5(g::text), 28) FROM generate_series(1, 2000) g;
    CREATE SEQUENCE ticket;
    CREATE MATERIALIZED VIEW counts AS SELECT count(*) AS n FROM items;`);
  await setup.end();
  inside = await connect(name);
});

after(async () => {
  await inside?.end().catch(() => {});
  await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`).catch(() => {});
  await admin.query(`DROP DATABASE IF EXISTS ${other} WITH (FORCE)`).catch(() => {});
  await admin.end();
});

test('reads, ANALYZE and other databases leave the fingerprint as it was', async () => {
  // The set-up's own session exited: its counts are in. Two reads agree.
  const first = await fingerprint();
  assert.equal(await fingerprint(), first);
  await inSessionThenTerminated(
    'SELECT count(*) FROM items; SELECT * FROM loose; ANALYZE items; ANALYZE loose',
  );
  // Statistics wide enough to be TOASTed (histograms of 900-byte values): autovacuum writes
  // pg_statistic's TOAST table at any time, and it must not count.
  const toastBefore = await inside.query<{ n: string }>(
    `SELECT n_tup_ins::text AS n FROM pg_stat_all_tables
      WHERE relid = (SELECT reltoastrelid FROM pg_class WHERE oid = 'pg_statistic'::regclass)`,
  );
  await inSessionThenTerminated('ANALYZE wide');
  const toastAfter = await inside.query<{ n: string }>(
    `SELECT n_tup_ins::text AS n FROM pg_stat_all_tables
      WHERE relid = (SELECT reltoastrelid FROM pg_class WHERE oid = 'pg_statistic'::regclass)`,
  );
  assert.notEqual(toastAfter.rows[0]!.n, toastBefore.rows[0]!.n, 'the ANALYZE wrote TOASTed statistics');
  await inSessionThenTerminated(
    `CREATE TABLE elsewhere (x int); INSERT INTO elsewhere VALUES (1); ALTER DATABASE ${other} SET work_mem = 1024`,
    other,
  );
  assert.equal(await fingerprint(), first);
});

const CHANGES: [string, string][] = [
  ['an INSERT', "INSERT INTO items (label) VALUES ('new')"],
  ['an UPDATE', "UPDATE items SET label = 'x' WHERE id = 1"],
  ['a DELETE', 'DELETE FROM items WHERE id = 2'],
  ['an UPDATE of a table without a key', 'UPDATE loose SET v = v + 1 WHERE v = 3'],
  ['a TRUNCATE (no row counted)', 'TRUNCATE loose'],
  ['a nextval alone', "SELECT nextval('ticket')"],
  [
    'a setval to the same value, not called',
    "SELECT setval('ticket', (SELECT last_value FROM ticket), false)",
  ],
  ['a REFRESH of a materialized view', 'REFRESH MATERIALIZED VIEW counts'],
  ['a new table', 'CREATE TABLE later (x int)'],
  ['a comment', "COMMENT ON TABLE items IS 'noted'"],
  ['a grant', 'GRANT SELECT ON items TO PUBLIC'],
  ['a new function', 'CREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1 $$'],
  ['a large object', "SELECT lo_from_bytea(0, '\\xdeadbeef'::bytea)"],
  ['a database setting', `ALTER DATABASE ${name} SET statement_timeout = 12345`],
  ['an open transaction that committed', 'BEGIN; INSERT INTO loose VALUES (99); COMMIT'],
];

for (const [what, sql] of CHANGES) {
  test(`${what} changes the fingerprint, counted at the latest when its session ends`, async () => {
    const before = await fingerprint();
    await inSessionThenTerminated(sql);
    assert.notEqual(await fingerprint(), before, what);
  });
}

test('a pre-copy waits for sessions that only just went idle, and not past its bound', async () => {
  const busy = await connect(name);
  try {
    await busy.query("INSERT INTO items (label) VALUES ('recent')");
    const t0 = performance.now();
    const waited = await waitForSettledCounts(admin, name, 'nobody', {
      settledMs: 400,
      maxMs: 2_000,
      sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
    });
    // The session was idle for less than 400 ms: waited until it was (bounded by 2 s).
    assert.ok(waited >= 250 && performance.now() - t0 < 2_500, `waited ${waited} ms`);
    assert.equal(await otherSessions(admin, name, 'nobody'), 2, 'this session and the test reader');
    // One in a transaction is not waited for (its writes change the fingerprint anyway).
    await busy.query('BEGIN');
    await busy.query('SELECT 1');
    const none = await waitForSettledCounts(admin, name, 'nobody', {
      settledMs: 60_000,
      maxMs: 60_000,
      sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
    });
    assert.ok(none < 1_000, `waited ${none} ms`);
    await busy.query('ROLLBACK');
  } finally {
    await busy.end();
  }
});
