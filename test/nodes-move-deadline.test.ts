/**
 * Moves and drains against node state (ADR 0030, 0031): a move step past its deadline fails the
 * move and thaws the source (a dead target never freezes it for good); a drain cordons its node
 * first and moves to healthy, uncordoned nodes only; a platform admin learns why a named node was
 * refused, an account key gets one answer. A fully wired server; agents driven by hand.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createAccount, enrollFakeAgent, type FakeAgent } from './helpers/databases.ts';
import { dumpResult, moveOutResult } from './helpers/dump-result.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { createTestUser, signIn } from './helpers/session-users.ts';

let s: TestServer;
let a: FakeAgent;
let b: FakeAgent;
let key: TestKey;
let root: Record<string, string>;
let ops: Record<string, string>;

const api = (headers: Record<string, string>, method: string, url: string, payload?: object) =>
  s.app.inject({ method: method as 'GET', url, headers, ...(payload ? { payload } : {}) });

/** Polls until a job of this kind comes; others are completed (or failed) as a fake agent can. */
async function nextJob(agent: FakeAgent, kind: string) {
  for (let i = 0; i < 30; i++) {
    const job = await agent.poll();
    if (!job) continue;
    if (job.kind === kind) return job;
    if ((await agent.complete(job.id, job.attempt, {})) !== 200)
      await agent.fail(job.id, job.attempt, 'test: not run', false);
  }
  throw new Error(`no ${kind} job`);
}

async function createOn(agent: FakeAgent, node: string, name: string) {
  const r = await api(key.headers, 'POST', '/v1/databases', { name, node });
  assert.equal(r.statusCode, 202, r.body);
  const job = await nextJob(agent, 'database.create');
  assert.equal(await agent.complete(job.id, job.attempt, {}), 200);
}

/** Starts a move of `name` (on A) to B and lets A finish its copy: the move is `restoring`. */
async function moveToBCopied(name: string): Promise<string> {
  const m = await api(key.headers, 'POST', `/v1/databases/${name}/move`, { node: 'dl-b' });
  assert.equal(m.statusCode, 202, m.body);
  const moveId = m.json().id as string;
  const out = await nextJob(a, 'database.move_out');
  const done = await s.app.inject({
    method: 'POST',
    url: `/v1/agent/jobs/${out.id}/complete`,
    headers: { authorization: `Bearer ${a.token}` },
    payload: { attempt: out.attempt, result: moveOutResult(moveId) },
  });
  assert.equal(done.statusCode, 200, done.body);
  const st = await api(key.headers, 'GET', `/v1/databases/${name}/move`);
  assert.equal(st.json().status, 'restoring');
  return moveId;
}

const jobsOf = async (moveId: string) =>
  (
    await s.db.pool.query<{ kind: string; node_id: string; status: string }>(
      "SELECT kind, node_id, status FROM jobs WHERE payload->>'move_id' = $1 ORDER BY id",
      [moveId],
    )
  ).rows;

/** Moves a step's job back in time (as if queued, or last seen, `minutes` ago). */
const age = (moveId: string, kind: string, minutes: number) =>
  s.db.pool.query(
    `UPDATE jobs SET created_at = now() - make_interval(mins => $3), updated_at = now() - make_interval(mins => $3),
            run_after = now() - make_interval(mins => $3)
      WHERE payload->>'move_id' = $1 AND kind = $2`,
    [moveId, kind, minutes],
  );

before(async () => {
  s = await createTestServer({ nodeUnhealthyAfterSeconds: 3600 });
  const acme = await createAccount(s, 'acme');
  a = await enrollFakeAgent(s, 'dl-a');
  b = await enrollFakeAgent(s, 'dl-b');
  key = await createTestKey(s, { account: 'acme' });
  root = (await signIn(s, await createTestUser(s, { username: 'dlroot', platformAdmin: true }))).headers;
  ops = (
    await signIn(
      s,
      await createTestUser(s, {
        username: 'dlops',
        platformAdmin: true,
        memberships: [{ accountId: acme, role: 'admin' }],
      }),
    )
  ).headers;
  for (const name of ['dl1', 'dl2', 'dl3']) await createOn(a, 'dl-a', name);
});
after(() => s?.stop());

test('a move whose target never takes move_in fails at the deadline: the source thaws, nothing to clean on the target', async () => {
  const moveId = await moveToBCopied('dl1');
  // Not yet past its deadline: nothing happens.
  assert.ok(!(await s.nodesHealth.sweep()).movesFailed.includes(moveId));
  await age(moveId, 'database.move_in', 20);
  await s.nodesHealth.sweep();
  const m = (await api(key.headers, 'GET', '/v1/databases/dl1/move')).json();
  assert.equal(m.status, 'failed');
  assert.match(m.error, /restore at the target was not taken up by node dl-b within 15 minutes/);
  const d = (await api(key.headers, 'GET', '/v1/databases/dl1')).json();
  assert.equal(d.status, 'ready');
  assert.equal(d.node, 'dl-a');
  const jobs = await jobsOf(moveId);
  assert.deepEqual(
    jobs.map((j) => [j.kind, j.status]),
    [
      ['database.move_out', 'succeeded'],
      ['database.move_in', 'dead'],
      ['database.move_thaw', 'queued'],
    ],
    'the target never took move_in: no cleanup queued there',
  );
  // The thaw runs at once (the dead move_in no longer holds the database's job order).
  const thaw = await nextJob(a, 'database.move_thaw');
  assert.equal(thaw.payload.move_id, moveId);
  assert.equal(await a.fail(thaw.id, thaw.attempt, 'test: a fake agent thaws nothing', false), 200);
  assert.equal(await b.poll(), null, 'the dead move_in is never handed out');
  const audit = await s.db.pool.query<{ actor_type: string }>(
    "SELECT actor_type FROM audit_events WHERE action = 'database.move_failed' AND details->>'move_id' = $1",
    [moveId],
  );
  assert.deepEqual(
    audit.rows.map((r) => r.actor_type),
    ['system'],
  );
  // Failed once: a second pass changes nothing.
  assert.ok(!(await s.nodesHealth.sweep()).movesFailed.includes(moveId));
});

test('a move_in the target took but did not finish in time fails: source thawed, the target cleaned', async () => {
  const moveId = await moveToBCopied('dl2');
  const mi = await nextJob(b, 'database.move_in');
  await age(moveId, 'database.move_in', 361);
  // Its lease is live (the agent works on it), but the step is past its whole deadline.
  await s.nodesHealth.sweep();
  const m = (await api(key.headers, 'GET', '/v1/databases/dl2/move')).json();
  assert.equal(m.status, 'failed');
  assert.match(m.error, /did not finish within 360 minutes/);
  assert.deepEqual(
    (await jobsOf(moveId)).map((j) => [j.kind, j.node_id === a.nodeId ? 'A' : 'B', j.status]),
    [
      ['database.move_out', 'A', 'succeeded'],
      ['database.move_in', 'B', 'dead'],
      ['database.move_thaw', 'A', 'queued'],
      ['database.move_cleanup', 'B', 'queued'],
    ],
  );
  // The late completion is refused: the database never switches to B.
  assert.notEqual(await b.complete(mi.id, mi.attempt, {}), 200);
  assert.equal((await api(key.headers, 'GET', '/v1/databases/dl2')).json().node, 'dl-a');
});

test('a move_out the source never takes fails at the deadline and thaws the source', async () => {
  const m = await api(key.headers, 'POST', '/v1/databases/dl3/move', { node: 'dl-b' });
  assert.equal(m.statusCode, 202, m.body);
  const moveId = m.json().id as string;
  await age(moveId, 'database.move_out', 16);
  await s.nodesHealth.sweep();
  const st = (await api(key.headers, 'GET', '/v1/databases/dl3/move')).json();
  assert.equal(st.status, 'failed');
  assert.match(st.error, /copy at the source was not taken up by node dl-a/);
  assert.deepEqual(
    (await jobsOf(moveId)).map((j) => [j.kind, j.status]),
    [
      ['database.move_out', 'dead'],
      ['database.move_thaw', 'queued'],
    ],
  );
  assert.equal((await api(key.headers, 'GET', '/v1/databases/dl3')).json().status, 'ready');
});

test('a move whose step job ended without its hook (dead-lettered at a lease expiry) fails at the next pass', async () => {
  await createOn(a, 'dl-a', 'dl4');
  const m = await api(key.headers, 'POST', '/v1/databases/dl4/move', { node: 'dl-b' });
  assert.equal(m.statusCode, 202, m.body);
  const moveId = m.json().id as string;
  // As claimJob dead-letters a job whose lease expired after its last attempt: no hook runs.
  await s.db.pool.query(
    "UPDATE jobs SET status = 'dead', finished_at = now() WHERE payload->>'move_id' = $1 AND kind = 'database.move_out'",
    [moveId],
  );
  await s.nodesHealth.sweep();
  const st = (await api(key.headers, 'GET', '/v1/databases/dl4/move')).json();
  assert.equal(st.status, 'failed');
  assert.match(st.error, /copy at the source ended without an outcome/);
  assert.deepEqual(
    (await jobsOf(moveId)).map((j) => [j.kind, j.status]),
    [
      ['database.move_out', 'dead'],
      ['database.move_thaw', 'queued'],
    ],
  );
});

test('a platform admin learns why a named node was refused; an account key gets one answer', async () => {
  assert.equal((await api(root, 'POST', `/v1/nodes/${b.nodeId}/cordon`)).statusCode, 200);
  try {
    const byKey = await api(key.headers, 'POST', '/v1/databases/dl3/move', { node: 'dl-b' });
    assert.equal(byKey.statusCode, 409, byKey.body);
    assert.equal(byKey.json().error.message, 'The node named is unknown or cannot take this database now');
    const byOps = await api(ops, 'POST', '/v1/databases/dl3/move', { node: 'dl-b' });
    assert.equal(byOps.statusCode, 409, byOps.body);
    assert.match(byOps.json().error.message, /Node dl-b is cordoned/);
    const unknown = await api(ops, 'POST', '/v1/databases/dl3/move', { node: 'dl-nope' });
    assert.equal(unknown.statusCode, 404, unknown.body);
  } finally {
    await api(root, 'POST', `/v1/nodes/${b.nodeId}/uncordon`);
  }
});

test('a drain cordons its node first and moves only to a healthy, uncordoned node', async () => {
  await enrollFakeAgent(s, 'dl-c');
  // B is unhealthy: the drain of A must not pick it.
  await s.db.pool.query('UPDATE nodes SET unhealthy_since = now() WHERE id = $1', [b.nodeId]);
  try {
    const r = await api(root, 'POST', `/v1/nodes/${a.nodeId}/drain`);
    assert.equal(r.statusCode, 202, r.body);
    const drain = r.json();
    assert.equal(drain.status, 'running');
    assert.equal(drain.moves.length, 1);
    assert.equal(drain.moves[0].to_node, 'dl-c');
    const node = (await api(root, 'GET', `/v1/nodes/${a.nodeId}`)).json();
    assert.equal(node.cordoned, true, 'the drained node is cordoned');
    const cordoned = await s.db.pool.query<{ details: Record<string, unknown> }>(
      "SELECT details FROM audit_events WHERE action = 'node.cordoned' AND target_id = $1",
      [a.nodeId],
    );
    assert.equal(cordoned.rowCount, 1);
    assert.equal(cordoned.rows[0]!.details.reason, 'drain');
    // Nothing new is placed on it meanwhile.
    const placed = await api(key.headers, 'POST', '/v1/databases', { name: 'dl_new' });
    assert.equal(placed.statusCode, 202, placed.body);
    assert.equal(placed.json().node, 'dl-c');
  } finally {
    await s.db.pool.query('UPDATE nodes SET unhealthy_since = NULL WHERE id = $1', [b.nodeId]);
  }
});

// Pre-copies (migration 0035): a source whose agent offers `database.move_freeze` is copied while it
// serves, then frozen and fingerprinted again. Agents driven by hand, nodes of their own.
const restoreResult = (moveId: string, databaseId: string, name: string) => ({
  ...dumpResult(moveId),
  tables_checked: 1,
  rows_checked: 1,
  backup_id: moveId,
  database_id: databaseId,
  name,
  mode: 'new',
  duration_ms: 1,
  verified: true,
  login_proved: true,
});
const FINGERPRINT = 'c'.repeat(64);

async function precopyRestored(p: FakeAgent, q: FakeAgent, name: string) {
  const m = await api(key.headers, 'POST', `/v1/databases/${name}/move`, { node: 'dl-q' });
  assert.equal(m.statusCode, 202, m.body);
  const moveId = m.json().id as string;
  const out = await nextJob(p, 'database.move_out');
  assert.equal(out.payload.precopy, true, 'the source offers move_freeze: a pre-copy');
  // A pre-copy that reports a freeze instead of a fingerprint would be refused; this one is right.
  assert.equal(
    await p.complete(out.id, out.attempt, { ...dumpResult(moveId), fingerprint: FINGERPRINT }),
    200,
  );
  const inJob = await nextJob(q, 'database.move_in');
  const databaseId = inJob.payload.database_id as string;
  assert.equal(await q.complete(inJob.id, inJob.attempt, restoreResult(moveId, databaseId, name)), 200);
  const st = (await api(key.headers, 'GET', `/v1/databases/${name}/move`)).json();
  assert.equal(st.status, 'freezing');
  assert.equal(st.frozen_at, null, 'nothing was frozen for the copy');
  return moveId;
}

test('a pre-copy: unchanged at the freeze switches at once; changed, the target copy is dropped and the frozen source copied again', async () => {
  const p = await enrollFakeAgent(s, 'dl-p');
  const q = await enrollFakeAgent(s, 'dl-q');
  await s.db.pool.query(
    `UPDATE nodes SET capabilities = '{"jobs": ["database.move_freeze"]}' WHERE id = $1`,
    [p.nodeId],
  );
  await createOn(p, 'dl-p', 'dl5');
  await createOn(p, 'dl-p', 'dl6');

  // Unchanged: the switch, one copy, the freeze counted from the freeze step.
  const same = await precopyRestored(p, q, 'dl5');
  const fz = await nextJob(p, 'database.move_freeze');
  const frozenAt = new Date().toISOString();
  assert.equal(
    await p.complete(fz.id, fz.attempt, { frozen_at: frozenAt, fingerprint: FINGERPRINT, quiet: true }),
    200,
  );
  const done = (await api(key.headers, 'GET', '/v1/databases/dl5/move')).json();
  assert.equal(done.status, 'switched');
  assert.equal(done.copies, 1);
  assert.equal(new Date(done.frozen_at).getTime(), new Date(frozenAt).getTime());
  assert.ok(done.freeze_ms < done.duration_ms);
  assert.equal((await api(key.headers, 'GET', '/v1/databases/dl5')).json().node, 'dl-q');
  assert.deepEqual(
    (await jobsOf(same)).map((j) => [j.kind, j.node_id === p.nodeId ? 'P' : 'Q']),
    [
      ['database.move_out', 'P'],
      ['database.move_in', 'Q'],
      ['database.move_freeze', 'P'],
      ['database.move_cleanup', 'P'],
    ],
  );

  // Changed (or not quiet): the first copy on Q dropped, then a frozen copy (no pre-copy) and its restore.
  const changed = await precopyRestored(p, q, 'dl6');
  const fz2 = await nextJob(p, 'database.move_freeze');
  const firstFreeze = new Date(Date.now() - 1000).toISOString();
  assert.equal(
    await p.complete(fz2.id, fz2.attempt, {
      frozen_at: firstFreeze,
      fingerprint: 'd'.repeat(64),
      quiet: true,
    }),
    200,
  );
  let st = (await api(key.headers, 'GET', '/v1/databases/dl6/move')).json();
  assert.equal(st.status, 'copying');
  assert.equal(st.copies, 2);
  const cleanup = await nextJob(q, 'database.move_cleanup');
  assert.equal(await q.complete(cleanup.id, cleanup.attempt, { dropped: true }), 200);
  const out2 = await nextJob(p, 'database.move_out');
  assert.equal(out2.payload.precopy, undefined, 'the second copy is made frozen');
  assert.equal(await p.complete(out2.id, out2.attempt, moveOutResult(changed)), 200);
  const in2 = await nextJob(q, 'database.move_in');
  assert.equal(
    await q.complete(in2.id, in2.attempt, restoreResult(changed, in2.payload.database_id as string, 'dl6')),
    200,
  );
  st = (await api(key.headers, 'GET', '/v1/databases/dl6/move')).json();
  assert.equal(st.status, 'switched');
  assert.equal(st.copies, 2);
  // The freeze is counted from its first start, not from the second copy's.
  assert.equal(new Date(st.frozen_at).getTime(), new Date(firstFreeze).getTime());
});

test('a pre-copy may come back frozen (its database was at work); a fingerprint nobody asked for fails the move; a freeze past its deadline fails it and cleans the target', async () => {
  const agentP = await enrollFakeAgent(s, 'dl-p2');
  const q = await enrollFakeAgent(s, 'dl-q2');
  await s.db.pool.query(
    `UPDATE nodes SET capabilities = '{"jobs": ["database.move_freeze"]}' WHERE id = $1`,
    [agentP.nodeId],
  );
  await createOn(agentP, 'dl-p2', 'dl7');
  await createOn(agentP, 'dl-p2', 'dl8');

  // Asked for a pre-copy, the source froze and copied (its sessions were at work): no freeze step.
  const m = await api(key.headers, 'POST', '/v1/databases/dl7/move', { node: 'dl-q2' });
  const moveId = m.json().id as string;
  const out = await nextJob(agentP, 'database.move_out');
  assert.equal(out.payload.precopy, true);
  assert.equal(await agentP.complete(out.id, out.attempt, moveOutResult(moveId)), 200);
  const inJob = await nextJob(q, 'database.move_in');
  assert.equal(
    await q.complete(
      inJob.id,
      inJob.attempt,
      restoreResult(moveId, inJob.payload.database_id as string, 'dl7'),
    ),
    200,
  );
  const st = (await api(key.headers, 'GET', '/v1/databases/dl7/move')).json();
  assert.equal(st.status, 'switched');
  assert.deepEqual(
    (await jobsOf(moveId)).map((j) => j.kind),
    ['database.move_out', 'database.move_in', 'database.move_cleanup'],
  );
  // Back from dl-q2, which offers no freeze: a frozen copy is asked for; a fingerprint is refused.
  const back = await api(key.headers, 'POST', '/v1/databases/dl7/move', { node: 'dl-p2' });
  const backId = back.json().id as string;
  const cleanupP = await nextJob(agentP, 'database.move_cleanup');
  assert.equal(await agentP.complete(cleanupP.id, cleanupP.attempt, { dropped: true }), 200);
  const outQ = await nextJob(q, 'database.move_out');
  assert.equal(outQ.payload.precopy, undefined);
  assert.equal(
    await q.complete(outQ.id, outQ.attempt, { ...dumpResult(backId), fingerprint: FINGERPRINT }),
    200,
  );
  const refused = (await api(key.headers, 'GET', '/v1/databases/dl7/move')).json();
  assert.equal(refused.status, 'failed');
  assert.match(refused.error, /does not match the move/);

  const m2 = await api(key.headers, 'POST', '/v1/databases/dl8/move', { node: 'dl-q2' });
  const moveId2 = m2.json().id as string;
  const out2 = await nextJob(agentP, 'database.move_out');
  assert.equal(
    await agentP.complete(out2.id, out2.attempt, { ...dumpResult(moveId2), fingerprint: FINGERPRINT }),
    200,
  );
  const in2 = await nextJob(q, 'database.move_in');
  assert.equal(
    await q.complete(in2.id, in2.attempt, restoreResult(moveId2, in2.payload.database_id as string, 'dl8')),
    200,
  );
  await age(moveId2, 'database.move_freeze', 16);
  await s.nodesHealth.sweep();
  const failed = (await api(key.headers, 'GET', '/v1/databases/dl8/move')).json();
  assert.equal(failed.status, 'failed');
  assert.match(failed.error, /freeze at the source was not taken up by node dl-p2/);
  assert.deepEqual(
    (await jobsOf(moveId2)).map((j) => [j.kind, j.node_id === agentP.nodeId ? 'P' : 'Q', j.status]),
    [
      ['database.move_out', 'P', 'succeeded'],
      ['database.move_in', 'Q', 'succeeded'],
      ['database.move_freeze', 'P', 'dead'],
      ['database.move_thaw', 'P', 'queued'],
      ['database.move_cleanup', 'Q', 'queued'],
    ],
    'the target restored the pre-copy: it is cleaned',
  );
  assert.equal((await api(key.headers, 'GET', '/v1/databases/dl8')).json().node, 'dl-p2');
});
