/**
 * Attached databases, agent side (ADR 0031): a PostgreSQL cluster started here (initdb, its own
 * ports), with a database and roles Bulwark did not make. The agent's attached-databases file and
 * its password files must be 0600; each entry's roles are checked as themselves: a proper
 * read-only role passes and is proven unable to write (real INSERT, UPDATE, DELETE, TRUNCATE,
 * CREATE and nextval refused); a superuser, the database's owner, or a "reader" with INSERT are
 * refused with the finding.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import pino from 'pino';
import { checkAttached, connectAttached } from '../src/agent/attached/attached-check.ts';
import { type AttachedDatabase, loadAttachedConfig } from '../src/agent/attached/attached-config.ts';
import { startAttached } from '../src/agent/attached/attached-startup.ts';
import { type DataPlane, startDataPlane } from '../src/embedded/data-plane.ts';
import { dataLayout } from '../src/embedded/layout.ts';
import { resolveServiceUser } from '../src/embedded/service-user.ts';
import { testEnv } from './helpers/env.ts';
import { freePort } from './helpers/ports.ts';

let plane: DataPlane;
let root: string;
let pgPort: number;
const ACCOUNT = '6f0c1f64-5d0e-4d57-9d4a-3c2f1e0b9a11';
const pw: Record<string, string> = {};

async function asAdmin(db: string, sql: string) {
  const c = new pg.Client({ connectionString: plane.adminUrl.replace(/\/[^/]*$/, `/${db}`) });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}

before(async () => {
  const env = testEnv();
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-attached-'));
  await fs.chmod(root, 0o711);
  pgPort = await freePort();
  plane = await startDataPlane({
    layout: dataLayout(path.join(root, 'cluster')),
    ports: { postgres: pgPort, pooler: await freePort() },
    user: resolveServiceUser(),
    unsafeFast: true,
    binaries: { pgBin: env.pgBin, pgbouncerBin: env.pgbouncerBin },
    log: () => {},
  });
  for (const r of ['app_owner', 'app_reader', 'app_migrator', 'app_super', 'app_sloppy'])
    pw[r] = randomBytes(18).toString('base64url');
  await asAdmin(
    'postgres',
    `CREATE ROLE app_owner LOGIN PASSWORD '${pw.app_owner}';
     CREATE ROLE app_reader LOGIN PASSWORD '${pw.app_reader}';
     CREATE ROLE app_migrator LOGIN PASSWORD '${pw.app_migrator}';
     CREATE ROLE app_super SUPERUSER LOGIN PASSWORD '${pw.app_super}';
     CREATE ROLE app_sloppy LOGIN PASSWORD '${pw.app_sloppy}';`,
  );
  await asAdmin('postgres', 'CREATE DATABASE app OWNER app_owner');
  await asAdmin(
    'app',
    `SET ROLE app_owner;
     REVOKE CREATE ON SCHEMA public FROM PUBLIC;
     CREATE TABLE items (id serial PRIMARY KEY, label text NOT NULL);
     INSERT INTO items (label) SELECT 'item ' || g FROM generate_series(1, 10) g;
     GRANT USAGE ON SCHEMA public TO app_reader, app_migrator, app_sloppy;
     GRANT SELECT ON items TO app_reader, app_sloppy;
     GRANT INSERT ON items TO app_sloppy;
     GRANT SELECT, INSERT, UPDATE, DELETE ON items TO app_migrator;
     GRANT USAGE ON SEQUENCE items_id_seq TO app_migrator;
     GRANT CREATE ON SCHEMA public TO app_migrator;`,
  );
  for (const [r, p] of Object.entries(pw))
    await fs.writeFile(path.join(root, `${r}.pw`), `${p}\n`, { mode: 0o600 });
});

after(async () => {
  await plane?.stop();
  if (root) await fs.rm(root, { recursive: true, force: true });
});

const entry = (name: string, reader: string, migrator: string) => ({
  name,
  account_id: ACCOUNT,
  host: '127.0.0.1',
  port: pgPort,
  database: 'app',
  reader: { user: reader, password_file: path.join(root, `${reader}.pw`) },
  migrator: { user: migrator, password_file: path.join(root, `${migrator}.pw`) },
});

async function writeConfig(databases: unknown[], mode = 0o600): Promise<string> {
  const file = path.join(root, `attached-${randomBytes(4).toString('hex')}.json`);
  await fs.writeFile(file, JSON.stringify({ databases }), { mode });
  await fs.chmod(file, mode);
  return file;
}

test('the config and password files must be 0600; a bad entry is refused, the others load', async () => {
  await assert.rejects(loadAttachedConfig(await writeConfig([], 0o644)), /mode 644; it must be 0600/);
  const loose = path.join(root, 'loose.pw');
  await fs.writeFile(loose, 'x\n', { mode: 0o640 });
  await fs.chmod(loose, 0o640);
  const file = await writeConfig([
    entry('good', 'app_reader', 'app_migrator'),
    { ...entry('loose', 'app_reader', 'app_migrator'), reader: { user: 'app_reader', password_file: loose } },
    { ...entry('BAD NAME', 'app_reader', 'app_migrator') },
    entry('good', 'app_reader', 'app_migrator'),
  ]);
  const { databases, refused } = await loadAttachedConfig(file);
  assert.deepEqual(
    databases.map((d) => d.name),
    ['good'],
  );
  assert.equal(databases[0]!.reader.password, pw.app_reader);
  const why = Object.fromEntries(refused.map((r) => [r.name, r.reason]));
  assert.match(why.loose!, /mode 640/);
  assert.match(why['BAD NAME']!, /invalid entry: name/);
  assert.match(why.good!, /listed twice/);
  // Nothing a refusal says carries a password.
  for (const r of refused) for (const p of Object.values(pw)) assert.ok(!r.reason.includes(p));
});

async function loaded(name: string, reader: string, migrator: string): Promise<AttachedDatabase> {
  const { databases, refused } = await loadAttachedConfig(await writeConfig([entry(name, reader, migrator)]));
  assert.deepEqual(refused, []);
  return databases[0]!;
}

test('a proper read-only role passes the checks and is proven unable to write', async () => {
  const db = await loaded('good', 'app_reader', 'app_migrator');
  const check = await checkAttached(db);
  assert.equal(check.ok, true, JSON.stringify(check.findings));
  assert.deepEqual(
    check.findings.filter((f) => f.severity === 'refuse'),
    [],
  );
  const c = await connectAttached(db, 'reader', { settings: { search_path: 'public' } });
  try {
    assert.equal((await c.query('SELECT count(*)::int AS n FROM items')).rows[0].n, 10);
    for (const sql of [
      "INSERT INTO items (label) VALUES ('nope')",
      "UPDATE items SET label = 'nope'",
      'DELETE FROM items',
      'TRUNCATE items',
      'CREATE TABLE public.nope (i int)',
      'CREATE SCHEMA nope',
      "SELECT nextval('items_id_seq')",
    ])
      await assert.rejects(c.query(sql), (err: { code?: string }) => err.code === '42501', sql);
  } finally {
    await c.end();
  }
  // The migration role writes (governed execution uses it).
  const m = await connectAttached(db, 'migrator', { settings: { search_path: 'public' } });
  try {
    await m.query("INSERT INTO items (label) VALUES ('by the migrator')");
  } finally {
    await m.end();
  }
});

test('a superuser, the owner, or a reader that can write is refused with the finding', async () => {
  const superuser = await checkAttached(await loaded('su', 'app_super', 'app_migrator'));
  assert.equal(superuser.ok, false);
  assert.ok(superuser.findings.some((f) => f.role === 'reader' && f.kind === 'superuser'));

  const owner = await checkAttached(await loaded('own', 'app_reader', 'app_owner'));
  assert.equal(owner.ok, false);
  assert.ok(owner.findings.some((f) => f.role === 'migrator' && f.kind === 'database_owner'));

  const sloppy = await checkAttached(await loaded('sloppy', 'app_sloppy', 'app_migrator'));
  assert.equal(sloppy.ok, false);
  assert.deepEqual(
    sloppy.findings.filter((f) => f.severity === 'refuse').map((f) => [f.kind, f.object, f.detail]),
    [['table_write', 'public.items', 'the read-only role has INSERT on it']],
  );

  const wrong = await checkAttached({ ...(await loaded('wrong', 'app_reader', 'app_migrator')), port: 1 });
  assert.equal(wrong.ok, false);
  assert.ok(wrong.findings.every((f) => f.kind === 'login_failed'));
});

test('settings the owner can set, and a role the reader can SET ROLE to, do not fool the checks', async () => {
  // The database's owner sets a `role` for the database: a "reader" that is a member of the
  // owner would log in as app_reader and every check would look at app_reader instead.
  pw.app_sneaky = randomBytes(18).toString('base64url');
  pw.app_setter = randomBytes(18).toString('base64url');
  await asAdmin(
    'postgres',
    `CREATE ROLE app_sneaky LOGIN PASSWORD '${pw.app_sneaky}' IN ROLE app_owner, app_reader;
     CREATE ROLE app_setter LOGIN NOINHERIT PASSWORD '${pw.app_setter}' IN ROLE app_sloppy;
     ALTER ROLE app_sneaky IN DATABASE app SET role = 'app_reader';`,
  );
  for (const r of ['app_sneaky', 'app_setter'])
    await fs.writeFile(path.join(root, `${r}.pw`), `${pw[r]}\n`, { mode: 0o600 });
  try {
    const sneaky = await checkAttached(await loaded('sneaky', 'app_sneaky', 'app_migrator'));
    assert.equal(sneaky.ok, false);
    assert.ok(
      sneaky.findings.some(
        (f) => f.role === 'reader' && f.kind === 'database_owner' && f.object === 'app_sneaky',
      ),
      JSON.stringify(sneaky.findings),
    );

    // NOINHERIT: app_setter's own privileges show no write, but SET ROLE app_sloppy writes.
    const db = await loaded('setter', 'app_setter', 'app_migrator');
    const setter = await checkAttached(db);
    assert.equal(setter.ok, false);
    assert.deepEqual(
      setter.findings.filter((f) => f.severity === 'refuse').map((f) => [f.kind, f.object]),
      [['set_role', 'app_sloppy']],
    );
    const c = await connectAttached(db, 'reader', { settings: { search_path: 'public' } });
    try {
      await c.query('SET ROLE app_sloppy');
      await c.query("INSERT INTO items (id, label) VALUES (100000, 'through SET ROLE')");
    } finally {
      await c.end();
    }
  } finally {
    await asAdmin('app', "DELETE FROM items WHERE label = 'through SET ROLE'");
    await asAdmin(
      'postgres',
      'ALTER ROLE app_sneaky IN DATABASE app RESET ALL; DROP ROLE app_sneaky; DROP ROLE app_setter;',
    );
  }
});

test('bulwark doctor --attached reports what it could check, per entry, without a password', async () => {
  const file = await writeConfig([
    entry('good', 'app_reader', 'app_migrator'),
    entry('sloppy', 'app_sloppy', 'app_migrator'),
    {
      ...entry('gone', 'app_reader', 'app_migrator'),
      reader: { user: 'x', password_file: '/nonexistent/pw' },
    },
  ]);
  const cli = path.resolve(import.meta.dirname, '../src/cli/index.ts');
  const run = (args: string[]) =>
    new Promise<{ code: number; out: string }>((resolve) => {
      execFile(
        process.execPath,
        [cli, 'doctor', '--attached', file, ...args],
        { timeout: 60_000 },
        (err, out) => resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, out }),
      );
    });
  const json = await run(['--json']);
  assert.equal(json.code, 1);
  const d = JSON.parse(json.out);
  assert.deepEqual(
    d.checks.map((c: { name: string; ok: boolean }) => [c.name, c.ok]),
    [
      ['good', true],
      ['sloppy', false],
    ],
  );
  assert.match(d.refused[0].reason, /does not exist/);
  const human = await run([]);
  assert.equal(human.code, 1);
  assert.match(human.out, /attached good: ok/);
  assert.match(human.out, /attached sloppy: REFUSED/);
  assert.match(human.out, /table_write\s+public\.items/);
  assert.match(human.out, /attached gone: NOT LOADED/);
  for (const p of Object.values(pw)) assert.ok(!json.out.includes(p) && !human.out.includes(p));
});

test('at start the agent keeps the entries that pass and logs the others, without a password', async () => {
  const lines: string[] = [];
  const log = pino({ level: 'info' }, { write: (l: string) => lines.push(l) });
  const file = await writeConfig([
    entry('good', 'app_reader', 'app_migrator'),
    entry('su', 'app_super', 'app_migrator'),
  ]);
  const started = await startAttached(file, log);
  assert.deepEqual(
    started.databases.map((d) => d.name),
    ['good'],
  );
  const text = lines.join('');
  assert.match(text, /"attached":"su".*attached database refused by its checks/);
  assert.match(text, /"kind":"superuser"/);
  for (const p of Object.values(pw)) assert.ok(!text.includes(p));
  // A file that is not private: nothing attached, the agent goes on.
  const loose = await writeConfig([entry('good', 'app_reader', 'app_migrator')], 0o644);
  assert.deepEqual((await startAttached(loose, log)).databases, []);
  assert.match(lines.join(''), /attached databases file refused/);
});
