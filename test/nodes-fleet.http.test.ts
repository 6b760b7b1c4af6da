// More than one node, the control plane's half (issue 17): enrollment tokens issued by platform
// admins (single use, lifetime from the setting, expired ones swept and audited), node detail,
// cordon/uncordon, decommission (refused while databases remain), placement (explicit node by
// name or id, cordoned/unhealthy avoided), connection info naming the node's own pooler, and the
// health sweep (unhealthy → audit + event_outbox + node_status, recovery clears it). A fully wired
// server; the nodes' agents are driven by hand through the real agent API.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, test } from 'node:test';
import { createAccount, enrollFakeAgent, type FakeAgent } from './helpers/databases.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { createTestUser, signIn } from './helpers/session-users.ts';

let s: TestServer;
let root: { authorization: string };
let owner: { authorization: string };
/** A platform admin who is also an admin of acme: learns why a named node was refused. */
let opsAdmin: { authorization: string };
let key: TestKey;
let n1: FakeAgent;
let n2: FakeAgent;

before(async () => {
  // The sweep runs only when the test asks (a long interval is set by the threshold).
  s = await createTestServer({ enrollmentTtlMinutes: 7, nodeUnhealthyAfterSeconds: 3600 });
  const acme = await createAccount(s, 'acme');
  key = await createTestKey(s, { account: 'acme', level: 'write' });
  root = (await signIn(s, await createTestUser(s, { username: 'root', platformAdmin: true }))).headers;
  owner = (
    await signIn(
      s,
      await createTestUser(s, { username: 'boss', memberships: [{ accountId: acme, role: 'owner' }] }),
    )
  ).headers;
  opsAdmin = (
    await signIn(
      s,
      await createTestUser(s, {
        username: 'ops',
        platformAdmin: true,
        memberships: [{ accountId: acme, role: 'admin' }],
      }),
    )
  ).headers;
  n1 = await enrollFakeAgent(s, 'n1');
});

/** The one answer an account caller gets for a named node that cannot take the database. */
const UNAVAILABLE = /^The node named is unknown or cannot take this database now$/;
after(() => s?.stop());

const api = (method: 'GET' | 'POST', url: string, headers: Record<string, string>, payload?: object) =>
  s.app.inject({ method, url, headers, ...(payload === undefined ? {} : { payload }) });

const enroll = (token: string, pooler?: { host: string; port: number }) =>
  s.app.inject({
    method: 'POST',
    url: '/v1/agent/enroll',
    payload: { enrollment_token: token, agent_version: 'test', ...(pooler ? { pooler } : {}) },
  });

const audits = async (action: string, target?: string) =>
  (
    await s.db.pool.query(
      `SELECT actor_type, actor_id, target_id, details FROM audit_events
        WHERE action = $1 AND ($2::text IS NULL OR target_id = $2) ORDER BY occurred_at`,
      [action, target ?? null],
    )
  ).rows;

test('POST /v1/nodes/enrollments: a single-use token for a platform admin, lifetime from the setting, stored hashed', async () => {
  for (const [who, headers, status] of [
    ['account owner', owner, 403],
    ['write key', key.headers, 403],
    ['nobody', {}, 401],
  ] as const) {
    const r = await api('POST', '/v1/nodes/enrollments', headers, { name: 'n2' });
    assert.equal(r.statusCode, status, `${who}: ${r.body}`);
  }
  assert.equal((await api('POST', '/v1/nodes/enrollments', root, { name: 'Bad Name' })).statusCode, 400);
  const before = Date.now();
  const r = await api('POST', '/v1/nodes/enrollments', root, { name: 'n2' });
  assert.equal(r.statusCode, 201, r.body);
  assert.equal(r.headers['cache-control'], 'no-store');
  const { token, expires_at, node_name } = r.json();
  assert.equal(node_name, 'n2');
  assert.match(token, /^bwe_[A-Za-z0-9_-]{43}$/);
  const lifetime = Date.parse(expires_at) - before;
  assert.ok(
    lifetime > 6.5 * 60_000 && lifetime < 7.5 * 60_000,
    `7 minutes from the setting, got ${lifetime} ms`,
  );
  // Only the hash is stored; the audit event names the admin and never the token.
  const stored = await s.db.pool.query('SELECT token_hash FROM node_enrollments WHERE node_name = $1', [
    'n2',
  ]);
  assert.equal(stored.rowCount, 1);
  assert.deepEqual(stored.rows[0].token_hash, createHash('sha256').update(token).digest());
  const created = (await audits('node.enrollment_created', 'n2')).at(-1)!;
  assert.equal(created.actor_type, 'user');
  assert.ok(!JSON.stringify(created).includes(token));

  // Redeemed once, with the pooler address the agent reports; a second use is refused.
  const first = await enroll(token, { host: '127.0.0.2', port: 6543 });
  assert.equal(first.statusCode, 200, first.body);
  const again = await enroll(token);
  assert.equal(again.statusCode, 401);
  assert.match(again.json().error.message, /Invalid enrollment token/);
  const refusals = await audits('agent.enroll');
  assert.equal(refusals.at(-1)!.details.reason, 'unknown_or_expired_token');
  const row = await s.db.pool.query('SELECT pooler_host, pooler_port FROM nodes WHERE name = $1', ['n2']);
  assert.deepEqual(row.rows[0], { pooler_host: '127.0.0.2', pooler_port: 6543 });
  const token2 = first.json().agent_token as string;
  n2 = {
    nodeId: first.json().node_id,
    token: token2,
  } as FakeAgent;
});

test('an expired token is refused, and the sweep deletes expired enrollments with an audit event each', async () => {
  const r = await api('POST', '/v1/nodes/enrollments', root, { name: 'late' });
  const { token } = r.json();
  await s.db.pool.query(
    "UPDATE node_enrollments SET expires_at = now() - interval '1 second' WHERE node_name = 'late'",
  );
  const refused = await enroll(token);
  assert.equal(refused.statusCode, 401);
  const swept = await s.nodesHealth.sweep();
  assert.equal(swept.expired, 1);
  assert.equal(
    (await s.db.pool.query("SELECT 1 FROM node_enrollments WHERE node_name = 'late'")).rowCount,
    0,
  );
  const events = await audits('node.enrollment_expired', 'late');
  assert.equal(events.length, 1);
  assert.equal(events[0].actor_type, 'system');
  assert.ok(!JSON.stringify(events[0]).includes(token));
  assert.equal((await s.nodesHealth.sweep()).expired, 0, 'swept once');
});

test('GET /v1/nodes and /v1/nodes/:id: health, cordon, pooler address and capacity, by id or by name', async () => {
  const list = await api('GET', '/v1/nodes', root);
  assert.equal(list.statusCode, 200, list.body);
  const byName = Object.fromEntries(list.json().items.map((n: { name: string }) => [n.name, n]));
  assert.equal(byName.n2.health, 'healthy');
  assert.equal(byName.n2.cordoned, false);
  assert.deepEqual(byName.n2.pooler, { host: '127.0.0.2', port: 6543 });
  assert.equal(byName.n1.pooler, null, 'n1 reported no address: the server setting applies');
  assert.ok(byName.n2.capacity.budget > 0 && byName.n2.capacity.free === byName.n2.capacity.budget);
  const one = await api('GET', `/v1/nodes/${n2.nodeId}`, root);
  assert.equal(one.statusCode, 200, one.body);
  assert.equal(one.json().name, 'n2');
  assert.equal((await api('GET', '/v1/nodes/n2', root)).json().id, n2.nodeId);
  assert.equal((await api('GET', '/v1/nodes/nope', root)).statusCode, 404);
  assert.equal((await api('GET', '/v1/nodes/n2', owner)).statusCode, 403);
});

test('placement: an explicit node by name or id, cordoned avoided (409 when named), connection info names its pooler', async () => {
  const create = (name: string, node?: string) =>
    api('POST', '/v1/databases', key.headers, { name, ...(node ? { node } : {}) });
  // By id, then by name.
  const a = await create('on_n2', n2.nodeId);
  assert.equal(a.statusCode, 202, a.body);
  assert.equal(a.json().node, 'n2');
  assert.equal(a.json().node_status, 'healthy');
  const conn = await api('GET', '/v1/databases/on_n2/connection', key.headers);
  assert.equal(conn.json().host, '127.0.0.2');
  assert.equal(conn.json().port, 6543);
  assert.match(conn.json().database, /^bulwark_db_/);
  assert.match(conn.json().uri, new RegExp(`@127\\.0\\.0\\.2:6543/${conn.json().database}\\?`));
  const b = await create('on_n1', 'n1');
  assert.equal(b.json().node, 'n1');
  const conn1 = await api('GET', '/v1/databases/on_n1/connection', key.headers);
  assert.equal(conn1.json().host, s.config.poolerPublicHost);
  assert.equal(conn1.json().port, s.config.poolerPort);
  // An unknown node: the one answer for an account key; a platform admin learns it is unknown.
  const ghost = await create('nowhere', 'ghost');
  assert.equal(ghost.statusCode, 409);
  assert.match(ghost.json().error.message, UNAVAILABLE);
  const ghostAdmin = await api('POST', '/v1/databases', opsAdmin, { name: 'nowhere', node: 'ghost' });
  assert.equal(ghostAdmin.statusCode, 404, ghostAdmin.body);

  // Cordon n1: idempotent, audited once; placement goes to n2 every time; naming n1 is a 409.
  for (let i = 0; i < 2; i++) {
    const c = await api('POST', '/v1/nodes/n1/cordon', root);
    assert.equal(c.statusCode, 200, c.body);
    assert.equal(c.json().cordoned, true);
  }
  assert.equal((await audits('node.cordoned', n1.nodeId)).length, 1);
  assert.equal((await api('POST', '/v1/nodes/n1/cordon', owner)).statusCode, 403);
  for (const name of ['auto_a', 'auto_b', 'auto_c']) {
    const r = await create(name);
    assert.equal(r.statusCode, 202, r.body);
    assert.equal(r.json().node, 'n2', `${name} avoided the cordoned node`);
  }
  const named = await create('forced', 'n1');
  assert.equal(named.statusCode, 409);
  assert.match(named.json().error.message, UNAVAILABLE);
  assert.doesNotMatch(named.body, /n1/);
  const namedAdmin = await api('POST', '/v1/databases', opsAdmin, { name: 'forced', node: 'n1' });
  assert.equal(namedAdmin.statusCode, 409);
  assert.match(namedAdmin.json().error.message, /Node n1 is cordoned/);
  // Both cordoned: no room anywhere, said so.
  await api('POST', '/v1/nodes/n2/cordon', root);
  const none = await create('homeless');
  assert.equal(none.statusCode, 503, none.body);
  await api('POST', '/v1/nodes/n2/uncordon', root);
  const u = await api('POST', '/v1/nodes/n1/uncordon', root);
  assert.equal(u.json().cordoned, false);
  assert.equal((await audits('node.uncordoned', n1.nodeId)).length, 1);
});

test('decommission: refused while databases remain (409 with the count); else disabled, credentials revoked', async () => {
  const refused = await api('POST', '/v1/nodes/n1/decommission', root);
  assert.equal(refused.statusCode, 409, refused.body);
  assert.equal(refused.json().error.details.databases, 1);
  assert.match(refused.json().error.message, /still holds 1 database/);

  const spare = await enrollFakeAgent(s, 'spare');
  const heartbeat = () =>
    s.app.inject({
      method: 'POST',
      url: '/v1/agent/heartbeat',
      headers: { authorization: `Bearer ${spare.token}` },
      payload: {},
    });
  assert.equal((await heartbeat()).statusCode, 200);
  assert.equal((await api('POST', '/v1/nodes/spare/decommission', owner)).statusCode, 403);
  const ok = await api('POST', `/v1/nodes/${spare.nodeId}/decommission`, root);
  assert.equal(ok.statusCode, 200, ok.body);
  assert.equal(ok.json().status, 'disabled');
  assert.equal(ok.json().health, 'disabled');
  assert.ok(ok.json().decommissioned_at);
  assert.equal((await heartbeat()).statusCode, 401, 'the agent token is revoked');
  assert.equal((await audits('node.decommissioned', spare.nodeId)).length, 1);
  assert.equal((await api('POST', '/v1/nodes/spare/decommission', root)).statusCode, 409, 'only once');
  const placed = await api('POST', '/v1/databases', key.headers, { name: 'on_spare', node: 'spare' });
  assert.equal(placed.statusCode, 409);
});

test('a node that stops reporting is marked unhealthy (audit, event_outbox, node_status); recovery clears it', async () => {
  await s.db.pool.query("UPDATE nodes SET last_heartbeat_at = now() - interval '2 hours' WHERE name = 'n2'");
  const swept = await s.nodesHealth.sweep();
  assert.deepEqual(swept.unhealthy, ['n2']);
  assert.deepEqual((await s.nodesHealth.sweep()).unhealthy, [], 'alerted once');
  const d = await api('GET', '/v1/databases/on_n2', key.headers);
  assert.equal(d.json().node_status, 'unhealthy');
  const node = await api('GET', '/v1/nodes/n2', root);
  assert.equal(node.json().health, 'unhealthy');
  assert.ok(node.json().unhealthy_since);
  const events = await s.db.pool.query<{ account_id: string | null; payload: Record<string, unknown> }>(
    "SELECT account_id, payload FROM event_outbox WHERE kind = 'node.unhealthy' ORDER BY id",
  );
  assert.equal(events.rowCount, 2, 'one for the platform, one for the account with databases there');
  assert.equal(events.rows[0]!.account_id, null);
  assert.equal(events.rows[0]!.payload.node_name, 'n2');
  assert.equal(events.rows[1]!.account_id, key.accountId);
  assert.ok((events.rows[1]!.payload.databases as string[]).includes('on_n2'));
  assert.equal((await audits('node.unhealthy', n2.nodeId)).length, 1);
  // Placement avoids it; naming it is a 409.
  await api('POST', '/v1/nodes/n1/uncordon', root);
  const auto = await api('POST', '/v1/databases', key.headers, { name: 'while_down' });
  assert.equal(auto.json().node, 'n1');
  const named = await api('POST', '/v1/databases', key.headers, { name: 'to_down', node: 'n2' });
  assert.equal(named.statusCode, 409);
  assert.match(named.json().error.message, UNAVAILABLE);
  const namedAdmin = await api('POST', '/v1/databases', opsAdmin, { name: 'to_down', node: 'n2' });
  assert.equal(namedAdmin.statusCode, 409);
  assert.match(namedAdmin.json().error.message, /unhealthy/);

  // It reports again: cleared, with its own event.
  const hb = await s.app.inject({
    method: 'POST',
    url: '/v1/agent/heartbeat',
    headers: { authorization: `Bearer ${n2.token}` },
    payload: { pooler: { host: '127.0.0.2', port: 6544 } },
  });
  assert.equal(hb.statusCode, 200, hb.body);
  assert.deepEqual((await s.nodesHealth.sweep()).recovered, ['n2']);
  assert.equal((await api('GET', '/v1/databases/on_n2', key.headers)).json().node_status, 'healthy');
  assert.equal((await api('GET', '/v1/databases/on_n2/connection', key.headers)).json().port, 6544);
  const recovered = await s.db.pool.query("SELECT 1 FROM event_outbox WHERE kind = 'node.recovered'");
  assert.equal(recovered.rowCount, 2);
  assert.equal((await audits('node.recovered', n2.nodeId)).length, 1);
});
