/**
 * The agent's backup jobs when things go wrong, against real PostgreSQL, pg_dump and pg_restore:
 * a tampered or truncated archive is refused before pg_restore starts and before anything is
 * created; pg_dump killed mid-backup and a full disk fail the backup and leave no partial file
 * (and the retry succeeds); the start-up sweep removes partial files and its scratch databases.
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { sweepScratchDatabases } from '../src/agent/backups/backup-restore.ts';
import { createLocalStorage } from '../src/agent/backups/backup-storage.ts';
import { HEADER_BYTES } from '../src/shared/backup-archive.ts';
import { DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import { type BackupKit, startBackupKit } from './helpers/backup-kit.ts';
import type { Tenant } from './helpers/tenant-kit.ts';
import { newPassword, uniqueName } from './pooler-harness.ts';

let kit: BackupKit;
before(async () => {
  kit = await startBackupKit();
});
after(async () => {
  await kit?.close();
});

/** `mb` MiB of rows that compress poorly (md5 text), in one table. */
async function fillBulk(t: Tenant, mb: number): Promise<void> {
  const c = await kit.tenants.loginOwner(t);
  try {
    await c.query('CREATE TABLE public.bulk (id int PRIMARY KEY, v text)');
    await c.query(
      `INSERT INTO public.bulk SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text)
         FROM generate_series(1, $1) g`,
      [Math.round((mb * 1024 * 1024) / 110)],
    );
  } finally {
    await c.end();
  }
}

const partials = async (dir: string): Promise<string[]> => {
  const out: string[] = [];
  for (const d of await fs.readdir(dir).catch(() => [] as string[]))
    for (const f of await fs.readdir(path.join(dir, d)).catch(() => [] as string[]))
      if (f.endsWith('.partial')) out.push(f);
  return out;
};

/** The frames of an archive: [start, end) of each chunk after the header. */
function frames(archive: Buffer): [number, number][] {
  const list: [number, number][] = [];
  let at = HEADER_BYTES;
  while (at < archive.length) {
    const len = archive.readUInt32BE(at + 1);
    list.push([at, at + 5 + len + 16]);
    at += 5 + len + 16;
  }
  return list;
}

test('a flipped byte, a dropped, reordered or truncated chunk: refused before pg_restore starts or anything is made', async () => {
  const source = await kit.tenants.create('tp');
  await fillBulk(source, 1);
  const tools: string[] = [];
  const b = await kit.backup(source, { deps: { chunkSize: 16 * 1024 } });
  const file = kit.deps.storage.pathOf({ databaseId: source.id, backupId: b.id });
  const good = await fs.readFile(file);
  const f = frames(good);
  assert.ok(f.length >= 6, `several chunks (${f.length})`);
  const flipped = Buffer.from(good);
  flipped[f[2]![0] + 100]! ^= 0x40;
  const dropped = Buffer.concat([good.subarray(0, f[1]![0]), good.subarray(f[1]![1])]);
  const reordered = Buffer.concat([
    good.subarray(0, f[1]![0]),
    good.subarray(f[2]![0], f[2]![1]),
    good.subarray(f[1]![0], f[1]![1]),
    good.subarray(f[2]![1]),
  ]);
  const truncated = good.subarray(0, f.at(-1)![0]);
  const watching = new Map(
    [
      ...(await import('../src/agent/backups/backup-handlers.ts')).backupHandlers({
        ...kit.deps,
        onTool: (tool) => tools.push(tool),
      }),
    ].map(([k, h]) => [k, h]),
  );
  const expected = {
    sha256: b.result.sha256,
    tables: b.result.tables,
    tables_total: b.result.tables_total,
    objects: b.result.objects,
  };
  for (const [what, bytes, reason] of [
    ['flipped byte', flipped, /chunk 2 failed authentication/],
    ['dropped chunk', dropped, /chunk 1 failed authentication/],
    ['reordered chunks', reordered, /chunk 1 failed authentication/],
    ['truncated archive', truncated, /truncated/],
  ] as const) {
    await fs.writeFile(file, bytes);
    const name = uniqueName('tn');
    const id = randomUUID();
    const password = newPassword();
    const restore = watching.get('backup.restore')!(
      {
        backup_id: b.id,
        database_id: id,
        name,
        mode: 'new',
        source: { database_id: source.id, name: source.name },
        expected,
        create: {
          database_id: id,
          name,
          verifier: scramVerifier(password),
          allowlist: [],
          limits: DEFAULT_LIMITS,
        },
      },
      kit.ctx(b.key, password),
    );
    await assert.rejects(restore, (err: Error) => {
      assert.match(err.message, /backup archive refused/, what);
      assert.match(err.message, reason, what);
      assert.equal(err.constructor.name, 'PermanentJobError', `${what}: not retried`);
      return true;
    });
    const inPlace = watching.get('backup.restore')!(
      {
        backup_id: b.id,
        database_id: source.id,
        name: source.name,
        mode: 'in_place',
        source: { database_id: source.id, name: source.name },
        expected,
      },
      kit.ctx(b.key),
    );
    await assert.rejects(inPlace, /backup archive refused/);
    const drill = watching.get('backup.drill')!(
      { backup_id: b.id, database_id: source.id, name: source.name, expected },
      kit.ctx(b.key),
    );
    await assert.rejects(drill, /backup archive refused/);
    assert.deepEqual(tools, [], `${what}: pg_restore never started`);
    const made = await kit.tenants.kit.admin.query(
      'SELECT datname FROM pg_database WHERE datname = $1 OR datname LIKE ANY ($2)',
      [name, [`bulwark\\_restore\\_${kit.deps.storage.tag}%`, `bulwark\\_drill\\_${kit.deps.storage.tag}%`]],
    );
    assert.deepEqual(made.rows, [], `${what}: no database made`);
    const roles = await kit.tenants.kit.admin.query('SELECT rolname FROM pg_roles WHERE rolname LIKE $1', [
      `${name}%`,
    ]);
    assert.deepEqual(roles.rows, [], `${what}: no role made`);
  }
  // A different record (another sha256) is refused too, even for an intact, authentic archive
  // (an earlier attempt's): pg_restore gets all but the dump's last piece, which is held back
  // until the dump hashed to the record, so it never finishes and nothing is committed.
  await fs.writeFile(file, good);
  await assert.rejects(
    watching.get('backup.drill')!(
      {
        backup_id: b.id,
        database_id: source.id,
        name: source.name,
        expected: { ...expected, sha256: 'a'.repeat(64) },
      },
      kit.ctx(b.key),
    ),
    (err: Error) => {
      assert.match(err.message, /backup archive refused: the archive's checksum does not match/);
      assert.equal(err.constructor.name, 'PermanentJobError');
      return true;
    },
  );
  const other = uniqueName('tn');
  const otherId = randomUUID();
  const otherPassword = newPassword();
  await assert.rejects(
    watching.get('backup.restore')!(
      {
        backup_id: b.id,
        database_id: otherId,
        name: other,
        mode: 'new',
        source: { database_id: source.id, name: source.name },
        expected: { ...expected, sha256: 'b'.repeat(64) },
        create: {
          database_id: otherId,
          name: other,
          verifier: scramVerifier(otherPassword),
          allowlist: [],
          limits: DEFAULT_LIMITS,
        },
      },
      kit.ctx(b.key, otherPassword),
    ),
    /checksum does not match/,
  );
  assert.ok(tools.includes('pg_restore'), 'pg_restore ran, and was stopped before the end');
  const target = await kit.tenants.kit.connectAdmin(other);
  try {
    const tables = await target.query(
      "SELECT relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public'",
    );
    assert.deepEqual(tables.rows, [], 'nothing of the dump was committed');
  } finally {
    await target.end();
  }
  tools.length = 0;
  // The source was never touched, and the intact archive still restores.
  const o = await kit.tenants.loginOwner(source);
  assert.equal(
    (await o.query('SELECT count(*)::int AS n FROM public.bulk')).rows[0].n,
    b.result.tables[0]!.rows,
  );
  await o.end();
  const ok = await watching.get('backup.drill')!(
    { backup_id: b.id, database_id: source.id, name: source.name, expected },
    kit.ctx(b.key),
  );
  assert.equal(ok.verified, true);
  assert.ok(tools.includes('pg_restore'));
});

test("the restore's check: a lost table or lost rows against the backup's record fail the drill", async () => {
  const source = await kit.tenants.create('tc');
  const c = await kit.tenants.loginOwner(source);
  try {
    await c.query(`CREATE TABLE public.a (id int PRIMARY KEY); INSERT INTO public.a SELECT generate_series(1, 500);
                   CREATE TABLE public.b (id int); INSERT INTO public.b SELECT generate_series(1, 7)`);
  } finally {
    await c.end();
  }
  const b = await kit.backup(source);
  const expected = {
    sha256: b.result.sha256,
    tables: b.result.tables,
    tables_total: b.result.tables_total,
    objects: b.result.objects,
  };
  assert.deepEqual(
    b.result.tables.map((t) => [t.name, t.rows]),
    [
      ['a', 500],
      ['b', 7],
    ],
  );
  const drill = (e: typeof expected) =>
    kit.jobs.get('backup.drill')!(
      { backup_id: b.id, database_id: source.id, name: source.name, expected: e },
      kit.ctx(b.key),
    );
  // The record names a table the archive does not restore (as if pg_restore had lost it).
  await assert.rejects(
    drill({
      ...expected,
      tables: [...expected.tables, { schema: 'public', name: 'c', rows: 3, rows_estimate: null }],
      objects: { ...expected.objects, tables: expected.objects.tables + 1 },
    }),
    /does not match the backup: tables: 2 restored, 3 backed up; table public\.c missing/,
  );
  // The record holds more rows than come back (as if rows had been lost).
  await assert.rejects(
    drill({ ...expected, tables: expected.tables.map((t) => (t.name === 'b' ? { ...t, rows: 8 } : t)) }),
    /table public\.b: 7 rows restored, 8 backed up/,
  );
  const ok = await drill(expected);
  assert.equal(ok.tables_checked, 2);
  assert.equal(ok.rows_checked, 507);
});

test('pg_dump killed (SIGKILL) mid-backup: the backup fails, no partial file; the retry succeeds', async () => {
  const source = await kit.tenants.create('kl');
  await fillBulk(source, 8);
  const id = randomUUID();
  const { randomBytes } = await import('node:crypto');
  const key = randomBytes(32);
  const handlers = new Map(
    (await import('../src/agent/backups/backup-handlers.ts')).backupHandlers({
      ...kit.deps,
      onTool: (tool, child) => {
        if (tool === 'pg_dump') child.stdout!.once('data', () => child.kill('SIGKILL'));
      },
    }),
  );
  await assert.rejects(
    handlers.get('backup.create')!(
      { backup_id: id, database_id: source.id, name: source.name },
      kit.ctx(key),
    ),
    /pg_dump was killed \(SIGKILL\)/,
  );
  assert.deepEqual(await partials(kit.dir), []);
  assert.equal(await kit.deps.storage.exists({ databaseId: source.id, backupId: id }), false);
  // The queue's retry: same backup id, same key.
  const r = await kit.jobs.get('backup.create')!(
    { backup_id: id, database_id: source.id, name: source.name },
    kit.ctx(key),
  );
  assert.equal(r.verified, true);
  assert.deepEqual(await partials(kit.dir), []);
});

test('disk full (a 1 MiB tmpfs): the backup fails with ENOSPC and leaves no partial file', async (t) => {
  const mnt = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-full-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt], { stdio: 'ignore' });
  } catch {
    await fs.rm(mnt, { recursive: true, force: true });
    t.skip('cannot mount a tmpfs here (needs root)');
    return;
  }
  try {
    const source = await kit.tenants.create('fu');
    await fillBulk(source, 4);
    const storage = createLocalStorage(mnt);
    const handlers = new Map(
      (await import('../src/agent/backups/backup-handlers.ts')).backupHandlers({ ...kit.deps, storage }),
    );
    const id = randomUUID();
    await assert.rejects(
      handlers.get('backup.create')!(
        { backup_id: id, database_id: source.id, name: source.name },
        kit.ctx((await import('node:crypto')).randomBytes(32)),
      ),
      /ENOSPC/,
    );
    assert.deepEqual(await partials(mnt), []);
    assert.equal(await storage.exists({ databaseId: source.id, backupId: id }), false);
    // Nothing of the pg_dump is left running (its backend ends once it sees the client gone).
    let left = -1;
    for (let i = 0; i < 50 && left !== 0; i++) {
      if (i > 0) await new Promise((r) => setTimeout(r, 100));
      const dumps = await kit.tenants.kit.admin.query(
        "SELECT pid FROM pg_stat_activity WHERE datname = $1 AND application_name = 'bulwark-pg-dump'",
        [source.name],
      );
      left = dumps.rows.length;
    }
    assert.equal(left, 0);
  } finally {
    execFileSync('umount', [mnt], { stdio: 'ignore' });
    await fs.rm(mnt, { recursive: true, force: true });
  }
});

test('start-up sweep: stale partial files and this storage’s scratch databases are removed, the rest kept', async () => {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-sweep-'));
  try {
    const storage = createLocalStorage(dir);
    const ref = { databaseId: randomUUID(), backupId: randomUUID() };
    const pending = await storage.create(ref);
    await new Promise<void>((r) => pending.stream.write(Buffer.from('half an archive'), () => r()));
    // The agent dies here: the partial stays until the next start.
    const other = { databaseId: ref.databaseId, backupId: randomUUID() };
    const done = await storage.create(other);
    done.stream.end(Buffer.from('whole'));
    await new Promise<void>((r) => done.stream.once('finish', () => r()));
    await done.commit();
    assert.equal((await partials(dir)).length, 1);
    assert.equal(await storage.sweepPartials(), 1);
    assert.deepEqual(await partials(dir), []);
    assert.equal(await storage.exists(other), true);
    await pending.abort();

    // Scratch databases of restores and drills: only this storage's (its tag) are swept.
    const mine = `bulwark_drill_${storage.tag}_0123456789abcdef`;
    const theirs = `bulwark_drill_${storage.tag === 'ffffffff' ? 'eeeeeeee' : 'ffffffff'}_0123456789abcdef`;
    const admin = kit.tenants.kit.admin;
    for (const d of [mine, theirs]) await admin.query(`CREATE DATABASE ${d}`);
    try {
      assert.deepEqual(await sweepScratchDatabases(admin, storage.tag), [mine]);
      const left = await admin.query('SELECT datname FROM pg_database WHERE datname = ANY($1)', [
        [mine, theirs],
      ]);
      assert.deepEqual(left.rows, [{ datname: theirs }]);
    } finally {
      for (const d of [mine, theirs]) await admin.query(`DROP DATABASE IF EXISTS ${d}`);
    }
  } finally {
    await fs.rm(dir, { recursive: true, force: true });
  }
});

test('tenant code run by a restore cannot reset its role to more than the owner', async () => {
  const source = await kit.tenants.create('rr');
  const c = await kit.tenants.loginOwner(source);
  // A CHECK constraint's function runs during the restore's COPY; it tries to leave the owner's
  // role and act as the database's owner (which the steward is).
  await c.query(`
    CREATE FUNCTION public.escape(int) RETURNS boolean LANGUAGE plpgsql AS $$
    BEGIN
      BEGIN
        RESET ROLE;
        EXECUTE format('ALTER DATABASE %I SET work_mem = %L', current_database(), '64kB');
      EXCEPTION WHEN others THEN NULL;
      END;
      RETURN true;
    END $$;
    CREATE TABLE public.t (x int CHECK (public.escape(x)));
    INSERT INTO public.t SELECT generate_series(1, 3);`);
  await c.end();
  const b = await kit.backup(source);
  const target = await kit.restoreNew(source, b);
  assert.equal(target.result.rows_checked, 3);
  const settings = await kit.tenants.kit.admin.query(
    `SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase
      WHERE d.datname = $1 AND s.setrole = 0`,
    [target.name],
  );
  assert.deepEqual(settings.rows, [], 'the restore session never acted as the database owner');
  const logins = await kit.tenants.kit.admin.query('SELECT rolname FROM pg_roles WHERE rolname LIKE $1', [
    `bulwark\\_rs\\_${kit.deps.storage.tag}%`,
  ]);
  assert.deepEqual(logins.rows, [], 'the restore login is gone');
});
