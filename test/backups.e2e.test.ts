/**
 * Backups end to end: the HTTP API with a real key → the job queue → a real agent (pg_dump, the
 * encrypted archive in its backup dir) → PostgreSQL and PgBouncer, and back: the backup is
 * recorded with its size and checksum, downloads as the plain archive through a signed link, and
 * restores into a new database that becomes ready and holds the same data.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import type { RunningAgent } from '../src/agent/main.ts';
import { startTestAgent } from './helpers/agent.ts';
import { testEnv } from './helpers/env.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { waitUntil } from './helpers/wait.ts';
import { type PrivatePooler, startPrivatePooler } from './pooler-harness.ts';

const CLI = path.resolve(import.meta.dirname, '../src/cli/index.ts');

let pooler: PrivatePooler;
let serverUrl: string;
let s: TestServer;
let agent: RunningAgent;
let key: TestKey;
before(async () => {
  pooler = await startPrivatePooler();
  // The server has no path to the agent's backup dir: downloads come through the agent (ADR 0023).
  s = await createTestServer({ poolerPort: pooler.port, poolerSslmode: 'disable' });
  const url = await s.app.listen({ host: '127.0.0.1', port: 0 });
  serverUrl = url.replace('localhost', '127.0.0.1');
  agent = await startTestAgent(s, url, { name: 'local', pooler, explorerChannel: false });
  key = await createTestKey(s, { account: 'backups-e2e' });
});
after(async () => {
  await agent?.stop();
  s?.app.server.closeAllConnections();
  await s?.stop();
  await pooler?.stop();
});

const api = (method: 'GET' | 'POST' | 'DELETE', url: string, payload?: Record<string, unknown>) =>
  s.app.inject({ method, url, headers: key.headers, ...(payload ? { payload } : {}) });

async function ready(name: string) {
  return waitUntil(`${name} ready`, async () => {
    const d = (await api('GET', `/v1/databases/${name}`)).json();
    assert.notEqual(d.status, 'failed', d.failure_reason);
    return d.status === 'ready' ? d : undefined;
  });
}

async function login(name: string): Promise<pg.Client> {
  const conn = (await api('GET', `/v1/databases/${name}/connection`)).json();
  const { password } = (await api('POST', `/v1/databases/${name}/credentials/reveal`)).json();
  const c = new pg.Client({
    host: '127.0.0.1',
    port: pooler.port,
    user: conn.user,
    database: conn.database,
    password,
    connectionTimeoutMillis: 5_000,
  });
  c.on('error', () => {});
  await c.connect();
  return c;
}

const snapshot = async (c: pg.Client) => ({
  notes: (await c.query('SELECT id, body FROM notes ORDER BY id')).rows,
  big: (await c.query('SELECT count(*)::int AS n, sum(length(v))::int AS len FROM big')).rows[0],
  seq: (await c.query('SELECT last_value::int FROM notes_seq')).rows[0],
  view: (await c.query('SELECT * FROM long_notes ORDER BY id')).rows,
  index: (await c.query(`SELECT indexname FROM pg_catalog.pg_indexes WHERE tablename = 'big' ORDER BY 1`))
    .rows,
});

test('backup → GET shows size and sha256 → download is the plain archive → restore to new is ready with equal data', async () => {
  const name = `bk_${randomBytes(4).toString('hex')}`;
  assert.equal((await api('POST', '/v1/databases', { name })).statusCode, 202);
  await ready(name);
  const app = await login(name);
  await app.query(`
    CREATE SEQUENCE notes_seq START 100;
    CREATE TABLE notes (id int PRIMARY KEY DEFAULT nextval('notes_seq'), body text NOT NULL);
    INSERT INTO notes (body) SELECT 'note ' || g FROM generate_series(1, 50) g;
    CREATE TABLE big (k int, v text);
    INSERT INTO big SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 5000) g;
    CREATE INDEX big_k ON big (k);
    CREATE VIEW long_notes AS SELECT id, body FROM notes WHERE length(body) > 6;`);
  const before = await snapshot(app);
  await app.end();

  const created = await api('POST', `/v1/databases/${name}/backups`);
  assert.equal(created.statusCode, 202, created.body);
  const id = created.json().id;
  const done = await waitUntil('backup completed', async () => {
    const b = (await api('GET', `/v1/databases/${name}/backups/${id}`)).json();
    assert.notEqual(b.status, 'failed', b.failure_reason);
    return b.status === 'completed' ? b : undefined;
  });
  assert.ok(done.size_bytes > 0);
  assert.match(done.sha256, /^[0-9a-f]{64}$/);
  assert.ok(done.started_at && done.completed_at);
  assert.equal(done.tables_total, 2);
  const detail = (await api('GET', `/v1/databases/${name}`)).json();
  assert.equal(detail.backup.last_good_at, done.completed_at);

  // The download: the plain pg_dump archive, whose checksum is the recorded one.
  const { url } = (await api('POST', `/v1/databases/${name}/backups/${id}/download-link`)).json();
  const file = await s.app.inject({ method: 'GET', url, headers: key.headers });
  assert.equal(file.statusCode, 200, file.body.slice(0, 300));
  assert.equal(file.rawPayload.subarray(0, 5).toString('latin1'), 'PGDMP');
  assert.equal(createHash('sha256').update(file.rawPayload).digest('hex'), done.sha256);
  await restoresWithPgRestore(file.rawPayload, before);

  // Restore into a new database: listed at once, ready once restored and checked, equal data.
  const target = `${name}_r`;
  const restore = await api('POST', `/v1/databases/${name}/restore`, {
    backup_id: id,
    target: 'new',
    new_name: target,
  });
  assert.equal(restore.statusCode, 202, restore.body);
  assert.equal(restore.json().target, 'new');
  const listed = (await api('GET', '/v1/databases')).json();
  assert.ok(listed.items.some((d: { name: string }) => d.name === target));
  await ready(target);
  const r = await waitUntil('restore completed', async () => {
    const x = (await api('GET', `/v1/databases/${name}/restores/${restore.json().id}`)).json();
    assert.notEqual(x.status, 'failed', x.failure_reason);
    return x.status === 'completed' ? x : undefined;
  });
  assert.equal(r.database, target);
  assert.ok(r.rows_checked >= 5050);
  // The agent reported its progress on the way (the API shows it only while running).
  assert.equal(r.progress, null);
  const reported = (
    await s.db.pool.query<{ progress: { phase: string; done_bytes: number } | null }>(
      'SELECT j.progress FROM jobs j JOIN restores r ON r.job_id = j.id WHERE r.id = $1',
      [r.id],
    )
  ).rows[0]?.progress;
  assert.ok(
    reported && ['restore', 'check', 'target', 'verify'].includes(reported.phase),
    JSON.stringify(reported),
  );
  const copy = await login(target);
  try {
    assert.deepEqual(await snapshot(copy), before);
  } finally {
    await copy.end();
  }
});

test('restore in place: a safety backup first, then the database holds the backup again', async () => {
  const name = `bk_${randomBytes(4).toString('hex')}`;
  assert.equal((await api('POST', '/v1/databases', { name })).statusCode, 202);
  await ready(name);
  const app = await login(name);
  await app.query(`CREATE TABLE notes (id int PRIMARY KEY, body text);
                   INSERT INTO notes SELECT g, 'kept ' || g FROM generate_series(1, 20) g;`);
  await app.end();
  const id = (await api('POST', `/v1/databases/${name}/backups`)).json().id;
  await waitUntil('backup completed', async () => {
    const b = (await api('GET', `/v1/databases/${name}/backups/${id}`)).json();
    assert.notEqual(b.status, 'failed', b.failure_reason);
    return b.status === 'completed' ? b : undefined;
  });
  // A risky change after the backup: undone by the restore (and kept in the safety backup).
  const changed = await login(name);
  await changed.query(`DELETE FROM notes WHERE id > 5; CREATE TABLE oops (x int);`);
  await changed.end();

  const restore = await api('POST', `/v1/databases/${name}/restore`, { backup_id: id, target: 'in_place' });
  assert.equal(restore.statusCode, 202, restore.body);
  const safetyId = restore.json().safety_backup_id;
  assert.ok(safetyId);
  const r = await waitUntil('restore completed', async () => {
    const x = (await api('GET', `/v1/databases/${name}/restores/${restore.json().id}`)).json();
    assert.notEqual(x.status, 'failed', x.failure_reason);
    return x.status === 'completed' ? x : undefined;
  });
  assert.equal(r.target, 'in_place');
  const safety = (await api('GET', `/v1/databases/${name}/backups/${safetyId}`)).json();
  assert.equal(safety.trigger, 'safety');
  assert.equal(safety.status, 'completed');
  assert.ok(Date.parse(safety.completed_at) <= Date.parse(r.completed_at));
  const after = await login(name);
  try {
    assert.equal((await after.query('SELECT count(*)::int AS n FROM notes')).rows[0].n, 20);
    assert.equal((await after.query(`SELECT to_regclass('public.oops') AS t`)).rows[0].t, null);
  } finally {
    await after.end();
  }
});

/**
 * The downloaded bytes are a plain archive: `pg_restore --list` reads it, and `pg_restore` into a
 * fresh database (made here, outside Bulwark) gives the same data.
 */
async function restoresWithPgRestore(archive: Buffer, expected: Awaited<ReturnType<typeof snapshot>>) {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-dl-'));
  const fresh = `dl_${randomBytes(4).toString('hex')}`;
  const admin = new pg.Client({ connectionString: testEnv().adminUrl });
  await admin.connect();
  try {
    const file = path.join(dir, 'backup.dump');
    await fs.writeFile(file, archive);
    const list = await run(path.join(testEnv().pgBin, 'pg_restore'), ['--list', file]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /TABLE public notes/);
    await admin.query(`CREATE DATABASE ${fresh}`);
    const url = new URL(testEnv().adminUrl);
    url.pathname = `/${fresh}`;
    const restored = await run(path.join(testEnv().pgBin, 'pg_restore'), [
      '--no-owner',
      '--no-privileges',
      '--exit-on-error',
      // The tenant's own schema (the platform's guard objects belong to the database it came from).
      '--schema=public',
      `--dbname=${url.toString()}`,
      file,
    ]);
    assert.equal(restored.code, 0, restored.stderr);
    const c = new pg.Client({ connectionString: url.toString() });
    await c.connect();
    try {
      assert.deepEqual(await snapshot(c), expected);
    } finally {
      await c.end();
    }
  } finally {
    await admin.query(`DROP DATABASE IF EXISTS ${fresh} WITH (FORCE)`).catch(() => {});
    await admin.end();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

function run(bin: string, args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(bin, args, { timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

type Run = { code: number; stdout: string; stderr: string };
/** `binary`: stdout as latin1 (every byte kept: `Buffer.from(stdout, 'latin1')`). */
function cli(args: string[], home: string, binary = false): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      {
        encoding: binary ? 'latin1' : 'utf8',
        maxBuffer: 64 * 1024 * 1024,
        env: {
          PATH: process.env.PATH ?? '',
          HOME: home,
          XDG_CONFIG_HOME: home,
          BULWARK_URL: serverUrl,
          BULWARK_KEY: key.key,
        },
        timeout: 120_000,
      },
      (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

test('bulwark backup: create --wait, list, show, download (checked, never overwriting), restore --wait; bad input exits 2', async () => {
  const home = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-cli-backup-'));
  try {
    const name = `bk_${randomBytes(4).toString('hex')}`;
    assert.equal((await api('POST', '/v1/databases', { name })).statusCode, 202);
    await ready(name);
    const app = await login(name);
    await app.query(`CREATE TABLE t (i int); INSERT INTO t SELECT generate_series(1, 1000);`);
    await app.end();

    const created = await cli(['backup', 'create', name, '--wait', '--json'], home);
    assert.equal(created.code, 0, created.stderr);
    const b = JSON.parse(created.stdout);
    assert.equal(b.status, 'completed');
    const listed = await cli(['backup', 'list', name, '--json'], home);
    assert.equal(listed.code, 0, listed.stderr);
    assert.deepEqual(
      JSON.parse(listed.stdout).items.map((i: { id: string }) => i.id),
      [b.id],
    );
    const shown = await cli(['backup', 'show', name, b.id], home);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, new RegExp(`sha256\\s+${b.sha256}`));

    const file = path.join(home, 'shop.dump');
    const got = await cli(['backup', 'download', name, b.id, '-o', file, '--json'], home);
    assert.equal(got.code, 0, got.stderr);
    assert.equal(JSON.parse(got.stdout).sha256, b.sha256);
    const bytes = await fs.readFile(file);
    assert.equal(createHash('sha256').update(bytes).digest('hex'), b.sha256);
    assert.equal(bytes.subarray(0, 5).toString('latin1'), 'PGDMP');
    // Never over an existing file, and nothing left behind.
    const again = await cli(['backup', 'download', name, b.id, '-o', file], home);
    assert.equal(again.code, 1, again.stdout);
    // --force replaces it (once whole and checked); `-o -` writes the same bytes to stdout.
    await fs.writeFile(file, 'stale');
    const forced = await cli(['backup', 'download', name, b.id, '-o', file, '--force', '--json'], home);
    assert.equal(forced.code, 0, forced.stderr);
    assert.deepEqual(await fs.readFile(file), bytes);
    const piped = await cli(['backup', 'download', name, b.id, '-o', '-'], home, true);
    assert.equal(piped.code, 0, piped.stderr);
    assert.deepEqual(Buffer.from(piped.stdout, 'latin1'), bytes);
    assert.deepEqual(
      (await fs.readdir(home)).filter((f) => f.endsWith('.partial')),
      [],
    );

    const target = `${name}_c`;
    const restored = await cli(
      ['backup', 'restore', name, b.id, '--new-name', target, '--wait', '--json'],
      home,
    );
    assert.equal(restored.code, 0, restored.stderr);
    assert.equal(JSON.parse(restored.stdout).status, 'completed');
    const copy = await login(target);
    assert.equal((await copy.query('SELECT count(*)::int AS n FROM t')).rows[0].n, 1000);
    await copy.end();

    for (const bad of [
      ['backup', 'show', name, 'not-a-uuid'],
      ['backup', 'create', 'Bad;Name'],
      ['backup', 'restore', name, b.id, '--in-place', '--new-name', 'x'],
    ]) {
      const r = await cli(bad, home);
      assert.equal(r.code, 2, `${bad.join(' ')}: ${r.stderr}`);
    }
  } finally {
    await fs.rm(home, { recursive: true, force: true });
  }
});
