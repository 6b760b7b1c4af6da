/**
 * The agent's backup jobs against real PostgreSQL, pg_dump, pg_restore and PgBouncer: a backup
 * restored into a new database holds the same data (tables, a large object, sequences, a view,
 * an index), in place and as a drill; the archive on disk is what the contract says.
 */
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import { after, before, test } from 'node:test';
import { type BackupKit, rowsOf, startBackupKit } from './helpers/backup-kit.ts';
import type { Tenant } from './helpers/tenant-kit.ts';

let kit: BackupKit;
before(async () => {
  kit = await startBackupKit();
});
after(async () => {
  await kit?.close();
});

/** Several tables, a second schema, a large object, sequences, a view, an index. */
async function fill(t: Tenant): Promise<void> {
  const c = await kit.tenants.loginOwner(t);
  try {
    await c.query(`
      CREATE TABLE public.customers (id bigserial PRIMARY KEY, name text NOT NULL, joined date NOT NULL);
      CREATE TABLE public.orders (id serial PRIMARY KEY, customer bigint REFERENCES public.customers (id),
                                  total numeric(12,2), note jsonb, doc oid);
      CREATE INDEX orders_total ON public.orders (total DESC) WHERE total > 10;
      CREATE SCHEMA sales;
      CREATE TABLE sales.events (at timestamptz NOT NULL, payload bytea);
      CREATE SEQUENCE sales.invoice_no START 1000 INCREMENT 7;
      CREATE VIEW public.big_orders AS SELECT o.id, c.name, o.total FROM public.orders o JOIN public.customers c ON c.id = o.customer WHERE o.total > 100;
      INSERT INTO public.customers (name, joined) SELECT 'customer ' || g, DATE '2020-01-01' + g FROM generate_series(1, 500) g;
      INSERT INTO public.orders (customer, total, note) SELECT (g % 500) + 1, g * 1.5, jsonb_build_object('g', g) FROM generate_series(1, 2000) g;
      DELETE FROM public.orders WHERE id > 1990;
      INSERT INTO sales.events SELECT now() - g * interval '1 minute', decode(md5(g::text), 'hex') FROM generate_series(1, 300) g;
      SELECT nextval('sales.invoice_no') FROM generate_series(1, 5);
      UPDATE public.orders SET doc = lo_from_bytea(0, convert_to('the contract, signed', 'UTF8')) WHERE id = 1;
      CREATE EXTENSION pgcrypto;
      CREATE TABLE sales.signed (id int PRIMARY KEY, digest bytea GENERATED ALWAYS AS (public.digest(id::text, 'sha256')) STORED);
      INSERT INTO sales.signed (id) SELECT generate_series(1, 10);
      CREATE TYPE public.mood AS ENUM ('sad', 'ok', 'happy');
      CREATE FUNCTION public.mood_rank(public.mood) RETURNS int LANGUAGE sql IMMUTABLE
        AS $$ SELECT array_position(enum_range(NULL::public.mood), $1) $$;
      CREATE CAST (public.mood AS int) WITH FUNCTION public.mood_rank(public.mood);
      CREATE PUBLICATION orders_pub FOR TABLE public.orders;
    `);
  } finally {
    await c.end();
  }
}

const SNAPSHOT_QUERIES = [
  'SELECT * FROM public.customers ORDER BY id',
  'SELECT id, customer, total, note, doc IS NOT NULL AS has_doc FROM public.orders ORDER BY id',
  'SELECT * FROM sales.events ORDER BY at',
  'SELECT * FROM public.big_orders ORDER BY id',
  "SELECT convert_from(lo_get(doc), 'UTF8') AS doc FROM public.orders WHERE id = 1",
  'SELECT last_value, is_called FROM sales.invoice_no',
  'SELECT last_value, is_called FROM public.orders_id_seq',
  'SELECT last_value, is_called FROM public.customers_id_seq',
  "SELECT indexdef FROM pg_indexes WHERE schemaname IN ('public', 'sales') ORDER BY indexname",
  "SELECT 'happy'::public.mood::int AS rank",
  'SELECT pubname, puballtables FROM pg_publication ORDER BY 1',
  'SELECT * FROM sales.signed ORDER BY id',
  "SELECT extname FROM pg_extension WHERE extname <> 'plpgsql'",
];

async function snapshot(t: Tenant): Promise<string[]> {
  const c = await kit.tenants.loginOwner(t);
  try {
    const out: string[] = [];
    for (const q of SNAPSHOT_QUERIES) out.push(await rowsOf(c, q));
    return out;
  } finally {
    await c.end();
  }
}

test('backup → restore into a new database: the same rows, large object, sequences, view and index', async () => {
  const source = await kit.tenants.create('bk');
  await fill(source);
  const before = await snapshot(source);
  const b = await kit.backup(source);

  assert.equal(b.result.verified, true);
  assert.match(b.result.sha256, /^[0-9a-f]{64}$/);
  assert.ok(b.result.size_bytes > 0 && b.result.dump_bytes > 0);
  assert.match(b.result.pg_version, /^\d+/);
  const rows = Object.fromEntries(b.result.tables.map((t) => [`${t.schema}.${t.name}`, t.rows]));
  assert.deepEqual(rows, {
    'public.customers': 500,
    'public.orders': 1990,
    'sales.events': 300,
    'sales.signed': 10,
  });
  assert.equal(b.result.tables_total, 4);
  assert.equal(b.result.objects.views, 1);
  assert.equal(b.result.objects.large_objects, 1);
  assert.equal(b.result.objects.sequences, 3);
  assert.equal(b.result.objects.schemas, 2);

  // On disk: <dir>/<database id>/<backup id>.bulwark-backup, 0600, no partial, nothing readable in clear.
  const file = kit.deps.storage.pathOf({ databaseId: source.id, backupId: b.id });
  assert.equal(file, `${kit.dir}/${source.id}/${b.id}.bulwark-backup`);
  const st = await fs.stat(file);
  assert.equal(st.mode & 0o777, 0o600);
  assert.equal(st.size, b.result.size_bytes);
  assert.deepEqual(await fs.readdir(`${kit.dir}/${source.id}`), [`${b.id}.bulwark-backup`]);
  const bytes = await fs.readFile(file);
  assert.equal(bytes.subarray(0, 8).toString(), 'BWBACKUP');
  assert.equal(bytes.includes(Buffer.from('customer 42')), false);
  assert.equal(bytes.includes(Buffer.from('PGDMP')), false);

  // A change after the backup is not in it.
  const c = await kit.tenants.loginOwner(source);
  await c.query("INSERT INTO public.customers (name, joined) VALUES ('late', DATE '2030-01-01')");
  await c.end();

  const target = await kit.restoreNew(source, b);
  assert.equal(target.result.verified, true);
  // The queue's retry of that restore (its success was not reported): checked, not restored again.
  const again = await kit.restoreNew(source, b, target);
  assert.equal(again.result.rows_checked, target.result.rows_checked);
  // A target that holds something else is never restored over.
  const other = await kit.tenants.create('ot');
  const oc = await kit.tenants.loginOwner(other);
  await oc.query('CREATE TABLE public.mine (x int)');
  await oc.end();
  await assert.rejects(kit.restoreNew(source, b, other), /not empty and does not match the backup/);
  assert.equal(target.result.mode, 'new');
  assert.equal(target.result.tables_checked, 4);
  assert.equal(target.result.rows_checked, 500 + 1990 + 300 + 10);
  assert.deepEqual(await snapshot(target), before);

  // Everything belongs to the new database's owner; its reader reads public tables (standard grants).
  const o = await kit.tenants.loginOwner(target);
  try {
    const owners = await o.query<{ owner: string }>(
      `SELECT DISTINCT pg_get_userbyid(relowner) AS owner FROM pg_class k JOIN pg_namespace n ON n.oid = k.relnamespace
        WHERE n.nspname IN ('public', 'sales')`,
    );
    assert.deepEqual(
      owners.rows.map((r) => r.owner),
      [target.roles.owner],
    );
    const grants = await o.query<{ grantee: string }>(
      `SELECT DISTINCT grantee FROM information_schema.role_table_grants WHERE table_schema IN ('public', 'sales')`,
    );
    assert.ok(!grants.rows.some((g) => g.grantee.startsWith(source.name)), 'no grant names the source roles');
    // The template lets only the database's owner (the steward) read pg_db_role_setting, for pg_dump.
    const hidden = await o.query<{ ok: boolean }>(
      "SELECT has_table_privilege('pg_catalog.pg_db_role_setting', 'SELECT') AS ok",
    );
    assert.equal(hidden.rows[0]!.ok, false);
    // The sequence continues where the source's was at backup time.
    const next = await o.query<{ n: string }>("SELECT nextval('public.customers_id_seq')::text AS n");
    assert.equal(next.rows[0]!.n, '501');
  } finally {
    await o.end();
  }
});

test('a drill restores into a scratch database, checks it, drops it; in place swaps the data back', async () => {
  const source = await kit.tenants.create('dr');
  await fill(source);
  const before = await snapshot(source);
  const b = await kit.backup(source);
  const expected = {
    sha256: b.result.sha256,
    tables: b.result.tables,
    tables_total: b.result.tables_total,
    objects: b.result.objects,
  };
  const drill = await kit.jobs.get('backup.drill')!(
    { backup_id: b.id, database_id: source.id, name: source.name, expected },
    kit.ctx(b.key),
  );
  assert.equal(drill.verified, true);
  assert.equal(drill.rows_checked, 2800);
  const scratch = await kit.tenants.kit.admin.query(
    'SELECT datname FROM pg_database WHERE datname LIKE ANY ($1)',
    [[`bulwark\\_drill\\_${kit.deps.storage.tag}%`, `bulwark\\_restore\\_${kit.deps.storage.tag}%`]],
  );
  assert.equal(scratch.rows.length, 0);

  // The tenant wrecks its data; an in-place restore brings the backup's back under the same name and roles.
  const c = await kit.tenants.loginOwner(source);
  await c.query(
    'DROP VIEW public.big_orders; DELETE FROM public.orders; DROP TABLE sales.events; CREATE TABLE public.junk (x int)',
  );
  await c.end();
  const r = await kit.jobs.get('backup.restore')!(
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
  assert.equal(r.mode, 'in_place');
  assert.deepEqual(await snapshot(source), before);
  const o = await kit.tenants.loginOwner(source);
  try {
    const junk = await o.query("SELECT to_regclass('public.junk') AS t");
    assert.equal(junk.rows[0].t, null);
  } finally {
    await o.end();
  }
  // Still reachable through PgBouncer as the owner after the swap.
  const { proveLogin } = await import('../src/agent/jobs/database-common.ts');
  await proveLogin(kit.deps, { database: source.name, user: source.user, password: source.password });
});

test('delete removes the archive; hostile ids never reach a path', async () => {
  const source = await kit.tenants.create('dl');
  const b = await kit.backup(source);
  const del = kit.jobs.get('backup.delete')!;
  assert.deepEqual(await del({ backup_id: b.id, database_id: source.id }, kit.ctx(b.key)), { deleted: true });
  assert.deepEqual(await del({ backup_id: b.id, database_id: source.id }, kit.ctx(b.key)), {
    deleted: false,
  });
  await assert.rejects(fs.stat(kit.deps.storage.pathOf({ databaseId: source.id, backupId: b.id })), {
    code: 'ENOENT',
  });

  const hostile = [
    '../../etc/passwd',
    `${randomUUID()}/../..`,
    '..',
    '/etc/shadow',
    `${randomUUID()}\0`,
    'a'.repeat(5000),
  ];
  for (const h of hostile) {
    for (const payload of [
      { backup_id: h, database_id: source.id },
      { backup_id: randomUUID(), database_id: h },
    ]) {
      await assert.rejects(del(payload, kit.ctx(b.key)), /invalid job payload/);
      await assert.rejects(
        kit.jobs.get('backup.create')!({ ...payload, name: source.name }, kit.ctx(b.key)),
        /invalid job payload/,
      );
    }
    assert.throws(() => kit.deps.storage.pathOf({ databaseId: h, backupId: randomUUID() }));
  }
  // Names are never part of a path, even valid ones.
  assert.ok(!kit.deps.storage.pathOf({ databaseId: source.id, backupId: b.id }).includes(source.name));
});
