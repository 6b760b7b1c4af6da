/**
 * A reviewer's attack on a move's pre-copy, two nodes with real agents (the fingerprint-level
 * probes and the findings are in review-precopy-attack.test.ts): the tenant, as the owner through
 * PgBouncer,
 * - sets a never-used sequence with `setval(…, false)` after the pre-copy's snapshot — the target
 *   must hand out the new value (it was lost before the fix);
 * - takes a lock on a sequence after the pre-copy's 400 ms watch and sleeps holding it — the move
 *   must still finish (copied frozen: the freeze ends that session) and another database on the
 *   node must still be made (the fingerprint hung the node's job runner before the fix).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import {
  createReadyOn,
  moveEnded,
  ownerLogin,
  precopyMade,
  startTwoNodes,
  type TwoNodes,
} from './helpers/two-nodes.ts';
import { waitUntil } from './helpers/wait.ts';

let nodes: TwoNodes;
let poolerA: TwoNodes['poolerA'];
let portB: number;
let backupDir: string;

before(async () => {
  backupDir = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-precopy-attack-'));
  nodes = await startTwoNodes({ account: 'precopy-attack', backup: () => ({ backupDir }) });
  ({ poolerA, portB } = nodes);
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
  const db = await createReadyOn(nodes, node, 'pa');
  const conn = (await api('GET', `/v1/databases/${db.name}/connection`)).json();
  assert.notEqual(conn.database, db.name);
  return { ...db, physical: conn.database as string };
}

/** The owner logging in through the PgBouncer on `port`, under the database's name on the node. */
const owner = (port: number, db: Db) => ownerLogin(port, { name: db.physical, password: db.password });

test('a setval(..., false) committed after the pre-copy snapshot is not lost by the move', async () => {
  const db = await createOn('move-a');
  const app = await owner(poolerA.port, db);
  await app.query(`
    CREATE TABLE ledger (id bigserial PRIMARY KEY, note text NOT NULL, pad text);
    INSERT INTO ledger (note, pad) SELECT 'n' || g, repeat('x', 200) FROM generate_series(1, 20000) g;
    CREATE SEQUENCE invoice_no;  -- not used yet: last_value 1, is_called false`);
  const writer = await owner(poolerA.port, db);
  await app.end();

  const r = await api('POST', `/v1/databases/${db.name}/move`, { node: 'move-b' });
  assert.equal(r.statusCode, 202, r.body);
  const moveId = r.json().id as string;
  await precopyMade(nodes, db.name, moveId);
  // After the snapshot (the target is restoring it), before the freeze: the invoice numbering starts at 5000.
  await writer.query(`SELECT setval('invoice_no', 5000, false)`);
  await writer.end();

  const move = await moveEnded(nodes, db.name);
  assert.equal(move.status, 'switched', move.error);
  const moved = await owner(portB, db);
  try {
    const next = (await moved.query(`SELECT nextval('invoice_no')::int AS n`)).rows[0].n;
    assert.equal(next, 5000, `the target hands out invoice ${next}; the source had been set to 5000`);
    assert.equal(move.copies, 2, 'the fingerprint saw the setval: a second, frozen copy');
  } finally {
    await moved.end();
  }
});

test('a lock taken after the pre-copy watch neither wedges the move nor the node', async () => {
  const db = await createOn('move-a');
  const idle = await owner(poolerA.port, db);
  await idle.query('CREATE SEQUENCE s');
  const holder = await owner(poolerA.port, db);
  await holder.query('SET statement_timeout = 0');
  await holder.query('SET idle_in_transaction_session_timeout = 0');
  await idle.query('SELECT 1'); // used just now: the pre-copy waits (up to 1.5 s) for it to settle
  const r = await api('POST', `/v1/databases/${db.name}/move`, { node: 'move-b' });
  assert.equal(r.statusCode, 202, r.body);
  // When the source's move_out was taken up (read from the server's jobs: test timing only).
  await waitUntil(
    'move_out running',
    async () => {
      const j = await nodes.s.db.pool.query(
        `SELECT status FROM jobs WHERE kind = 'database.move_out' AND payload->>'name' = $1`,
        [db.name],
      );
      return j.rows[0] && j.rows[0].status !== 'queued' ? true : undefined;
    },
    30_000,
    5,
  );
  await new Promise((res) => setTimeout(res, 700)); // past the 400 ms watch, inside the settle wait
  await holder.query('BEGIN');
  await holder.query('ALTER SEQUENCE s RENAME TO s_renamed');
  // Held until the freeze ends this session (bounded, so the test ends either way).
  const sleeping = holder.query('SELECT pg_sleep(120)').catch((e: Error) => e);
  const other = `pa_${randomBytes(4).toString('hex')}`;
  const c = await api('POST', '/v1/databases', { name: other, node: 'move-a' });
  assert.equal(c.statusCode, 202, c.body);
  try {
    // Normally the fingerprint meets the lock, gives up after 5 s and the source is copied frozen
    // (the freeze ends the holder). On a slow host the lock may come after the fingerprint: then
    // pg_dump waits for it (60 s at most), the attempt fails and the retry finds the holder at work.
    // Either way the move ends and the node goes on: nothing waits without a bound.
    const move = await moveEnded(nodes, db.name, 150_000);
    assert.equal(move.status, 'switched', move.error);
    assert.equal(move.copies, 1, 'copied frozen once: the fingerprint was not taken');
    await waitUntil(
      `${other} ready`,
      async () => ((await api('GET', `/v1/databases/${other}`)).json().status === 'ready' ? true : undefined),
      150_000,
    );
    // The session holding the lock was ended by the freeze.
    assert.ok((await sleeping) instanceof Error);
  } finally {
    await holder.end().catch(() => {});
    await idle.end().catch(() => {});
  }
});
