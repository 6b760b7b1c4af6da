import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  callerFor,
  createAccount,
  enrollFakeAgent,
  type FakeAgent,
} from '../../../../test/helpers/databases.ts';
import { createTestServer, type TestServer } from '../../../../test/helpers/server.ts';
import { DEFAULT_LIMITS } from '../../../shared/contracts/jobs.ts';
import { AppError } from '../../../shared/errors.ts';
import type { Caller } from '../../http/caller.ts';
import { connectionBudget, tenantConnections } from '../nodes/nodes.capacity.ts';

// Node connection capacity: the owner and reader connection limits of a node's databases never
// add up to more than max_connections − reserved slots − the platform reserve (100 by default).

let s: TestServer;
let acme: string;
let other: string;
before(async () => {
  s = await createTestServer();
  acme = await createAccount(s, 'acme');
  other = await createAccount(s, 'other');
});
after(() => s.stop());

const PER_DB = tenantConnections(DEFAULT_LIMITS);

/** A node whose agent reported these connection slots through the real heartbeat route. */
async function reportingNode(
  name: string,
  connections: Record<string, number> | null,
): Promise<{ agent: FakeAgent; status: number }> {
  const agent = await enrollFakeAgent(s, name);
  if (!connections) return { agent, status: 0 };
  const res = await s.app.inject({
    method: 'POST',
    url: '/v1/agent/heartbeat',
    headers: { authorization: `Bearer ${agent.token}` },
    payload: { agent_version: 'test', connections },
  });
  return { agent, status: res.statusCode };
}

// The budget is an operator's concern: a platform admin naming a node gets the detailed refusal
// (a key naming one gets one answer for every refusal, room included: nodes.placement.ts).
const operatorFor = (accountId: string): Caller => ({
  ...callerFor(accountId, 'admin'),
  kind: 'user',
  userId: '00000000-0000-4000-8000-00000000000a',
  sessionId: '00000000-0000-4000-8000-00000000000b',
  role: 'owner',
  platformAdmin: true,
});
const committedOn = async (node: string) =>
  Number(
    (
      await s.db.pool.query<{ n: string }>(
        `SELECT coalesce(sum(greatest((d.limits->>'owner_connection_limit')::int
                                      + (d.limits->>'reader_connection_limit')::int,
                                      coalesce(d.connections_held, 0))), 0) AS n
           FROM databases d JOIN nodes n ON n.id = d.node_id WHERE n.name = $1 AND d.deleted_at IS NULL`,
        [node],
      )
    ).rows[0]!.n,
  );

/** Runs every queued job of the node to success, in queue order. */
async function drain(agent: FakeAgent): Promise<void> {
  for (let i = 0; i < 100; i++) {
    const job = await agent.poll();
    if (!job) return;
    const result =
      job.kind === 'database.rotate' ? { rotated_at: new Date().toISOString(), terminated_sessions: 0 } : {};
    assert.equal(await agent.complete(job.id, job.attempt, result), 200);
  }
  assert.fail('jobs kept coming');
}

const refusal = async (p: Promise<unknown>): Promise<AppError> => {
  try {
    await p;
  } catch (err) {
    if (err instanceof AppError) return err;
    throw err;
  }
  assert.fail('expected a refusal');
};

test('the heartbeat stores the cluster slots; nonsense is refused', async () => {
  const { agent, status } = await reportingNode('hb', {
    max_connections: 1000,
    superuser_reserved_connections: 3,
    reserved_connections: 2,
  });
  assert.equal(status, 200);
  const row = (
    await s.db.pool.query('SELECT max_connections, reserved_connections FROM nodes WHERE id = $1', [
      agent.nodeId,
    ])
  ).rows[0];
  assert.deepEqual(row, { max_connections: 1000, reserved_connections: 5 });
  for (const bad of [
    { max_connections: 10, superuser_reserved_connections: 10 },
    { max_connections: 0, superuser_reserved_connections: 0 },
    { max_connections: 100, superuser_reserved_connections: -1 },
    { max_connections: 1.5, superuser_reserved_connections: 3 },
  ]) {
    const res = await s.app.inject({
      method: 'POST',
      url: '/v1/agent/heartbeat',
      headers: { authorization: `Bearer ${agent.token}` },
      payload: { connections: bad },
    });
    assert.equal(res.statusCode, 400, JSON.stringify(bad));
  }
  // A heartbeat without the slots (an older agent) keeps what was reported.
  const res = await s.app.inject({
    method: 'POST',
    url: '/v1/agent/heartbeat',
    headers: { authorization: `Bearer ${agent.token}` },
    payload: { agent_version: 'old' },
  });
  assert.equal(res.statusCode, 200);
  const again = (await s.db.pool.query('SELECT max_connections FROM nodes WHERE id = $1', [agent.nodeId]))
    .rows[0];
  assert.equal(again.max_connections, 1000);
});

test('a create past the node budget is 409 capacity_exceeded; nothing is stored, nothing leaks', async () => {
  // 300 − 3 − 100 = 197 tenant connections: 8 databases at the defaults (22 each).
  await reportingNode('small', {
    max_connections: 300,
    superuser_reserved_connections: 3,
    reserved_connections: 0,
  });
  const budget = 197;
  const fits = Math.floor(budget / PER_DB);
  for (let i = 0; i < fits; i++)
    await s.databases.create(operatorFor(acme), { name: `small_${i}`, node: 'small' });
  const err = await refusal(s.databases.create(operatorFor(acme), { name: 'small_x', node: 'small' }));
  assert.equal(err.status, 409);
  assert.equal(err.code, 'capacity_exceeded');
  assert.deepEqual(err.details, { node: 'small', requested: PER_DB });
  assert.doesNotMatch(
    err.message,
    new RegExp(`\\b(${budget}|${fits * PER_DB})\\b`),
    'no node totals in the message',
  );
  // Another account meets the same full node (and learns no more).
  const err2 = await refusal(s.databases.create(operatorFor(other), { name: 'small_y', node: 'small' }));
  assert.equal(err2.code, 'capacity_exceeded');
  const stored = await s.db.pool.query("SELECT 1 FROM databases WHERE name IN ('small_x', 'small_y')");
  assert.equal(stored.rowCount, 0);
  // No create job without its database (a create job names the generated name, not the label).
  const jobs = await s.db.pool.query(
    `SELECT 1 FROM jobs WHERE kind = 'database.create'
        AND NOT EXISTS (SELECT 1 FROM databases d WHERE d.id::text = jobs.payload->>'database_id')`,
  );
  assert.equal(jobs.rowCount, 0);
  assert.ok((await committedOn('small')) <= budget);
});

test('a limits raise past the budget is refused; a cut is allowed, its room returns after a rotation', async () => {
  // 200 − 3 − 100 = 97.
  const { agent } = await reportingNode('lim', {
    max_connections: 200,
    superuser_reserved_connections: 3,
    reserved_connections: 0,
  });
  const w = operatorFor(acme);
  await s.databases.create(w, { name: 'lim_a', node: 'lim' });
  await s.databases.create(w, { name: 'lim_b', node: 'lim' });
  const free = 97 - 2 * PER_DB; // 53
  const raise = (n: number) =>
    s.databases.putLimits(w, 'lim_a', {
      ...DEFAULT_LIMITS,
      owner_connection_limit: DEFAULT_LIMITS.owner_connection_limit + n,
    });
  const err = await refusal(raise(free + 1));
  assert.equal(err.code, 'capacity_exceeded');
  assert.deepEqual(err.details, { node: 'lim', requested: free + 1 });
  assert.equal(
    (await s.databases.getLimits(w, 'lim_a')).owner_connection_limit,
    DEFAULT_LIMITS.owner_connection_limit,
  );
  const queued = await s.db.pool.query(
    "SELECT 1 FROM jobs WHERE kind = 'database.limits' AND payload->>'name' = 'lim_a'",
  );
  assert.equal(queued.rowCount, 0, 'a refused raise queues no job');
  // Exactly the free room fits; then nothing more.
  await raise(free);
  assert.equal(await committedOn('lim'), 97);
  assert.equal(
    (await refusal(s.databases.putLimits(w, 'lim_b', { ...DEFAULT_LIMITS, reader_connection_limit: 3 })))
      .code,
    'capacity_exceeded',
  );
  // Timeouts alone never need room.
  await s.databases.putLimits(w, 'lim_b', { ...DEFAULT_LIMITS, statement_timeout_ms: 1000 });
  // A cut is allowed on a full node, but the sessions opened under the old limit outlive it
  // (PostgreSQL checks CONNECTION LIMIT at login only): the old total stays committed …
  await raise(0);
  assert.equal(
    (await refusal(s.databases.putLimits(w, 'lim_b', { ...DEFAULT_LIMITS, reader_connection_limit: 3 })))
      .code,
    'capacity_exceeded',
  );
  // … also through a raise of the cut database itself (back up to its held total is free).
  await raise(free);
  await raise(0);
  assert.equal(await committedOn('lim'), 97);
  // A rotation queued after the cut ends the owner's sessions: then the room is back.
  await drain(agent);
  await s.databases.rotate(w, 'lim_a');
  await drain(agent);
  assert.equal(await committedOn('lim'), 2 * PER_DB);
  await s.databases.putLimits(w, 'lim_b', { ...DEFAULT_LIMITS, reader_connection_limit: 3 });
});

test('a rotation queued before a cut does not release it', async () => {
  const { agent } = await reportingNode('hold', {
    max_connections: 200,
    superuser_reserved_connections: 3,
    reserved_connections: 0,
  });
  const w = operatorFor(other);
  await s.databases.create(w, { name: 'hold_a', node: 'hold' });
  await drain(agent);
  await s.databases.putLimits(w, 'hold_a', { ...DEFAULT_LIMITS, owner_connection_limit: 90 });
  await s.databases.rotate(w, 'hold_a');
  await s.databases.putLimits(w, 'hold_a', DEFAULT_LIMITS);
  await drain(agent);
  assert.equal(await committedOn('hold'), 92, 'the cut came after the rotation: still held');
  await s.databases.rotate(w, 'hold_a');
  await drain(agent);
  assert.equal(await committedOn('hold'), PER_DB);
});

test('concurrent creates on one node cannot overshoot its budget', async () => {
  // 170 − 3 − 100 = 67: three databases at 22.
  await reportingNode('race', {
    max_connections: 170,
    superuser_reserved_connections: 3,
    reserved_connections: 0,
  });
  const results = await Promise.allSettled(
    Array.from({ length: 10 }, (_, i) =>
      s.databases.create(operatorFor(i % 2 ? acme : other), { name: `race_${i}`, node: 'race' }),
    ),
  );
  const ok = results.filter((r) => r.status === 'fulfilled').length;
  const refused = results.filter(
    (r) => r.status === 'rejected' && r.reason instanceof AppError && r.reason.code === 'capacity_exceeded',
  ).length;
  assert.equal(
    ok,
    3,
    JSON.stringify(results.filter((r) => r.status === 'rejected').map((r) => String(r.reason))),
  );
  assert.equal(refused, 7);
  assert.equal(await committedOn('race'), 3 * PER_DB);
});

test('concurrent raises and creates on one node cannot overshoot either', async () => {
  await reportingNode('race2', {
    max_connections: 200,
    superuser_reserved_connections: 3,
    reserved_connections: 0,
  });
  const w = operatorFor(acme);
  for (const n of ['r2_a', 'r2_b']) await s.databases.create(w, { name: n, node: 'race2' });
  // 97 − 44 = 53 free: each raise wants 30, each create 22; at most one raise + one create fit.
  await Promise.allSettled([
    s.databases.putLimits(w, 'r2_a', { ...DEFAULT_LIMITS, owner_connection_limit: 50 }),
    s.databases.putLimits(w, 'r2_b', { ...DEFAULT_LIMITS, owner_connection_limit: 50 }),
    s.databases.create(w, { name: 'r2_c', node: 'race2' }),
    s.databases.create(w, { name: 'r2_d', node: 'race2' }),
  ]);
  assert.ok((await committedOn('race2')) <= 97, `committed ${await committedOn('race2')} > 97`);
});

test('one account cannot commit the embedded node past its budget (max_connections 1000)', async () => {
  await reportingNode('big', {
    max_connections: 1000,
    superuser_reserved_connections: 3,
    reserved_connections: 0,
  });
  const budget = connectionBudget({ max_connections: 1000, reserved_connections: 3 }, s.config);
  assert.equal(budget, 897);
  const w = operatorFor(acme);
  let made = 0;
  for (;;) {
    try {
      await s.databases.create(w, { name: `big_${made}`, node: 'big' });
      made++;
    } catch (err) {
      assert.ok(err instanceof AppError && err.code === 'capacity_exceeded', String(err));
      break;
    }
    assert.ok(made <= 100, 'the budget never stopped the account');
  }
  assert.equal(made, Math.floor(897 / PER_DB), 'the embedded node holds 40 default databases');
  // Every owner at the API maximum is refused as well: the tenant roles together stay below
  // max_connections by at least the reserve.
  for (let i = 0; i < made; i++) {
    const e = await refusal(
      s.databases.putLimits(w, `big_${i}`, { ...DEFAULT_LIMITS, owner_connection_limit: 10_000 }),
    );
    assert.equal(e.code, 'capacity_exceeded');
  }
  const committed = await committedOn('big');
  assert.ok(committed <= 1000 - 3 - s.config.nodeConnectionReserve, `committed ${committed}`);
});

test('a node that has not reported is held to the assumed max_connections (300)', async () => {
  await reportingNode('silent', null);
  assert.equal(connectionBudget({ max_connections: null, reserved_connections: null }, s.config), 197);
  let made = 0;
  for (; made < 20; made++) {
    try {
      await s.databases.create(operatorFor(other), { name: `silent_${made}`, node: 'silent' });
    } catch (err) {
      assert.ok(err instanceof AppError && err.code === 'capacity_exceeded', String(err));
      break;
    }
  }
  assert.equal(made, Math.floor(197 / PER_DB));
});

test('without a node named, a database goes where there is room', async () => {
  const own = await createTestServer();
  try {
    const enroll = async (name: string, max: number) => {
      const agent = await enrollFakeAgent(own, name);
      const res = await own.app.inject({
        method: 'POST',
        url: '/v1/agent/heartbeat',
        headers: { authorization: `Bearer ${agent.token}` },
        payload: { connections: { max_connections: max, superuser_reserved_connections: 3 } },
      });
      assert.equal(res.statusCode, 200);
    };
    await enroll('p1', 200); // budget 97: four databases
    await enroll('p2', 126); // budget 23: one
    const account = await createAccount(own, 'placer');
    const placed: string[] = [];
    for (let i = 0; i < 6; i++) {
      try {
        placed.push((await own.databases.create(callerFor(account), { name: `p_${i}` })).node_name);
      } catch (err) {
        assert.ok(err instanceof AppError && err.code === 'capacity_exceeded', String(err));
        break;
      }
    }
    // By free room, not by count: p2's one slot is not spent before p1 has less room than it.
    assert.deepEqual(placed, ['p1', 'p1', 'p1', 'p1', 'p2']);
  } finally {
    await own.stop();
  }
});
