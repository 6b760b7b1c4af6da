// Attached databases, the server's side (issue 17, ADR 0031): an agent's report registers them as
// databases of kind `attached` on its node (ready or failed by its role checks), refuses a name
// taken in the account or on the node and an unknown account, and detaches what it no longer
// lists. Every route that would manage one answers 409; reads, governed SQL requests and the
// audit work as for hosted ones; no scheduler, drift or drain ever picks one. Fully wired server,
// real keys, real control database.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { knownDatabaseDetails } from '../src/server/modules/drift/drift.repo.ts';
import { enrollFakeAgent, type FakeAgent } from './helpers/databases.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

let s: TestServer;
let admin: TestKey;
let stranger: TestKey;
let reader: TestKey;
let agent: FakeAgent;
let otherAgent: FakeAgent;
let hostedId: string;

before(async () => {
  s = await createTestServer({});
  agent = await enrollFakeAgent(s, 'at1');
  otherAgent = await enrollFakeAgent(s, 'at2');
  admin = await createTestKey(s, { account: 'attach_acme' });
  stranger = await createTestKey(s, { account: 'attach_evil' });
  reader = await createTestKey(s, { account: 'attach_acme', level: 'read' });
  const r = await call('POST', '/v1/databases', admin, { name: 'hosted_one', node: 'at1' });
  assert.equal(r.statusCode, 202, r.body);
  hostedId = r.json().id;
});
after(() => s?.stop());

function call(method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, key: TestKey, payload?: object) {
  return s.app.inject({
    method,
    url,
    headers: key.headers as Record<string, string>,
    ...(payload ? { payload } : {}),
  });
}

const entry = (name: string, accountId: string, ok = true, findings: object[] = []) => ({
  name,
  account_id: accountId,
  ok,
  server_version: ok ? '16.4' : null,
  findings,
});

const report = (a: FakeAgent | { token: string }, databases: object[]) =>
  s.app.inject({
    method: 'POST',
    url: '/v1/agent/attached',
    headers: { authorization: `Bearer ${a.token}` },
    payload: { databases },
  });

test('a report registers attached databases: ready or failed by the checks, refusals per entry', async () => {
  const warn = { role: 'reader', severity: 'warn', kind: 'security_definer', object: 'f()', detail: 'x' };
  const bad = { role: 'reader', severity: 'refuse', kind: 'table_write', object: 'public.t', detail: 'y' };
  const r = await report(agent, [
    entry('legacy_app', admin.accountId, true, [warn]),
    entry('legacy_bad', admin.accountId, false, [bad]),
    entry('hosted_one', admin.accountId),
    entry('ghost', randomUUID()),
    entry('legacy_app', admin.accountId),
  ]);
  assert.equal(r.statusCode, 200, r.body);
  const answer = r.json().databases as {
    name: string;
    status: string;
    database_id: string | null;
    reason: string | null;
  }[];
  assert.deepEqual(
    answer.map((a) => [a.name, a.status]),
    [
      ['legacy_app', 'attached'],
      ['legacy_bad', 'attached'],
      ['hosted_one', 'refused'],
      ['ghost', 'refused'],
      ['legacy_app', 'refused'],
    ],
  );
  assert.match(answer[2]!.reason!, /taken/);
  assert.match(answer[3]!.reason!, /no such account/);
  assert.match(answer[4]!.reason!, /twice/);

  // A node offers; the account decides: nothing is ready (nor explorable) before an admin accepts.
  const waiting = (await call('GET', '/v1/databases/legacy_app', admin)).json();
  assert.equal(waiting.status, 'provisioning');
  assert.equal(waiting.attached.accepted_at, null);
  const early = await call('POST', '/v1/databases/legacy_app/explorer/query', admin, { sql: 'SELECT 1' });
  assert.equal(early.statusCode, 409, early.body);
  // Only an admin of the account accepts (a read key: 403; another account: 404).
  assert.equal((await call('POST', '/v1/databases/legacy_app/attachment/accept', reader)).statusCode, 403);
  assert.equal((await call('POST', '/v1/databases/legacy_app/attachment/accept', stranger)).statusCode, 404);
  assert.equal((await call('POST', '/v1/databases/hosted_one/attachment/accept', admin)).statusCode, 409);
  for (const n of ['legacy_app', 'legacy_bad']) {
    const acc = await call('POST', `/v1/databases/${n}/attachment/accept`, admin);
    assert.equal(acc.statusCode, 200, acc.body);
    assert.ok(acc.json().attached.accepted_at);
  }
  const list = await call('GET', '/v1/databases', admin);
  const items = list.json().items as {
    name: string;
    kind: string;
    status: string;
    attached: unknown;
    node: string;
  }[];
  const app = items.find((i) => i.name === 'legacy_app')!;
  assert.equal(app.kind, 'attached');
  assert.equal(app.status, 'ready');
  assert.equal(app.node, 'at1');
  assert.deepEqual((app.attached as { findings: unknown[] }).findings, [warn]);
  const failed = items.find((i) => i.name === 'legacy_bad')!;
  assert.equal(failed.status, 'failed');
  assert.equal(items.find((i) => i.name === 'hosted_one')!.kind, 'hosted');
  const one = await call('GET', '/v1/databases/legacy_bad', admin);
  assert.match(one.json().failure_reason, /refused by the agent's role checks/);
  // Another account does not see them (404), a read key does.
  assert.equal((await call('GET', '/v1/databases/legacy_app', stranger)).statusCode, 404);
  assert.equal((await call('GET', '/v1/databases/legacy_app', reader)).statusCode, 200);
  // The audit has the attachment, by the agent of node at1.
  const ev = await s.db.pool.query<{ actor_type: string; actor_id: string }>(
    `SELECT actor_type, actor_id FROM audit_events WHERE action = 'database.attached' AND target_id = $1`,
    [app && answer[0]!.database_id],
  );
  assert.equal(ev.rowCount, 1);
  assert.equal(ev.rows[0]!.actor_type, 'agent');
  assert.equal(ev.rows[0]!.actor_id, agent.nodeId);
});

test('every managing route answers 409 for an attached database; reads and governed SQL work', async () => {
  const refusals: [string, string, object | undefined][] = [
    ['DELETE', '/v1/databases/legacy_app', { confirm: 'legacy_app' }],
    ['GET', '/v1/databases/legacy_app/connection', undefined],
    ['POST', '/v1/databases/legacy_app/credentials/reveal', {}],
    ['POST', '/v1/databases/legacy_app/credentials/rotate', {}],
    ['GET', '/v1/databases/legacy_app/allowlist', undefined],
    ['PUT', '/v1/databases/legacy_app/allowlist', { entries: [] }],
    ['POST', '/v1/databases/legacy_app/allowlist', { cidr: '10.0.0.0/8' }],
    ['GET', '/v1/databases/legacy_app/limits', undefined],
    ['POST', '/v1/databases/legacy_app/backups', {}],
    ['GET', '/v1/databases/legacy_app/backups', undefined],
    ['POST', '/v1/databases/legacy_app/restore', { backup_id: randomUUID() }],
    ['POST', '/v1/databases/legacy_app/move', { node: 'at2' }],
    [
      'POST',
      '/v1/databases/legacy_app/requests',
      { access: { role: 'reader', duration_s: 600 }, reason: 'look' },
    ],
  ];
  for (const [method, url, body] of refusals) {
    const r = await call(method as 'GET', url, admin, body);
    assert.equal(r.statusCode, 409, `${method} ${url}: ${r.body}`);
    assert.match(r.json().error.message, /attached database/, `${method} ${url}`);
  }
  // Another account's attached database stays a 404 on the same routes.
  for (const [method, url, body] of refusals) {
    const r = await call(method as 'GET', url, stranger, body);
    assert.equal(r.statusCode, 404, `${method} ${url} (stranger): ${r.body}`);
  }
  // A governed SQL request is made as on a hosted database.
  const req = await call('POST', '/v1/databases/legacy_app/requests', admin, {
    sql: 'UPDATE t SET v = 1 WHERE id = 1',
    reason: 'fix a row',
  });
  assert.equal(req.statusCode, 201, req.body);
  // Still there, unchanged.
  assert.equal((await call('GET', '/v1/databases/legacy_app', admin)).json().status, 'ready');
});

test('no drift, backup schedule or drain ever picks an attached database', async () => {
  const known = await knownDatabaseDetails(s.db.pool, agent.nodeId);
  // A hosted database is known by its generated name on the node, never by its label.
  assert.ok(
    known.some((k) => k.id === hostedId && /^bulwark_db_/.test(k.name)),
    JSON.stringify(known),
  );
  assert.ok(!known.some((k) => k.name.startsWith('legacy_')), JSON.stringify(known));
  const { dueScheduledBackups } = await import('../src/server/modules/backups/backups.settings.repo.ts');
  const { nextDrainDatabase } = await import('../src/server/modules/nodes/nodes.move.repo.ts');
  const defaults = {
    enabled: true,
    schedule_minute: 0,
    retention_days: 30,
    rpo_hours: 26,
    drill_interval_days: 7,
  };
  const due = await dueScheduledBackups(
    s.db.pool,
    defaults as never,
    new Date(Date.now() + 3 * 86_400_000),
    1000,
  );
  assert.ok(!due.some((d) => d.name.startsWith('legacy_')));
  // The drain's next database on node at1 is never the attached one.
  const client = await s.db.pool.connect();
  try {
    await client.query('BEGIN');
    const next = await nextDrainDatabase(client, agent.nodeId);
    assert.notEqual(next?.name, 'legacy_app');
    await client.query('ROLLBACK');
  } finally {
    client.release();
  }
});

test('a later report updates the checks and detaches what the node no longer lists', async () => {
  const before = (await call('GET', '/v1/databases/legacy_app', admin)).json().id;
  const r = await report(agent, [entry('legacy_bad', admin.accountId, true)]);
  assert.equal(r.statusCode, 200, r.body);
  assert.equal((await call('GET', '/v1/databases/legacy_bad', admin)).json().status, 'ready');
  assert.equal((await call('GET', '/v1/databases/legacy_app', admin)).statusCode, 404);
  const ev = await s.db.pool.query(
    `SELECT 1 FROM audit_events WHERE action = 'database.detached' AND target_id = $1`,
    [before],
  );
  assert.equal(ev.rowCount, 1);
  // Another node cannot take over the name of this node's attached database in the account.
  const other = await report(otherAgent, [entry('legacy_bad', admin.accountId)]);
  assert.equal(other.json().databases[0].status, 'refused');
  // And a node's report never detaches another node's attached databases.
  assert.equal((await report(otherAgent, [])).statusCode, 200);
  assert.equal((await call('GET', '/v1/databases/legacy_bad', admin)).json().status, 'ready');
  // The name is free again for a hosted database once detached.
  const again = await call('POST', '/v1/databases', admin, { name: 'legacy_app', node: 'at1' });
  assert.equal(again.statusCode, 202, again.body);
});

test('a rejected offer is gone and never offered again by its node; an unaccepted one yields its name to a create', async () => {
  const offers = [entry('legacy_bad', admin.accountId, true), entry('offer_x', admin.accountId)];
  assert.equal((await report(agent, offers)).statusCode, 200);
  assert.equal((await call('GET', '/v1/databases/offer_x', admin)).json().status, 'provisioning');
  const noConfirm = await call('POST', '/v1/databases/offer_x/attachment/reject', admin, { confirm: 'nope' });
  assert.equal(noConfirm.statusCode, 400);
  const rej = await call('POST', '/v1/databases/offer_x/attachment/reject', admin, { confirm: 'offer_x' });
  assert.equal(rej.statusCode, 204, rej.body);
  assert.equal((await call('GET', '/v1/databases/offer_x', admin)).statusCode, 404);
  const again = await report(agent, offers);
  const answers = again.json().databases as { name: string; status: string; reason: string }[];
  const x = answers.find((d) => d.name === 'offer_x')!;
  assert.equal(x.status, 'refused');
  assert.match(x.reason, /rejected/);
  // Rejecting an accepted one drops it too (the database itself is untouched: nothing is queued).
  const count = async () =>
    (await s.db.pool.query('SELECT count(*)::int AS n FROM jobs WHERE node_id = $1', [agent.nodeId])).rows[0]
      .n;
  const jobsBefore = await count();
  const drop = await call('POST', '/v1/databases/legacy_bad/attachment/reject', admin, {
    confirm: 'legacy_bad',
  });
  assert.equal(drop.statusCode, 204, drop.body);
  assert.equal(await count(), jobsBefore);
  // An offer the account never accepted does not keep the account from using the name.
  assert.equal(
    (await report(otherAgent, [entry('wanted', admin.accountId)])).json().databases[0].status,
    'attached',
  );
  const created = await call('POST', '/v1/databases', admin, { name: 'wanted', node: 'at1' });
  assert.equal(created.statusCode, 202, created.body);
  assert.equal((await call('GET', '/v1/databases/wanted', admin)).json().kind, 'hosted');
  const withdrawn = await s.db.pool.query(
    `SELECT 1 FROM audit_events WHERE action = 'database.detached' AND details->>'reason' = 'offer_withdrawn_by_create'`,
  );
  assert.equal(withdrawn.rowCount, 1);
});

test('the report route: agent token only, bounded, strict', async () => {
  const noToken = await s.app.inject({
    method: 'POST',
    url: '/v1/agent/attached',
    payload: { databases: [] },
  });
  assert.equal(noToken.statusCode, 401);
  const withKey = await call('POST', '/v1/agent/attached', admin, { databases: [] });
  assert.ok([401, 403].includes(withKey.statusCode), withKey.body);
  const tooMany = await report(
    agent,
    Array.from({ length: 101 }, (_, i) => entry(`n${i}`, admin.accountId)),
  );
  assert.equal(tooMany.statusCode, 400);
  for (const bad of [
    { ...entry('x', admin.accountId), password: 'secret' },
    { ...entry('Bad-Name', admin.accountId) },
    { ...entry('x', 'not-a-uuid') },
    {
      ...entry('x', admin.accountId, true, [
        { role: 'reader', severity: 'refuse', kind: 'k', object: 'o'.repeat(201), detail: '' },
      ]),
    },
  ]) {
    const r = await report(agent, [bad]);
    assert.equal(r.statusCode, 400, JSON.stringify(bad).slice(0, 100));
  }
  // Nothing of the refused reports was registered.
  const list = await call('GET', '/v1/databases', admin);
  assert.ok(!(list.json().items as { name: string }[]).some((i) => i.name === 'x' || i.name === 'n0'));
});
