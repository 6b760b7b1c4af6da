import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import pg from 'pg';
import { createTestDb } from '../../../test/helpers/db.ts';
import { testEnv } from '../../../test/helpers/env.ts';
import { pgBinDir } from '../../embedded/postgres-cluster.ts';
import { listMigrations, migrate, migrationsAtHead } from './migrate.ts';

function schemaDump(dbName: string): string {
  const env = testEnv();
  const u = new URL(env.adminUrl);
  return execFileSync(
    path.join(pgBinDir(env.pgBin), 'pg_dump'),
    ['--schema-only', '--no-owner', '-h', '127.0.0.1', '-p', String(env.pgPort), '-U', u.username, dbName],
    { env: { PATH: process.env.PATH, PGPASSWORD: decodeURIComponent(u.password) }, encoding: 'utf8' },
  )
    .replace(/^--.*$/gm, '')
    .replace(/^\\(un)?restrict .*$/gm, '');
}

test('migrations applied twice give the same schema, and re-running every file is harmless', async () => {
  const db = await createTestDb();
  try {
    const before = schemaDump(db.name);
    assert.deepEqual(await migrate(db.pool), [], 'the template is already at head');
    // Forward-only files must also be safe to re-run by hand.
    for (const m of listMigrations()) await db.pool.query(m.sql);
    assert.equal(schemaDump(db.name), before);
    assert.equal(await migrationsAtHead(db.pool), true);
  } finally {
    await db.drop();
  }
});

test('an empty database is migrated to head, and a changed migration file is refused', async () => {
  const db = await createTestDb();
  try {
    const fresh = new pg.Pool({ connectionString: db.url });
    await fresh.query('DROP SCHEMA public CASCADE; CREATE SCHEMA public');
    assert.equal(await migrationsAtHead(fresh), false);
    const applied = await migrate(fresh);
    assert.deepEqual(
      applied,
      listMigrations().map((m) => m.version),
    );
    assert.equal(await migrationsAtHead(fresh), true);
    const tampered = listMigrations().map((m, i) => (i === 0 ? { ...m, checksum: 'x' } : m));
    await assert.rejects(migrate(fresh, tampered), /changed after it was applied/);
    await fresh.end();
  } finally {
    await db.drop();
  }
});

test('every foreign key has an index', async () => {
  const db = await createTestDb();
  try {
    const r = await db.pool.query<{ tbl: string; col: string }>(`
      SELECT c.conrelid::regclass::text AS tbl, a.attname AS col
        FROM pg_constraint c
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
       WHERE c.contype = 'f'
         AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = c.conrelid AND i.indkey[0] = c.conkey[1])`);
    assert.deepEqual(r.rows, []);
  } finally {
    await db.drop();
  }
});
