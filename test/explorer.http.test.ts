import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import * as databasesRepo from '../src/server/modules/databases/databases.repo.ts';
import { waitForRunningStatement } from './helpers/db.ts';
import { explorerAudit, type Tenant } from './helpers/explorer.ts';
import { assertDisconnectCancels, type ExplorerStack, startExplorerStack } from './helpers/explorer-stack.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import type { TestServer } from './helpers/server.ts';

// The whole explorer path through the job queue (the agent's explorer channel is off; the channel
// path is in explorer-channel.test.ts): HTTP with a real key → validation → job → a real agent →
// the explorer role on a real tenant database → rows handed back → audit.
let stack: ExplorerStack;
let s: TestServer;
let t: Tenant;
let key: TestKey;

before(async () => {
  stack = await startExplorerStack({ node: 'explorer-node', account: 'explorer', explorerChannel: false });
  ({ s, t, key } = stack);
});

after(async () => {
  await stack?.stop();
});

const query = (body: Record<string, unknown>, opts: { headers?: Record<string, string>; qs?: string } = {}) =>
  s.app.inject({
    method: 'POST',
    url: `/v1/databases/${t.name}/explorer/query${opts.qs ?? ''}`,
    headers: { ...key.headers, ...opts.headers },
    payload: body,
  });

test('a SELECT returns typed columns and rows; CSV on request; nothing is stored', async () => {
  const r = await query({ sql: "select id, secret from canary where secret <> 'zeta' order by id" });
  assert.equal(r.statusCode, 200, r.body);
  const out = r.json();
  assert.deepEqual(out.columns, [
    { name: 'id', type: 'integer' },
    { name: 'secret', type: 'text' },
  ]);
  assert.deepEqual(out.rows, [
    [1, 'alpha'],
    [2, 'beta'],
    [3, 'gamma'],
  ]);
  assert.equal(out.row_count, 3);
  assert.equal(out.truncated, false);
  assert.equal(r.headers['cache-control'], 'no-store');

  const capped = await query({ sql: 'select g from generate_series(1, 50) g', limit: 7 });
  assert.equal(capped.json().row_count, 7);
  assert.equal(capped.json().truncated, true);

  const csv = await query(
    { sql: "select id, secret, '=1+1' as f from canary order by id" },
    { qs: '?format=csv' },
  );
  assert.equal(csv.statusCode, 200);
  assert.match(String(csv.headers['content-type']), /^text\/csv/);
  assert.equal(csv.body, "id,secret,f\r\n1,alpha,'=1+1\r\n2,beta,'=1+1\r\n3,gamma,'=1+1\r\n");
  const accept = await query({ sql: 'select 1 as one' }, { headers: { accept: 'text/csv' } });
  assert.equal(accept.body, 'one\r\n1\r\n');

  // The job rows keep metadata only: no SQL text, no rows; the hand-over table is empty.
  const deadline = Date.now() + 5_000;
  let jobs: { payload: Record<string, unknown>; result: Record<string, unknown> | null; status: string }[] =
    [];
  while (Date.now() < deadline) {
    jobs = (await s.db.pool.query("SELECT payload, result, status FROM jobs WHERE kind = 'explorer.query'"))
      .rows;
    if (jobs.length >= 4 && jobs.every((j) => j.status === 'succeeded')) break;
    await new Promise((res) => setTimeout(res, 20));
  }
  assert.ok(jobs.length >= 4);
  for (const j of jobs) {
    assert.equal(j.status, 'succeeded');
    assert.equal(j.payload.sql, undefined, 'the SQL left the job row');
    assert.ok(!JSON.stringify(j).includes('alpha') && !JSON.stringify(j).includes('zeta'), JSON.stringify(j));
  }
  assert.equal((await s.db.pool.query('SELECT count(*)::int AS n FROM explorer_results')).rows[0].n, 0);
});

test('refused, failing and runaway queries: 400 with reason and position, SQLSTATE, timeout', async () => {
  const refused = await query({ sql: "select 1; delete from canary where secret = 'alpha'" });
  assert.equal(refused.statusCode, 400);
  assert.equal(refused.json().error.code, 'query_refused');
  assert.equal(refused.json().error.details.reason_code, 'multiple_statements');
  assert.equal(refused.json().error.details.position, 10);

  const hidden = await query({ sql: 'select c.evil from canary c' });
  assert.equal(hidden.statusCode, 400);
  assert.equal(hidden.json().error.code, 'query_failed');
  assert.equal(hidden.json().error.details.sqlstate, '42501');

  const failing = await query({ sql: 'select id / 0 from canary' });
  assert.equal(failing.json().error.details.sqlstate, '22012');
  assert.ok(!failing.body.includes(' at '), 'no stack trace');

  const slow = await query({ sql: 'select count(*) from generate_series(1, 1e9)', timeout_ms: 300 });
  assert.equal(slow.json().error.details.sqlstate, '57014');

  const audit = await explorerAudit(s.db.pool);
  const text = JSON.stringify(audit.rows);
  assert.ok(!text.includes('alpha') && !text.includes('zeta'), 'literals are redacted in the audit log');
  assert.ok(
    audit.rows.some((a) => a.outcome === 'denied' && a.details.reason_code === 'multiple_statements'),
  );
  assert.ok(audit.results.some((a) => a.outcome === 'failure' && a.details.sqlstate === '22012'));
  assert.ok(audit.results.some((a) => a.outcome === 'success' && typeof a.details.row_count === 'number'));
  assert.ok(audit.rows.every((a) => typeof a.details.sql === 'string'));
  assert.ok(
    audit.rows.some((a) => a.details.sql === 'select id, secret from canary where secret <> ? order by id'),
    JSON.stringify(audit.rows.map((a) => a.details.sql)),
  );
  assert.ok(audit.rows.some((a) => a.details.sql === 'select ?; delete from canary where secret = ?'));
});

test('who may explore: admin or explorer keys, in scope, ready databases only', async () => {
  const reader = await createTestKey(s, { account: 'explorer', level: 'read' });
  const r1 = await query({ sql: 'select 1' }, { headers: reader.headers });
  assert.equal(r1.statusCode, 403);
  const denied = await s.db.pool.query(
    "SELECT count(*)::int AS n FROM audit_events WHERE action = 'explorer.query' AND actor_id = $1 AND outcome = 'denied'",
    [reader.id],
  );
  assert.equal(denied.rows[0].n, 1, 'a refused caller is audited');
  const granted = await createTestKey(s, { account: 'explorer', level: 'read', explorer: true });
  assert.equal((await query({ sql: 'select 1' }, { headers: granted.headers })).statusCode, 200);
  const scoped = await createTestKey(s, { account: 'explorer', databases: ['elsewhere'] });
  assert.equal((await query({ sql: 'select 1' }, { headers: scoped.headers })).statusCode, 404);
  const stranger = await createTestKey(s, { account: 'stranger' });
  assert.equal((await query({ sql: 'select 1' }, { headers: stranger.headers })).statusCode, 404);
  await s.db.pool.query("UPDATE databases SET status = 'provisioning' WHERE id = $1", [t.id]);
  try {
    assert.equal((await query({ sql: 'select 1' })).statusCode, 409);
  } finally {
    await databasesRepo.markReady(s.db.pool, t.id);
  }
});

test('the schema endpoint lists public tables and columns', async () => {
  const r = await s.app.inject({
    method: 'GET',
    url: `/v1/databases/${t.name}/explorer/schema`,
    headers: key.headers,
  });
  assert.equal(r.statusCode, 200, r.body);
  const canary = r.json().tables.find((x: { name: string }) => x.name === 'canary');
  assert.deepEqual(canary, {
    name: 'canary',
    kind: 'table',
    columns: [
      { name: 'id', type: 'integer', nullable: false },
      { name: 'secret', type: 'text', nullable: false },
    ],
  });
  assert.ok(
    r.json().tables.some((x: { name: string; kind: string }) => x.name === 'v_evil' && x.kind === 'view'),
  );
});

test('a client that disconnects cancels its query on the database', async () => {
  await assertDisconnectCancels(stack);
  const job = await s.db.pool.query(
    "SELECT status, last_error, payload FROM jobs WHERE kind = 'explorer.query' ORDER BY id DESC LIMIT 1",
  );
  assert.equal(job.rows[0].status, 'dead');
  assert.match(job.rows[0].last_error, /cancelled/);
  assert.equal(job.rows[0].payload.sql, undefined);
  // The agent is free again.
  assert.equal((await query({ sql: 'select 2 as two' })).json().rows[0][0], 2);
});

test('a sweep removes expired uncollected results and keeps live ones; SQL left in a finished job is removed', async () => {
  const node = await s.db.pool.query<{ id: string }>("SELECT id FROM nodes WHERE name = 'explorer-node'");
  const job = await s.db.pool.query<{ id: number }>(
    `INSERT INTO jobs (node_id, kind, payload, status, finished_at)
     VALUES ($1, 'explorer.query', $2, 'dead', now()) RETURNING id`,
    [node.rows[0]!.id, { sql: "select 'left-behind'", sql_redacted: 'select ?' }],
  );
  const id = job.rows[0]!.id;
  await s.db.pool.query(
    "INSERT INTO explorer_results (job_id, body, expires_at) VALUES ($1, 'x', now() - interval '1 second'), ($2, 'y', now() + interval '60 seconds')",
    [id, id + 1_000_000],
  );
  await s.explorer.sweep();
  const left = await s.db.pool.query<{ job_id: number }>(
    'SELECT job_id FROM explorer_results ORDER BY job_id',
  );
  assert.deepEqual(
    left.rows.map((r) => Number(r.job_id)),
    [id + 1_000_000],
  );
  const payload = (await s.db.pool.query('SELECT payload FROM jobs WHERE id = $1', [id])).rows[0].payload;
  assert.deepEqual(payload, { sql_redacted: 'select ?' });
  await s.db.pool.query('DELETE FROM explorer_results');
});

test('shutdown ends a waiting request at once (last test: the explorer service is closed)', async () => {
  const pending = query({
    sql: 'select count(*) from generate_series(1, 1e10) as at_shutdown',
    timeout_ms: 30_000,
  });
  await waitForRunningStatement(t.name, { user: t.roles.explorer, text: 'at_shutdown' });
  const t0 = Date.now();
  s.explorer.close();
  const r = await pending;
  assert.equal(r.statusCode, 503);
  assert.ok(Date.now() - t0 < 2_000);
  const job = await s.db.pool.query(
    "SELECT status, last_error FROM jobs WHERE kind = 'explorer.query' ORDER BY id DESC LIMIT 1",
  );
  assert.equal(job.rows[0].status, 'dead');
  assert.match(job.rows[0].last_error, /shutting down/);
});
