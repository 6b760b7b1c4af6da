/**
 * Review, session 6: attacks on attached databases (issue 17, ADR 0031: POST /v1/agent/attached,
 * the 409s of the managing routes, what background work picks) and on the move archive relay
 * (GET /v1/agent/jobs/:id/move-archive). A fully wired server on its own control database, agents
 * driven by hand through the real agent API (a compromised node is exactly that: its token and
 * whatever it chooses to send). Each test asserts the SAFE behaviour; one that shows a real
 * weakness is marked `todo: 'finding: …'` so the suite stays green.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { type AttachedRegistry, createAttachedRegistry } from '../src/agent/attached/attached-registry.ts';
import { startAttached } from '../src/agent/attached/attached-startup.ts';
import { agentConfigSchema } from '../src/agent/config.ts';
import { createAgentVerifier } from '../src/agent/execution/agent-verifier.ts';
import { openPinnedKeys } from '../src/agent/execution/execution-keys.ts';
import { createExecutionRoles } from '../src/agent/execution/execution-role.ts';
import { REPLAY_CACHE_FILE } from '../src/agent/execution/execution-setup.ts';
import { createExecutionExecutor } from '../src/agent/execution/executor.ts';
import { createReplayCache } from '../src/agent/execution/replay-cache.ts';
import type { ExplorerExecutor } from '../src/agent/explorer/explorer-executor.ts';
import { type RunningAgent, startAgent } from '../src/agent/main.ts';
import { type DataPlane, startDataPlane } from '../src/embedded/data-plane.ts';
import { dataLayout } from '../src/embedded/layout.ts';
import { resolveServiceUser } from '../src/embedded/service-user.ts';
import { createArchiveEncryptor } from '../src/shared/backup-archive.ts';
import { createLogger } from '../src/shared/logger.ts';
import { loadExplorerParser } from '../src/shared/sql/explorer-validator.ts';
import { enrollFakeAgent, type FakeAgent } from './helpers/databases.ts';
import { dumpResult, moveOutResult } from './helpers/dump-result.ts';
import { testEnv } from './helpers/env.ts';
import { createExecutionHarness, signedRequest, TEST_NODE } from './helpers/execution-agent.ts';
import {
  adminPool,
  clusterAccess,
  queryPayload,
  TEST_AGENT_KEY,
  type Tenant,
  testExecutor,
} from './helpers/explorer.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { freePort } from './helpers/ports.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { createTestUser, signIn } from './helpers/session-users.ts';

let s: TestServer;
/** Node n1 hosts databases of acme; n2 is another node (the compromised one in most probes). */
let n1: FakeAgent;
let n2: FakeAgent;
let acme: TestKey;
let victim: TestKey;
let root: Record<string, string>;

type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';
const api = (headers: Record<string, string>, method: Method, url: string, payload?: object) =>
  s.app.inject({ method, url, headers, ...(payload ? { payload } : {}) });

const entry = (name: string, accountId: string, ok = true) => ({
  name,
  account_id: accountId,
  ok,
  server_version: ok ? '16.4' : null,
  findings: [],
});

const report = (a: { token: string }, databases: object[]) =>
  s.app.inject({
    method: 'POST',
    url: '/v1/agent/attached',
    headers: { authorization: `Bearer ${a.token}` },
    payload: { databases },
  });

/** Polls until a job of this kind comes; others are completed (or failed) as a fake agent can. */
async function nextJob(agent: FakeAgent, kind: string) {
  for (let i = 0; i < 40; i++) {
    const job = await agent.poll();
    if (!job) continue;
    if (job.kind === kind) return job;
    if ((await agent.complete(job.id, job.attempt, {})) !== 200)
      await agent.fail(job.id, job.attempt, 'test: not run', false);
  }
  throw new Error(`no ${kind} job`);
}

async function createOn(agent: FakeAgent, key: TestKey, node: string, name: string) {
  const r = await api(key.headers, 'POST', '/v1/databases', { name, node });
  assert.equal(r.statusCode, 202, r.body);
  const job = await nextJob(agent, 'database.create');
  assert.equal(await agent.complete(job.id, job.attempt, {}), 200);
}

const uniq = (p: string) => `${p}_${randomBytes(3).toString('hex')}`;

/** The server's loopback URL (listening once for every section that needs real HTTP). */
/** An admin of the account accepts the attached database its node offered (migration 0034). */
const accept = async (headers: Record<string, string>, name: string) => {
  const r = await api(headers, 'POST', `/v1/databases/${name}/attachment/accept`);
  assert.equal(r.statusCode, 200, r.body);
};

/** The archive size the relay suite's source records for its move. */
const RECORDED = 1024 * 1024;
let listened: Promise<string> | null = null;
const listening = () => {
  listened ??= s.app.listen({ host: '127.0.0.1', port: 0 }).then((u) => u.replace('localhost', '127.0.0.1'));
  return listened;
};

before(async () => {
  s = await createTestServer({ nodeUnhealthyAfterSeconds: 3600 });
  n1 = await enrollFakeAgent(s, 's6-n1');
  n2 = await enrollFakeAgent(s, 's6-n2');
  acme = await createTestKey(s, { account: 's6_acme' });
  victim = await createTestKey(s, { account: 's6_victim' });
  root = (await signIn(s, await createTestUser(s, { username: 's6root', platformAdmin: true }))).headers;
});
after(() => s?.stop());

describe('attached databases: what a node agent can report', () => {
  test('a node can only offer an attached database to an account: nothing runs on it, and no name is held, before the account accepts', async () => {
    // Finding at e53a482 (fixed): the report registered it ready in any account; the account's explorer
    // SQL then went to the rogue node, and the name was squatted.
    const rogue = await enrollFakeAgent(s, uniq('s6-rogue'));
    const name = uniq('payroll');
    const r = await report(rogue, [entry(name, victim.accountId)]);
    assert.equal(r.statusCode, 200, r.body);
    // Listed to the victim as an offer it may accept or reject: waiting, never accepted.
    const offer = (await api(victim.headers, 'GET', `/v1/databases/${name}`)).json();
    assert.equal(offer.status, 'provisioning');
    assert.equal(offer.attached.accepted_at, null);
    // A victim user who queries it is refused here: no SQL reaches the rogue node.
    const SQL = 'SELECT salary FROM staff WHERE name = 42';
    const asked = await api(victim.headers, 'POST', `/v1/databases/${name}/explorer/query`, { sql: SQL });
    assert.equal(asked.statusCode, 409, asked.body);
    const req = await api(victim.headers, 'POST', `/v1/databases/${name}/requests`, {
      sql: 'UPDATE t SET a = 1',
      reason: 'x',
    });
    assert.equal(req.statusCode, 409, req.body);
    let seenSql: unknown = null;
    for (let i = 0; i < 10 && seenSql === null; i++) {
      const j = await rogue.poll();
      if (j?.kind === 'explorer.query' || j?.kind === 'request.execute') seenSql = j.payload.sql;
      else if (j) await rogue.fail(j.id, j.attempt, 'test: not run', false);
      else await new Promise((res) => setTimeout(res, 50));
    }
    assert.equal(seenSql, null, `the rogue node received the victim's SQL: ${String(seenSql)}`);
    // The name is not squatted: the victim's create takes it (the offer is withdrawn).
    const create = await api(victim.headers, 'POST', '/v1/databases', { name, node: 's6-n1' });
    assert.equal(create.statusCode, 202, `the victim cannot create ${name}: ${create.body}`);
    const job = await nextJob(n1, 'database.create');
    await n1.complete(job.id, job.attempt, {});
  });

  test('a node cannot make itself impossible to decommission (its token unrevocable) by listing attached databases', async () => {
    // Finding at e53a482 (fixed): decommission counted attached rows; it now detaches them.
    const name = uniq('s6-bad');
    const bad = await enrollFakeAgent(s, name);
    const r = await report(bad, [entry(uniq('keepme'), victim.accountId)]);
    assert.equal(r.statusCode, 200, r.body);
    const id = bad.nodeId;
    const d = await api(root, 'POST', `/v1/nodes/${id}/decommission`);
    // Whatever remains, the platform admin must be able to revoke this node's token.
    let revoked = d.statusCode === 200;
    if (!revoked) {
      // Is there any way for the admin to get rid of the attached row? Delete is refused (409).
      const dbName = r.json().databases[0].name as string;
      const del = await api(victim.headers, 'DELETE', `/v1/databases/${dbName}`, { confirm: dbName });
      assert.equal(del.statusCode, 409, del.body);
      const again = await api(root, 'POST', `/v1/nodes/${id}/decommission`);
      revoked = again.statusCode === 200;
    }
    const poll = await s.app.inject({
      method: 'POST',
      url: '/v1/agent/poll',
      headers: { authorization: `Bearer ${bad.token}` },
      payload: { wait_ms: 0 },
    });
    assert.ok(revoked, `decommission refused: ${d.body}`);
    assert.equal(poll.statusCode, 401, 'the node token still works');
  });

  test('a node that holds a hosted database and ignores its jobs can still have its token revoked', async () => {
    // Finding at e53a482 (fixed): decommission refused while any database remained; `force` revokes a lost node.
    const nodeName = uniq('s6-stuck');
    const stuck = await enrollFakeAgent(s, nodeName);
    const name = uniq('held');
    await createOn(stuck, acme, nodeName, name);
    // The operator deletes it; the node fails the delete (as a compromised one would).
    const del = await api(acme.headers, 'DELETE', `/v1/databases/${name}`, { confirm: name });
    assert.ok([200, 202].includes(del.statusCode), del.body);
    const job = await nextJob(stuck, 'database.delete');
    await stuck.fail(job.id, job.attempt, 'test: refused', false);
    const plain = await api(root, 'POST', `/v1/nodes/${stuck.nodeId}/decommission`);
    assert.equal(plain.statusCode, 409, plain.body);
    const d = await api(root, 'POST', `/v1/nodes/${stuck.nodeId}/decommission`, { force: true });
    const poll = await s.app.inject({
      method: 'POST',
      url: '/v1/agent/poll',
      headers: { authorization: `Bearer ${stuck.token}` },
      payload: { wait_ms: 0 },
    });
    assert.equal(d.statusCode, 200, `decommission refused: ${d.body}`);
    assert.equal(poll.statusCode, 401, 'the node token still works');
  });

  test('a report never takes over, detaches or renames what another node or the account holds', async () => {
    await createOn(n1, acme, 's6-n1', 'acme_main');
    const mine = uniq('n1att');
    assert.equal((await report(n1, [entry(mine, acme.accountId)])).json().databases[0].status, 'attached');
    // n2 lists n1's hosted name, n1's attached name, in the same account and in another one.
    const r = await report(n2, [entry('acme_main', acme.accountId), entry(mine, acme.accountId)]);
    assert.deepEqual(
      (r.json().databases as { status: string }[]).map((d) => d.status),
      ['refused', 'refused'],
    );
    // n2's empty list detaches nothing of n1's.
    assert.equal((await report(n2, [])).statusCode, 200);
    const hosted = (await api(acme.headers, 'GET', '/v1/databases/acme_main')).json();
    assert.equal(hosted.kind, 'hosted');
    assert.equal(hosted.node, 's6-n1');
    const att = (await api(acme.headers, 'GET', `/v1/databases/${mine}`)).json();
    assert.equal(att.kind, 'attached');
    assert.equal(att.node, 's6-n1');
    // The hosted row was not touched: still its sealed password, kind hosted.
    const row = await s.db.pool.query(
      "SELECT kind, password_sealed IS NOT NULL AS sealed, attached FROM databases WHERE name = 'acme_main' AND deleted_at IS NULL",
    );
    assert.deepEqual(row.rows, [{ kind: 'hosted', sealed: true, attached: null }]);
  });

  test('two nodes reporting the same new name at once: never a 5xx, and the retry settles on one owner', async () => {
    // Each report is one transaction: a unique-index race on a new name fails the losing report as
    // a whole (409, retried by the agent), it never lets both register nor answers a 5xx.
    for (let i = 0; i < 6; i++) {
      const name = uniq('race');
      const [a, b] = await Promise.all([
        report(n1, [entry(name, acme.accountId)]),
        report(n2, [entry(name, acme.accountId)]),
      ]);
      for (const r of [a, b]) assert.ok([200, 409].includes(r.statusCode), `${r.statusCode} ${r.body}`);
      const again = await Promise.all([
        report(n1, [entry(name, acme.accountId)]),
        report(n2, [entry(name, acme.accountId)]),
      ]);
      const owners = again.filter((r) => r.json().databases[0].status === 'attached');
      assert.equal(owners.length, 1, again.map((r) => r.body).join(' | '));
      const rows = await s.db.pool.query(
        'SELECT node_id FROM databases WHERE name = $1 AND deleted_at IS NULL',
        [name],
      );
      assert.equal(rows.rowCount, 1);
      await Promise.all([report(n1, []), report(n2, [])]);
    }
  });

  test("a name attached on a node: another account's hosted database of that label there gets a generated name on the node (no 409 that would tell it, no 500)", async () => {
    const other = await createTestKey(s, { account: 's6_other' });
    const name = uniq('shared');
    assert.equal((await report(n2, [entry(name, acme.accountId)])).json().databases[0].status, 'attached');
    const r = await api(other.headers, 'POST', '/v1/databases', { name, node: 's6-n2' });
    assert.equal(r.statusCode, 202, r.body);
    // Labels are unique per account only (migration 0038); the name on the node is not the label.
    const conn = (await api(other.headers, 'GET', `/v1/databases/${name}/connection`)).json();
    assert.notEqual(conn.database, name, 'the attached database and the new one would share a name');
    assert.match(conn.database, /^bulwark_db_p_/);
    const made = await nextJob(n2, 'database.create');
    assert.equal(made.payload.name, conn.database, 'the node makes it under its own name');
    assert.equal(await n2.complete(made.id, made.attempt, {}), 200);
    assert.equal(
      (await api(other.headers, 'DELETE', `/v1/databases/${name}`, { confirm: name })).statusCode,
      202,
    );
    const gone = await nextJob(n2, 'database.delete');
    assert.equal(await n2.complete(gone.id, gone.attempt, {}), 200);
    // A move of that account's hosted database of the same label onto n2: its name on the node is
    // generated too, so the attached name is no clash there: the move is accepted (not a 500).
    await createOn(n1, other, 's6-n1', name);
    const moving = (await api(other.headers, 'GET', `/v1/databases/${name}/connection`)).json();
    assert.notEqual(moving.database, name);
    assert.match(moving.database, /^bulwark_db_p_/);
    const m = await api(other.headers, 'POST', `/v1/databases/${name}/move`, { node: 's6-n2' });
    assert.equal(m.statusCode, 202, m.body);
    await report(n2, []);
  });

  test('an attached name reported on the target of a move in flight: the switch fails cleanly, the source serves', async () => {
    const name = uniq('inflight');
    await createOn(n1, acme, 's6-n1', name);
    const dbId = (await api(acme.headers, 'GET', `/v1/databases/${name}`)).json().id as string;
    const m = await api(acme.headers, 'POST', `/v1/databases/${name}/move`, { node: 's6-n2' });
    assert.equal(m.statusCode, 202, m.body);
    const moveId = m.json().id as string;
    const out = await nextJob(n1, 'database.move_out');
    const copied = await s.app.inject({
      method: 'POST',
      url: `/v1/agent/jobs/${out.id}/complete`,
      headers: { authorization: `Bearer ${n1.token}` },
      payload: { attempt: out.attempt, result: moveOutResult(moveId) },
    });
    assert.equal(copied.statusCode, 200, copied.body);
    // While the target restores, a node (the target itself here) lists the moving database's name
    // on the node (its generated one, never its label: ADR 0039) for another account.
    const physical = (await api(acme.headers, 'GET', `/v1/databases/${name}/connection`)).json()
      .database as string;
    assert.match(physical, /^bulwark_db_p_/);
    const rep = await report(n2, [entry(physical, victim.accountId)]);
    const moveIn = await nextJob(n2, 'database.move_in');
    const dump = dumpResult(moveId);
    const done = await s.app.inject({
      method: 'POST',
      url: `/v1/agent/jobs/${moveIn.id}/complete`,
      headers: { authorization: `Bearer ${n2.token}` },
      payload: {
        attempt: moveIn.attempt,
        result: {
          tables_checked: 1,
          rows_checked: 1,
          objects: dump.objects,
          backup_id: moveId,
          database_id: dbId,
          name: physical,
          mode: 'new',
          duration_ms: 1,
          verified: true,
          login_proved: true,
        },
      },
    });
    const move = (await api(acme.headers, 'GET', `/v1/databases/${name}/move`)).json();
    const d = (await api(acme.headers, 'GET', `/v1/databases/${name}`)).json();
    await report(n2, []);
    // Only the target's own agent can list a name on the target, and it could fail move_in anyway:
    // what matters is that the switch never breaks — the move fails cleanly, the source serves.
    assert.equal(done.statusCode, 200, `move_in completion: ${done.statusCode} ${done.body}`);
    assert.ok(['switched', 'failed'].includes(move.status), JSON.stringify(move));
    if (rep.json().databases[0].status === 'attached') {
      assert.equal(move.status, 'failed');
      assert.match(String(move.error), /taken on the target/);
      assert.equal(d.status, 'ready');
      assert.equal(d.node, 's6-n1');
    }
  });

  test('oversize and odd reports are refused whole; a report never carries or stores a credential', async () => {
    const name = uniq('odd');
    const finding = {
      role: 'reader',
      severity: 'refuse',
      kind: 'table_write',
      object: 'public.t',
      detail: 'x'.repeat(1000),
    };
    const big = await report(n2, [
      { ...entry(name, acme.accountId, false), findings: Array.from({ length: 200 }, () => finding) },
    ]);
    // Accepted within the bounds; the stored reason stays bounded.
    assert.equal(big.statusCode, 200, big.body);
    const row = (await api(acme.headers, 'GET', `/v1/databases/${name}`)).json();
    assert.ok(String(row.failure_reason).length <= 1000);
    for (const bad of [
      { ...entry(uniq('x'), acme.accountId), host: '10.0.0.1' },
      { ...entry(uniq('x'), acme.accountId), reader: { user: 'r', password: 'p' } },
      { ...entry(uniq('x'), acme.accountId), findings: [{ ...finding, password: 'p' }] },
      { ...entry(uniq('x'), acme.accountId), findings: [{ ...finding, role: 'owner' }] },
      { ...entry(uniq('x'), acme.accountId), server_version: 'v'.repeat(257) },
      { ...entry(`a${'b'.repeat(63)}`, acme.accountId) },
    ]) {
      const r = await report(n2, [bad]);
      assert.equal(r.statusCode, 400, JSON.stringify(bad).slice(0, 120));
    }
    // The 400s changed nothing: the earlier entry is still attached.
    assert.equal((await api(acme.headers, 'GET', `/v1/databases/${name}`)).statusCode, 200);
    await report(n2, []);
  });
});

describe('attached databases: every route on one', () => {
  let att: string;
  let scoped: TestKey;
  let readKey: TestKey;
  before(async () => {
    att = uniq('legacy');
    assert.equal((await report(n2, [entry(att, acme.accountId)])).json().databases[0].status, 'attached');
    await accept(acme.headers, att);
    scoped = await createTestKey(s, { account: 's6_acme', databases: ['acme_main'], explorer: true });
    readKey = await createTestKey(s, { account: 's6_acme', level: 'read' });
  });

  test('routes the attached-databases test did not list: 409 or harmless, never a job on the node', async () => {
    const jobsBefore = await s.db.pool.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM jobs WHERE node_id = $1',
      [n2.nodeId],
    );
    const id = randomUUID();
    const probes: [Method, string, object | undefined][] = [
      ['GET', `/v1/databases/${att}/backup-settings`, undefined],
      ['PUT', `/v1/databases/${att}/backup-settings`, { enabled: true }],
      ['GET', `/v1/databases/${att}/backups/${id}`, undefined],
      ['POST', `/v1/databases/${att}/backups/${id}/download-link`, {}],
      ['GET', `/v1/databases/${att}/backups/${id}/download`, undefined],
      ['GET', `/v1/databases/${att}/restores`, undefined],
      ['GET', `/v1/databases/${att}/restores/${id}`, undefined],
      ['PUT', `/v1/databases/${att}/limits`, { owner_connection_limit: 5, reader_connection_limit: 5 }],
      ['DELETE', `/v1/databases/${att}/allowlist/10.0.0.0%2F8`, undefined],
      ['GET', `/v1/databases/${att}/move`, undefined],
    ];
    for (const [method, url, body] of probes) {
      const r = await api(acme.headers, method, url, body);
      assert.ok(
        [404, 409, 400].includes(r.statusCode),
        `${method} ${url}: ${r.statusCode} ${r.body.slice(0, 200)}`,
      );
    }
    // Samples are a read (empty for an attached database), harmless.
    const samples = await api(acme.headers, 'GET', `/v1/databases/${att}/samples`);
    assert.equal(samples.statusCode, 200, samples.body);
    // A restore of a hosted backup into a new database named like the attached one: refused.
    const b = await api(acme.headers, 'POST', '/v1/databases/acme_main/backups', {});
    assert.equal(b.statusCode, 202, b.body);
    const bj = await nextJob(n1, 'backup.create');
    const backupId = String(bj.payload.backup_id);
    const done = await s.app.inject({
      method: 'POST',
      url: `/v1/agent/jobs/${bj.id}/complete`,
      headers: { authorization: `Bearer ${n1.token}` },
      payload: { attempt: bj.attempt, result: dumpResult(backupId) },
    });
    assert.equal(done.statusCode, 200, done.body);
    const restore = await api(acme.headers, 'POST', '/v1/databases/acme_main/restore', {
      backup_id: backupId,
      new_name: att,
    });
    assert.equal(restore.statusCode, 409, restore.body);
    const jobsAfter = await s.db.pool.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM jobs WHERE node_id = $1',
      [n2.nodeId],
    );
    assert.equal(jobsAfter.rows[0]!.n, jobsBefore.rows[0]!.n, 'a route queued a job on the attached node');
  });

  test('an attached database its checks refused is never queried: explorer, schema and requests refused, nothing queued', async () => {
    const bad = uniq('refusedchk');
    const r = await report(n2, [entry(att, acme.accountId), entry(bad, acme.accountId, false)]);
    assert.equal(r.json().databases[1].status, 'attached', r.body);
    assert.equal((await api(acme.headers, 'GET', `/v1/databases/${bad}`)).json().status, 'provisioning');
    await accept(acme.headers, bad);
    assert.equal((await api(acme.headers, 'GET', `/v1/databases/${bad}`)).json().status, 'failed');
    const before = await s.db.pool.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM jobs WHERE node_id = $1',
      [n2.nodeId],
    );
    for (const [method, url, body] of [
      ['POST', `/v1/databases/${bad}/explorer/query`, { sql: 'SELECT 1' }],
      ['GET', `/v1/databases/${bad}/explorer/schema`, undefined],
      ['POST', `/v1/databases/${bad}/requests`, { sql: 'UPDATE t SET v = 1 WHERE id = 1', reason: 'x' }],
    ] as [Method, string, object | undefined][]) {
      const x = await api(acme.headers, method, url, body);
      assert.ok(
        [409, 503].includes(x.statusCode),
        `${method} ${url}: ${x.statusCode} ${x.body.slice(0, 200)}`,
      );
    }
    const afterJobs = await s.db.pool.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM jobs WHERE node_id = $1',
      [n2.nodeId],
    );
    assert.equal(afterJobs.rows[0]!.n, before.rows[0]!.n);
    await report(n2, [entry(att, acme.accountId)]);
  });

  test('the database view of an attached one carries no connection details or credential', async () => {
    const v = await api(acme.headers, 'GET', `/v1/databases/${att}`);
    assert.equal(v.statusCode, 200, v.body);
    const text = v.body;
    for (const forbidden of [
      '"password"',
      'password_file',
      'reader_user',
      'migrator',
      '"host"',
      '"port"',
      'connection_string',
      '_owner',
    ])
      assert.ok(!text.includes(forbidden), `${forbidden} in ${text.slice(0, 400)}`);
  });

  test('low-level keys: a key scoped to another database, a read key, another account', async () => {
    const urls: [Method, string, object | undefined][] = [
      ['GET', `/v1/databases/${att}`, undefined],
      ['GET', `/v1/databases/${att}/explorer/schema`, undefined],
      ['POST', `/v1/databases/${att}/explorer/query`, { sql: 'SELECT 1' }],
      ['GET', `/v1/databases/${att}/requests`, undefined],
      ['POST', `/v1/databases/${att}/requests`, { sql: 'SELECT 1', reason: 'x' }],
      ['GET', `/v1/databases/${att}/samples`, undefined],
    ];
    for (const [method, url, body] of urls) {
      const r = await api(scoped.headers, method, url, body);
      assert.ok([403, 404].includes(r.statusCode), `scoped ${method} ${url}: ${r.statusCode}`);
      const v = await api(victim.headers, method, url, body);
      assert.equal(v.statusCode, 404, `other account ${method} ${url}: ${v.statusCode}`);
    }
    // A read key cannot make a governed request nor run the explorer without the explorer grant.
    const q = await api(readKey.headers, 'POST', `/v1/databases/${att}/explorer/query`, { sql: 'SELECT 1' });
    assert.ok([403].includes(q.statusCode), `read key explorer: ${q.statusCode} ${q.body}`);
    const rq = await api(readKey.headers, 'POST', `/v1/databases/${att}/requests`, {
      sql: 'SELECT 1',
      reason: 'x',
    });
    assert.equal(rq.statusCode, 403, rq.body);
  });

  test('a governed request on an attached database that the node detaches is never run on a later database of that name', async () => {
    const name = uniq('swap');
    assert.equal((await report(n2, [entry(name, acme.accountId)])).json().databases[0].status, 'attached');
    await accept(acme.headers, name);
    const made = await api(acme.headers, 'POST', `/v1/databases/${name}/requests`, {
      sql: 'UPDATE t SET v = 1 WHERE id = 1',
      reason: 'fix',
    });
    assert.equal(made.statusCode, 201, made.body);
    const reqId = made.json().id as string;
    // The node stops listing it; a hosted database of the same name is made on n1.
    await report(n2, [entry(att, acme.accountId)]);
    await createOn(n1, acme, 's6-n1', name);
    const r = await api(acme.headers, 'GET', `/v1/databases/${name}/requests/${reqId}`);
    assert.equal(r.statusCode, 404, 'the old request follows the name to the hosted database');
    for (const verb of ['approve', 'execute']) {
      const x = await api(acme.headers, 'POST', `/v1/databases/${name}/requests/${reqId}/${verb}`, {});
      assert.equal(x.statusCode, 404, `${verb}: ${x.body}`);
    }
  });
});

describe('the move archive relay', () => {
  let base: string;
  let moveId: string;
  let moveIn: { id: number; attempt: number };
  let moveOut: { id: number; attempt: number };
  const relayDb = uniq('relay');
  const bearer = (a: { token: string }) => ({ authorization: `Bearer ${a.token}` });
  const archiveUrl = (id: number, attempt: number) =>
    `${base}/v1/agent/jobs/${id}/move-archive?attempt=${attempt}`;
  const downloadsOfMove = async () =>
    (
      await s.db.pool.query<{ id: number; status: string; node_id: string }>(
        "SELECT id, status, node_id FROM jobs WHERE kind = 'backup.download' AND payload->>'backup_id' = $1 ORDER BY id",
        [moveId],
      )
    ).rows;

  before(async () => {
    base = await listening();
    await createOn(n1, acme, 's6-n1', relayDb);
    const m = await api(acme.headers, 'POST', `/v1/databases/${relayDb}/move`, { node: 's6-n2' });
    assert.equal(m.statusCode, 202, m.body);
    moveId = m.json().id as string;
    const out = await nextJob(n1, 'database.move_out');
    moveOut = out;
    // The archive the source says it made: 1 MiB (the relay forwards no more than that).
    const done = await s.app.inject({
      method: 'POST',
      url: `/v1/agent/jobs/${out.id}/complete`,
      headers: bearer(n1),
      payload: { attempt: out.attempt, result: { ...moveOutResult(moveId), size_bytes: RECORDED } },
    });
    assert.equal(done.statusCode, 200, done.body);
    assert.equal(
      (await api(acme.headers, 'GET', `/v1/databases/${relayDb}/move`)).json().status,
      'restoring',
    );
    moveIn = await nextJob(n2, 'database.move_in');
  });

  test('only the move_in lease holder gets anything: not the source, not another node, not an API key', async () => {
    const third = await enrollFakeAgent(s, uniq('s6-third'));
    const asks: [string, Record<string, string>, string][] = [
      ['the source, with the move_in job', bearer(n1), archiveUrl(moveIn.id, moveIn.attempt)],
      ['the source, with its move_out job', bearer(n1), archiveUrl(moveOut.id, moveOut.attempt)],
      ['a third node', bearer(third), archiveUrl(moveIn.id, moveIn.attempt)],
      ['the target, a wrong attempt', bearer(n2), archiveUrl(moveIn.id, moveIn.attempt + 1)],
      ['an account admin key', acme.headers, archiveUrl(moveIn.id, moveIn.attempt)],
      ['nobody', {}, archiveUrl(moveIn.id, moveIn.attempt)],
    ];
    for (const [who, headers, url] of asks) {
      const r = await fetch(url, { headers, signal: AbortSignal.timeout(20_000) });
      await r.arrayBuffer();
      assert.ok([401, 403, 404].includes(r.status), `${who}: ${r.status}`);
    }
    assert.deepEqual(await downloadsOfMove(), [], 'a refused caller queued a backup.download on the source');
  });

  test('the lease holder cannot make the server queue download jobs on the source without bound', async () => {
    // Finding at e53a482 (fixed in nodes.move.relay.ts).
    const N = 6;
    const ctl = new AbortController();
    const asks = Array.from({ length: N }, () =>
      fetch(archiveUrl(moveIn.id, moveIn.attempt), { headers: bearer(n2), signal: ctl.signal })
        .then(async (r) => {
          await r.arrayBuffer().catch(() => {});
          return r.status;
        })
        .catch(() => 0),
    );
    // Let every request reach the server and queue (bounded wait).
    let queued: { id: number; status: string; node_id: string }[] = [];
    for (let i = 0; i < 50; i++) {
      queued = await downloadsOfMove();
      if (queued.length >= N) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    // The source (n1) fails every one: the waiting relays end at once.
    for (let i = 0; i < N + 5; i++) {
      const j = await n1.poll();
      if (!j) break;
      await n1.fail(j.id, j.attempt, 'test: not sent', false);
    }
    ctl.abort();
    await Promise.all(asks);
    assert.ok(
      queued.every((q) => q.node_id === n1.nodeId),
      'a download queued on another node',
    );
    assert.ok(queued.length <= 1, `${queued.length} backup.download jobs queued on the source for one move`);
  });

  test('the relay forwards no more than the archive the source recorded (a compromised source cannot fill the target)', async () => {
    // Finding at e53a482 (fixed in nodes.move.relay.ts).
    const SENT = 8 * RECORDED; // the move recorded RECORDED bytes
    // What reaches the target: counted as it arrives (a cut transfer rejects the body, not the count).
    let received = 0;
    const target = fetch(archiveUrl(moveIn.id, moveIn.attempt), {
      headers: bearer(n2),
      signal: AbortSignal.timeout(60_000),
    }).then(async (r) => {
      const reader = r.body!.getReader();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) return { status: r.status, cut: false };
          received += value.byteLength;
        }
      } catch {
        return { status: r.status, cut: true };
      }
    });
    let job: Awaited<ReturnType<FakeAgent['poll']>> = null;
    for (let i = 0; i < 100 && !job; i++) {
      job = await n1.poll();
      if (job && job.kind !== 'backup.download') {
        await n1.fail(job.id, job.attempt, 'test: not run', false);
        job = null;
      }
      if (!job) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(job, 'no backup.download on the source');
    assert.equal(job.payload.backup_id, moveId);
    const garbage = randomBytes(SENT);
    // The source's upload is cut when the relay refuses it: a reset is an expected answer.
    const sent = await fetch(`${base}/v1/agent/jobs/${job.id}/archive?attempt=${job.attempt}`, {
      method: 'POST',
      headers: {
        ...bearer(n1),
        'content-type': 'application/octet-stream',
        'x-bulwark-stream-token': String(job.payload.stream_token),
      },
      body: garbage,
      signal: AbortSignal.timeout(60_000),
    })
      .then(async (r) => {
        await r.arrayBuffer().catch(() => {});
        return r.status;
      })
      .catch(() => 0);
    const got = await target;
    assert.notEqual(sent, 200, 'the oversize upload was accepted whole');
    assert.ok(got.cut, `the target's transfer was not cut (status ${got.status})`);
    assert.ok(received <= RECORDED, `the target received ${received} bytes for a ${RECORDED}-byte archive`);
  });

  test("a target that goes away mid-transfer ends the source's send at once (no relay left holding it)", async () => {
    const ctl = new AbortController();
    const target = fetch(archiveUrl(moveIn.id, moveIn.attempt), {
      headers: bearer(n2),
      signal: ctl.signal,
    }).then(async (r) => {
      const reader = r.body!.getReader();
      await reader.read(); // the first bytes arrived: the target leaves
      ctl.abort();
      return r.status;
    });
    let job: Awaited<ReturnType<FakeAgent['poll']>> = null;
    for (let i = 0; i < 100 && !job; i++) {
      job = await n1.poll();
      if (job && job.kind !== 'backup.download') {
        await n1.fail(job.id, job.attempt, 'test: not run', false);
        job = null;
      }
      if (!job) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(job, 'no backup.download on the source');
    // The source sends 64 KiB, then keeps its request open without sending more.
    let pulls = 0;
    const body = new ReadableStream<Uint8Array>({
      async pull(c) {
        pulls++;
        if (pulls === 1) c.enqueue(randomBytes(64 * 1024));
        else await new Promise((r) => setTimeout(r, 30_000));
      },
    });
    const started = Date.now();
    const sent = fetch(`${base}/v1/agent/jobs/${job.id}/archive?attempt=${job.attempt}`, {
      method: 'POST',
      headers: {
        ...bearer(n1),
        'content-type': 'application/octet-stream',
        'x-bulwark-stream-token': String(job.payload.stream_token),
      },
      body,
      duplex: 'half',
      signal: AbortSignal.timeout(40_000),
    } as RequestInit)
      .then((r) => r.status)
      .catch((e: Error) => `error: ${e.message}`);
    assert.equal(await target.catch(() => 200), 200);
    const answer = await sent;
    const took = Date.now() - started;
    assert.ok(
      took < 15_000,
      `the source's send was held ${took} ms after the target left (answer ${answer})`,
    );
    // The download job ends too (bounded wait: the row is updated as the relay winds down).
    let status = 'running';
    for (let i = 0; i < 100 && status === 'running'; i++) {
      const row = await s.db.pool.query<{ status: string }>('SELECT status FROM jobs WHERE id = $1', [
        job.id,
      ]);
      status = row.rows[0]?.status ?? 'gone';
      if (status === 'running') await new Promise((r) => setTimeout(r, 100));
    }
    assert.notEqual(
      status,
      'running',
      `the download job still runs 10 s after the target left (answer ${answer})`,
    );
  });

  test('after the move left restoring, the holder gets nothing any more', async () => {
    assert.equal(await n2.fail(moveIn.id, moveIn.attempt, 'test: refused the archive', false), 200);
    const m = (await api(acme.headers, 'GET', `/v1/databases/${relayDb}/move`)).json();
    assert.equal(m.status, 'failed');
    const before = (await downloadsOfMove()).length;
    const r = await fetch(archiveUrl(moveIn.id, moveIn.attempt), {
      headers: bearer(n2),
      signal: AbortSignal.timeout(20_000),
    });
    await r.arrayBuffer();
    assert.equal(r.status, 404);
    assert.equal((await downloadsOfMove()).length, before);
  });
});

/**
 * The owner of an attached database (a role that owns it on a cluster Bulwark did not make; here a
 * database of the test cluster made by this test) plants settings, functions and views, then the
 * explorer reads it as the entry's reader, exactly as the agent does (startAttached, the registry
 * filled from a server answer, the agent's explorer executor).
 */
describe('attached databases: the owner plants, the explorer reads', () => {
  const tag = `s6a_${randomBytes(4).toString('hex')}`;
  const R = { owner: `${tag}_owner`, reader: `${tag}_reader`, migrator: `${tag}_migrator` };
  const DB = `${tag}_pgdb`;
  const pw = {
    owner: randomBytes(18).toString('base64url'),
    reader: randomBytes(18).toString('base64url'),
    migrator: randomBytes(18).toString('base64url'),
  };
  const ID = randomUUID();
  const ACCOUNT = randomUUID();
  const NAME = 'planted';
  const target = { id: ID, name: NAME };
  let admin: pg.Pool;
  let explorer: ExplorerExecutor;
  let registry: AttachedRegistry;
  let root: string;

  const urlFor = (database: string, user?: string, password?: string) => {
    const u = new URL(testEnv().adminUrl);
    u.pathname = `/${database}`;
    if (user) {
      u.username = user;
      u.password = password ?? '';
    }
    return u.toString();
  };
  async function run(sql: string, database = DB, user?: keyof typeof R) {
    const c = new pg.Client({ connectionString: urlFor(database, user && R[user], user && pw[user]) });
    await c.connect();
    try {
      return await c.query(sql);
    } finally {
      await c.end();
    }
  }
  const items = async () => JSON.stringify((await run('SELECT id, qty FROM items ORDER BY id')).rows);

  before(async () => {
    await loadExplorerParser();
    admin = adminPool();
    await run(
      `CREATE ROLE "${R.owner}" LOGIN PASSWORD '${pw.owner}';
       CREATE ROLE "${R.reader}" LOGIN PASSWORD '${pw.reader}';
       CREATE ROLE "${R.migrator}" LOGIN PASSWORD '${pw.migrator}';`,
      'postgres',
    );
    await run(`CREATE DATABASE "${DB}" OWNER "${R.owner}"`, 'postgres');
    await run(`REVOKE CREATE ON SCHEMA public FROM PUBLIC; ALTER SCHEMA public OWNER TO "${R.owner}";`);
    await run(
      `CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL);
       INSERT INTO items SELECT g, 0 FROM generate_series(1, 5) g;
       GRANT USAGE ON SCHEMA public TO "${R.reader}", "${R.migrator}";
       GRANT SELECT ON items TO "${R.reader}";
       GRANT SELECT, INSERT, UPDATE ON items TO "${R.migrator}";`,
      DB,
      'owner',
    );
    root = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-s6-attached-'));
    const pwFile = async (role: 'reader' | 'migrator') => {
      const file = path.join(root, `${role}.pw`);
      await fs.writeFile(file, `${pw[role]}\n`, { mode: 0o600 });
      return file;
    };
    const config = path.join(root, 'attached.json');
    await fs.writeFile(
      config,
      JSON.stringify({
        databases: [
          {
            name: NAME,
            account_id: ACCOUNT,
            host: '127.0.0.1',
            port: testEnv().pgPort,
            database: DB,
            reader: { user: R.reader, password_file: await pwFile('reader') },
            migrator: { user: R.migrator, password_file: await pwFile('migrator') },
          },
        ],
      }),
      { mode: 0o600 },
    );
    const start = await startAttached(config, createLogger('s6-attached', 'silent'));
    registry = createAttachedRegistry();
    registry.apply(start.databases, {
      databases: [{ name: NAME, account_id: ACCOUNT, database_id: ID, status: 'attached', reason: null }],
    });
    assert.equal(registry.size(), 1, 'the clean entry passed its checks');
    explorer = testExecutor(admin, { attached: registry });
  });

  after(async () => {
    await explorer?.close();
    await admin?.end();
    await run(`DROP DATABASE IF EXISTS "${DB}" WITH (FORCE)`, 'postgres').catch(() => {});
    for (const r of Object.values(R)) await run(`DROP ROLE IF EXISTS "${r}"`, 'postgres').catch(() => {});
    if (root) await fs.rm(root, { recursive: true, force: true });
  });

  test('settings the owner plants on the database and on the reader do not loosen the rails', async () => {
    // The owner may set its database's defaults; a CREATEROLE owner (common: it made these roles)
    // may set the reader's too — done here by the cluster's admin on its behalf.
    await run(
      `ALTER DATABASE "${DB}" SET default_transaction_read_only = off;
       ALTER DATABASE "${DB}" SET statement_timeout = 0;
       ALTER DATABASE "${DB}" SET search_path = evil, public;`,
      DB,
      'owner',
    );
    await run(
      `ALTER ROLE "${R.reader}" SET default_transaction_read_only = off;
       ALTER ROLE "${R.reader}" IN DATABASE "${DB}" SET lock_timeout = 0;
       ALTER ROLE "${R.reader}" SET idle_in_transaction_session_timeout = 0;
       ALTER ROLE "${R.reader}" SET standard_conforming_strings = off;`,
      'postgres',
    );
    const before = await items();
    const ok = await explorer.runQuery(
      queryPayload(target, 'SELECT count(*) AS n FROM items'),
      new AbortController().signal,
    );
    assert.equal(ok.kind, 'rows', JSON.stringify(ok));
    await explorer.settled();
    const probe = await explorer.probeSession({ database_id: ID, name: NAME });
    assert.equal(probe.readOnlyDefault, 'on');
    assert.equal(probe.user, R.reader);
    // A write by a view's side effect: the owner's function writes as its caller (the reader).
    await run(
      `CREATE FUNCTION public.bump() RETURNS int LANGUAGE sql VOLATILE AS 'UPDATE public.items SET qty = qty + 1 RETURNING 1';
       CREATE VIEW public.innocent AS SELECT id FROM public.items;
       GRANT SELECT ON public.innocent TO "${R.reader}";
       GRANT UPDATE ON public.items TO "${R.reader}";
       CREATE OR REPLACE VIEW public.innocent AS SELECT id, public.bump() AS b FROM public.items;`,
      DB,
      'owner',
    );
    const w = await explorer.runQuery(
      queryPayload(target, 'SELECT * FROM innocent'),
      new AbortController().signal,
    );
    assert.equal(w.kind, 'error', JSON.stringify(w));
    if (w.kind === 'error') assert.equal(w.error.sqlstate, '25006', JSON.stringify(w.error));
    assert.equal(await items(), before, 'the reader wrote through the explorer');
    await run(
      `ALTER DATABASE "${DB}" RESET ALL; REVOKE UPDATE ON public.items FROM "${R.reader}";`,
      DB,
      'owner',
    );
    await run(
      `ALTER ROLE "${R.reader}" RESET ALL; ALTER ROLE "${R.reader}" IN DATABASE "${DB}" RESET ALL;`,
      'postgres',
    );
  });

  test('a view whose function leaves session state behind: the kept connection is never reused dirty', async () => {
    await run(
      `CREATE FUNCTION public.litter() RETURNS int LANGUAGE plpgsql VOLATILE AS $f$
       BEGIN
         PERFORM pg_catalog.set_config('search_path', 'evil', false);
         PERFORM pg_catalog.set_config('statement_timeout', '0', false);
         PERFORM pg_catalog.set_config('default_transaction_read_only', 'off', false);
         PERFORM pg_catalog.pg_advisory_lock(4242);
         BEGIN EXECUTE 'LISTEN s6_litter'; EXCEPTION WHEN OTHERS THEN NULL; END;
         BEGIN EXECUTE 'CREATE TEMP TABLE s6_left (x int)'; EXCEPTION WHEN OTHERS THEN NULL; END;
         RETURN 1;
       END $f$;
       CREATE VIEW public.litterbox AS SELECT public.litter() AS x;
       GRANT SELECT ON public.litterbox TO "${R.reader}";`,
      DB,
      'owner',
    );
    const o = await explorer.runQuery(
      queryPayload(target, 'SELECT * FROM litterbox'),
      new AbortController().signal,
    );
    assert.equal(o.kind, 'rows', JSON.stringify(o));
    await explorer.settled();
    // The next queries run under the rails (the guard refuses a session whose search_path, timeouts
    // or read-only mode are not the explorer's, so a dirty connection reused would fail here).
    for (let i = 0; i < 3; i++) {
      const next = await explorer.runQuery(
        queryPayload(target, 'SELECT count(*) AS n FROM items'),
        new AbortController().signal,
      );
      assert.equal(next.kind, 'rows', JSON.stringify(next));
      await explorer.settled();
    }
    await explorer.settled();
    const probe = await explorer.probeSession({ database_id: ID, name: NAME });
    assert.deepEqual(
      [probe.advisory, probe.listening, probe.temp, probe.prepared, probe.cursors, probe.readOnlyDefault],
      [0, 0, 0, 0, 0, 'on'],
    );
    // No backend of the reader holds the advisory lock any more.
    const held = await admin.query(
      `SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE l.locktype = 'advisory' AND l.objid = 4242 AND a.usename = $1`,
      [R.reader],
    );
    assert.equal(held.rowCount, 0, 'a dirty explorer connection was kept');
  });

  test("a view that switches the statement timeout off mid-transaction still ends at the explorer's timeout", async () => {
    await run(
      `CREATE FUNCTION public.slow() RETURNS int LANGUAGE plpgsql VOLATILE AS $f$
       BEGIN
         PERFORM pg_catalog.set_config('statement_timeout', '0', true);
         PERFORM pg_catalog.set_config('statement_timeout', '0', false);
         PERFORM pg_catalog.pg_sleep(8);
         RETURN 1;
       END $f$;
       CREATE VIEW public.sleepy AS SELECT public.slow() AS x;
       GRANT SELECT ON public.sleepy TO "${R.reader}";`,
      DB,
      'owner',
    );
    const started = Date.now();
    const o = await explorer.runQuery(
      queryPayload(target, 'SELECT * FROM sleepy', { statement_timeout_ms: 1_000 }),
      new AbortController().signal,
    );
    assert.equal(o.kind, 'error', JSON.stringify(o));
    if (o.kind === 'error') assert.equal(o.error.sqlstate, '57014');
    assert.ok(Date.now() - started < 6_000, `ran ${Date.now() - started} ms`);
    await explorer.settled();
  });

  test('a trigger the owner plants for the migrator leaves nothing in the kept execution login; its rows are counted', async () => {
    const h = await createExecutionHarness(admin);
    const replay = createReplayCache({ file: path.join(h.stateDir, REPLAY_CACHE_FILE), maxEntries: 1_000 });
    const access = clusterAccess(TEST_AGENT_KEY);
    const log = createLogger('s6-exec', 'silent');
    const ex = createExecutionExecutor({
      verifier: createAgentVerifier({
        keys: await openPinnedKeys({ stateDir: h.stateDir, fetchKeys: null, log }),
        nodeId: TEST_NODE,
        capabilities: ['reader', 'migrator'],
        replay,
      }),
      roles: createExecutionRoles({ admin, key: TEST_AGENT_KEY }),
      admin,
      pgHost: access.pgHost,
      pgPort: access.pgPort,
      log,
      attached: registry,
    });
    const shop = { id: ID, name: NAME } as Tenant;
    try {
      await run(
        `CREATE TABLE public.shadow (id int, qty int);
         GRANT INSERT ON public.shadow TO "${R.migrator}";
         CREATE FUNCTION public.plant() RETURNS trigger LANGUAGE plpgsql AS $f$
         BEGIN
           PERFORM pg_catalog.set_config('search_path', 'evil', false);
           PERFORM pg_catalog.set_config('statement_timeout', '0', false);
           PERFORM pg_catalog.set_config('row_security', 'off', false);
           PERFORM pg_catalog.pg_advisory_lock(7777);
           INSERT INTO public.shadow SELECT g, g FROM pg_catalog.generate_series(1, 50) g;
           RETURN NULL;
         END $f$;
         CREATE TRIGGER plant AFTER UPDATE ON public.items FOR EACH STATEMENT EXECUTE FUNCTION public.plant();`,
        DB,
        'owner',
      );
      const before = await items();
      // Approved for 1 row: the trigger's 50 more must be counted and refuse the commit.
      const o = await ex.execute(
        signedRequest(h.ring, shop, { sql: 'UPDATE items SET qty = qty + 1 WHERE id = 1', approvedRows: 1 }),
        new AbortController().signal,
      );
      assert.notEqual(o.kind === 'executed' && o.committed, true, JSON.stringify(o));
      assert.equal(await items(), before);
      // Approved for what it really changes (51 rows): committed; then the kept login is reused.
      const ok = await ex.execute(
        signedRequest(h.ring, shop, { sql: 'UPDATE items SET qty = qty + 1 WHERE id = 1', approvedRows: 51 }),
        new AbortController().signal,
      );
      assert.equal(ok.kind, 'executed', JSON.stringify(ok));
      for (let i = 0; i < 2; i++) {
        const who = await ex.execute(
          signedRequest(h.ring, shop, {
            sql: "SELECT current_setting('search_path') AS sp, current_setting('statement_timeout') AS st, current_setting('row_security') AS rs, (SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()) AS locks",
            capability: 'migrator',
            statementTimeoutMs: 5_000,
          }),
          new AbortController().signal,
        );
        assert.equal(who.kind, 'executed', JSON.stringify(who));
        if (who.kind === 'executed') assert.deepEqual(who.result?.rows, [['public', '5s', 'on', 0]]);
      }
      const held = await admin.query(
        `SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE l.locktype = 'advisory' AND l.objid = 7777 AND a.usename = $1`,
        [R.migrator],
      );
      assert.equal(held.rowCount, 0, 'a kept execution login still holds the planted lock');
    } finally {
      await run('DROP TRIGGER IF EXISTS plant ON public.items', DB, 'owner').catch(() => {});
      await ex.close();
      replay.close();
      await h.close();
    }
  });

  test('rights the owner grants the reader after the agent checked it never let the explorer write', async () => {
    // The checks ran once, at start; the owner now gives the reader write rights and a table.
    await run(
      `GRANT INSERT, UPDATE, DELETE, TRUNCATE ON public.items TO "${R.reader}"; GRANT CREATE ON SCHEMA public TO "${R.reader}";`,
      DB,
      'owner',
    );
    const before = await items();
    const open = testExecutor(admin, {
      attached: registry,
      validate: () => ({ ok: true as const, kind: 'select' as const, redacted: '' }),
    });
    try {
      // The explorer sends only a query (a cursor): a write can only ride in a function or a lock.
      for (const sql of [
        'SELECT public.bump()',
        'SELECT * FROM innocent',
        'SELECT * FROM items FOR UPDATE',
      ]) {
        const o = await open.runQuery(queryPayload(target, sql), new AbortController().signal);
        assert.equal(o.kind, 'error', `${sql}: ${JSON.stringify(o)}`);
        if (o.kind === 'error') assert.equal(o.error.sqlstate, '25006', `${sql}: ${JSON.stringify(o.error)}`);
      }
    } finally {
      await open.close();
    }
    assert.equal(await items(), before);
    await run(
      `REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON public.items FROM "${R.reader}"; REVOKE CREATE ON SCHEMA public FROM "${R.reader}";`,
      DB,
      'owner',
    );
  });
});

/**
 * A real target: node B is a second PostgreSQL cluster and PgBouncer with a real agent and a backup
 * directory of its own; the source is a node driven by hand (a compromised one). It holds the move
 * key (its move_out lease gives it) and makes an archive of the move under it, then alters it
 * before sending: the target must refuse it before it makes anything.
 */
describe('the move archive relay: a compromised source against a real target', () => {
  let planeB: DataPlane;
  let rootB: string;
  let agentB: RunningAgent | null = null;
  let src: FakeAgent;
  let dirB: string;

  before(async () => {
    const env = testEnv();
    const base = await listening();
    rootB = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-s6-node-b-'));
    await fs.chmod(rootB, 0o711);
    const layout = dataLayout(path.join(rootB, 'data'));
    const portB = await freePort();
    planeB = await startDataPlane({
      layout,
      ports: { postgres: await freePort(), pooler: portB },
      user: resolveServiceUser(),
      unsafeFast: true,
      binaries: { pgBin: env.pgBin, pgbouncerBin: env.pgbouncerBin },
      log: () => {},
    });
    dirB = path.join(rootB, 'backups');
    await fs.mkdir(dirB, { mode: 0o700 });
    const stateB = path.join(rootB, 'agent');
    await fs.mkdir(stateB, { mode: 0o700 });
    const { token } = await s.nodes.createEnrollment('s6-real-b', 10);
    agentB = await startAgent(
      agentConfigSchema.parse({
        serverUrl: base,
        stateDir: stateB,
        enrollmentToken: token,
        adminDatabaseUrl: planeB.adminUrl,
        poolerDir: layout.pooler,
        poolerPort: portB,
        poolerAdminPassword: planeB.poolerAdminPassword,
        poolerPublicHost: '127.0.0.1',
        logLevel: 'silent',
        pollWaitMs: 20_000,
        explorerChannel: false,
        warmPoolSize: 0,
        backupDir: dirB,
      }),
      { log: createLogger('agent-b', 'silent') },
    );
    src = await enrollFakeAgent(s, 's6-evil-src');
  });

  after(async () => {
    await agentB?.stop().catch(() => {});
    await planeB?.stop().catch(() => {});
    if (rootB) await fs.rm(rootB, { recursive: true, force: true });
  });

  /** Every file under `dir`, relative. */
  async function filesUnder(dir: string): Promise<string[]> {
    const out: string[] = [];
    const walk = async (d: string) => {
      for (const e of await fs.readdir(d, { withFileTypes: true }).catch(() => [])) {
        const p = path.join(d, e.name);
        if (e.isDirectory()) await walk(p);
        else out.push(path.relative(dir, p));
      }
    };
    await walk(dir);
    return out;
  }

  for (const [label, alter] of [
    [
      'one byte flipped in the middle',
      (a: Buffer) => {
        const b = Buffer.from(a);
        const i = Math.floor(b.length / 2);
        b[i] = (b[i] ?? 0) ^ 0x01;
        return b;
      },
    ],
    ['cut before its final chunk', (a: Buffer) => a.subarray(0, a.length - 200)],
  ] as const) {
    test(`an archive ${label} is refused by the target before it makes anything`, async () => {
      const name = uniq('evil');
      await createOn(src, acme, 's6-evil-src', name);
      const dbId = (await api(acme.headers, 'GET', `/v1/databases/${name}`)).json().id as string;
      const m = await api(acme.headers, 'POST', `/v1/databases/${name}/move`, { node: 's6-real-b' });
      assert.equal(m.statusCode, 202, m.body);
      const moveId = m.json().id as string;
      const out = await nextJob(src, 'database.move_out');
      // The source's lease hands it the move key: it can make a genuine archive of the move.
      const k = await s.app.inject({
        method: 'POST',
        url: `/v1/agent/jobs/${out.id}/backup-key`,
        headers: { authorization: `Bearer ${src.token}` },
        payload: { attempt: out.attempt },
      });
      assert.equal(k.statusCode, 200, k.body);
      const key = Buffer.from(k.json().data_key as string, 'base64url');
      const plain = randomBytes(300_000);
      const enc = createArchiveEncryptor(
        key,
        { backupId: moveId, databaseId: dbId },
        { chunkSize: 64 * 1024 },
      );
      const parts: Buffer[] = [];
      enc.on('data', (c: Buffer) => parts.push(c));
      const ended = new Promise((r) => enc.once('end', r));
      enc.end(plain);
      await ended;
      const whole = Buffer.concat(parts);
      const archive = alter(whole);
      const done = await s.app.inject({
        method: 'POST',
        url: `/v1/agent/jobs/${out.id}/complete`,
        headers: { authorization: `Bearer ${src.token}` },
        payload: { attempt: out.attempt, result: { ...moveOutResult(moveId), size_bytes: whole.length } },
      });
      assert.equal(done.statusCode, 200, done.body);
      // The target takes move_in and asks for the archive: the source sends the altered one.
      const dl = await (async () => {
        for (let i = 0; i < 300; i++) {
          const j = await src.poll();
          if (j?.kind === 'backup.download') return j;
          if (j) await src.fail(j.id, j.attempt, 'test: not run', false);
          await new Promise((r) => setTimeout(r, 100));
        }
        throw new Error('the target never asked for the archive');
      })();
      const sent = await fetch(`${await listening()}/v1/agent/jobs/${dl.id}/archive?attempt=${dl.attempt}`, {
        method: 'POST',
        headers: {
          authorization: `Bearer ${src.token}`,
          'content-type': 'application/octet-stream',
          'x-bulwark-stream-token': String(dl.payload.stream_token),
        },
        body: archive,
        signal: AbortSignal.timeout(60_000),
      });
      await sent.arrayBuffer();
      // The move fails at the target (the source's thaw and clean-up jobs are this fake's to fail).
      let move: { status: string; error?: string } = { status: '' };
      for (let i = 0; i < 600 && move.status !== 'failed' && move.status !== 'switched'; i++) {
        const j = await src.poll();
        if (j) await src.fail(j.id, j.attempt, 'test: not run', false);
        move = (await api(acme.headers, 'GET', `/v1/databases/${name}/move`)).json();
        if (move.status !== 'failed' && move.status !== 'switched')
          await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(move.status, 'failed', JSON.stringify(move));
      assert.match(
        String(move.error),
        /backup archive refused: .*(authentication|truncated)/,
        String(move.error),
      );
      // Nothing was made on B: no database, no role of that name.
      const c = new pg.Client({ connectionString: planeB.adminUrl });
      await c.connect();
      try {
        const dbs = await c.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
        assert.equal(dbs.rowCount, 0, 'the target made the database');
        const roles = await c.query('SELECT rolname FROM pg_roles WHERE rolname LIKE $1', [`${name}%`]);
        assert.deepEqual(roles.rows, [], 'the target made roles');
      } finally {
        await c.end();
      }
      // The altered archive does not stay in the target's store (bounded wait for its clean-up).
      let left: string[] = [];
      for (let i = 0; i < 200; i++) {
        left = (await filesUnder(dirB)).filter((f) => f.includes(moveId));
        if (left.length === 0) break;
        // The target's clean-up runs after the source's thaw (one database's jobs run in order).
        const j = await src.poll();
        if (j) await src.fail(j.id, j.attempt, 'test: not run', false);
        await new Promise((r) => setTimeout(r, 100));
      }
      assert.deepEqual(left, [], 'the altered archive stays in the target store');
      // The database is back on its source.
      assert.equal((await api(acme.headers, 'GET', `/v1/databases/${name}`)).json().node, 's6-evil-src');
    });
  }
});
