/**
 * Moving a database between two nodes, with real processes: the test server, node A (the run's
 * PostgreSQL with a private PgBouncer and its agent) and node B (a second PostgreSQL cluster and
 * PgBouncer started here on other ports, with its own agent). Both agents share one backup
 * directory (ADR 0031: a move needs a backup store both nodes read).
 *
 * - a database with data moves A → B: every row, its sequences and its allowlist are on B, the
 *   owner logs in through B's PgBouncer with the same password, the old login and the database
 *   are gone from A, and `database.moved` is audited;
 * - a move B refuses (a database of its name on the node already on B, not ours) fails, and A
 *   serves again (reads and writes) with nothing of ours left on B.
 *
 * A database's name on the node is generated (ADR 0039): logins and the clusters' catalogs use
 * it, the API the label.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { testEnv } from './helpers/env.ts';
import { createTestUser, signIn } from './helpers/session-users.ts';
import {
  createReadyOn,
  endOwnerSessions,
  moveEnded,
  ownerLogin,
  precopyMade,
  startTwoNodes,
  type TwoNodes,
} from './helpers/two-nodes.ts';
import { waitUntil } from './helpers/wait.ts';

let nodes: TwoNodes;
let s: TwoNodes['s'];
let poolerA: TwoNodes['poolerA'];
let planeB: TwoNodes['planeB'];
let rootB: string;
let portB: number;
let backupDir: string;

before(async () => {
  // One backup directory for both agents: the move's archive is on a store both nodes read.
  backupDir = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-move-backups-'));
  nodes = await startTwoNodes({ account: 'moves-e2e', backup: () => ({ backupDir }) });
  ({ s, poolerA, planeB, rootB, portB } = nodes);
});

after(async () => {
  await nodes?.stop();
  if (backupDir) await fs.rm(backupDir, { recursive: true, force: true });
});

const api = (method: 'GET' | 'POST', url: string, payload?: Record<string, unknown>) =>
  nodes.api(method, url, payload);

type Db = { name: string; password: string; physical: string };

/** A ready database on `node`: its label, owner's password and name on the node (generated). */
async function createOn(node: string): Promise<Db> {
  const db = await createReadyOn(nodes, node, 'mv');
  const conn = (await api('GET', `/v1/databases/${db.name}/connection`)).json();
  assert.notEqual(conn.database, db.name, 'its name on the node is never its label');
  return { ...db, physical: conn.database as string };
}

/** The owner logging in through the PgBouncer on `port`, under the database's name on the node. */
const owner = (port: number, db: Db) => ownerLogin(port, { name: db.physical, password: db.password });

async function moveAndWait(name: string, node: string) {
  const r = await api('POST', `/v1/databases/${name}/move`, { node });
  assert.equal(r.statusCode, 202, r.body);
  assert.equal(r.json().status, 'copying');
  return moveEnded(nodes, name);
}

const snapshot = async (c: pg.Client) => ({
  orders: (await c.query('SELECT * FROM orders ORDER BY id')).rows,
  events: (await c.query('SELECT count(*)::int AS n, sum(length(payload))::int AS len FROM events')).rows[0],
  orderSeq: (await c.query('SELECT last_value::int, is_called FROM orders_id_seq')).rows[0],
  invoiceSeq: (await c.query('SELECT last_value::int, is_called FROM invoice_no')).rows[0],
  view: (await c.query('SELECT * FROM big_orders ORDER BY id')).rows,
});

async function clusterHas(adminUrl: string, name: string) {
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  try {
    const dbs = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    const roles = await c.query('SELECT rolname FROM pg_roles WHERE rolname LIKE $1', [`${name}\\_%`]);
    return { database: (dbs.rowCount ?? 0) > 0, roles: roles.rows.map((r) => r.rolname as string) };
  } finally {
    await c.end();
  }
}

test('a database with data moves to node B: rows, sequences, allowlist and login there; gone from A', async () => {
  const db = await createOn('move-a');
  const allow = await api('POST', `/v1/databases/${db.name}/allowlist`, { cidr: '198.51.100.0/24' });
  assert.equal(allow.statusCode, 200, allow.body);
  const app = await owner(poolerA.port, db);
  await app.query(`
    CREATE TABLE orders (id serial PRIMARY KEY, customer text NOT NULL, total numeric(12,2), note jsonb);
    INSERT INTO orders (customer, total, note)
      SELECT 'c' || g, g * 1.25, jsonb_build_object('g', g) FROM generate_series(1, 3000) g;
    DELETE FROM orders WHERE id % 7 = 0;
    CREATE SEQUENCE invoice_no START 1000 INCREMENT 7;
    SELECT nextval('invoice_no') FROM generate_series(1, 5);
    CREATE TABLE events (at timestamptz NOT NULL DEFAULT now(), payload bytea);
    INSERT INTO events (payload) SELECT decode(md5(g::text), 'hex') FROM generate_series(1, 2000) g;
    CREATE VIEW big_orders AS SELECT id, customer, total FROM orders WHERE total > 3700;`);
  const before = await snapshot(app);
  await app.end();
  // The application has gone (its pooled server connection too): one copy, whatever the load.
  await endOwnerSessions(testEnv().adminUrl, db.physical);
  const connBefore = (await api('GET', `/v1/databases/${db.name}/connection`)).json();
  assert.equal(connBefore.port, poolerA.port);

  const move = await moveAndWait(db.name, 'move-b');
  assert.equal(move.status, 'switched', move.error);
  assert.equal(move.from_node, 'move-a');
  assert.equal(move.to_node, 'move-b');
  assert.ok(move.freeze_ms !== null && move.freeze_ms >= 0 && move.freeze_ms <= move.duration_ms);
  // Copied while it served, then frozen only to find it unchanged: one copy, and the freeze began
  // after the copy was made.
  assert.equal(move.copies, 1);
  const madeAt = await s.db.pool.query<{ frozen_after_copy: boolean }>(
    `SELECT m.frozen_at > max(j.finished_at) AS frozen_after_copy FROM database_moves m
       JOIN jobs j ON j.payload->>'move_id' = m.id::text AND j.kind = 'database.move_in'
      WHERE m.id = $1 GROUP BY m.frozen_at`,
    [move.id],
  );
  assert.equal(madeAt.rows[0]?.frozen_after_copy, true);
  const d = (await api('GET', `/v1/databases/${db.name}`)).json();
  assert.equal(d.status, 'ready');
  assert.equal(d.node, 'move-b');
  // The connection info now names B's PgBouncer; the password is the same.
  const connAfter = (await api('GET', `/v1/databases/${db.name}/connection`)).json();
  assert.equal(connAfter.port, portB);
  assert.equal(connAfter.user, connBefore.user);
  assert.equal(connAfter.database, db.physical, 'it keeps its name on the node');

  // Every row and both sequences on B, through B's PgBouncer, with the same password.
  const moved = await owner(portB, db);
  try {
    assert.deepEqual(await snapshot(moved), before);
    const next = await moved.query("SELECT nextval('invoice_no')::int AS v");
    assert.equal(next.rows[0].v, before.invoiceSeq.last_value + 7);
    const ins = await moved.query("INSERT INTO orders (customer) VALUES ('after') RETURNING id");
    assert.equal(ins.rows[0].id, before.orderSeq.last_value + 1);
  } finally {
    await moved.end();
  }
  // The allowlist: kept by the control plane and applied by B's pooler.
  const list = (await api('GET', `/v1/databases/${db.name}/allowlist`)).json();
  assert.ok(list.entries.some((e: { cidr: string }) => e.cidr === '198.51.100.0/24'));
  const hba = await fs.readFile(path.join(rootB, 'data', 'pooler', 'hba.txt'), 'utf8').catch(() => '');
  if (hba) assert.match(hba, /198\.51\.100\.0\/24/);

  // The old login and the database are gone from A (the clean-up runs after the switch).
  await waitUntil('source dropped', async () => {
    const a = await clusterHas(testEnv().adminUrl, db.physical);
    return !a.database && a.roles.length === 0 ? true : undefined;
  });
  await assert.rejects(owner(poolerA.port, db));
  const b = await clusterHas(planeB.adminUrl, db.physical);
  assert.equal(b.database, true);

  const audit = await s.db.pool.query<{ action: string; details: Record<string, unknown> }>(
    `SELECT action, details FROM audit_events WHERE target_id = $1 AND action LIKE 'database.move%' ORDER BY id`,
    [d.id],
  );
  const actions = audit.rows.map((r) => r.action);
  assert.ok(actions.includes('database.move_requested'), actions.join());
  const movedEvent = audit.rows.find((r) => r.action === 'database.moved');
  assert.ok(movedEvent, actions.join());
  assert.equal(movedEvent.details.from, 'move-a');
  assert.equal(movedEvent.details.to, 'move-b');
  assert.ok(!JSON.stringify(audit.rows).includes(db.password));

  // While it is on B, a move to where it is is refused; so is a move of a database being moved.
  assert.equal((await api('POST', `/v1/databases/${db.name}/move`, { node: 'move-b' })).statusCode, 409);
  // An unknown node: the one answer an account key gets for any node that cannot take it (409).
  const unknown = await api('POST', `/v1/databases/${db.name}/move`, { node: 'nope' });
  assert.equal(unknown.statusCode, 409);
  assert.match(unknown.json().error.message, /unknown or cannot take this database/);
});

test('a database written after its pre-copy was dumped is copied again, frozen: nothing is lost; one at work is copied frozen at once', async () => {
  const db = await createOn('move-a');
  const app = await owner(poolerA.port, db);
  await app.query(`
    CREATE TABLE ledger (id bigserial PRIMARY KEY, note text NOT NULL, pad text);
    INSERT INTO ledger (note, pad) SELECT 'n' || g, repeat('x', 200) FROM generate_series(1, 20000) g;`);
  // The application's session, connected and idle before the move (a session at work would have
  // the source copied frozen from the start); it writes once the pre-copy has been dumped.
  const writer = await owner(poolerA.port, db);
  await app.end();

  const r = await api('POST', `/v1/databases/${db.name}/move`, { node: 'move-b' });
  assert.equal(r.statusCode, 202, r.body);
  const moveId = r.json().id as string;
  // Written once the pre-copy is made (the target restores it), before the source freezes.
  await precopyMade(nodes, db.name, moveId);
  await writer.query("INSERT INTO ledger (note) VALUES ('late')");
  await writer.end();

  const move = await moveEnded(nodes, db.name);
  assert.equal(move.status, 'switched', move.error);
  assert.equal(move.copies, 2, 'the fingerprint saw the write: a second, frozen copy');
  const moved = await owner(portB, db);
  try {
    const late = await moved.query("SELECT count(*)::int AS n FROM ledger WHERE note = 'late'");
    assert.equal(late.rows[0].n, 1);
    assert.equal((await moved.query('SELECT count(*)::int AS n FROM ledger')).rows[0].n, 20001);
  } finally {
    await moved.end();
  }
  // The first copy on B was dropped before the second was made: B holds one database of the name.
  const b = await clusterHas(planeB.adminUrl, db.physical);
  assert.equal(b.database, true);
  const moved2 = await s.db.pool.query<{ details: Record<string, unknown> }>(
    `SELECT details FROM audit_events WHERE target_id = (SELECT id::text FROM databases WHERE name = $1)
        AND action = 'database.moved'`,
    [db.name],
  );
  assert.equal(moved2.rows[0]?.details.copies, 2);

  // A database whose session is at work (here: in a transaction) is not pre-copied: it is frozen
  // first and copied once — no freeze step, the freeze counted from before the copy.
  const busy = await createOn('move-a');
  const holder = await owner(poolerA.port, busy);
  await holder.query('BEGIN');
  await holder.query('SELECT 1');
  const atWork = await moveAndWait(busy.name, 'move-b');
  await holder.end().catch(() => {});
  assert.equal(atWork.status, 'switched', atWork.error);
  assert.equal(atWork.copies, 1);
  const kinds = await s.db.pool.query<{ kind: string }>(
    "SELECT kind FROM jobs WHERE payload->>'move_id' = $1 AND kind <> 'database.move_cleanup' ORDER BY id",
    [atWork.id],
  );
  assert.deepEqual(
    kinds.rows.map((k) => k.kind),
    ['database.move_out', 'database.move_in'],
  );
});

test('a move the target refuses fails, and the source serves again with nothing of ours left on B', async () => {
  const db = await createOn('move-a');
  const app = await owner(poolerA.port, db);
  await app.query(`CREATE TABLE kept (id int PRIMARY KEY); INSERT INTO kept SELECT generate_series(1, 100);`);
  await app.end();
  // Node B already holds a database of its name on the node that Bulwark did not make.
  const adminB = new pg.Client({ connectionString: planeB.adminUrl });
  await adminB.connect();
  await adminB.query(`CREATE DATABASE ${db.physical}`);
  await adminB.end();

  const move = await moveAndWait(db.name, 'move-b');
  assert.equal(move.status, 'failed');
  assert.match(move.error ?? '', /restore at the target failed/);
  const d = (await api('GET', `/v1/databases/${db.name}`)).json();
  assert.equal(d.status, 'ready');
  assert.equal(d.node, 'move-a');
  // Writes work at the source again once the thaw ran (queued right after the failure).
  await waitUntil(
    'source serves writes',
    async () => {
      const c = await owner(poolerA.port, db).catch(() => null);
      if (!c) return undefined;
      try {
        await c.query('INSERT INTO kept VALUES (101)');
        const n = await c.query('SELECT count(*)::int AS n FROM kept');
        return n.rows[0].n === 101 ? true : undefined;
      } catch {
        return undefined;
      } finally {
        await c.end().catch(() => {});
      }
    },
    60_000,
  );
  // B: the foreign database stays, none of our roles remain.
  await waitUntil('target cleaned', async () => {
    const b = await clusterHas(planeB.adminUrl, db.physical);
    return b.database && b.roles.length === 0 ? true : undefined;
  });
  const failed = await s.db.pool.query(
    `SELECT 1 FROM audit_events WHERE target_id = $1 AND action = 'database.move_failed'`,
    [d.id],
  );
  assert.equal(failed.rowCount, 1);
  // The foreign database goes: the drain below moves this one to B.
  const dropB = new pg.Client({ connectionString: planeB.adminUrl });
  await dropB.connect();
  await dropB.query(`DROP DATABASE ${db.physical}`);
  await dropB.end();
});

test('draining node A moves every ready database to B, one at a time, and says so', async () => {
  const extra = [await createOn('move-a'), await createOn('move-a')];
  const nodeA = (await s.db.pool.query<{ id: string }>("SELECT id FROM nodes WHERE name = 'move-a'")).rows[0]!
    .id;
  const onA = async () =>
    (
      await s.db.pool.query<{ name: string }>(
        "SELECT name FROM databases WHERE node_id = $1 AND deleted_at IS NULL AND status = 'ready' ORDER BY name",
        [nodeA],
      )
    ).rows.map((r) => r.name);
  const before = await onA();
  assert.ok(before.length >= 3, before.join());
  // Platform admins only: the account's admin key is refused.
  assert.equal((await api('POST', `/v1/nodes/${nodeA}/drain`)).statusCode, 403);
  const admin = await signIn(s, await createTestUser(s, { username: 'drainer', platformAdmin: true }));
  const started = await s.app.inject({
    method: 'POST',
    url: `/v1/nodes/${nodeA}/drain`,
    headers: admin.headers,
  });
  assert.equal(started.statusCode, 202, started.body);
  assert.equal(started.json().status, 'running');
  const again = await s.app.inject({
    method: 'POST',
    url: `/v1/nodes/${nodeA}/drain`,
    headers: admin.headers,
  });
  assert.equal(again.statusCode, 409);
  const done = await waitUntil(
    'drain finished',
    async () => {
      const d = (await s.app.inject({ url: `/v1/nodes/${nodeA}/drain`, headers: admin.headers })).json();
      return d.status === 'running' ? undefined : d;
    },
    180_000,
  );
  assert.equal(done.status, 'completed', done.error);
  assert.deepEqual(done.moves.map((m: { database: string }) => m.database).sort(), before);
  assert.ok(
    done.moves.every(
      (m: { status: string; to_node: string }) => m.status === 'switched' && m.to_node === 'move-b',
    ),
  );
  // One at a time: each move starts when the previous one switched.
  const moves = [...done.moves].sort((x, y) => x.created_at.localeCompare(y.created_at));
  for (let i = 1; i < moves.length; i++) assert.ok(moves[i].created_at >= moves[i - 1].finished_at);
  assert.deepEqual(await onA(), []);
  // Each one serves on B with its own password.
  for (const db of extra) {
    const c = await owner(portB, db);
    await c.end();
  }
});
