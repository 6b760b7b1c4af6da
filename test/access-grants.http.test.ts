/**
 * Just-in-time credentials, the server's half (issue 14), against a node driven by hand through
 * the real agent API: what the grant job carries (an access token binding the grant's text, a
 * verifier and never the password), a node that refuses (502), one that never answers (503: the
 * grant is withdrawn), and the expiry sweeper.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { createAccessService } from '../src/server/modules/requests/access.service.ts';
import { accessGrantText, type GrantAccessPayload } from '../src/shared/contracts/execution.ts';
import { AppError } from '../src/shared/errors.ts';
import { pinnedKeysFromJwks, sqlSha256, verifyExecutionToken } from '../src/shared/execution-token.ts';
import { createLogger } from '../src/shared/logger.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import { enrollFakeAgent, type FakeAgent } from './helpers/databases.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { api, expectStatus, person, readyDatabase } from './requests-helpers.ts';

let s: TestServer;
let node: FakeAgent;
let key: TestKey;

before(async () => {
  s = await createTestServer({
    poolerPublicHost: 'db.example.test',
    poolerPort: 6543,
    poolerSslmode: 'require',
  });
  node = await enrollFakeAgent(s, 'jit-fake');
  key = await createTestKey(s, { account: 'jit-http' });
});
after(() => s?.stop());

/** A ready database on the fake node and an access request on it (pending: not executed by the API). */
async function setup() {
  const db = { id: randomUUID(), name: `jh_${randomBytes(4).toString('hex')}` };
  await readyDatabase(s, { ...db, accountId: key.accountId, nodeId: node.nodeId });
  const requester = await person(s, key.accountId, 'member', 'jh');
  const created = expectStatus(
    await api(s).create(db.name, requester.headers, {
      access: { role: 'reader', duration_s: 600 },
      reason: 'audit',
    }),
    201,
  );
  return { db, requestId: created.id as string };
}

const service = (grantTimeoutMs: number) =>
  createAccessService({
    db: s.db.pool,
    log: createLogger('access', 'silent'),
    audit: s.audit,
    signer: s.executionKeys(),
    config: s.config,
    grantTimeoutMs,
  });

/** Polls the fake node (bounded) until it holds a job of `kind`. */
async function nextJob(kind: string) {
  for (let i = 0; i < 200; i++) {
    const job = await node.poll();
    if (job) {
      assert.equal(job.kind, kind);
      return job;
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`no ${kind} job`);
}

const grantRow = async (login: string) =>
  (
    await s.db.pool.query(
      'SELECT status, end_reason, failure_reason, revoke_job_id, revoke_outcome FROM access_grants WHERE login = $1',
      [login],
    )
  ).rows[0];

test('the grant job carries an access token binding the grant, a verifier of the password and never the password', async () => {
  const { db, requestId } = await setup();
  const granting = service(10_000).grantAccess({
    accountId: key.accountId,
    requestId,
    databaseId: db.id,
    capability: 'reader',
    durationS: 600,
    actor: { type: 'system', id: null },
  });
  const job = await nextJob('access.grant');
  const p = job.payload as GrantAccessPayload;
  assert.match(p.login, new RegExp(`^${db.name}_jit_[0-9a-f]{8}$`));
  const verdict = verifyExecutionToken(p.token, {
    keys: pinnedKeysFromJwks(s.executionKeys().jwks()),
    now: Date.now(),
    expect: {
      database: db.name,
      node: node.nodeId,
      mode: 'access',
      sqlSha256: sqlSha256(accessGrantText(p)),
    },
    allowedCapabilities: ['reader'],
    replay: null,
  });
  assert.ok(verdict.ok, JSON.stringify(verdict));
  assert.equal(verdict.claims.request_id, requestId);
  assert.equal(verdict.claims.approved_rows, null);
  assert.equal(await node.complete(job.id, job.attempt, { login: p.login, valid_until: p.valid_until }), 200);
  const credentials = await granting;
  assert.equal(credentials.login, p.login);
  assert.equal(credentials.valid_until, p.valid_until);
  assert.equal(
    credentials.connection_string,
    `postgresql://${p.login}@db.example.test:6543/${db.name}?sslmode=require`,
  );
  // The verifier is of this password (same salt and iterations give the same verifier).
  const [, iter, salt] = /^SCRAM-SHA-256\$(\d+):([^$]+)\$/.exec(p.verifier)!;
  assert.equal(scramVerifier(credentials.password, Number(iter), Buffer.from(salt!, 'base64')), p.verifier);
  assert.equal(JSON.stringify(job.payload).includes(credentials.password), false);
  assert.equal((await grantRow(p.login)).status, 'active');

  // Past its valid_until the sweeper marks it expired and queues its revocation.
  const swept = await service(1_000).sweepExpired(new Date(Date.parse(p.valid_until) + 1_000));
  assert.ok(swept >= 1);
  const revoke = await nextJob('access.revoke');
  assert.deepEqual(revoke.payload, {
    database_id: db.id,
    name: db.name,
    grant_id: p.grant_id,
    login: p.login,
  });
  assert.equal(
    await node.complete(revoke.id, revoke.attempt, {
      dropped: true,
      terminated_sessions: 2,
      owns_objects: false,
    }),
    200,
  );
  const ended = await grantRow(p.login);
  assert.equal(ended.status, 'expired');
  assert.equal(ended.end_reason, 'expired');
  assert.deepEqual(ended.revoke_outcome, { dropped: true, terminated_sessions: 2, owns_objects: false });
  const audit = await s.db.pool.query(
    `SELECT action, outcome, details FROM audit_events WHERE action LIKE 'access.%' AND details->>'login' = $1 ORDER BY id`,
    [p.login],
  );
  assert.deepEqual(
    audit.rows.map((r) => [r.action, r.outcome]),
    [
      ['access.granted', 'success'],
      ['access.revoked', 'success'],
    ],
  );
  assert.equal(JSON.stringify(audit.rows).includes(credentials.password), false);
});

test('a node that refuses the grant: 502 execution_refused, the grant failed and audited', async () => {
  const { db, requestId } = await setup();
  const granting = service(10_000).grantAccess({
    accountId: key.accountId,
    requestId,
    databaseId: db.id,
    capability: 'reader',
    durationS: 600,
    actor: { type: 'system', id: null },
  });
  const job = await nextJob('access.grant');
  assert.equal(
    await node.fail(job.id, job.attempt, 'access token refused: capability_forbidden', false),
    200,
  );
  await assert.rejects(granting, (err: unknown) => {
    assert.ok(err instanceof AppError);
    assert.equal(err.code, 'execution_refused');
    assert.match(String(err.details?.reason), /capability_forbidden/);
    return true;
  });
  const login = (job.payload as GrantAccessPayload).login;
  const row = await grantRow(login);
  assert.equal(row.status, 'failed');
  assert.match(row.failure_reason, /capability_forbidden/);
  const audit = await s.db.pool.query(
    `SELECT outcome FROM audit_events WHERE action = 'access.granted' AND details->>'login' = $1`,
    [login],
  );
  assert.deepEqual(audit.rows, [{ outcome: 'failure' }]);
});

test('a node that does not answer in time: 503, the grant withdrawn and its revocation queued', async () => {
  const { db, requestId } = await setup();
  await assert.rejects(
    service(300).grantAccess({
      accountId: key.accountId,
      requestId,
      databaseId: db.id,
      capability: 'reader',
      durationS: 600,
      actor: { type: 'system', id: null },
    }),
    (err: unknown) => err instanceof AppError && err.code === 'unavailable',
  );
  const grant = await s.db.pool.query(
    `SELECT g.login, g.status, g.end_reason, j.status AS job_status
       FROM access_grants g JOIN jobs j ON j.id = g.grant_job_id WHERE g.request_id = $1`,
    [requestId],
  );
  assert.equal(grant.rows.length, 1);
  assert.deepEqual(grant.rows[0], {
    login: grant.rows[0].login,
    status: 'failed',
    end_reason: 'grant_timeout',
    job_status: 'dead',
  });
  const revoke = await nextJob('access.revoke');
  assert.equal(revoke.payload.login, grant.rows[0].login);
  assert.equal(
    await node.complete(revoke.id, revoke.attempt, { dropped: false, terminated_sessions: 0 }),
    200,
  );
});
