// Governed requests end to end (issue 14): a real server, a real agent (its executor verifies the
// server's signed tokens with keys it pinned from GET /v1/agent/execution-keys) and a real tenant
// database. Writes run through the agent's channel and through the job queue (channel off); the
// dry-run count binds the execution; results are seen by the requester and approvers only;
// break-glass is audited and lands in the event outbox.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { deleteExpiredResults } from '../src/server/modules/requests/requests.deliveries.repo.ts';
import { createAccount } from './helpers/databases.ts';
import { type ExplorerStack, startExplorerStack, until } from './helpers/explorer-stack.ts';
import { api, auditOf, expectStatus, type Person, person } from './requests-helpers.ts';

let stack: ExplorerStack;
let http: ReturnType<typeof api>;
let requester: Person;
let approver: Person;
let admin: Person;
let DB: string;

const items = async () =>
  JSON.stringify((await stack.t.asAdmin('SELECT id, qty FROM items ORDER BY id')).rows);

before(async () => {
  stack = await startExplorerStack({
    node: 'req-node',
    account: 'reqacct',
    explorerChannel: true,
    tenantPrefix: 'rq',
  });
  DB = stack.t.name;
  await stack.t.asOwner(
    'CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL); INSERT INTO items SELECT g, 0 FROM generate_series(1, 10) g',
  );
  http = api(stack.s);
  const acct = stack.key.accountId;
  requester = await person(stack.s, acct, 'member', 'e2e-req');
  approver = await person(stack.s, acct, 'member', 'e2e-appr');
  admin = await person(stack.s, acct, 'admin', 'e2e-admin');
});
after(() => stack?.stop());

/** A write request, dry-run at creation; returns its id after checking the recorded count. */
async function writeRequest(sql: string, rows: number): Promise<string> {
  const created = expectStatus(await http.create(DB, requester.headers, { sql, reason: 'restock' }), 201);
  assert.equal(created.status, 'pending', JSON.stringify(created));
  assert.equal(created.dry_run_error, null, JSON.stringify(created.dry_run_error));
  assert.equal((created.dry_run as { affected_rows: number }).affected_rows, rows);
  assert.equal(created.approved_rows, rows);
  return created.id as string;
}

describe('through the agent channel', () => {
  test('a write: dry run, approval, execution, result seen by requester and approver only', async () => {
    const before = await items();
    const id = await writeRequest('UPDATE items SET qty = qty + 1 WHERE id <= 3', 3);
    assert.equal(await items(), before, 'the dry run changed nothing');
    const approved = expectStatus(
      await http.act(DB, id, 'approve', approver.headers, { comment: 'fine' }),
      200,
    );
    assert.equal(approved.status, 'approved');
    const done = expectStatus(await http.act(DB, id, 'execute', requester.headers), 200);
    assert.equal(done.status, 'executed', JSON.stringify(done.last_execution));
    assert.deepEqual(done.last_execution, {
      ...(done.last_execution as object),
      status: 'executed',
      affected_rows: 3,
      error: null,
      mismatch: null,
    });
    assert.equal(done.result_available, true);
    const rows = (await stack.t.asAdmin('SELECT id FROM items WHERE qty = 1 ORDER BY id')).rows.map(
      (r) => r.id,
    );
    assert.deepEqual(rows, [1, 2, 3]);
    // Once only (max_executions 1).
    expectStatus(await http.act(DB, id, 'execute', requester.headers), 409, 'invalid_state');
    // The result: the requester and the approver; another member and another account: 404.
    const mine = expectStatus(await http.result(DB, id, requester.headers), 200);
    assert.equal(mine.affected_rows, 3);
    expectStatus(await http.result(DB, id, approver.headers), 200);
    const bystander = await person(stack.s, stack.key.accountId, 'owner', 'e2e-by');
    expectStatus(await http.result(DB, id, bystander.headers), 404);
    const strangerAcct = await createAccount(stack.s, 'strangers');
    const stranger = await person(stack.s, strangerAcct, 'owner', 'e2e-str');
    expectStatus(await http.result(DB, id, stranger.headers), 404);
    // Sealed at rest: the stored value is not the rows.
    const sealed = await stack.s.db.pool.query('SELECT sealed FROM request_results WHERE request_id = $1', [
      id,
    ]);
    assert.equal(sealed.rows.length, 1);
    assert.ok(!String(sealed.rows[0].sealed).includes('affected_rows'));
    const executed = await auditOf(stack.s, 'request.executed', id);
    assert.equal(executed.length, 1);
    const delivery = await stack.s.db.pool.query(
      'SELECT delivery FROM request_executions WHERE request_id = $1 AND mode = $2',
      [id, 'execute'],
    );
    assert.equal(delivery.rows[0].delivery, 'channel');
  });

  test('a read runs at once and its rows are the result', async () => {
    const created = expectStatus(
      await http.create(DB, requester.headers, {
        sql: 'SELECT id, qty FROM items WHERE id <= 2 ORDER BY id',
        reason: 'look',
      }),
      201,
    );
    assert.equal(created.status, 'approved');
    const done = expectStatus(await http.act(DB, created.id as string, 'execute', requester.headers), 200);
    assert.equal(done.status, 'executed');
    const result = expectStatus(await http.result(DB, created.id as string, requester.headers), 200);
    assert.deepEqual(
      (result.columns as { name: string }[]).map((c) => c.name),
      ['id', 'qty'],
    );
    assert.equal((result.rows as unknown[]).length, 2);
  });

  test('a dry-run mismatch at execution rolls back and reports both counts', async () => {
    const id = await writeRequest('UPDATE items SET qty = 100 WHERE id > 5', 5);
    // Two more matching rows appear after the dry run.
    await stack.t.asOwner('INSERT INTO items VALUES (11, 0), (12, 0)');
    const before = await items();
    expectStatus(await http.act(DB, id, 'approve', approver.headers), 200);
    const failed = expectStatus(await http.act(DB, id, 'execute', requester.headers), 200);
    assert.equal(failed.status, 'failed');
    const last = failed.last_execution as { status: string; mismatch: unknown; error: { sqlstate: string } };
    assert.equal(last.status, 'failed');
    assert.deepEqual(last.mismatch, { approved_rows: 5, affected_rows: 7 });
    assert.equal(last.error.sqlstate, 'P0M01');
    assert.equal(await items(), before, 'nothing changed');
    const events = await auditOf(stack.s, 'request.failed', id);
    assert.equal(events.length, 1);
    assert.deepEqual(events[0]!.details.mismatch, { approved_rows: 5, affected_rows: 7 });
  });

  test('break-glass by an admin with a reason runs a pending request, audited and in the outbox', async () => {
    const created = expectStatus(
      await http.create(DB, requester.headers, {
        sql: 'CREATE TABLE incident_fix (id int)',
        reason: 'hotfix',
      }),
      201,
    );
    assert.equal(created.status, 'pending');
    const id = created.id as string;
    expectStatus(
      await http.act(DB, id, 'execute', stack.key.headers, { break_glass: { reason: 'the site is down' } }),
      403,
      'policy_denied',
    );
    const done = expectStatus(
      await http.act(DB, id, 'execute', admin.headers, {
        break_glass: { reason: 'the site is down, fixing now' },
      }),
      200,
    );
    assert.equal(done.status, 'executed', JSON.stringify(done.last_execution));
    assert.equal((done.break_glass as { user_id: string }).user_id, admin.id);
    const exists = await stack.t.asAdmin("SELECT to_regclass('public.incident_fix') IS NOT NULL AS ok");
    assert.equal(exists.rows[0].ok, true);
    const audited = await auditOf(stack.s, 'request.break_glass', id);
    assert.equal(audited.length, 1);
    assert.equal(audited[0]!.actor_id, admin.id);
    assert.equal(audited[0]!.details.reason, 'the site is down, fixing now');
    const outbox = await stack.s.db.pool.query(
      "SELECT payload FROM event_outbox WHERE kind = 'request.break_glass'",
    );
    assert.equal(outbox.rows.length, 1);
    assert.equal(outbox.rows[0].payload.request_id, id);
    assert.equal(outbox.rows[0].payload.reason, 'the site is down, fixing now');
    // The admin who broke glass sees what ran; a member who neither asked nor approved does not.
    expectStatus(await http.result(DB, id, admin.headers), 200);
    expectStatus(await http.result(DB, id, approver.headers), 404, 'not_found');
    // The account-wide list filters by requester too (the dashboard's "my requests").
    const mine = expectStatus(await http.call('GET', '/v1/requests?requester=me', requester.headers), 200);
    assert.ok((mine.items as { id: string }[]).some((r) => r.id === id));
    const theirs = expectStatus(await http.call('GET', '/v1/requests?requester=me', approver.headers), 200);
    assert.ok(!(theirs.items as { id: string }[]).some((r) => r.id === id));
  });
});

describe('preflight, concurrency, result lifetime (channel)', () => {
  test('a preflight dry-runs a write and stores nothing', async () => {
    const before = await stack.s.db.pool.query('SELECT count(*)::int AS n FROM governed_requests');
    const pre = expectStatus(
      await http.call('POST', `/v1/databases/${DB}/requests/preflight`, requester.headers, {
        sql: 'UPDATE items SET qty = qty WHERE id <= 4',
      }),
      200,
    );
    assert.equal((pre.classification as { class: string }).class, 'write');
    assert.equal((pre.policy as { allowed: boolean; approvals_required: number }).allowed, true);
    const dry = pre.dry_run as { affected_rows: number; statements: { plan: string | null }[] };
    assert.equal(dry.affected_rows, 4, JSON.stringify(pre));
    assert.ok(dry.statements[0]?.plan?.includes('Update'), 'the plan of the UPDATE');
    const noDry = expectStatus(
      await http.call('POST', `/v1/databases/${DB}/requests/preflight`, requester.headers, {
        sql: 'UPDATE items SET qty = qty WHERE id <= 4',
        dry_run: false,
      }),
      200,
    );
    assert.equal(noDry.dry_run, null);
    const after = await stack.s.db.pool.query('SELECT count(*)::int AS n FROM governed_requests');
    assert.equal(after.rows[0].n, before.rows[0].n);
  });

  test('a write whose dry run failed cannot be approved until a dry run succeeds', async () => {
    const created = expectStatus(
      await http.create(DB, requester.headers, {
        sql: 'UPDATE items SET qty = qty / 0 WHERE id = 1',
        reason: 'oops',
      }),
      201,
    );
    assert.equal(created.dry_run, null);
    assert.equal((created.dry_run_error as { sqlstate: string }).sqlstate, '22012');
    assert.equal(created.approved_rows, null);
    const refused = expectStatus(
      await http.act(DB, created.id as string, 'approve', approver.headers),
      409,
      'invalid_state',
    );
    assert.match((refused.error as { message: string }).message, /dry run first/);
    // The requester fixes the SQL: a new dry run, then it can be approved.
    const edited = expectStatus(
      await http.call('PUT', `/v1/databases/${DB}/requests/${created.id}`, requester.headers, {
        sql: 'UPDATE items SET qty = qty WHERE id = 1',
      }),
      200,
    );
    assert.equal((edited.dry_run as { affected_rows: number }).affected_rows, 1);
    assert.equal(edited.capability, 'migrator');
    expectStatus(await http.act(DB, created.id as string, 'approve', approver.headers), 200);
  });

  test('two concurrent executes run a request once', async () => {
    const id = await writeRequest('UPDATE items SET qty = qty + 1000 WHERE id = 4', 1);
    expectStatus(await http.act(DB, id, 'approve', approver.headers), 200);
    const answers = await Promise.all([
      http.act(DB, id, 'execute', requester.headers),
      http.act(DB, id, 'execute', admin.headers),
    ]);
    assert.deepEqual(
      answers.map((a) => a.statusCode).sort(),
      [200, 409],
      answers.map((a) => a.body).join('\n'),
    );
    const qty = (await stack.t.asAdmin('SELECT qty FROM items WHERE id = 4')).rows[0].qty;
    assert.ok(qty >= 1000 && qty < 2000, `ran once: ${qty}`);
    const runs = await stack.s.db.pool.query(
      "SELECT count(*)::int AS n FROM request_executions WHERE request_id = $1 AND mode = 'execute'",
      [id],
    );
    assert.equal(runs.rows[0].n, 1);
  });

  test('at most 2 dry runs of a database at once: beyond, 503 retry with Retry-After; executions still run', async () => {
    const url = `/v1/databases/${DB}/requests/preflight`;
    // An approved write, ready to execute while the dry runs hold their slots.
    const ready = await writeRequest('UPDATE items SET qty = qty + 7 WHERE id = 9', 1);
    expectStatus(await http.act(DB, ready, 'approve', approver.headers), 200);
    const slow = 'UPDATE items SET qty = qty WHERE id = (SELECT 1 FROM pg_sleep(4))';
    const two = [slow, slow].map((sql) => http.call('POST', url, requester.headers, { sql }));
    let sleeping = 0;
    for (let i = 0; i < 60 && sleeping < 2; i++) {
      await new Promise((r) => setTimeout(r, 100));
      sleeping = (
        await stack.t.asAdmin(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%pg_sleep(4)%' AND state = 'active' AND pid <> pg_backend_pid()",
        )
      ).rows[0].n;
    }
    assert.equal(sleeping, 2, 'both slow dry runs are running');
    const third = await http.call('POST', url, requester.headers, {
      sql: 'UPDATE items SET qty = qty WHERE id = 1',
    });
    expectStatus(third, 503, 'retry');
    assert.equal(third.headers['retry-after'], '5');
    // A request created now is not dry-run, and says so; its re-run dry run is a 503 too.
    const created = expectStatus(
      await http.create(DB, requester.headers, {
        sql: 'UPDATE items SET qty = qty WHERE id = 2',
        reason: 'busy',
      }),
      201,
    );
    assert.equal(created.dry_run, null);
    assert.equal((created.dry_run_error as { sqlstate: string }).sqlstate, '53300');
    const busy = await http.act(DB, created.id as string, 'dry-run', requester.headers);
    expectStatus(busy, 503, 'retry');
    assert.equal(busy.headers['retry-after'], '5');
    // Executions are not held back: the approved write runs meanwhile.
    const ran = expectStatus(await http.act(DB, ready, 'execute', requester.headers), 200);
    assert.equal((ran.last_execution as { status: string }).status, 'executed', JSON.stringify(ran));
    // …while both dry runs were still running (the execution did not wait for them).
    const still = await stack.t.asAdmin(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND query LIKE '%pg_sleep(4)%' AND state = 'active' AND pid <> pg_backend_pid()",
    );
    assert.equal(still.rows[0].n, 2, 'the dry runs were still running');
    for (const res of await Promise.all(two)) {
      const body = expectStatus(res, 200);
      assert.equal((body.dry_run as { affected_rows: number } | null)?.affected_rows, 1, res.body);
    }
    // Slots freed: the dry run runs again.
    const again = expectStatus(await http.act(DB, created.id as string, 'dry-run', requester.headers), 200);
    assert.equal((again.dry_run as { affected_rows: number }).affected_rows, 1);
    assert.equal(again.dry_run_error, null);
  });

  test('a result past its lifetime is gone', async () => {
    const created = expectStatus(
      await http.create(DB, requester.headers, { sql: 'SELECT 1 AS one', reason: 'short-lived' }),
      201,
    );
    const id = created.id as string;
    expectStatus(await http.act(DB, id, 'execute', requester.headers), 200);
    expectStatus(await http.result(DB, id, requester.headers), 200);
    await stack.s.db.pool.query(
      "UPDATE request_results SET expires_at = now() - interval '1 second' WHERE request_id = $1",
      [id],
    );
    expectStatus(await http.result(DB, id, requester.headers), 404);
    assert.equal(expectStatus(await http.get(DB, id, requester.headers), 200).result_available, false);
    assert.ok((await deleteExpiredResults(stack.s.db.pool, 100)) >= 1);
    const left = await stack.s.db.pool.query('SELECT 1 FROM request_results WHERE request_id = $1', [id]);
    assert.equal(left.rows.length, 0);
  });
});

describe('through the job queue (agent channel off)', () => {
  test('a write is dry-run, approved and executed through request.execute jobs', async () => {
    await stack.restartAgent({ explorerChannel: false });
    await until('no channel on the server', () => stack.s.explorerChannels.pick(stack.nodeId) === null);
    const id = await writeRequest('UPDATE items SET qty = qty + 10 WHERE id IN (1, 2)', 2);
    expectStatus(await http.act(DB, id, 'approve', approver.headers), 200);
    const done = expectStatus(await http.act(DB, id, 'execute', requester.headers), 200);
    assert.equal(done.status, 'executed', JSON.stringify(done.last_execution));
    assert.equal((done.last_execution as { affected_rows: number }).affected_rows, 2);
    const rows = (await stack.t.asAdmin('SELECT qty FROM items WHERE id IN (1, 2) ORDER BY id')).rows.map(
      (r) => r.qty,
    );
    // Rows 1 and 2 had 1 from the first write.
    assert.deepEqual(rows, [11, 11]);
    const delivery = await stack.s.db.pool.query(
      "SELECT delivery, job_id FROM request_executions WHERE request_id = $1 AND mode = 'execute'",
      [id],
    );
    assert.equal(delivery.rows[0].delivery, 'queue');
    // The finished job keeps no SQL, no token, no rows.
    const job = await stack.s.db.pool.query('SELECT payload, result FROM jobs WHERE id = $1', [
      delivery.rows[0].job_id,
    ]);
    assert.equal(job.rows[0].payload.sql, undefined);
    assert.equal(job.rows[0].payload.token, undefined);
    assert.equal(job.rows[0].result?.result, undefined);
    expectStatus(await http.result(DB, id, approver.headers), 200);
  });

  test('a preflight dry run through the queue; its job keeps no SQL, token, rows or plans', async () => {
    const pre = expectStatus(
      await http.call('POST', `/v1/databases/${DB}/requests/preflight`, requester.headers, {
        sql: 'DELETE FROM items WHERE id > 100',
      }),
      200,
    );
    assert.equal((pre.dry_run as { affected_rows: number }).affected_rows, 0, JSON.stringify(pre));
    const job = await stack.s.db.pool.query(
      "SELECT payload, result FROM jobs WHERE kind = 'request.execute' ORDER BY id DESC LIMIT 1",
    );
    assert.equal(job.rows[0].payload.sql, undefined);
    assert.equal(job.rows[0].payload.token, undefined);
    assert.equal(job.rows[0].result, null);
  });
});
