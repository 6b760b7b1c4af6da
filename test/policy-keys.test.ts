// API keys made by signed-in users: never above their creator's role, and gone with the creator's
// suspension (or their leaving the account, or a role below the key) — on a real control database.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createAccount } from './helpers/databases.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { createTestUser, signIn, type TestUser } from './helpers/session-users.ts';

let s: TestServer;
let acme: string;
let root: TestUser;

before(async () => {
  s = await createTestServer();
  await s.keyAuth.listenerReady();
  acme = await createAccount(s, 'acme');
  root = await createTestUser(s, { username: 'root', platformAdmin: true });
});
after(() => s.stop());

const bearer = (t: string) => ({ authorization: `Bearer ${t}` });
async function createKey(user: TestUser, body: Record<string, unknown>) {
  return s.app.inject({
    method: 'POST',
    url: '/v1/keys',
    headers: (await signIn(s, user)).headers,
    payload: { name: 'made by a person', ...body },
  });
}
const whoami = (key: string) => s.app.inject({ url: '/v1/whoami', headers: bearer(key) });

test('a key never exceeds its creator’s role: level and explorer', async () => {
  const viewer = await createTestUser(s, {
    username: 'vi',
    memberships: [{ accountId: acme, role: 'viewer' }],
  });
  const member = await createTestUser(s, {
    username: 'me',
    memberships: [{ accountId: acme, role: 'member' }],
  });
  const owner = await createTestUser(s, {
    username: 'ow',
    memberships: [{ accountId: acme, role: 'owner' }],
  });
  const cases: [TestUser, Record<string, unknown>, number][] = [
    [viewer, { level: 'read' }, 201],
    [viewer, { level: 'write' }, 403],
    [viewer, { level: 'admin' }, 403],
    [member, { level: 'write' }, 201],
    [member, { level: 'admin' }, 403],
    [member, { level: 'read', explorer: true }, 403],
    [owner, { level: 'admin', explorer: true }, 201],
  ];
  for (const [user, body, status] of cases) {
    const r = await createKey(user, body);
    assert.equal(r.statusCode, status, `${user.username} ${JSON.stringify(body)}: ${r.body}`);
    if (status === 403) assert.equal(r.json().error.code, 'forbidden');
    if (status !== 201) continue;
    const me = await whoami(r.json().key);
    assert.equal(me.statusCode, 200, me.body);
    assert.equal(me.json().key.level, body.level);
    const row = await s.db.pool.query(
      'SELECT created_by_user_id, created_by_key_id FROM api_keys WHERE id = $1',
      [r.json().id],
    );
    assert.deepEqual(row.rows[0], { created_by_user_id: user.id, created_by_key_id: null });
  }
  const refused = await s.db.pool.query(
    'SELECT count(*)::int AS n FROM api_keys WHERE created_by_user_id = ANY($1)',
    [[viewer.id, member.id, owner.id]],
  );
  assert.equal(refused.rows[0].n, 3, 'a refused key is not created');
});

test('a user’s key dies with their suspension, and comes back with their reactivation', async () => {
  const maker = await createTestUser(s, {
    username: 'maker',
    memberships: [{ accountId: acme, role: 'member' }],
  });
  const made = await createKey(maker, { level: 'write' });
  assert.equal(made.statusCode, 201, made.body);
  const key = made.json().key as string;
  assert.equal((await whoami(key)).statusCode, 200, 'cached now');
  const admin = (await signIn(s, root)).headers;
  const post = (url: string) => s.app.inject({ method: 'POST', url, headers: admin });
  assert.equal((await post(`/v1/users/${maker.id}/suspend`)).statusCode, 200);
  assert.equal((await whoami(key)).statusCode, 401, 'the very next request');
  assert.equal((await post(`/v1/users/${maker.id}/reactivate`)).statusCode, 200);
  assert.equal((await whoami(key)).statusCode, 200);
});

test('a user’s key stops when its creator leaves the account or drops below its level', async () => {
  const a = await createTestUser(s, {
    username: 'leaver',
    memberships: [{ accountId: acme, role: 'member' }],
  });
  const b = await createTestUser(s, {
    username: 'demoted',
    memberships: [{ accountId: acme, role: 'member' }],
  });
  const c = await createTestUser(s, {
    username: 'stays',
    memberships: [{ accountId: acme, role: 'member' }],
  });
  const keyA = (await createKey(a, { level: 'write' })).json().key as string;
  const keyB = (await createKey(b, { level: 'write' })).json().key as string;
  const keyC = (await createKey(c, { level: 'read' })).json().key as string;
  await s.db.pool.query('DELETE FROM memberships WHERE user_id = $1', [a.id]);
  await s.db.pool.query(`UPDATE memberships SET role = 'viewer' WHERE user_id = ANY($1)`, [[b.id, c.id]]);
  assert.equal((await whoami(keyA)).statusCode, 401, 'creator left the account');
  assert.equal((await whoami(keyB)).statusCode, 401, 'a write key of a viewer');
  assert.equal((await whoami(keyC)).statusCode, 200, 'a read key of a viewer');
});

test('the keys a user’s key made stop with it when the user drops below it', async () => {
  const user = await createTestUser(s, {
    username: 'chain',
    memberships: [{ accountId: acme, role: 'admin' }],
  });
  const parent = (await createKey(user, { level: 'admin' })).json();
  const child = await s.app.inject({
    method: 'POST',
    url: '/v1/keys',
    headers: bearer(parent.key),
    payload: { name: 'child', level: 'read' },
  });
  assert.equal(child.statusCode, 201, child.body);
  assert.equal((await whoami(child.json().key)).statusCode, 200);
  await s.db.pool.query(`UPDATE memberships SET role = 'member' WHERE user_id = $1`, [user.id]);
  // No route changes roles yet; one that does must evict the user's keys as suspension does. Here the
  // cache is emptied by hand, so the next lookup reads the database.
  for (const k of [parent, child.json()]) s.keyAuth.evict(k.prefix.slice(4));
  assert.equal((await whoami(parent.key)).statusCode, 401, 'an admin key of a member');
  assert.equal((await whoami(child.json().key)).statusCode, 401, 'its child, though a read key');
});
