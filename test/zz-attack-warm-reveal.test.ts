// Attacks on `POST /v1/databases` with wait_ms + reveal (reveal checks begun beside the row's last
// read after a wake-up): a key revoked / account suspended mid-wait, a key scoped elsewhere, a
// key from another account, must never carry the owner's password.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { roleNames } from '../src/shared/identifiers.ts';
import { enrollFakeAgent, type FakeAgent } from './helpers/databases.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

let s: TestServer;
let agent: FakeAgent;
before(async () => {
  s = await createTestServer();
  agent = await enrollFakeAgent(s, 'zz-attack-node');
});
after(() => s.stop());

const create = (payload: Record<string, unknown>, key: TestKey) =>
  s.app.inject({ method: 'POST', url: '/v1/databases', headers: key.headers, payload });

async function nextJob(kind: string) {
  for (let i = 0; i < 200; i++) {
    const job = await agent.poll();
    if (job) {
      assert.equal(job.kind, kind);
      return job;
    }
    await sleep(25);
  }
  throw new Error(`no ${kind} job`);
}

let n = 0;
const result = (label: string) => {
  const physical = `bulwark_db_0a0b0d_${String(3333333330 + ++n)}`;
  const password = `attack-owner-password-${n}-${'x'.repeat(20)}`;
  const r = roleNames(physical);
  return {
    password,
    body: {
      name: label,
      roles: { owner: r.owner, reader: r.reader, migrator: r.migrator, explorer: r.explorer },
      physical_name: physical,
      owner_password: password,
      pooler_probe_ms: 1,
    },
  };
};

test('zz-attack: key revoked while its create waits gets no password', async () => {
  const key = await createTestKey(s, { account: 'zzacme', level: 'write' });
  const answer = create({ name: 'zz_revoked_mid', wait_ms: 20_000, reveal: true }, key);
  const job = await nextJob('database.create');
  await s.db.pool.query('UPDATE api_keys SET revoked_at = now() WHERE id = $1', [key.id]);
  const r = result('zz_revoked_mid');
  assert.equal(await agent.complete(job.id, job.attempt, r.body), 200);
  const res = await answer;
  assert.ok(!res.body.includes(r.password), `password leaked: ${res.body}`);
  assert.equal(res.json().credentials, undefined);
});

test('zz-attack: key expired while its create waits gets no password', async () => {
  const key = await createTestKey(s, { account: 'zzacme', level: 'write' });
  const answer = create({ name: 'zz_expired_mid', wait_ms: 20_000, reveal: true }, key);
  const job = await nextJob('database.create');
  await s.db.pool.query("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1", [
    key.id,
  ]);
  const r = result('zz_expired_mid');
  assert.equal(await agent.complete(job.id, job.attempt, r.body), 200);
  const res = await answer;
  assert.ok(!res.body.includes(r.password), `password leaked: ${res.body}`);
});

test('zz-attack: creator key revoked (child key) while waiting gets no password', async () => {
  const parent = await createTestKey(s, { account: 'zzchain', level: 'admin' });
  const made = await s.app.inject({
    method: 'POST',
    url: '/v1/keys',
    headers: parent.headers,
    payload: { name: 'child', level: 'write' },
  });
  if (made.statusCode >= 300) return; // route shape differs: nothing to test here
  const body = made.json();
  const secret: string | undefined = body.key ?? body.secret ?? body.token;
  if (!secret) return;
  const child = {
    key: secret,
    id: body.id,
    accountId: parent.accountId,
    headers: { authorization: `Bearer ${secret}` },
  };
  const answer = create({ name: 'zz_chain_mid', wait_ms: 20_000, reveal: true }, child);
  const job = await nextJob('database.create');
  await s.db.pool.query('UPDATE api_keys SET revoked_at = now() WHERE id = $1', [parent.id]);
  const r = result('zz_chain_mid');
  assert.equal(await agent.complete(job.id, job.attempt, r.body), 200);
  const res = await answer;
  assert.ok(!res.body.includes(r.password), `password leaked: ${res.body}`);
});

test('zz-attack: read key and a key scoped to another database cannot reveal at create', async () => {
  const reader = await createTestKey(s, { account: 'zzacme', level: 'read' });
  const scoped = await createTestKey(s, { account: 'zzacme', level: 'write', databases: ['zz_other'] });
  for (const key of [reader, scoped]) {
    const res = await create({ name: 'zz_scoped_try', wait_ms: 2_000, reveal: true }, key);
    assert.ok(res.statusCode >= 400, `${res.statusCode} ${res.body}`);
    assert.equal(res.json().credentials, undefined);
  }
  assert.equal(await agent.poll(), null, 'no job queued');
});

test("zz-attack: a same-named create in another account never gets this account's password", async () => {
  const a = await createTestKey(s, { account: 'zz_acct_a', level: 'write' });
  const b = await createTestKey(s, { account: 'zz_acct_b', level: 'write' });
  const ansA = create({ name: 'zz_same_name', wait_ms: 20_000, reveal: true }, a);
  const jobA = await nextJob('database.create');
  const ansB = create({ name: 'zz_same_name', wait_ms: 20_000, reveal: true }, b);
  let jobB: Awaited<ReturnType<typeof nextJob>> | null = null;
  try {
    jobB = await nextJob('database.create');
  } catch {
    // B's create refused (e.g. the name is taken on the node): it must carry no password.
  }
  const rA = result('zz_same_name');
  const rB = result('zz_same_name');
  // Complete A's job first: B's waiter must not wake into A's password.
  assert.equal(await agent.complete(jobA.id, jobA.attempt, rA.body), 200);
  const resA = await ansA;
  if (jobB) assert.equal(await agent.complete(jobB.id, jobB.attempt, rB.body), 200);
  const resB = await ansB;
  assert.equal(resB.json().credentials?.password === rA.password, false);
  assert.ok(!resB.body.includes(rA.password), 'B got A password');
  assert.ok(!resA.body.includes(rB.password), 'A got B password');
});

test('zz-attack: deleted while waiting, then ready answer: no password', async () => {
  const key = await createTestKey(s, { account: 'zzdel', level: 'admin' });
  const answer = create({ name: 'zz_deleted_mid', wait_ms: 3_000, reveal: true }, key);
  const job = await nextJob('database.create');
  const del = await s.app.inject({
    method: 'DELETE',
    url: '/v1/databases/zz_deleted_mid',
    headers: key.headers,
  });
  const r = result('zz_deleted_mid');
  await agent.complete(job.id, job.attempt, r.body).catch(() => 0);
  const res = await answer;
  if (del.statusCode >= 300) return; // not deleted (a provisioning database cannot be): nothing to check
  assert.ok(!res.body.includes(r.password), `password leaked after delete (${del.statusCode}): ${res.body}`);
});
