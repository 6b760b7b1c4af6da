/**
 * The exact row counts a backup records are read from the pg_dump stream (dump-rows.ts), against
 * real PostgreSQL and pg_dump: equal to `count(*)` for tables with newlines and backslashes in
 * values, an empty table, a partitioned table's leaves, an unlogged table, an odd name, beside a
 * large object; whatever the chunk boundaries; and a stream it cannot read says so (the backup
 * then counts with SQL).
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { DUMP_SELECTION } from '../src/agent/backups/backup-create.ts';
import { stewardLogin } from '../src/agent/backups/backup-deps.ts';
import { DumpRowCounter, tableKey } from '../src/agent/backups/dump-rows.ts';
import { startTool } from '../src/agent/backups/pg-tools.ts';
import { type BackupKit, startBackupKit } from './helpers/backup-kit.ts';

let kit: BackupKit;
before(async () => {
  kit = await startBackupKit();
});
after(async () => {
  await kit?.close();
});

test('rows counted from the dump stream equal count(*), whatever the chunk boundaries', async () => {
  const t = await kit.tenants.create('dr');
  const c = await kit.tenants.loginOwner(t);
  try {
    await c.query(`
      CREATE TABLE public.texty (id int PRIMARY KEY, v text);
      INSERT INTO public.texty SELECT g, 'line one' || E'\\n' || 'two\\three' || E'\\r\\t' || g FROM generate_series(1, 3000) g;
      INSERT INTO public.texty VALUES (0, NULL), (-1, '');
      CREATE TABLE public.empty (id int);
      CREATE TABLE public.parted (k int, v text) PARTITION BY RANGE (k);
      CREATE TABLE public.parted_a PARTITION OF public.parted FOR VALUES FROM (0) TO (100);
      CREATE TABLE public.parted_b PARTITION OF public.parted FOR VALUES FROM (100) TO (1000);
      INSERT INTO public.parted SELECT g, repeat('x', g) FROM generate_series(0, 999) g;
      CREATE UNLOGGED TABLE public.scratchpad AS SELECT g AS n FROM generate_series(1, 77) g;
      CREATE SCHEMA "Odd Schema";
      CREATE TABLE "Odd Schema"."we""ird name" (j jsonb);
      INSERT INTO "Odd Schema"."we""ird name" SELECT jsonb_build_object('a', E'x\\ny', 'n', g) FROM generate_series(1, 5) g;
      SELECT lo_from_bytea(0, decode(repeat('0a', 5000), 'hex'));`);
  } finally {
    await c.end();
  }
  const login = stewardLogin(kit.deps.cluster, { databaseId: t.id, steward: t.roles.steward }, t.name);
  const dump = startTool(
    kit.deps.pgBin,
    'pg_dump',
    ['--format=custom', '--compress=0', ...DUMP_SELECTION],
    login,
  );
  const parts: Buffer[] = [];
  dump.child.stdout!.on('data', (d: Buffer) => parts.push(d));
  await dump.exited;
  const bytes = Buffer.concat(parts);

  const expected = new Map<string, number>([
    [tableKey('public', 'texty'), 3002],
    [tableKey('public', 'empty'), 0],
    [tableKey('public', 'parted_a'), 100],
    [tableKey('public', 'parted_b'), 900],
    [tableKey('public', 'scratchpad'), 77],
    [tableKey('Odd Schema', 'we"ird name'), 5],
  ]);
  for (const size of [bytes.length, 65536, 4099, 13, 3]) {
    const counter = new DumpRowCounter();
    for (let i = 0; i < bytes.length; i += size) counter.push(bytes.subarray(i, i + size));
    const got = counter.result();
    assert.ok('rows' in got, `pieces of ${size}: ${'unsupported' in got ? got.unsupported : ''}`);
    assert.deepEqual(new Map([...got.rows].sort()), new Map([...expected].sort()), `pieces of ${size}`);
  }
  // Cut short, or not a dump at all: no counts, a reason.
  const cut = new DumpRowCounter();
  cut.push(bytes.subarray(0, bytes.length - 3));
  assert.match((cut.result() as { unsupported: string }).unsupported, /ended inside a data block/);
  const junk = new DumpRowCounter();
  junk.push(Buffer.from('PGDMX and more'));
  assert.ok('unsupported' in junk.result());

  // The backup records exactly these (and the restore's check agrees).
  const b = await kit.backup(t);
  const recorded = new Map(b.result.tables.map((x) => [tableKey(x.schema, x.name), x.rows]));
  assert.deepEqual(new Map([...recorded].sort()), new Map([...expected].sort()));
  const restored = await kit.restoreNew(t, b);
  assert.equal(restored.result.rows_checked, 3002 + 100 + 900 + 77 + 5);
});
