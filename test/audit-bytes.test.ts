/**
 * Issue 19, "Nothing lost from the audit": whatever bytes a client sends — NUL characters, lone
 * UTF-16 surrogates, bytes that are not UTF-8 — every event that input reaches is recorded (the
 * unstorable characters become U+FFFD), readable through the audit API, and the chain verifies.
 * Through the real HTTP API and agent routes, on a real control database.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { withTx } from '../src/server/db/pool.ts';
import { createAccount, enrollFakeAgent, type FakeAgent } from './helpers/databases.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

const FFFD = '\uFFFD';
/** A JSON body whose string holds the raw bytes 0xC3 0x28 (an invalid UTF-8 sequence). */
const invalidUtf8Body = (before: string, after: string): Buffer =>
  Buffer.concat([Buffer.from(before, 'utf8'), Buffer.from([0xc3, 0x28]), Buffer.from(after, 'utf8')]);
const json = { 'content-type': 'application/json' };

type EventOut = {
  action: string;
  outcome: string;
  actor_id: string | null;
  target_type: string | null;
  target_id: string | null;
  source_ip: string | null;
  request_id: string | null;
  details: Record<string, unknown>;
};
type EventRow = { action: string; outcome: string; details: Record<string, unknown> };

let s: TestServer;
let admin: TestKey;
let reader: TestKey;
let agent: FakeAgent;

before(async () => {
  s = await createTestServer();
  admin = await createTestKey(s, { account: 'acme' });
  reader = await createTestKey(s, { account: 'acme', level: 'read', explorer: false });
  agent = await enrollFakeAgent(s, 'n1');
});
after(() => s.stop());

/** The account's events of `action`, newest first, through GET /v1/audit/events. */
async function apiEvents(action: string): Promise<EventOut[]> {
  const res = await s.app.inject({
    url: `/v1/audit/events?action=${action}&limit=100`,
    headers: admin.headers,
  });
  assert.equal(res.statusCode, 200, res.body);
  return res.json().items as EventOut[];
}

/** Events without an account (agent refusals) are not in the account's API: read the table. */
async function storedEvents(action: string): Promise<EventRow[]> {
  const r = await s.db.pool.query<EventRow>(
    'SELECT action, outcome, details FROM audit_events WHERE action = $1 ORDER BY id',
    [action],
  );
  return r.rows;
}

const hasUnstorable = (v: unknown): boolean =>
  JSON.stringify(v).includes('\\u0000') || /\\ud[89a-f]/i.test(JSON.stringify(v));

test('an agent refusal is recorded whatever its input held: NUL, a lone surrogate, invalid UTF-8', async () => {
  const nul = await s.app.inject({
    method: 'POST',
    url: '/v1/agent/enroll',
    payload: { enrollment_token: 'bwe_\u0000nope', agent_version: 'v1\u0000evil' },
  });
  assert.equal(nul.statusCode, 401, nul.body);
  const surrogate = await s.app.inject({
    method: 'POST',
    url: '/v1/agent/enroll',
    headers: json,
    payload: '{"enrollment_token":"bwe_x","agent_version":"v2\\ud800"}',
  });
  assert.equal(surrogate.statusCode, 401, surrogate.body);
  const bytes = await s.app.inject({
    method: 'POST',
    url: '/v1/agent/enroll',
    headers: json,
    payload: invalidUtf8Body('{"enrollment_token":"bwe_y","agent_version":"v3', '"}'),
  });
  assert.equal(bytes.statusCode, 401, bytes.body);

  const versions = (await storedEvents('agent.enroll'))
    .filter((e) => e.outcome === 'failure')
    .map((e) => e.details.agent_version);
  assert.ok(versions.includes(`v1${FFFD}evil`), JSON.stringify(versions));
  assert.ok(versions.includes(`v2${FFFD}`), JSON.stringify(versions));
  assert.ok(versions.includes(`v3${FFFD}(`), JSON.stringify(versions));
});

test('a key name with a lone surrogate or invalid UTF-8 is recorded in key.created; NUL is a 400, never a 500', async () => {
  const surrogate = await s.app.inject({
    method: 'POST',
    url: '/v1/keys',
    headers: { ...admin.headers, ...json },
    payload: '{"name":"ci \\ud800 key","level":"read"}',
  });
  assert.equal(surrogate.statusCode, 201, surrogate.body);
  const bytes = await s.app.inject({
    method: 'POST',
    url: '/v1/keys',
    headers: { ...admin.headers, ...json },
    payload: invalidUtf8Body('{"name":"raw ', ' key","level":"read"}'),
  });
  assert.equal(bytes.statusCode, 201, bytes.body);
  const nul = await s.app.inject({
    method: 'POST',
    url: '/v1/keys',
    headers: admin.headers,
    payload: { name: 'nul\u0000key', level: 'read' },
  });
  assert.equal(nul.statusCode, 400, nul.body);

  const names = (await apiEvents('key.created')).map((e) => e.details.name);
  assert.ok(names.includes(`ci ${FFFD} key`), JSON.stringify(names));
  assert.ok(names.includes(`raw ${FFFD}( key`), JSON.stringify(names));
});

test('database names in paths with NUL or invalid UTF-8 are refused (4xx), never a 500', async () => {
  for (const name of ['a%00b', 'a%C3%28b', 'a%ED%A0%80b']) {
    for (const url of [`/v1/databases/${name}`, `/v1/databases/${name}/explorer/schema`]) {
      const res = await s.app.inject({ url, headers: admin.headers });
      assert.ok(res.statusCode >= 400 && res.statusCode < 500, `${url}: ${res.statusCode} ${res.body}`);
    }
    const q = await s.app.inject({
      method: 'POST',
      url: `/v1/databases/${name}/explorer/query`,
      headers: admin.headers,
      payload: { sql: 'SELECT 1' },
    });
    assert.ok(q.statusCode >= 400 && q.statusCode < 500, `${name}: ${q.statusCode} ${q.body}`);
  }
});

test("an agent's job error with NUL and a lone surrogate fails the job and is recorded", async () => {
  const created = await s.app.inject({
    method: 'POST',
    url: '/v1/databases',
    headers: admin.headers,
    payload: { name: 'bytes_fail' },
  });
  assert.equal(created.statusCode, 202, created.body);
  const job = await agent.poll();
  assert.ok(job && job.kind === 'database.create', JSON.stringify(job));
  assert.equal(await agent.fail(job.id, job.attempt, 'boom\u0000 at \ud800 end', false), 200);

  const failed = (await apiEvents('database.create_failed')).find((e) => e.target_id === created.json().id);
  assert.ok(failed, 'database.create_failed recorded');
  assert.equal(failed.details.error, `boom${FFFD} at ${FFFD} end`);
});

test('explorer SQL with NUL, a lone surrogate or invalid UTF-8 is recorded (refused and denied queries)', async () => {
  const created = await s.app.inject({
    method: 'POST',
    url: '/v1/databases',
    headers: admin.headers,
    payload: { name: 'bytes_ok' },
  });
  assert.equal(created.statusCode, 202, created.body);
  const job = await agent.poll();
  assert.ok(job && job.kind === 'database.create', JSON.stringify(job));
  assert.equal(await agent.complete(job.id, job.attempt, {}), 200);

  const url = '/v1/databases/bytes_ok/explorer/query';
  const sent: { headers: Record<string, string>; payload: string | Buffer | object }[] = [
    // A key without the explorer: refused after the database is found, and audited with its SQL.
    { headers: reader.headers, payload: { sql: "SELECT 'a\u0000b'" } },
    { headers: { ...reader.headers, ...json }, payload: '{"sql":"SELECT \'\\udc00\'"}' },
    { headers: { ...reader.headers, ...json }, payload: invalidUtf8Body('{"sql":"SELECT \'', '\'"}') },
    // The admin: the validator refuses a write (whatever follows a NUL), audited as denied.
    { headers: admin.headers, payload: { sql: 'DROP TABLE t -- \u0000 \ud800' } },
  ];
  for (const r of sent) {
    const res = await s.app.inject({ method: 'POST', url, headers: r.headers, payload: r.payload });
    assert.ok(res.statusCode === 400 || res.statusCode === 403, `${res.statusCode} ${res.body}`);
  }
  const denied = (await apiEvents('explorer.query')).filter(
    (e) => e.outcome === 'denied' && e.details.database === 'bytes_ok',
  );
  assert.equal(denied.length, sent.length, JSON.stringify(denied));
  for (const e of denied) {
    assert.equal(typeof e.details.sql, 'string');
    assert.equal(hasUnstorable(e), false);
  }
});

test('every field of an event and its details (keys too, at any depth) is stored, readable and chained', async () => {
  const account = await createAccount(s, 'acme');
  const evil = 'x\u0000y\ud800z\udc00';
  const clean = `x${FFFD}y${FFFD}z${FFFD}`;
  const event = {
    actorType: 'key' as const,
    actorId: evil,
    targetType: evil,
    targetId: evil,
    accountId: account,
    sourceIp: evil,
    requestId: evil,
    details: {
      [evil]: evil,
      [`x${FFFD}y${FFFD}z${FFFD}`]: 'a clean key that collides with the cleaned one',
      nested: { deeper: [evil, { [evil]: [evil] }] },
      // An own key named __proto__ (as JSON.parse makes one) stays a plain key.
      ...(JSON.parse('{"__proto__":"p\\u0000q"}') as Record<string, unknown>),
    },
  };
  await withTx(s.db.pool, (tx) => s.audit.record(tx, { ...event, action: 'test.bytes_in_tx' }));
  await s.audit.recordNow({ ...event, action: 'test.bytes_now' });
  await s.audit.recordSoon({ ...event, action: 'test.bytes_soon' });

  for (const action of ['test.bytes_in_tx', 'test.bytes_now', 'test.bytes_soon']) {
    const [e] = await apiEvents(action);
    assert.ok(e, `${action} recorded`);
    assert.deepEqual(
      [e.actor_id, e.target_type, e.target_id, e.source_ip, e.request_id],
      [clean, clean, clean, clean, clean],
    );
    assert.equal(e.details[clean], clean);
    // Nothing dropped: the clean key that collided with the cleaned one is kept beside it.
    assert.ok(Object.keys(e.details).length >= 3, JSON.stringify(e.details));
    assert.equal(e.details[`${clean}${FFFD}`], 'a clean key that collides with the cleaned one');
    assert.deepEqual(e.details.nested, { deeper: [clean, { [clean]: [clean] }] });
    assert.equal(hasUnstorable(e), false);
    // The stored row keeps all four keys, `__proto__` an own key (the API's record schema drops that
    // one name when it answers: zod builds records by assignment).
    const [row] = await storedEvents(action);
    assert.equal(Object.keys(row!.details).length, 4, JSON.stringify(row!.details));
    assert.equal(Object.getOwnPropertyDescriptor(row!.details, '__proto__')?.value, `p${FFFD}q`);
  }
});

test("an agent's heartbeat facts with NUL and lone surrogates are stored, never a 500", async () => {
  const res = await s.app.inject({
    method: 'POST',
    url: '/v1/agent/heartbeat',
    headers: { authorization: `Bearer ${agent.token}` },
    payload: { agent_version: 'a\u0000b', pg_version: 'pg\ud800', capabilities: { 'k\u0000': ['v\udc00'] } },
  });
  assert.equal(res.statusCode, 200, res.body);
  const r = await s.db.pool.query<{ agent_version: string; pg_version: string; capabilities: unknown }>(
    'SELECT agent_version, pg_version, capabilities FROM nodes WHERE id = $1',
    [agent.nodeId],
  );
  assert.deepEqual(r.rows[0], {
    agent_version: `a${FFFD}b`,
    pg_version: `pg${FFFD}`,
    capabilities: { [`k${FFFD}`]: [`v${FFFD}`] },
  });
});

// Last of the node tests: a new node would take the databases placed above.
test('an enrollment whose agent version holds a NUL succeeds and is recorded', async () => {
  const { token } = await s.nodes.createEnrollment('n-nul', 10);
  const res = await s.app.inject({
    method: 'POST',
    url: '/v1/agent/enroll',
    payload: { enrollment_token: token, agent_version: 'ok\u0000\udfff' },
  });
  assert.equal(res.statusCode, 200, res.body);
  const ok = (await storedEvents('agent.enroll')).filter((e) => e.outcome === 'success');
  assert.ok(ok.some((e) => e.details.agent_version === `ok${FFFD}${FFFD}`));
});

test('after all of the above, the whole chain verifies', async () => {
  const deadline = Date.now() + 5_000;
  let pending = -1;
  while (Date.now() < deadline) {
    const r = await s.db.pool.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM audit_events WHERE seq IS NULL',
    );
    pending = r.rows[0]!.n;
    if (pending === 0) break;
    await new Promise((res) => setTimeout(res, 10));
  }
  assert.equal(pending, 0, 'every event chained');
  const res = await s.app.inject({ url: '/v1/audit/verify', headers: admin.headers });
  assert.equal(res.statusCode, 200, res.body);
  const v = res.json();
  assert.deepEqual([v.ok, v.pending, v.broken_at_seq], [true, 0, null]);
  assert.ok(Number(v.head_seq) > 10, `head ${v.head_seq}`);
});
