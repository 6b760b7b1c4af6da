// Security review (ADR 0034), server half against a real server and a hand-driven agent: a
// reported physical name never lands on another account's database, jobs are handed out with
// the caller's own physical name only, and many waiting creates hold no control-DB connection.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { enqueueJob } from '../src/server/modules/jobs/jobs.repo.ts';
import { roleNames } from '../src/shared/identifiers.ts';
import { enrollFakeAgent, type FakeAgent } from './helpers/databases.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

let s: TestServer;
let agent: FakeAgent;
let a: TestKey;
let b: TestKey;
before(async () => {
  s = await createTestServer();
  agent = await enrollFakeAgent(s, 'zz-node');
  a = await createTestKey(s, { account: 'zz-sa', level: 'write' });
  b = await createTestKey(s, { account: 'zz-sb', level: 'write' });
});
after(() => s.stop());

const api = (k: TestKey, method: 'GET' | 'POST', url: string, payload?: Record<string, unknown>) =>
  s.app.inject({ method, url, headers: k.headers, ...(payload ? { payload } : {}) });

async function nextJob(kind: string) {
  for (let i = 0; i < 400; i++) {
    const job = await agent.poll();
    if (job) {
      assert.equal(job.kind, kind, JSON.stringify(job));
      return job;
    }
    await sleep(25);
  }
  throw new Error(`no ${kind} job`);
}

const warm = (label: string, physical: string, password = 'p'.repeat(40)) => {
  const r = roleNames(physical);
  return {
    name: label,
    roles: { owner: r.owner, reader: r.reader, migrator: r.migrator, explorer: r.explorer },
    physical_name: physical,
    owner_password: password,
    pooler_probe_ms: 1,
  };
};

const PHYS_A = 'bulwark_db_abcdef_0000000001';

/** The name on the node of the account's live database of this label. */
const physicalOf = async (k: TestKey, label: string): Promise<string> =>
  (
    await s.db.pool.query<{ n: string }>(
      'SELECT coalesce(pg_name, name) AS n FROM databases WHERE account_id = $1 AND name = $2 AND deleted_at IS NULL',
      [k.accountId, label],
    )
  ).rows[0]!.n;

test("A warm; a later create reporting A's physical name (or B's) is refused, never merged", async () => {
  assert.equal((await api(a, 'POST', '/v1/databases', { name: 'shop' })).statusCode, 202);
  let job = await nextJob('database.create');
  assert.equal(await agent.complete(job.id, job.attempt, warm('shop', PHYS_A)), 200);
  // B creates a database; the (compromised or confused) agent claims it is A's physical database.
  assert.equal((await api(b, 'POST', '/v1/databases', { name: 'other' })).statusCode, 202);
  job = await nextJob('database.create');
  const otherGenerated = job.payload.name;
  assert.notEqual(await agent.complete(job.id, job.attempt, warm('other', PHYS_A, 'q'.repeat(40))), 200);
  const rows = await s.db.pool.query<{ name: string; pg_name: string | null; status: string }>(
    'SELECT name, pg_name, status FROM databases ORDER BY name',
  );
  const other = rows.rows.find((r) => r.name === 'other')!;
  assert.equal(other.status, 'failed');
  // It keeps the generated name it was queued under, never A's.
  assert.match(other.pg_name ?? '', /^bulwark_db_p_/);
  assert.equal(other.pg_name, otherGenerated);
  // B cannot reach A's physical database through the API.
  const conn = await api(b, 'GET', '/v1/databases/other/connection');
  assert.ok(!conn.body.includes(PHYS_A));
  // B has a cold 'cart' (under its generated name); a warm create of A reporting B's physical
  // name is refused too.
  assert.equal((await api(b, 'POST', '/v1/databases', { name: 'cart' })).statusCode, 202);
  job = await nextJob('database.create');
  assert.equal(await agent.complete(job.id, job.attempt, {}), 200);
  const cart = await physicalOf(b, 'cart');
  assert.equal(cart, job.payload.name);
  assert.equal((await api(a, 'POST', '/v1/databases', { name: 'cart2' })).statusCode, 202);
  job = await nextJob('database.create');
  const r = roleNames(cart);
  const code = await agent.complete(job.id, job.attempt, {
    name: 'cart2',
    roles: { owner: r.owner, reader: r.reader, migrator: r.migrator, explorer: r.explorer },
    physical_name: cart,
    owner_password: 'z'.repeat(40),
    pooler_probe_ms: 1,
  });
  assert.notEqual(code, 200);
  const cart2 = await s.db.pool.query('SELECT status, pg_name FROM databases WHERE name = $1', ['cart2']);
  assert.equal(cart2.rows[0].status, 'failed');
  assert.notEqual(cart2.rows[0].pg_name, cart);
});

test("jobs are handed out with the job's own database's physical name, never another account's", async () => {
  // B's rotate of 'cart' reaches the agent as its generated name; A's rotate of 'shop' as A's
  // physical name (a spare's).
  const cart = await physicalOf(b, 'cart');
  assert.match(cart, /^bulwark_db_p_/);
  assert.ok([200, 202].includes((await api(b, 'POST', '/v1/databases/cart/credentials/rotate')).statusCode));
  let job = await nextJob('database.rotate');
  assert.equal(job.payload.name, cart);
  assert.equal(await agent.complete(job.id, job.attempt, {}), 200);
  assert.ok([200, 202].includes((await api(a, 'POST', '/v1/databases/shop/credentials/rotate')).statusCode));
  job = await nextJob('database.rotate');
  assert.equal(job.payload.name, PHYS_A);
  assert.equal(await agent.complete(job.id, job.attempt, {}), 200);
  // A's job list shows A's label and never B's names; B's never A's physical name.
  // (Informational: B's own refused create names A's physical name in its failure reason,
  // `result refused: physical_name … is another database's on this node` — only when an agent
  // reports a colliding name.)
  const bJobs = (await api(b, 'GET', '/v1/jobs?limit=100')).json().items as {
    kind: string;
    last_error?: string | null;
    error?: string | null;
    payload?: unknown;
    result?: unknown;
  }[];
  for (const j of bJobs) {
    if (j.kind === 'database.rotate') assert.ok(!JSON.stringify(j).includes(PHYS_A));
  }
  assert.ok(!(await api(a, 'GET', '/v1/jobs?limit=100')).body.includes('"cart"'));
});

test("a key scoped to a warm-made database's label sees its jobs stored under the physical name, labelled", async () => {
  // Explorer, execution and access jobs are queued with the physical name (the agent acts on it).
  // (Queued on a cordoned node no agent polls: this test's agent must not meet them, nor does a
  // create land there.)
  const idle = (
    await s.db.pool.query<{ id: string }>(
      "INSERT INTO nodes (name, cordoned_at) VALUES ('zz-idle', now()) RETURNING id",
    )
  ).rows[0]!.id;
  const id = (
    await s.db.pool.query<{ id: string }>("SELECT id FROM databases WHERE name = 'shop' AND pg_name = $1", [
      PHYS_A,
    ])
  ).rows[0]!.id;
  const job = await enqueueJob(s.db.pool, {
    nodeId: idle,
    kind: 'explorer.query',
    accountId: a.accountId,
    payload: { database_id: id, name: PHYS_A, sql: 'SELECT 1' },
  });
  const scoped = await createTestKey(s, { account: 'zz-sa', level: 'read', databases: ['shop'] });
  const elsewhere = await createTestKey(s, { account: 'zz-sa', level: 'read', databases: ['nothing_here'] });
  const list = (await api(scoped, 'GET', '/v1/jobs?limit=100')).json().items as {
    id: number;
    database: string;
  }[];
  const mine = list.find((j) => j.id === job.id);
  assert.ok(mine, 'the scoped key sees the job of its database');
  assert.equal(mine.database, 'shop', 'shown by its label, not the physical name');
  assert.equal((await api(scoped, 'GET', `/v1/jobs/${job.id}`)).json().database, 'shop');
  // Another label's scope, or another account, does not see it (404 for the single job).
  const other = (await api(elsewhere, 'GET', '/v1/jobs?limit=100')).json().items as { id: number }[];
  assert.ok(!other.some((j) => j.id === job.id));
  assert.equal((await api(elsewhere, 'GET', `/v1/jobs/${job.id}`)).statusCode, 404);
  assert.equal((await api(b, 'GET', `/v1/jobs/${job.id}`)).statusCode, 404);
  // A job in B's account naming A's database id is B's to see, under its own name only.
  const forged = await enqueueJob(s.db.pool, {
    nodeId: idle,
    kind: 'explorer.query',
    accountId: b.accountId,
    payload: { database_id: id, name: 'cart' },
  });
  assert.equal((await api(b, 'GET', `/v1/jobs/${forged.id}`)).json().database, 'cart');
  assert.equal((await api(a, 'GET', `/v1/jobs/${forged.id}`)).statusCode, 404);
});

test('a key revoked while its create waits gets no password at ready (the reveal route would refuse it too)', async () => {
  const adminKey = await createTestKey(s, { account: 'zz-sa', level: 'admin' });
  const doomed = await createTestKey(s, { account: 'zz-sa', level: 'write' });
  const answer = api(doomed, 'POST', '/v1/databases', {
    name: 'revoked_wait',
    wait_ms: 20_000,
    reveal: true,
  });
  const job = await nextJob('database.create');
  // The account's admin revokes the key mid-wait (e.g. it leaked).
  const rev = await api(adminKey, 'DELETE' as 'GET', `/v1/keys/${doomed.id}`);
  assert.equal(rev.statusCode, 200, rev.body);
  // The revoked key is refused everywhere from now on, including the reveal route.
  assert.equal((await api(doomed, 'GET', '/v1/databases')).statusCode, 401);
  assert.equal((await api(doomed, 'POST', '/v1/databases/shop/credentials/reveal')).statusCode, 401);
  assert.equal(
    await agent.complete(
      job.id,
      job.attempt,
      warm('revoked_wait', 'bulwark_db_abcdef_00000000ff', 'r'.repeat(40)),
    ),
    200,
  );
  const res = await answer;
  // The waiting create, authorised before the revocation, checks the key again: no password.
  assert.equal(res.statusCode, 201, res.body);
  assert.equal(res.json().status, 'ready');
  assert.equal(res.json().credentials, undefined);
  assert.ok(!res.body.includes('r'.repeat(40)));
});

test('many parallel waiting creates hold no control-DB connection and the server keeps answering', async () => {
  const N = 30;
  const names = Array.from({ length: N }, (_, i) => `flood_${i}`);
  const waits = names.map((name) => api(a, 'POST', '/v1/databases', { name, wait_ms: 8_000, reveal: true }));
  await sleep(1_500);
  const t0 = Date.now();
  const list = await api(a, 'GET', '/v1/databases?limit=5');
  assert.equal(list.statusCode, 200);
  assert.ok(Date.now() - t0 < 2_000, `a list took ${Date.now() - t0} ms under ${N} waits`);
  // A waiting create that held a session would hold it all the time: the fewest busy sessions
  // over a few looks (the server's own background work comes and goes) stays small.
  let fewest = Number.POSITIVE_INFINITY;
  for (let i = 0; i < 5; i++) {
    const busy = await s.db.pool.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND state <> 'idle'",
    );
    fewest = Math.min(fewest, busy.rows[0]!.n);
    await sleep(100);
  }
  assert.ok(fewest <= 3, `control-DB sessions busy while waiting: ${fewest}`);
  // The agent finishes them all: every waiter answers ready with its own credentials.
  const made = await s.db.pool.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM databases WHERE name LIKE 'flood\\_%'",
  );
  const M = made.rows[0]!.n;
  assert.ok(M > 0, 'no flood create went through');
  let done = 0;
  while (done < M) {
    const job = await nextJob('database.create');
    assert.equal(await agent.complete(job.id, job.attempt, {}), 200);
    done++;
  }
  const all = await Promise.all(waits);
  const answers = all.filter((r) => r.statusCode !== 409 && r.statusCode !== 503 && r.statusCode !== 429);
  console.log('flood statuses', all.map((r) => r.statusCode).join(','));
  for (const res of answers) {
    assert.equal(res.statusCode, 201, res.body);
    assert.equal(res.json().status, 'ready');
    assert.ok(res.json().credentials?.password);
  }
  // Each got its own database's password.
  assert.equal(new Set(answers.map((r) => r.json().credentials.password)).size, answers.length);
});
