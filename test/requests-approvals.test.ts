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

test('viewers neither approve nor reject, and an approver demoted to viewer stops counting', async () => {
  const id = await ddlRequest();
  const viewer = await person(s, acme, 'viewer', 'noapprove');
  expectStatus(await http.act(DB, id, 'approve', viewer.headers), 403);
  expectStatus(await http.act(DB, id, 'reject', viewer.headers, { comment: 'no' }), 403);
  const pending = expectStatus(await http.get(DB, id, requester.headers), 200);
  assert.equal(pending.status, 'pending');
  assert.equal((pending.approvals as unknown[]).length, 0);
  const admin = await person(s, acme, 'admin', 'demview');
  const member = await person(s, acme, 'member', 'demview');
  expectStatus(await http.act(DB, id, 'approve', admin.headers), 200);
  const approved = expectStatus(await http.act(DB, id, 'approve', member.headers), 200);
  assert.equal(approved.status, 'approved');
  await s.db.pool.query("UPDATE memberships SET role = 'viewer' WHERE user_id = $1 AND account_id = $2", [
    member.id,
    acme,
  ]);
  const view = expectStatus(await http.get(DB, id, requester.headers), 200);
  assert.equal(view.approvals_counted, 1);
  expectStatus(await http.act(DB, id, 'execute', requester.headers), 409, 'invalid_state');
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

test('the person who created the requesting API key (up its chain) never approves it, and may cancel it', async () => {
  const boss = await person(s, acme, 'admin', 'keyboss');
  const own = expectStatus(
    await http.call('POST', '/v1/keys', boss.headers, { name: 'boss-admin-key', level: 'admin' }),
    201,
  );
  const ownHeaders = { authorization: `Bearer ${own.key as string}` };
  // A key created by that key: the person behind it is still the boss.
  const child = expectStatus(
    await http.call('POST', '/v1/keys', ownHeaders, { name: 'boss-child-key', level: 'write' }),
    201,
  );
  const childHeaders = { authorization: `Bearer ${child.key as string}` };
  for (const h of [ownHeaders, childHeaders]) {
    const req = expectStatus(await http.create(DB, h, { sql: DDL, reason: 'through my key' }), 201);
    const id = req.id as string;
    assert.equal((req.requester as { kind: string }).kind, 'key');
    const denied = expectStatus(await http.act(DB, id, 'approve', boss.headers), 403, 'policy_denied');
    assert.match((denied.error as { message: string }).message, /created that key/);
    expectStatus(await http.act(DB, id, 'reject', boss.headers, { comment: 'mine' }), 403, 'policy_denied');
    // Not in the boss's inbox; another admin's approval counts.
    const inbox = expectStatus(await http.call('GET', '/v1/requests?awaiting=me', boss.headers), 200);
    assert.ok(!(inbox.items as { id: string }[]).some((x) => x.id === id));
    const other = await person(s, acme, 'admin', 'keyother');
    assert.equal(expectStatus(await http.act(DB, id, 'approve', other.headers), 200).approvals_counted, 1);
    // An approval row of the boss that got in anyway never counts.
    await s.db.pool.query('INSERT INTO request_approvals (request_id, user_id) VALUES ($1, $2)', [
      id,
      boss.id,
    ]);
    const seen = expectStatus(await http.get(DB, id, requester.headers), 200);
    assert.equal(seen.approvals_counted, 1);
    assert.equal(seen.status, 'pending');
    const bossRow = (seen.approvals as { user_id: string; counts: boolean }[]).find(
      (a) => a.user_id === boss.id,
    );
    assert.equal(bossRow?.counts, false);
    // The person behind the key may cancel what it asked for.
    assert.equal(expectStatus(await http.act(DB, id, 'cancel', boss.headers), 200).status, 'cancelled');
  }
});

test('a read as the migrator is decided as a write: no viewers, one approval, and policy.why says so', async () => {
  const viewer = await person(s, acme, 'viewer', 'migread');
  const denied = expectStatus(
    await http.create(DB, viewer.headers, { sql: 'SELECT 1', reason: 'x', capability: 'migrator' }),
    403,
    'policy_denied',
  );
  assert.match((denied.error as { message: string }).message, /decided as a write/);
  const req = expectStatus(
    await http.create(DB, requester.headers, {
      sql: 'SELECT 1',
      reason: 'as migrator',
      capability: 'migrator',
    }),
    201,
  );
  assert.equal(req.status, 'pending');
  assert.equal(req.capability, 'migrator');
  assert.equal((req.classification as { class: string }).class, 'read');
  const policy = req.policy as { approvals_required: number; why: string };
  assert.equal(policy.approvals_required, 1);
  assert.match(policy.why, /decided as a write/);
  // Not runnable before its approval.
  expectStatus(await http.act(DB, req.id as string, 'execute', requester.headers), 409, 'invalid_state');
  // One decided as a read before (0 approvals, approved at once) does not run either.
  await s.db.pool.query(
    `UPDATE governed_requests SET status = 'approved', approval_expires_at = now() + interval '1 hour',
            policy = jsonb_set(policy, '{approvals_required}', '0') WHERE id = $1`,
    [req.id],
  );
  const legacy = expectStatus(
    await http.act(DB, req.id as string, 'execute', requester.headers),
    403,
    'policy_denied',
  );
  assert.match((legacy.error as { message: string }).message, /needs the approvals of a write/);
  // Preflight answers the same.
  const pre = expectStatus(
    await http.call('POST', `/v1/databases/${DB}/requests/preflight`, viewer.headers, {
      sql: 'SELECT 1',
      capability: 'migrator',
    }),
    200,
  );
  assert.equal((pre.policy as { allowed: boolean }).allowed, false);
  const asReader = expectStatus(
    await http.call('POST', `/v1/databases/${DB}/requests/preflight`, viewer.headers, { sql: 'SELECT 1' }),
    200,
  );
  assert.equal((asReader.policy as { allowed: boolean; approvals_required: number }).allowed, true);
  assert.equal((asReader.policy as { approvals_required: number }).approvals_required, 0);
});

test('a requester demoted, or whose key is revoked, after approval no longer executes (403)', async () => {
  const approveTwice = async (id: string) => {
    expectStatus(await http.act(DB, id, 'approve', (await person(s, acme, 'admin', 'dem')).headers), 200);
    const done = expectStatus(
      await http.act(DB, id, 'approve', (await person(s, acme, 'member', 'dem')).headers),
      200,
    );
    assert.equal(done.status, 'approved');
  };
  const m = await person(s, acme, 'member', 'demoted');
  const req = expectStatus(await http.create(DB, m.headers, { sql: DDL, reason: 'demote me' }), 201);
  await approveTwice(req.id as string);
  await s.db.pool.query("UPDATE memberships SET role = 'viewer' WHERE user_id = $1 AND account_id = $2", [
    m.id,
    acme,
  ]);
  // Executed by the requester or by an owner: the requester's current role decides.
  const owner = await person(s, acme, 'owner', 'dem');
  for (const h of [m.headers, owner.headers]) {
    const res = expectStatus(await http.act(DB, req.id as string, 'execute', h), 403, 'policy_denied');
    assert.match((res.error as { message: string }).message, /no longer/);
  }
  const still = expectStatus(await http.get(DB, req.id as string, owner.headers), 200);
  assert.equal(still.status, 'approved');
  assert.equal((still.executions as { count: number }).count, 0);
  // A key revoked after approval: an owner executing it is refused too.
  const k = await createTestKey(s, { account: 'acme', level: 'write' });
  const byKey = expectStatus(await http.create(DB, k.headers, { sql: DDL, reason: 'key then revoked' }), 201);
  await approveTwice(byKey.id as string);
  await s.db.pool.query('UPDATE api_keys SET revoked_at = now() WHERE id = $1', [k.id]);
  expectStatus(await http.act(DB, byKey.id as string, 'execute', owner.headers), 403, 'policy_denied');
});

test("only the requester executes an access request: an owner, admin or admin key is refused (its credentials are the requester's)", async () => {
  const m = await person(s, acme, 'member', 'acc');
  const req = expectStatus(
    await http.create(DB, m.headers, { access: { role: 'reader', duration_s: 600 }, reason: 'look' }),
    201,
  );
  const id = req.id as string;
  expectStatus(await http.act(DB, id, 'approve', (await person(s, acme, 'member', 'acc')).headers), 200);
  const admin = await person(s, acme, 'admin', 'acc');
  for (const h of [admin.headers, (await person(s, acme, 'owner', 'acc')).headers, key.headers]) {
    const res = expectStatus(await http.act(DB, id, 'execute', h), 403, 'policy_denied');
    assert.equal((res as { credentials?: unknown }).credentials, undefined);
  }
  // Break-glass does not hand them over either.
  expectStatus(
    await http.act(DB, id, 'execute', admin.headers, { break_glass: { reason: 'I need their login now' } }),
    403,
    'policy_denied',
  );
  const after = expectStatus(await http.get(DB, id, m.headers), 200);
  assert.equal(after.status, 'approved');
  assert.equal((after.executions as { count: number }).count, 0);
});
