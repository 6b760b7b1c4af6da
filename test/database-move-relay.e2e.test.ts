/**
 * A move between two nodes that share no backup store (ADR 0031): each agent has its own backup
 * directory, so the target fetches the archive through the server, which has the source's agent
 * send it (a `backup.download` job) and relays the bytes unchanged. Real processes: the test
 * server, node A (the run's PostgreSQL, a private PgBouncer, its agent) and node B (a second
 * cluster and PgBouncer, its own agent).
 *
 * - a database with data moves A → B: every row and sequence on B through B's PgBouncer with the
 *   same password; the relay ran as a backup.download job on A; neither directory keeps the
 *   archive afterwards; A's copy is dropped;
 * - the relay route answers only the agent holding the move_in lease (no token, an API key, a
 *   job that is not a move_in: refused).
 *
 * A database's name on the node is generated (ADR 0039): logins and the clusters' catalogs use
 * it, the API the label.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { enrollFakeAgent } from './helpers/databases.ts';
import { testEnv } from './helpers/env.ts';
import {
  createReadyOn,
  endOwnerSessions,
  moveEnded,
  ownerLogin,
  startTwoNodes,
  type TwoNodes,
} from './helpers/two-nodes.ts';
import { waitUntil } from './helpers/wait.ts';
import { expectStatus, person, api as requestsApi } from './requests-helpers.ts';

let nodes: TwoNodes;
const dirs: Record<'move-a' | 'move-b', string> = { 'move-a': '', 'move-b': '' };

before(async () => {
  dirs['move-a'] = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-relay-a-'));
  dirs['move-b'] = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-relay-b-'));
  nodes = await startTwoNodes({ account: 'moves-relay', backup: (node) => ({ backupDir: dirs[node] }) });
});

after(async () => {
  await nodes?.stop();
  for (const d of Object.values(dirs)) if (d) await fs.rm(d, { recursive: true, force: true });
});

const api = (method: 'GET' | 'POST', url: string, payload?: Record<string, unknown>) =>
  nodes.api(method, url, payload);

/** Every file under `dir` (archives and partials), relative. */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (d: string) => {
    for (const e of await fs.readdir(d, { withFileTypes: true }).catch(() => [])) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else out.push(path.relative(dir, p));
    }
  };
  await walk(dir);
  return out;
}

/** A database's name on its node (generated, never its label), from its connection info. */
async function physicalName(label: string): Promise<string> {
  const conn = (await api('GET', `/v1/databases/${label}/connection`)).json();
  assert.notEqual(conn.database, label);
  return conn.database as string;
}

test('a move between nodes with stores of their own: the server relays the archive; data, login and clean-up as usual', async () => {
  const { name, password } = await createReadyOn(nodes, 'move-a', 'rl');
  const physical = await physicalName(name);
  const owner = { name: physical, password }; // the owner logs in under the name on the node
  const app = await ownerLogin(nodes.poolerA.port, owner);
  await app.query(`
    CREATE TABLE items (id bigserial PRIMARY KEY, label text NOT NULL, blob bytea);
    INSERT INTO items (label, blob) SELECT 'i' || g, decode(repeat(md5(g::text), 8), 'hex') FROM generate_series(1, 5000) g;
    CREATE SEQUENCE ticket START 500 INCREMENT 3;
    SELECT nextval('ticket') FROM generate_series(1, 4);`);
  const before = (await app.query('SELECT count(*)::int AS n, sum(length(blob))::bigint AS len FROM items'))
    .rows[0];
  await app.end();
  // Gone with its pooled server connection: one copy (so one transfer), whatever the load.
  await endOwnerSessions(testEnv().adminUrl, physical);

  const r = await api('POST', `/v1/databases/${name}/move`, { node: 'move-b' });
  assert.equal(r.statusCode, 202, r.body);
  const move = await moveEnded(nodes, name);
  assert.equal(move.status, 'switched', move.error);

  // On B with every row and the sequence, through B's PgBouncer, with the same password.
  const moved = await ownerLogin(nodes.portB, owner);
  try {
    const after = (
      await moved.query('SELECT count(*)::int AS n, sum(length(blob))::bigint AS len FROM items')
    ).rows[0];
    assert.deepEqual(after, before);
    const next = await moved.query("SELECT nextval('ticket')::int AS v");
    assert.equal(next.rows[0].v, 500 + 4 * 3);
  } finally {
    await moved.end();
  }

  // The archive went through the server: one backup.download job on A for the move, succeeded.
  const relay = await nodes.s.db.pool.query<{ status: string; node: string }>(
    `SELECT j.status, n.name AS node FROM jobs j JOIN nodes n ON n.id = j.node_id
      WHERE j.kind = 'backup.download' AND j.payload->>'backup_id' = $1`,
    [move.id],
  );
  assert.deepEqual(relay.rows, [{ status: 'succeeded', node: 'move-a' }]);
  // The stream token left the job row once used.
  const token = await nodes.s.db.pool.query(
    `SELECT 1 FROM jobs WHERE kind = 'backup.download' AND payload->>'backup_id' = $1 AND payload ? 'stream_token'`,
    [move.id],
  );
  assert.equal(token.rowCount, 0);

  // A's copy is dropped; neither store keeps the move's archive.
  await waitUntil('source dropped and archives removed', async () => {
    const c = new pg.Client({ connectionString: testEnv().adminUrl });
    await c.connect();
    try {
      const left = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [physical]);
      if ((left.rowCount ?? 0) > 0) return undefined;
    } finally {
      await c.end();
    }
    const files = [...(await filesUnder(dirs['move-a'])), ...(await filesUnder(dirs['move-b']))];
    return files.some((f) => f.includes(move.id)) ? undefined : true;
  });
});

test("a move ends the database's just-in-time logins: revoked on the source before the copy, never on the target", async () => {
  const name = `rj_${randomBytes(4).toString('hex')}`;
  assert.equal((await api('POST', '/v1/databases', { name, node: 'move-a' })).statusCode, 202);
  await waitUntil(`${name} ready`, async () => {
    const d = (await api('GET', `/v1/databases/${name}`)).json();
    assert.notEqual(d.status, 'failed', d.failure_reason);
    return d.status === 'ready' ? d : undefined;
  });
  const physical = await physicalName(name);
  const http = requestsApi(nodes.s);
  const requester = await person(nodes.s, nodes.key.accountId, 'member', 'rj-req');
  const approver = await person(nodes.s, nodes.key.accountId, 'member', 'rj-appr');
  const created = expectStatus(
    await http.create(name, requester.headers, {
      access: { role: 'reader', duration_s: 3600 },
      reason: 'look',
    }),
    201,
  );
  const id = created.id as string;
  if (created.status === 'pending') expectStatus(await http.act(name, id, 'approve', approver.headers), 200);
  const done = expectStatus(await http.act(name, id, 'execute', requester.headers), 200);
  const creds = done.credentials as { login: string; password: string };
  const jit = () =>
    new pg.Client({
      host: '127.0.0.1',
      port: nodes.poolerA.port,
      user: creds.login,
      password: creds.password,
      database: physical,
      connectionTimeoutMillis: 5_000,
    });
  const live = jit();
  live.on('error', () => {});
  await live.connect();
  await live.end();

  const r = await api('POST', `/v1/databases/${name}/move`, { node: 'move-b' });
  assert.equal(r.statusCode, 202, r.body);
  const grant = await nodes.s.db.pool.query<{ status: string; end_reason: string }>(
    'SELECT status, end_reason FROM access_grants WHERE request_id = $1',
    [id],
  );
  assert.deepEqual(grant.rows, [{ status: 'revoked', end_reason: 'moved' }]);
  const move = await moveEnded(nodes, name);
  assert.equal(move.status, 'switched', move.error);
  // The login is gone from the source (its revocation ran before the move_out) and never on B.
  for (const adminUrl of [testEnv().adminUrl, nodes.planeB.adminUrl]) {
    const c = new pg.Client({ connectionString: adminUrl });
    await c.connect();
    try {
      const roles = await c.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [creds.login]);
      assert.equal(roles.rowCount, 0, adminUrl);
    } finally {
      await c.end();
    }
  }
  const revokeJob = await nodes.s.db.pool.query<{ id: string; status: string }>(
    `SELECT id, status FROM jobs WHERE kind = 'access.revoke' AND payload->>'login' = $1`,
    [creds.login],
  );
  const moveOut = await nodes.s.db.pool.query<{ id: string }>(
    `SELECT id FROM jobs WHERE kind = 'database.move_out' AND payload->>'move_id' = $1`,
    [move.id],
  );
  assert.equal(revokeJob.rows[0]?.status, 'succeeded');
  assert.ok(Number(revokeJob.rows[0]!.id) < Number(moveOut.rows[0]!.id), 'queued before the move_out');
  const audit = await nodes.s.db.pool.query(
    `SELECT 1 FROM audit_events WHERE action LIKE 'access.%' AND details->>'reason' = 'moved' AND details->>'login' = $1`,
    [creds.login],
  );
  assert.ok((audit.rowCount ?? 0) >= 1);
});

test('the relay route answers only the holder of a move_in lease', async () => {
  const noToken = await nodes.s.app.inject({ method: 'GET', url: '/v1/agent/jobs/1/move-archive?attempt=1' });
  assert.equal(noToken.statusCode, 401);
  const withKey = await nodes.s.app.inject({
    method: 'GET',
    url: '/v1/agent/jobs/1/move-archive?attempt=1',
    headers: nodes.key.headers,
  });
  assert.ok([401, 403].includes(withKey.statusCode), withKey.body);
  for (const url of ['/v1/agent/jobs/0/move-archive?attempt=1', '/v1/agent/jobs/1/move-archive?attempt=0']) {
    const bad = await nodes.s.app.inject({ method: 'GET', url, headers: nodes.key.headers });
    assert.ok([400, 401, 403].includes(bad.statusCode), `${url}: ${bad.statusCode}`);
  }
  // Another node's agent, asking for a real move_in job (not its lease): 404, nothing queued.
  const stranger = await enrollFakeAgent(nodes.s, 'relay-x');
  const moveIn = await nodes.s.db.pool.query<{ id: string; attempts: number }>(
    `SELECT id, attempts FROM jobs WHERE kind = 'database.move_in' ORDER BY id DESC LIMIT 1`,
  );
  const job = moveIn.rows[0]!;
  const before = await nodes.s.db.pool.query(
    `SELECT count(*)::int AS n FROM jobs WHERE kind = 'backup.download'`,
  );
  const asked = await nodes.s.app.inject({
    method: 'GET',
    url: `/v1/agent/jobs/${job.id}/move-archive?attempt=${job.attempts}`,
    headers: { authorization: `Bearer ${stranger.token}` },
  });
  assert.equal(asked.statusCode, 404, asked.body);
  const afterCount = await nodes.s.db.pool.query(
    `SELECT count(*)::int AS n FROM jobs WHERE kind = 'backup.download'`,
  );
  assert.equal(afterCount.rows[0].n, before.rows[0].n);
});
