import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  callerFor,
  createAccount,
  enrollFakeAgent,
  type FakeAgent,
} from '../../../../test/helpers/databases.ts';
import { createTestServer, type TestServer } from '../../../../test/helpers/server.ts';
import { createKeyringFileBox } from '../../crypto/keyring-box.ts';
import { addKeyToKeyringFile } from '../../crypto/secret-box.ts';
import { enqueueJob } from '../jobs/jobs.repo.ts';
import { resealPasswords } from './databases.jobs.ts';

let s: TestServer;
let n1: FakeAgent;
let n2: FakeAgent;
let acme: string;
before(async () => {
  s = await createTestServer();
  n1 = await enrollFakeAgent(s, 'n1');
  n2 = await enrollFakeAgent(s, 'n2');
  acme = await createAccount(s, 'acme');
});
after(() => s.stop());

const w = () => callerFor(acme);

async function nextJob(agent: FakeAgent, kind: string) {
  for (let i = 0; i < 20; i++) {
    const job = await agent.poll();
    assert.ok(job, `expected a ${kind} job`);
    if (job.kind === kind) return job;
    await agent.complete(job.id, job.attempt, {});
  }
  throw new Error(`no ${kind} job`);
}

test('the job secret goes only to the lease holder, for create/rotate jobs, while the lease runs', async () => {
  await s.databases.create(w(), { name: 'sec_db', node: 'n1' });
  const job = await nextJob(n1, 'database.create');
  const { password } = await s.databases.reveal(w(), 'sec_db');

  assert.deepEqual(await n1.secret(job.id, job.attempt), { status: 200, password });
  assert.equal((await n1.secret(job.id, job.attempt + 1)).status, 404, 'another attempt');
  assert.equal((await n2.secret(job.id, job.attempt)).status, 404, 'another node');
  const noAuth = await s.app.inject({
    method: 'POST',
    url: `/v1/agent/jobs/${job.id}/secret`,
    payload: { attempt: job.attempt },
  });
  assert.equal(noAuth.statusCode, 401);
  const ping = await enqueueJob(s.db.pool, { nodeId: n1.nodeId, kind: 'node.ping' });
  const pingJob = await nextJob(n1, 'node.ping');
  assert.equal(pingJob.id, ping.id);
  assert.equal((await n1.secret(ping.id, pingJob.attempt)).status, 404, 'a job kind without a secret');
  await n1.complete(ping.id, pingJob.attempt, {});

  // Not ready until the agent reports the create done; then ready.
  assert.equal((await s.databases.get(w(), 'sec_db')).status, 'provisioning');
  assert.equal(
    await n1.complete(job.id, job.attempt, {
      name: 'sec_db',
      roles: { owner: 'sec_db_owner', reader: 'r', migrator: 'm', explorer: 'e' },
      pooler_probe_ms: 3,
    }),
    200,
  );
  const ready = await s.databases.get(w(), 'sec_db');
  assert.equal(ready.status, 'ready');
  assert.ok(ready.ready_at);
  assert.equal((await n1.secret(job.id, job.attempt)).status, 404, 'finished job: no secret any more');
  const done = await s.db.pool.query(
    "SELECT actor_type, actor_id, outcome FROM audit_events WHERE action = 'database.create_done' AND target_id = $1",
    [ready.id],
  );
  assert.deepEqual(done.rows, [{ actor_type: 'agent', actor_id: n1.nodeId, outcome: 'success' }]);
});

test('rotation: the new password is pending until the agent reports it live', async () => {
  await s.databases.create(w(), { name: 'rot_db', node: 'n2' });
  const create = await nextJob(n2, 'database.create');
  await n2.complete(create.id, create.attempt, {});
  const { password: oldPassword } = await s.databases.reveal(w(), 'rot_db');

  const rotating = await s.databases.rotate(w(), 'rot_db');
  assert.equal(rotating.rotation_pending, true);
  await assert.rejects(s.databases.rotate(w(), 'rot_db'), { status: 409 });
  const job = await nextJob(n2, 'database.rotate');
  const { password: newPassword } = await n2.secret(job.id, job.attempt);
  assert.ok(newPassword && newPassword !== oldPassword);
  assert.equal((await s.databases.reveal(w(), 'rot_db')).password, oldPassword, 'still the live one');
  await n2.complete(job.id, job.attempt, { rotated_at: new Date().toISOString(), terminated_sessions: 0 });
  const done = await s.databases.get(w(), 'rot_db');
  assert.equal(done.password_version, 2);
  assert.equal(done.rotation_pending, false);
  assert.equal((await s.databases.reveal(w(), 'rot_db')).password, newPassword);
  const leaks = await s.db.pool.query(
    "SELECT count(*)::int AS n FROM jobs WHERE payload::text LIKE $1 OR coalesce(result::text, '') LIKE $1 OR payload::text LIKE $2",
    [`%${newPassword}%`, `%${oldPassword}%`],
  );
  assert.equal(leaks.rows[0].n, 0);

  // A rotation that dies says why, and puts the stored password back on the node (the agent
  // may have applied the new verifier before failing): a repair rotation with the old one.
  await s.databases.rotate(w(), 'rot_db');
  const dying = await nextJob(n2, 'database.rotate');
  await n2.fail(dying.id, dying.attempt, 'pooler reload did not take', false);
  const after = await s.databases.get(w(), 'rot_db');
  assert.equal(after.password_version, 2);
  assert.match(after.failure_reason ?? '', /credential rotation failed: pooler reload did not take/);
  assert.equal(after.last_rotation_status, 'restoring');
  assert.equal((await s.databases.reveal(w(), 'rot_db')).password, newPassword);
  const repair = await nextJob(n2, 'database.rotate');
  assert.equal(
    (await n2.secret(repair.id, repair.attempt)).password,
    newPassword,
    'the repair re-applies the stored one',
  );
  await n2.complete(repair.id, repair.attempt, {
    rotated_at: new Date().toISOString(),
    terminated_sessions: 0,
  });
  const repaired = await s.databases.get(w(), 'rot_db');
  assert.equal(repaired.rotation_pending, false);
  assert.equal((await s.databases.reveal(w(), 'rot_db')).password, newPassword);
  // Not a completed rotation: its own state and audit event, the version and rotated_at kept.
  assert.equal(repaired.last_rotation_status, 'failed_restored');
  assert.equal(repaired.last_rotation_reason, 'credential rotation failed: pooler reload did not take');
  assert.equal(repaired.password_version, 2);
  assert.deepEqual(repaired.rotated_at, done.rotated_at);
  assert.match(repaired.failure_reason ?? '', /did not take; the previous password was restored$/);
  const restored = await s.db.pool.query(
    "SELECT outcome FROM audit_events WHERE action = 'database.rotate_failed_restored' AND target_id = $1",
    [repaired.id],
  );
  assert.deepEqual(restored.rows, [{ outcome: 'success' }]);

  // A repair that dies too is recorded and not retried forever.
  await s.databases.rotate(w(), 'rot_db');
  const second = await nextJob(n2, 'database.rotate');
  await n2.fail(second.id, second.attempt, 'boom', false);
  const repair2 = await nextJob(n2, 'database.rotate');
  await n2.fail(repair2.id, repair2.attempt, 'boom again', false);
  const abandoned = await s.databases.get(w(), 'rot_db');
  assert.equal(abandoned.rotation_pending, false);
  assert.equal(abandoned.last_rotation_status, 'failed');
  assert.equal(
    abandoned.last_rotation_reason,
    'credential rotation failed: boom; restoring the previous password failed: boom again',
  );
  const pendingJobs = await s.db.pool.query("SELECT count(*)::int AS n FROM jobs WHERE status = 'queued'");
  assert.equal(pendingJobs.rows[0].n, 0);
});

test('a create that dies marks the database failed with the reason; a retried one stays provisioning', async () => {
  await s.databases.create(w(), { name: 'bad_db', node: 'n1' });
  const first = await nextJob(n1, 'database.create');
  await n1.fail(first.id, first.attempt, 'transient', true);
  assert.equal((await s.databases.get(w(), 'bad_db')).status, 'provisioning');
  await s.db.pool.query('UPDATE jobs SET run_after = now() WHERE id = $1', [first.id]);
  const second = await nextJob(n1, 'database.create');
  await n1.fail(second.id, second.attempt, 'disk full', false);
  const failed = await s.databases.get(w(), 'bad_db');
  assert.equal(failed.status, 'failed');
  assert.equal(failed.failure_reason, 'provisioning failed: disk full');
  // A failed database can be deleted (the agent cleans up whatever is left).
  assert.equal((await s.databases.remove(w(), 'bad_db', 'bad_db')).status, 'deleting');
});

test('a last attempt whose lease expired (agent died) fails the database in the same step', async () => {
  const d = await s.databases.create(w(), { name: 'lost_db', node: 'n1' });
  const job = await nextJob(n1, 'database.create');
  await s.db.pool.query(
    "UPDATE jobs SET max_attempts = 1, lease_expires_at = now() - interval '1 second' WHERE id = $1",
    [job.id],
  );
  assert.equal(await n1.poll(), null);
  const row = (await s.db.pool.query('SELECT status, failure_reason FROM databases WHERE id = $1', [d.id]))
    .rows[0];
  assert.equal(row.status, 'failed');
  assert.match(row.failure_reason, /lease expired/);
});

test('master key rotation re-seals every password; a running server follows the keyring file', async () => {
  await s.databases.create(w(), { name: 'mk_db' });
  const before = (await s.databases.reveal(w(), 'mk_db')).password;
  const { keyId } = addKeyToKeyringFile(s.config.masterKeyFile!);
  const box = createKeyringFileBox(s.config.masterKeyFile!);
  assert.equal(box.activeKeyId, keyId);
  const first = await resealPasswords(s.db.pool, box, 2);
  assert.ok(first.resealed >= 1 && first.resealed === first.checked);
  const again = await resealPasswords(s.db.pool, box);
  assert.equal(again.resealed, 0, 'a re-run has nothing left to do');
  const sealed = await s.db.pool.query<{ password_sealed: string }>(
    'SELECT password_sealed FROM databases WHERE password_sealed IS NOT NULL',
  );
  for (const r of sealed.rows) assert.ok(r.password_sealed.startsWith(`v1.${keyId}.`));
  assert.equal((await s.databases.reveal(w(), 'mk_db')).password, before);
  const fresh = await s.databases.create(w(), { name: 'mk_db2' });
  const row = (await s.db.pool.query('SELECT password_sealed FROM databases WHERE id = $1', [fresh.id]))
    .rows[0];
  assert.ok(row.password_sealed.startsWith(`v1.${keyId}.`), 'new values use the new key');
});
