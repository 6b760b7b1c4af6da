/**
 * A restore into a new database goes on the backup's node only if placement would put a new
 * database there (ADR 0030): a cordoned or unhealthy node refuses it (503, nothing made), as it
 * refuses a create. A fully wired server; the node's agent driven by hand.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createAccount, enrollFakeAgent, type FakeAgent } from './helpers/databases.ts';
import { dumpResult } from './helpers/dump-result.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { createTestUser, signIn } from './helpers/session-users.ts';

let s: TestServer;
let agent: FakeAgent;
let key: TestKey;
let root: Record<string, string>;
let backupId: string;

const api = (headers: Record<string, string>, method: string, url: string, payload?: object) =>
  s.app.inject({ method: method as 'GET', url, headers, ...(payload ? { payload } : {}) });

async function nextJob(kind: string) {
  for (let i = 0; i < 30; i++) {
    const job = await agent.poll();
    if (!job) continue;
    if (job.kind === kind) return job;
    assert.equal(await agent.complete(job.id, job.attempt, {}), 200);
  }
  throw new Error(`no ${kind} job`);
}

before(async () => {
  s = await createTestServer({ nodeUnhealthyAfterSeconds: 3600 });
  await createAccount(s, 'acme');
  agent = await enrollFakeAgent(s, 'rp-a');
  key = await createTestKey(s, { account: 'acme' });
  root = (await signIn(s, await createTestUser(s, { username: 'rproot', platformAdmin: true }))).headers;
  const c = await api(key.headers, 'POST', '/v1/databases', { name: 'rp' });
  assert.equal(c.statusCode, 202, c.body);
  const create = await nextJob('database.create');
  assert.equal(await agent.complete(create.id, create.attempt, {}), 200);
  const b = await api(key.headers, 'POST', '/v1/databases/rp/backups');
  assert.equal(b.statusCode, 202, b.body);
  backupId = b.json().id;
  const job = await nextJob('backup.create');
  assert.equal(await agent.complete(job.id, job.attempt, dumpResult(backupId)), 200);
  const done = await api(key.headers, 'GET', `/v1/databases/rp/backups/${backupId}`);
  assert.equal(done.json().status, 'completed', done.body);
});
after(() => s?.stop());

const madeDatabases = async (name: string) =>
  (await s.db.pool.query('SELECT 1 FROM databases WHERE name = $1', [name])).rowCount;

test('a restore into a new database is refused on a cordoned node, nothing made', async () => {
  assert.equal((await api(root, 'POST', `/v1/nodes/${agent.nodeId}/cordon`)).statusCode, 200);
  try {
    const r = await api(key.headers, 'POST', '/v1/databases/rp/restore', {
      backup_id: backupId,
      new_name: 'rp_cordoned',
    });
    assert.equal(r.statusCode, 503, r.body);
    assert.match(r.json().error.message, /cordoned/);
    assert.equal(await madeDatabases('rp_cordoned'), 0);
  } finally {
    await api(root, 'POST', `/v1/nodes/${agent.nodeId}/uncordon`);
  }
});

test('a restore into a new database is refused on an unhealthy node; once healthy it goes through', async () => {
  await s.db.pool.query('UPDATE nodes SET unhealthy_since = now() WHERE id = $1', [agent.nodeId]);
  try {
    const r = await api(key.headers, 'POST', '/v1/databases/rp/restore', {
      backup_id: backupId,
      new_name: 'rp_unhealthy',
    });
    assert.equal(r.statusCode, 503, r.body);
    assert.match(r.json().error.message, /unhealthy/);
    assert.equal(await madeDatabases('rp_unhealthy'), 0);
  } finally {
    await s.db.pool.query('UPDATE nodes SET unhealthy_since = NULL WHERE id = $1', [agent.nodeId]);
  }
  const ok = await api(key.headers, 'POST', '/v1/databases/rp/restore', {
    backup_id: backupId,
    new_name: 'rp_ok',
  });
  assert.equal(ok.statusCode, 202, ok.body);
  const d = await api(key.headers, 'GET', '/v1/databases/rp_ok');
  assert.equal(d.json().node, 'rp-a');
});
