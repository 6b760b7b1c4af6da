// Governed requests, approvals (issue 14): never self-approval, one person counts once, concurrent
// approvals consistent, expiry, a suspended approver stops counting, break-glass never by a key.
// A fully wired server on its own control DB; nothing here reaches a node (DDL needs no dry run,
// and every execution below is refused before it is sent).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { createLocalUser } from '../src/server/modules/people/users.service.ts';
import { createAccount, enrollFakeAgent } from './helpers/databases.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { signIn } from './helpers/session-users.ts';
import { api, auditOf, expectStatus, type Person, person, readyDatabase } from './requests-helpers.ts';

const DB = 'ledger';
const DDL = 'CREATE TABLE audit_copy (id bigint PRIMARY KEY, note text)';

let s: TestServer;
let acme: string;
let key: TestKey;
let requester: Person;
let http: ReturnType<typeof api>;

before(async () => {
  s = await createTestServer();
  acme = await createAccount(s, 'acme');
  const agent = await enrollFakeAgent(s, 'n1');
  await readyDatabase(s, { id: randomUUID(), accountId: acme, nodeId: agent.nodeId, name: DB });
  key = await createTestKey(s, { account: 'acme', level: 'admin' });
  requester = await person(s, acme, 'member', 'req');
  http = api(s);
});
after(() => s?.stop());

async function ddlRequest(sql = DDL): Promise<string> {
  const body = expectStatus(
    await http.create(DB, requester.headers, { sql, reason: 'a copy for the auditors' }),
    201,
  );
  assert.equal(body.status, 'pending');
  assert.equal((body.classification as { class: string }).class, 'ddl');
  assert.deepEqual(
    {
      n: (body.policy as { approvals_required: number }).approvals_required,
      a: (body.policy as { admin_approvals_required: number }).admin_approvals_required,
    },
    { n: 2, a: 1 },
  );
  return body.id as string;
}

test('a request cannot be approved by its requester; keys cannot approve at all', async () => {
  const id = await ddlRequest();
  expectStatus(await http.act(DB, id, 'approve', requester.headers), 403, 'policy_denied');
  // An owner's own request: the same.
  const owner = await person(s, acme, 'owner');
  const own = expectStatus(await http.create(DB, owner.headers, { sql: DDL, reason: 'mine' }), 201);
  expectStatus(await http.act(DB, own.id as string, 'approve', owner.headers), 403, 'policy_denied');
  // A key (even admin) never approves: the policy table refuses it.
  expectStatus(await http.act(DB, id, 'approve', key.headers), 403);
  const after = expectStatus(await http.get(DB, id, requester.headers), 200);
  assert.equal(after.approvals_counted, 0);
  assert.deepEqual(after.approvals, []);
});

test('two approvals by one person count once', async () => {
  const id = await ddlRequest();
  const admin = await person(s, acme, 'admin');
  const first = expectStatus(await http.act(DB, id, 'approve', admin.headers, { comment: 'ok' }), 200);
  assert.equal(first.approvals_counted, 1);
  assert.equal(first.admin_approvals_counted, 1);
  const again = expectStatus(await http.act(DB, id, 'approve', admin.headers, { comment: 'really ok' }), 200);
  assert.equal(again.approvals_counted, 1);
  assert.equal(again.status, 'pending');
  assert.equal((again.approvals as unknown[]).length, 1);
  assert.equal((await auditOf(s, 'request.approved', id)).length, 1);
  // A second person completes it.
  const member = await person(s, acme, 'member');
  const done = expectStatus(await http.act(DB, id, 'approve', member.headers), 200);
  assert.equal(done.status, 'approved');
  assert.equal(done.approvals_counted, 2);
  assert.ok(typeof done.approval_expires_at === 'string');
});

test('concurrent approvals are consistent: exactly the required count, one transition', async () => {
  const id = await ddlRequest();
  const approvers = await Promise.all(Array.from({ length: 8 }, () => person(s, acme, 'admin', 'conc')));
  const answers = await Promise.all(approvers.map((a) => http.act(DB, id, 'approve', a.headers)));
  const codes = answers.map((r) => r.statusCode).sort();
  // Two approvals reach the requirement; the others find the request approved already.
  assert.deepEqual(codes, [200, 200, 409, 409, 409, 409, 409, 409], answers.map((r) => r.body).join('\n'));
  for (const r of answers.filter((a) => a.statusCode === 409))
    assert.equal(r.json().error.code, 'invalid_state');
  const final = expectStatus(await http.get(DB, id, requester.headers), 200);
  assert.equal(final.status, 'approved');
  assert.equal(final.approvals_counted, 2);
  const rows = await s.db.pool.query(
    'SELECT count(*)::int AS n FROM request_approvals WHERE request_id = $1',
    [id],
  );
  assert.equal(rows.rows[0].n, 2);
  const events = await auditOf(s, 'request.approved', id);
  assert.equal(events.length, 2);
  assert.equal(events.filter((e) => e.details.approved === true).length, 1);
});

test('an expired request cannot run, and the sweeper marks it expired', async () => {
  const id = await ddlRequest();
  const [a, b] = [await person(s, acme, 'owner'), await person(s, acme, 'member')];
  expectStatus(await http.act(DB, id, 'approve', a.headers), 200);
  expectStatus(await http.act(DB, id, 'approve', b.headers), 200);
  await s.db.pool.query(
    "UPDATE governed_requests SET approval_expires_at = now() - interval '1 second' WHERE id = $1",
    [id],
  );
  const refused = expectStatus(await http.act(DB, id, 'execute', requester.headers), 409, 'invalid_state');
  assert.match((refused.error as { message: string }).message, /expired/);
  // A pending one past its lifetime: neither approved nor run, and swept.
  const pending = await ddlRequest();
  await s.db.pool.query(
    "UPDATE governed_requests SET expires_at = now() - interval '1 second' WHERE id = $1",
    [pending],
  );
  expectStatus(await http.act(DB, pending, 'approve', a.headers), 409, 'invalid_state');
  assert.ok((await s.requestSweeper.sweep()) >= 2);
  for (const x of [id, pending]) {
    const r = expectStatus(await http.get(DB, x, requester.headers), 200);
    assert.equal(r.status, 'expired');
    assert.equal((await auditOf(s, 'request.expired', x)).length, 1);
  }
  // Nothing was ever sent to the node.
  const jobs = await s.db.pool.query("SELECT count(*)::int AS n FROM jobs WHERE kind = 'request.execute'");
  assert.equal(jobs.rows[0].n, 0);
});

test('a suspended approver no longer counts: approved, suspended, execute refused', async () => {
  const id = await ddlRequest();
  const admin = await person(s, acme, 'admin');
  const member = await person(s, acme, 'member');
  expectStatus(await http.act(DB, id, 'approve', admin.headers), 200);
  const approved = expectStatus(await http.act(DB, id, 'approve', member.headers), 200);
  assert.equal(approved.status, 'approved');
  await s.db.pool.query("UPDATE users SET status = 'suspended', suspended_at = now() WHERE id = $1", [
    admin.id,
  ]);
  const view = expectStatus(await http.get(DB, id, requester.headers), 200);
  assert.equal(view.approvals_counted, 1);
  assert.equal(view.admin_approvals_counted, 0);
  const counts = Object.fromEntries(
    (view.approvals as { user_id: string; counts: boolean }[]).map((x) => [x.user_id, x.counts]),
  );
  assert.deepEqual(counts, { [admin.id]: false, [member.id]: true });
  const refused = expectStatus(await http.act(DB, id, 'execute', requester.headers), 409, 'invalid_state');
  assert.equal(
    (refused.error as { details: { admin_approvals_counted: number } }).details.admin_approvals_counted,
    0,
  );
  // A demoted approver stops counting as an admin the same way.
  const id2 = await ddlRequest();
  const admin2 = await person(s, acme, 'admin');
  expectStatus(await http.act(DB, id2, 'approve', admin2.headers), 200);
  expectStatus(await http.act(DB, id2, 'approve', member.headers), 200);
  await s.db.pool.query("UPDATE memberships SET role = 'member' WHERE user_id = $1", [admin2.id]);
  expectStatus(await http.act(DB, id2, 'execute', requester.headers), 409, 'invalid_state');
  const jobs = await s.db.pool.query("SELECT count(*)::int AS n FROM jobs WHERE kind = 'request.execute'");
  assert.equal(jobs.rows[0].n, 0);
});

test('a delivery the server lost is settled as without outcome by the sweeper', async () => {
  const read = expectStatus(
    await http.create(DB, requester.headers, { sql: 'SELECT 1', reason: 'lost' }),
    201,
  );
  const id = read.id as string;
  // As if a server had sent it down a channel three hours ago and stopped before the answer.
  await s.db.pool.query("UPDATE governed_requests SET status = 'executing', executions = 1 WHERE id = $1", [
    id,
  ]);
  await s.db.pool.query(
    `INSERT INTO request_executions (request_id, mode, jti, sql_sha256, prior_status, delivery, started_at)
     SELECT id, 'execute', gen_random_uuid(), sql_sha256, 'approved', 'channel', now() - interval '3 hours'
       FROM governed_requests WHERE id = $1`,
    [id],
  );
  await s.requestSweeper.sweep();
  const r = expectStatus(await http.get(DB, id, requester.headers), 200);
  assert.equal(r.status, 'failed');
  const last = r.last_execution as { error: { sqlstate: string; message: string } };
  assert.equal(last.error.sqlstate, '58000');
  assert.match(last.error.message, /may have run/);
  assert.equal((await auditOf(s, 'request.failed', id)).length, 1);
});

test('break-glass is never an API key, nor a member', async () => {
  const id = await ddlRequest();
  const keyed = expectStatus(
    await http.act(DB, id, 'execute', key.headers, { break_glass: { reason: 'production is down, fixing' } }),
    403,
    'policy_denied',
  );
  assert.match((keyed.error as { message: string }).message, /API key/);
  const member = await person(s, acme, 'member');
  expectStatus(
    await http.act(DB, id, 'execute', member.headers, {
      break_glass: { reason: 'production is down, fixing' },
    }),
    403,
    'policy_denied',
  );
  // Too short a reason: refused by the schema.
  const owner = await person(s, acme, 'owner');
  expectStatus(await http.act(DB, id, 'execute', owner.headers, { break_glass: { reason: 'short' } }), 400);
  const r = expectStatus(await http.get(DB, id, requester.headers), 200);
  assert.equal(r.status, 'pending');
  assert.equal(r.break_glass, null);
  assert.equal((await s.db.pool.query('SELECT count(*)::int AS n FROM event_outbox')).rows[0].n, 0);
});

test('break-glass needs the step-up window of a user with a password', async () => {
  const id = await ddlRequest();
  const u = await createLocalUser(s.db.pool, {
    username: `bg-owner-${process.pid}`,
    password: 'correct horse battery staple 42',
    platformAdmin: false,
  });
  await s.db.pool.query('INSERT INTO memberships (account_id, user_id, role) VALUES ($1, $2, $3)', [
    acme,
    u.id,
    'owner',
  ]);
  const session = await signIn(s, u);
  const res = await http.act(DB, id, 'execute', session.headers, {
    break_glass: { reason: 'production is down, fixing' },
  });
  expectStatus(res, 403, 'reauth_required');
  const r = expectStatus(await http.get(DB, id, requester.headers), 200);
  assert.equal(r.status, 'pending');
  assert.equal((await auditOf(s, 'request.break_glass', id)).length, 0);
});

test('refused, unparseable and blocked SQL never becomes a request; the policy decides who asks', async () => {
  const bad = expectStatus(
    await http.create(DB, requester.headers, { sql: 'ALTER SYSTEM SET fsync = off', reason: 'x' }),
    400,
  );
  assert.match((bad.error as { message: string }).message, /cannot be requested/);
  expectStatus(await http.create(DB, requester.headers, { sql: 'SELEC nonsense FROM', reason: 'x' }), 400);
  const blocked = expectStatus(
    await http.create(DB, requester.headers, { sql: 'DELETE FROM t', reason: 'x' }),
    400,
  );
  assert.match((blocked.error as { message: string }).message, /missing_where/);
  // A viewer may ask for reads only (built-in rules), which run at once.
  const viewer = await person(s, acme, 'viewer');
  expectStatus(await http.create(DB, viewer.headers, { sql: DDL, reason: 'x' }), 403, 'policy_denied');
  const read = expectStatus(
    await http.create(DB, viewer.headers, { sql: 'SELECT 1', reason: 'a look' }),
    201,
  );
  assert.equal(read.status, 'approved');
  assert.equal(read.capability, 'reader');
  // Exactly one of sql or access; another account's request is a 404.
  expectStatus(await http.create(DB, requester.headers, { reason: 'x' }), 400);
  const other = await createAccount(s, 'other');
  const stranger = await person(s, other, 'owner');
  expectStatus(await http.get(DB, read.id as string, stranger.headers), 404);
  expectStatus(await http.act(DB, read.id as string, 'approve', stranger.headers), 404);
  const none = await s.db.pool.query('SELECT count(*)::int AS n FROM governed_requests WHERE reason = $1', [
    'x',
  ]);
  assert.equal(none.rows[0].n, 0);
});

test('a create retried with the same Idempotency-Key answers the first request', async () => {
  const headers = { ...requester.headers, 'idempotency-key': `retry-${process.pid}` };
  const body = { sql: 'CREATE TABLE retried (id int)', reason: 'retry' };
  const first = expectStatus(await http.create(DB, headers, body), 201);
  const again = expectStatus(await http.create(DB, headers, body), 201);
  assert.equal(again.id, first.id);
  const n = await s.db.pool.query("SELECT count(*)::int AS n FROM governed_requests WHERE reason = 'retry'");
  assert.equal(n.rows[0].n, 1);
});

test('reject ends a request; cancel is for the requester; an edit starts over', async () => {
  const id = await ddlRequest();
  const admin = await person(s, acme, 'admin');
  expectStatus(await http.act(DB, id, 'approve', admin.headers), 200);
  // The edit clears the approval and reclassifies.
  const edited = expectStatus(
    await http.call('PUT', `/v1/databases/${DB}/requests/${id}`, requester.headers, {
      sql: 'CREATE INDEX ON audit_copy (note)',
    }),
    200,
  );
  assert.equal(edited.status, 'pending');
  assert.deepEqual(edited.approvals, []);
  assert.ok((edited.findings as { code: string }[]).some((f) => f.code === 'index_not_concurrent'));
  // A read edited from DDL runs as the reader.
  const readId = await ddlRequest();
  const asRead = expectStatus(
    await http.call('PUT', `/v1/databases/${DB}/requests/${readId}`, requester.headers, { sql: 'SELECT 1' }),
    200,
  );
  assert.equal(asRead.capability, 'reader');
  assert.equal(asRead.status, 'approved');
  assert.equal((asRead.classification as { class: string }).class, 'read');
  const other = await person(s, acme, 'member');
  expectStatus(await http.act(DB, id, 'cancel', other.headers), 403);
  const rejected = expectStatus(await http.act(DB, id, 'reject', admin.headers, { comment: 'not now' }), 200);
  assert.equal(rejected.status, 'rejected');
  expectStatus(await http.act(DB, id, 'approve', other.headers), 409, 'invalid_state');
  const id2 = await ddlRequest();
  const cancelled = expectStatus(await http.act(DB, id2, 'cancel', requester.headers), 200);
  assert.equal(cancelled.status, 'cancelled');
  // The inbox: pending requests others may approve.
  const id3 = await ddlRequest();
  const inbox = expectStatus(await http.call('GET', '/v1/requests?awaiting=me', admin.headers), 200);
  const ids = (inbox.items as { id: string }[]).map((x) => x.id);
  assert.ok(ids.includes(id3));
  assert.ok(!ids.includes(id2));
  const mine = expectStatus(
    await http.call('GET', `/v1/databases/${DB}/requests?requester=me&status=pending`, requester.headers),
    200,
  );
  assert.ok((mine.items as { id: string }[]).every((x) => x.id !== id2));
});
