/**
 * A database made from a warm-pool spare keeps the spare's generated names (ADR 0034) wherever it
 * goes: two real nodes with warm pools; a create through the API (waiting for ready, answered with
 * the credentials) lands on a spare of node A, its connection info names the physical database,
 * the tenant writes through A's PgBouncer; then it moves to B (the move's arrival is made under
 * the physical name, never from B's spares), the same credentials work through B's PgBouncer with
 * every row there, and the delete removes it from B with nothing left of it on either node.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { loadExplorerKey } from '../src/agent/explorer/explorer-role.ts';
import { SPARE_PREFIX, spareTag } from '../src/agent/postgres/spare-sql.ts';
import { testEnv } from './helpers/env.ts';
import { moveEnded, startTwoNodes, type TwoNodes } from './helpers/two-nodes.ts';
import { waitUntil } from './helpers/wait.ts';

let nodes: TwoNodes;
let backupDir: string;

before(async () => {
  backupDir = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-move-warm-'));
  nodes = await startTwoNodes({ account: 'moves-warm', backup: () => ({ backupDir }), warmPoolSize: 1 });
});

after(async () => {
  await nodes?.stop();
  if (backupDir) await fs.rm(backupDir, { recursive: true, force: true });
});

const login = async (port: number, conn: { user: string; database: string }, password: string) => {
  const c = new pg.Client({ host: '127.0.0.1', port, ...conn, password, connectionTimeoutMillis: 5_000 });
  c.on('error', () => {});
  await c.connect();
  return c;
};

async function databasesLike(adminUrl: string, name: string): Promise<string[]> {
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  try {
    const r = await c.query<{ d: string }>('SELECT datname::text AS d FROM pg_database WHERE datname = $1', [
      name,
    ]);
    return r.rows.map((x) => x.d);
  } finally {
    await c.end();
  }
}

test('a database made from a spare moves under its physical name and keeps its credentials', async () => {
  const { s, poolerA, planeB, portB } = nodes;
  // Node A's pool has its spare (the agent fills it in the background after start).
  const tagA = spareTag(await loadExplorerKey(poolerA.stateDir));
  await waitUntil('a spare on move-a', async () => {
    const c = new pg.Client({ connectionString: testEnv().adminUrl });
    await c.connect();
    try {
      const r = await c.query(
        `SELECT 1 FROM pg_database WHERE starts_with(datname::text, $1)
            AND shobj_description(oid, 'pg_database') LIKE 'bulwark:spare:ready:%'`,
        [`${SPARE_PREFIX}${tagA}_`],
      );
      return (r.rowCount ?? 0) >= 1 ? true : undefined;
    } finally {
      await c.end();
    }
  });
  const name = `mw_${randomBytes(4).toString('hex')}`;
  const created = await nodes.api('POST', '/v1/databases', {
    name,
    node: 'move-a',
    wait_ms: 30_000,
    reveal: true,
  });
  assert.equal(created.statusCode, 201, created.body);
  const body = created.json();
  assert.equal(body.status, 'ready', body.failure_reason);
  assert.equal(body.name, name, 'the API name is the label');
  const { password, connection } = body.credentials;
  assert.ok(connection.database.startsWith(SPARE_PREFIX), `made from a spare: ${connection.database}`);
  assert.equal(connection.user, `${connection.database}_owner`);
  assert.equal(connection.port, poolerA.port);

  const a = await login(poolerA.port, connection, password);
  await a.query('CREATE TABLE notes (id int PRIMARY KEY, body text)');
  await a.query("INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 50) g");
  await a.end();

  const moved = await nodes.api('POST', `/v1/databases/${name}/move`, { node: 'move-b' });
  assert.equal(moved.statusCode, 202, moved.body);
  const m = await moveEnded(nodes, name);
  assert.equal(m.status, 'switched', JSON.stringify(m));

  // Same names, same password, on B now.
  const conn = (await nodes.api('GET', `/v1/databases/${name}/connection`)).json();
  assert.equal(conn.database, connection.database);
  assert.equal(conn.user, connection.user);
  assert.equal(conn.port, portB);
  const b = await login(portB, conn, password);
  assert.equal((await b.query('SELECT count(*)::int AS n FROM notes')).rows[0].n, 50);
  await b.end();
  // The source's copy goes after the switch (the move's cleanup on A).
  await waitUntil('gone from A', async () =>
    (await databasesLike(testEnv().adminUrl, connection.database)).length === 0 ? true : undefined,
  );
  assert.deepEqual(await databasesLike(planeB.adminUrl, connection.database), [connection.database]);

  // The delete reaches B under the physical name.
  const del = await s.app.inject({
    method: 'DELETE',
    url: `/v1/databases/${name}`,
    headers: nodes.key.headers,
    payload: { confirm: name },
  });
  assert.equal(del.statusCode, 202, del.body);
  await waitUntil('deleted on B', async () =>
    (await databasesLike(planeB.adminUrl, connection.database)).length === 0 ? true : undefined,
  );
});

test('a backup of a database made from a spare restores into a new database with every row', async () => {
  const { s, poolerA } = nodes;
  const name = `mwb_${randomBytes(4).toString('hex')}`;
  const created = await nodes.api('POST', '/v1/databases', {
    name,
    node: 'move-a',
    wait_ms: 30_000,
    reveal: true,
  });
  assert.equal(created.statusCode, 201, created.body);
  const { password, connection } = created.json().credentials;
  const a = await login(poolerA.port, connection, password);
  await a.query('CREATE TABLE items (id int PRIMARY KEY, label text)');
  await a.query("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 30) g");
  await a.end();

  const backup = await nodes.api('POST', `/v1/databases/${name}/backups`);
  assert.equal(backup.statusCode, 202, backup.body);
  const backupId = backup.json().id as string;
  await waitUntil('backup completed', async () => {
    const b = (await nodes.api('GET', `/v1/databases/${name}/backups/${backupId}`)).json();
    assert.notEqual(b.status, 'failed', b.failure_reason);
    return b.status === 'completed' ? b : undefined;
  });
  const newName = `${name}_r`;
  const restore = await nodes.api('POST', `/v1/databases/${name}/restore`, {
    backup_id: backupId,
    new_name: newName,
  });
  assert.equal(restore.statusCode, 202, restore.body);
  const restoreId = restore.json().id as string;
  const done = await waitUntil(
    'restore ended',
    async () => {
      const r = (await nodes.api('GET', `/v1/databases/${name}/restores/${restoreId}`)).json();
      return r.status === 'completed' || r.status === 'failed' ? r : undefined;
    },
    60_000,
  );
  assert.equal(done.status, 'completed', done.failure_reason);
  // The new database is made under its own generated name (never a spare's, nor its label:
  // ADR 0039) and holds the tenant's objects.
  const conn = (await nodes.api('GET', `/v1/databases/${newName}/connection`)).json();
  assert.match(conn.database, /^bulwark_db_p_[0-9a-f]{16}$/);
  assert.notEqual(conn.database, connection.database);
  assert.equal(conn.user, `${conn.database}_owner`);
  const { password: pw } = (await nodes.api('POST', `/v1/databases/${newName}/credentials/reveal`)).json();
  const r = await login(conn.port, conn, pw);
  assert.equal((await r.query('SELECT count(*)::int AS n FROM items')).rows[0].n, 30);
  assert.equal(
    (await r.query("SELECT pg_get_userbyid(relowner) AS o FROM pg_class WHERE relname = 'items'")).rows[0].o,
    conn.user,
  );
  await r.end();
  for (const n of [name, newName])
    await s.app.inject({
      method: 'DELETE',
      url: `/v1/databases/${n}`,
      headers: nodes.key.headers,
      payload: { confirm: n },
    });
});
