import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { enqueueJob } from '../src/server/modules/jobs/jobs.repo.ts';
import { checkJobResult, JOB_KINDS } from '../src/shared/contracts/jobs.ts';
import {
  callerFor,
  createAccount,
  enrollFakeAgent,
  type FakeAgent,
  wellFormedResult,
} from './helpers/databases.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

let s: TestServer;
let agent: FakeAgent;
let acme: string;
before(async () => {
  s = await createTestServer();
  agent = await enrollFakeAgent(s, 'results-node');
  acme = await createAccount(s, 'acme');
});
after(() => s.stop());

const complete = (jobId: number, attempt: number, result: unknown) =>
  s.app.inject({
    method: 'POST',
    url: `/v1/agent/jobs/${jobId}/complete`,
    headers: { authorization: `Bearer ${agent.token}` },
    payload: { attempt, result },
  });

const jobRow = async (id: number) =>
  (
    await s.db.pool.query<{ status: string; result: unknown; last_error: string | null; attempts: number }>(
      'SELECT status, result, last_error, attempts FROM jobs WHERE id = $1',
      [id],
    )
  ).rows[0]!;

async function leased(kind: string, payload: Record<string, unknown> = {}) {
  const queued = await enqueueJob(s.db.pool, { nodeId: agent.nodeId, kind, payload, maxAttempts: 5 });
  const job = await agent.poll();
  assert.equal(job?.id, queued.id, `${kind} is leased`);
  return job!;
}

test('a result that does not match its kind is refused (422), the job is dead, nothing is stored', async () => {
  const job = await leased(JOB_KINDS.ping);
  const secretish = 'do-not-echo-this-value';
  const res = await complete(job.id, job.attempt, { pg_version: 42, checked_at: secretish });
  assert.equal(res.statusCode, 422, res.body);
  const error = res.json().error as {
    code: string;
    message: string;
    details: { issues: { path: string }[] };
  };
  assert.equal(error.code, 'invalid_job_result');
  assert.match(error.message, /node\.ping does not match its schema/);
  assert.deepEqual(error.details.issues.map((i) => i.path).sort(), [
    'result.checked_at',
    'result.pg_version',
    'result.server_version_num',
  ]);
  assert.ok(!res.body.includes(secretish), 'the offending values are not echoed');

  const row = await jobRow(job.id);
  assert.equal(row.status, 'dead', 'not retried: a malformed result will not become well-formed');
  assert.equal(row.result, null, 'the bad result is never stored');
  assert.equal(row.attempts, 1);
  assert.match(row.last_error ?? '', /^result refused: the result of node\.ping does not match its schema/);
  assert.match(row.last_error ?? '', /result\.server_version_num/);
  assert.ok(!(row.last_error ?? '').includes(secretish));

  // The lease is over: completing again (even well-formed) or failing it finds no lease.
  const again = await complete(job.id, job.attempt, wellFormedResult(JOB_KINDS.ping, {}));
  assert.equal(again.statusCode, 404);
  assert.equal(await agent.fail(job.id, job.attempt, 'late', true), 404);
  assert.equal((await jobRow(job.id)).status, 'dead');
  assert.equal(await agent.poll(), null, 'not queued again');
});

test('a well-formed result is stored without keys the contract does not name', async () => {
  const job = await leased(JOB_KINDS.drift, { known_databases: [] });
  const finding = { kind: 'unknown_database', object: 'stray', detail: 'not ours' };
  const res = await complete(job.id, job.attempt, { findings: [finding], smuggled: 'x'.repeat(100) });
  assert.equal(res.statusCode, 200, res.body);
  const row = await jobRow(job.id);
  assert.equal(row.status, 'succeeded');
  assert.deepEqual(row.result, { findings: [finding] });
});

test('garbage and out-of-bound results are refused for every kind; a kind without a result schema cannot complete', async () => {
  const cases: [string, Record<string, unknown>, Record<string, unknown>][] = [
    [JOB_KINDS.delete, {}, { dropped: 'yes' }],
    [JOB_KINDS.rotate, {}, { rotated_at: 'yesterday', terminated_sessions: -1 }],
    [JOB_KINDS.allowlist, {}, { entries: [{ cidr: 'not-a-cidr', expires_at: null }] }],
    [JOB_KINDS.limits, {}, { limits: { owner_connection_limit: 0 } }],
    [JOB_KINDS.drift, {}, { findings: [{ kind: 'made_up', object: 'x', detail: 'y' }] }],
    [JOB_KINDS.driftFix, {}, { fixed: ['Not A Name'], findings: [] }],
    [JOB_KINDS.drift, {}, { findings: [{ kind: 'foreign_role', object: 'x', detail: 'y'.repeat(1001) }] }],
    ['test.noop', {}, { ok: true }],
  ];
  for (const [kind, payload, result] of cases) {
    const job = await leased(kind, payload);
    const res = await complete(job.id, job.attempt, result);
    assert.equal(res.statusCode, 422, `${kind}: ${res.body}`);
    assert.equal(res.json().error.code, 'invalid_job_result', kind);
    const row = await jobRow(job.id);
    assert.equal(row.status, 'dead', kind);
    assert.equal(row.result, null, kind);
  }
  assert.deepEqual(checkJobResult('test.noop', { ok: true }), {
    ok: false,
    reason: 'the job contract has no result for kind "test.noop"',
    issues: [],
  });
});

test("a refused create fails the database through the job's hook, with the reason", async () => {
  await s.databases.create(callerFor(acme), { name: 'bad_result_db', node: 'results-node' });
  const job = await agent.poll();
  assert.equal(job?.kind, JOB_KINDS.create);
  const res = await complete(job!.id, job!.attempt, { name: 'bad_result_db', roles: {}, pooler_probe_ms: 1 });
  assert.equal(res.statusCode, 422, res.body);
  const db = await s.databases.get(callerFor(acme), 'bad_result_db');
  assert.equal(db.status, 'failed');
  const row = await jobRow(job!.id);
  assert.match(row.last_error ?? '', /result\.roles\.owner/);
});

test('every well-formed result the fake agent sends passes the contract', () => {
  const payload = {
    name: 'app_db',
    allowlist: [{ cidr: '203.0.113.7/32', expires_at: null }],
    limits: {
      owner_connection_limit: 20,
      reader_connection_limit: 2,
      statement_timeout_ms: 0,
      idle_in_transaction_timeout_ms: 0,
    },
  };
  for (const kind of Object.values(JOB_KINDS)) {
    const checked = checkJobResult(kind, wellFormedResult(kind, payload));
    assert.ok(checked.ok, `${kind}: ${checked.ok ? '' : checked.reason}`);
  }
});
