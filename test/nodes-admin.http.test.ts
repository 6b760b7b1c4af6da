// Nodes for signed-in platform admins: the list (health, heartbeat age, database count) and a drift
// check on demand (the operator's drift service, audited). Anyone else — account owners, API keys
// of any level, no credentials — is refused. A fully wired server; the node's agent is driven by
// hand through the real agent API so the test decides what it answers.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { createDriftService } from '../src/server/modules/drift/drift.service.ts';
import { createNodesAdmin } from '../src/server/modules/nodes/nodes.admin.ts';
import { createAccount, enrollFakeAgent, type FakeAgent } from './helpers/databases.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { createTestUser, signIn } from './helpers/session-users.ts';
import { waitFor } from './helpers/wait.ts';

let s: TestServer;
let agent: FakeAgent;
let idle: FakeAgent;
let root: { authorization: string };
let owner: { authorization: string };
let key: TestKey;

before(async () => {
  s = await createTestServer();
  const acme = await createAccount(s, 'acme');
  agent = await enrollFakeAgent(s, 'n1');
  idle = await enrollFakeAgent(s, 'n2');
  key = await createTestKey(s, { account: 'acme' });
  for (const name of ['one', 'two', 'three']) {
    const r = await s.app.inject({
      method: 'POST',
      url: '/v1/databases',
      headers: key.headers,
      payload: { name, node: 'n1' },
    });
    assert.equal(r.statusCode, 202, r.body);
  }
  // A deleted database is not counted.
  await s.db.pool.query(
    "UPDATE databases SET status = 'deleted', deleted_at = now(), password_sealed = NULL WHERE name = 'three'",
  );
  await s.db.pool.query(
    "UPDATE nodes SET last_heartbeat_at = now() - interval '90 seconds' WHERE name = 'n2'",
  );
  root = (await signIn(s, await createTestUser(s, { username: 'root', platformAdmin: true }))).headers;
  owner = (
    await signIn(
      s,
      await createTestUser(s, { username: 'boss', memberships: [{ accountId: acme, role: 'owner' }] }),
    )
  ).headers;
});
after(() => s?.stop());

test('GET /v1/nodes: every node with its heartbeat age and live database count', async () => {
  const r = await s.app.inject({ url: '/v1/nodes', headers: root });
  assert.equal(r.statusCode, 200, r.body);
  const items = r.json().items as {
    id: string;
    name: string;
    status: string;
    last_heartbeat_at: string;
    heartbeat_age_seconds: number;
    database_count: number;
  }[];
  assert.deepEqual(
    items.map((n) => [n.name, n.status, n.database_count]),
    [
      ['n1', 'active', 2],
      ['n2', 'active', 0],
    ],
  );
  const n1 = items[0]!;
  assert.equal(n1.id, agent.nodeId);
  assert.ok(n1.heartbeat_age_seconds >= 0 && n1.heartbeat_age_seconds < 30, String(n1.heartbeat_age_seconds));
  const n2 = items[1]!;
  assert.ok(
    n2.heartbeat_age_seconds >= 90 && n2.heartbeat_age_seconds < 120,
    String(n2.heartbeat_age_seconds),
  );
  assert.ok(Math.abs(Date.now() - Date.parse(n2.last_heartbeat_at) - 90_000) < 30_000);
  assert.equal(Object.keys(n1).includes('token_hash'), false);
});

test('nobody but a signed-in platform admin reaches the nodes routes', async () => {
  const routes = [
    { method: 'GET' as const, url: '/v1/nodes' },
    { method: 'POST' as const, url: `/v1/nodes/${agent.nodeId}/drift-check` },
  ];
  const admin = await createTestKey(s, { account: 'acme', level: 'admin' });
  for (const route of routes) {
    for (const [who, headers, status] of [
      ['account owner', owner, 403],
      ['admin API key', admin.headers, 403],
      ['owner acting in the account', { ...owner, 'bulwark-account': 'acme' }, 403],
      ['no credentials', {}, 401],
    ] as const) {
      const r = await s.app.inject({ ...route, headers });
      assert.equal(r.statusCode, status, `${route.method} ${route.url} as ${who}: ${r.body}`);
    }
  }
  // No job was queued by the refused drift checks.
  const jobs = await s.db.pool.query("SELECT 1 FROM jobs WHERE kind LIKE 'node.drift%'");
  assert.equal(jobs.rowCount, 0);
});

test('POST /v1/nodes/:id/drift-check: the drift job and its findings, audited', async () => {
  const pending = s.app.inject({
    method: 'POST',
    url: `/v1/nodes/${agent.nodeId}/drift-check`,
    headers: root,
  });
  const job = await waitFor('the drift job', async () => {
    const j = await agent.poll();
    return j?.kind === 'node.drift' ? j : undefined;
  });
  // The live databases' names on the node (generated, never their labels), not the deleted one's.
  const onNode = await s.db.pool.query<{ n: string }>(
    "SELECT coalesce(pg_name, name) AS n FROM databases WHERE account_id = $1 AND name IN ('one', 'two')",
    [key.accountId],
  );
  const expected = onNode.rows.map((r) => r.n).sort();
  assert.equal(expected.length, 2);
  for (const n of expected) assert.match(n, /^bulwark_db_/);
  assert.deepEqual((job.payload.known_databases as string[]).sort(), expected);
  const finding = { kind: 'unknown_database', object: 'stray', detail: 'database stray is not known' };
  assert.equal(await agent.complete(job.id, job.attempt, { findings: [finding] }), 200);
  const r = await pending;
  assert.equal(r.statusCode, 200, r.body);
  assert.deepEqual(r.json(), { node: { id: agent.nodeId, name: 'n1' }, clean: false, findings: [finding] });
  const audited = await s.db.pool.query<{
    actor_type: string;
    details: { clean: boolean; findings: number };
  }>("SELECT actor_type, details FROM audit_events WHERE action = 'node.drift_checked' AND target_id = $1", [
    agent.nodeId,
  ]);
  assert.equal(audited.rowCount, 1);
  assert.equal(audited.rows[0]!.actor_type, 'user');
  assert.deepEqual(
    { clean: audited.rows[0]!.details.clean, findings: audited.rows[0]!.details.findings },
    { clean: false, findings: 1 },
  );
  // The node's own view and the list show that latest check (another node's stays without one).
  const shown = await s.app.inject({ method: 'GET', url: `/v1/nodes/${agent.nodeId}`, headers: root });
  assert.equal(shown.statusCode, 200, shown.body);
  assert.equal(shown.json().drift?.findings, 1);
  const listed = await s.app.inject({ method: 'GET', url: '/v1/nodes', headers: root });
  const drift = new Map(
    (listed.json().items as { id: string; drift: { findings: number } | null }[]).map((n) => [n.id, n.drift]),
  );
  assert.equal(drift.get(agent.nodeId)?.findings, 1);
  assert.equal(drift.get(idle.nodeId), null);
});

test('an unknown node is a 404; a malformed id a 400', async () => {
  const unknown = await s.app.inject({
    method: 'POST',
    url: `/v1/nodes/${randomUUID()}/drift-check`,
    headers: root,
  });
  assert.equal(unknown.statusCode, 404, unknown.body);
  const bad = await s.app.inject({ method: 'POST', url: '/v1/nodes/n1/drift-check', headers: root });
  assert.equal(bad.statusCode, 400, bad.body);
});

test('a node that does not answer in time: 503, the failed check audited, the queued job abandoned', async () => {
  // The same service the route uses, with a short wait (the route waits 15 s).
  const admin = createNodesAdmin({
    db: s.db.pool,
    drift: createDriftService({ db: s.db.pool }),
    audit: s.audit,
    driftTimeoutMs: 300,
  });
  const user = {
    userId: randomUUID(),
    sessionId: randomUUID(),
    platformAdmin: true,
    sourceIp: '127.0.0.1',
    accountProblem: null,
  };
  await assert.rejects(admin.driftCheck(user, idle.nodeId, 'req-1'), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'unavailable');
    assert.match(err.message, /did not answer/);
    return true;
  });
  const audited = await s.db.pool.query<{ outcome: string }>(
    "SELECT outcome FROM audit_events WHERE action = 'node.drift_checked' AND target_id = $1",
    [idle.nodeId],
  );
  assert.deepEqual(audited.rows, [{ outcome: 'failure' }]);
  const job = await s.db.pool.query<{ status: string }>(
    "SELECT status FROM jobs WHERE node_id = $1 AND kind = 'node.drift'",
    [idle.nodeId],
  );
  assert.deepEqual(job.rows, [{ status: 'dead' }], 'never run later');
  assert.equal(await idle.poll(), null);
});
