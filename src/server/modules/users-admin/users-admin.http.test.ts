// The admin API over people: users, their sessions, ending one — on a fully wired app and a real
// control database.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createAccount } from '../../../../test/helpers/databases.ts';
import { createTestKey } from '../../../../test/helpers/keys.ts';
import { createTestServer, type TestServer } from '../../../../test/helpers/server.ts';
import { createTestUser, signIn, type TestUser } from '../../../../test/helpers/session-users.ts';

let s: TestServer;
let acme: string;
let other: string;
let owner: TestUser;
let admin: TestUser;
let member: TestUser;
let stranger: TestUser;
let root: TestUser;

before(async () => {
  s = await createTestServer();
  acme = await createAccount(s, 'acme');
  other = await createAccount(s, 'other');
  owner = await createTestUser(s, { username: 'olga', memberships: [{ accountId: acme, role: 'owner' }] });
  admin = await createTestUser(s, { username: 'adam', memberships: [{ accountId: acme, role: 'admin' }] });
  member = await createTestUser(s, { username: 'mia', memberships: [{ accountId: acme, role: 'member' }] });
  stranger = await createTestUser(s, {
    username: 'sten',
    memberships: [{ accountId: other, role: 'owner' }],
  });
  root = await createTestUser(s, { username: 'root', platformAdmin: true });
});
after(() => s.stop());

const call = async (method: 'GET' | 'DELETE', url: string, who: { id: string } | { key: string }) => {
  const authorization = 'key' in who ? `Bearer ${who.key}` : (await signIn(s, who)).headers.authorization;
  return s.app.inject({ method, url, headers: { authorization } });
};
const jti = (token: string) =>
  JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()).jti as string;

test('GET /v1/users: every user for a platform admin, the account’s members for its owners and admins', async () => {
  const all = await call('GET', '/v1/users', root);
  assert.equal(all.statusCode, 200, all.body);
  const names = (r: { json(): { items: { username: string }[] } }) =>
    r
      .json()
      .items.map((u) => u.username)
      .sort();
  assert.deepEqual(names(all), ['adam', 'mia', 'olga', 'root', 'sten']);
  assert.ok(all.json().items.every((u: { role: unknown }) => u.role === null));

  for (const who of [owner, admin]) {
    const mine = await call('GET', '/v1/users', who);
    assert.equal(mine.statusCode, 200, mine.body);
    assert.deepEqual(names(mine), ['adam', 'mia', 'olga']);
    const byName = Object.fromEntries(
      mine.json().items.map((u: { username: string; role: string }) => [u.username, u.role]),
    );
    assert.deepEqual(byName, { adam: 'admin', mia: 'member', olga: 'owner' });
    for (const u of mine.json().items)
      assert.deepEqual(Object.keys(u).sort(), [
        'created_at',
        'id',
        'platform_admin',
        'role',
        'status',
        'totp_enabled',
        'username',
      ]);
  }
  assert.deepEqual(names(await call('GET', '/v1/users', stranger)), ['sten']);
  assert.equal((await call('GET', '/v1/users', member)).statusCode, 403);
  const key = await createTestKey(s, { account: 'acme' });
  assert.equal((await call('GET', '/v1/users', key)).statusCode, 403, 'keys do not manage people');

  // Pages: newest first, no duplicates.
  const p1 = await call('GET', '/v1/users?limit=2', root);
  const p2 = await call('GET', `/v1/users?limit=2&cursor=${p1.json().next_cursor}`, root);
  assert.equal(p1.json().items.length, 2);
  assert.equal(p2.json().items.length, 2);
  const ids = [...p1.json().items, ...p2.json().items].map((u: { id: string }) => u.id);
  assert.equal(new Set(ids).size, 4);
});

test('sessions: listed and ended by an owner or admin of the account; another account’s are 404', async () => {
  const victim = await createTestUser(s, {
    username: 'vic',
    memberships: [{ accountId: acme, role: 'viewer' }],
  });
  const a = await signIn(s, victim);
  const b = await signIn(s, victim);
  const listed = await call('GET', `/v1/users/${victim.id}/sessions`, admin);
  assert.equal(listed.statusCode, 200, listed.body);
  assert.deepEqual(
    listed
      .json()
      .items.map((x: { id: string; status: string }) => [x.id, x.status])
      .sort(),
    [
      [jti(a.access_token), 'active'],
      [jti(b.access_token), 'active'],
    ].sort(),
  );
  assert.ok(!listed.body.includes('bwr_') && !listed.body.includes(a.access_token), 'never a token');

  // Another account's owner, a member, a key: nothing to see here.
  assert.equal((await call('GET', `/v1/users/${victim.id}/sessions`, stranger)).statusCode, 404);
  assert.equal((await call('DELETE', `/v1/sessions/${jti(a.access_token)}`, stranger)).statusCode, 404);
  assert.equal((await call('DELETE', `/v1/sessions/${jti(a.access_token)}`, member)).statusCode, 403);
  const key = await createTestKey(s, { account: 'acme' });
  assert.equal((await call('DELETE', `/v1/sessions/${jti(a.access_token)}`, key)).statusCode, 403);
  const me = () => s.app.inject({ url: '/v1/me', headers: a.headers });
  assert.equal((await me()).statusCode, 200, 'refusals changed nothing');

  const ended = await call('DELETE', `/v1/sessions/${jti(a.access_token)}`, owner);
  assert.equal(ended.statusCode, 200, ended.body);
  assert.equal(ended.json().status, 'revoked');
  assert.equal(ended.json().revoked_reason, 'revoked');
  assert.equal((await me()).statusCode, 401, 'the very next request with it');
  assert.equal(
    (await s.app.inject({ url: '/v1/me', headers: b.headers })).statusCode,
    200,
    'the other lives',
  );
  const again = await call('DELETE', `/v1/sessions/${jti(a.access_token)}`, root);
  assert.equal(again.statusCode, 200);
  assert.equal(again.json().revoked_at, ended.json().revoked_at, 'an ended session is returned as it is');
  const events = await s.db.pool.query(
    `SELECT actor_type, actor_id, account_id, details->>'user_id' AS user_id FROM audit_events
      WHERE action = 'session.revoked' AND target_id = $1`,
    [jti(a.access_token)],
  );
  assert.deepEqual(events.rows, [
    { actor_type: 'user', actor_id: owner.id, account_id: acme, user_id: victim.id },
  ]);
  assert.equal(
    (await call('GET', `/v1/users/00000000-0000-4000-8000-000000000000/sessions`, root)).statusCode,
    404,
  );
});

test('an admin cannot list or end the sessions of an owner or a platform admin; an owner can end an admin’s', async () => {
  const pa = await createTestUser(s, {
    username: 'pat',
    platformAdmin: true,
    memberships: [{ accountId: acme, role: 'viewer' }],
  });
  const ownerSession = await signIn(s, owner);
  const paSession = await signIn(s, pa);
  const adminSession = await signIn(s, admin);
  for (const [who, user, session] of [
    ['owner', owner, ownerSession],
    ['platform admin', pa, paSession],
  ] as const) {
    assert.equal((await call('GET', `/v1/users/${user.id}/sessions`, admin)).statusCode, 404, who);
    assert.equal(
      (await call('DELETE', `/v1/sessions/${jti(session.access_token)}`, admin)).statusCode,
      404,
      who,
    );
    assert.equal((await s.app.inject({ url: '/v1/me', headers: session.headers })).statusCode, 200, who);
  }
  assert.equal(
    (await call('GET', `/v1/users/${pa.id}/sessions`, owner)).statusCode,
    404,
    'only a platform admin',
  );
  const byOwner = await call('DELETE', `/v1/sessions/${jti(adminSession.access_token)}`, owner);
  assert.equal(byOwner.statusCode, 200, byOwner.body);
  assert.equal((await s.app.inject({ url: '/v1/me', headers: adminSession.headers })).statusCode, 401);
  assert.equal((await call('GET', `/v1/users/${pa.id}/sessions`, root)).statusCode, 200);
});

test('the sessions of a user who also belongs to another account are not an account admin’s to end', async () => {
  const dual = await createTestUser(s, {
    username: 'dual',
    memberships: [
      { accountId: acme, role: 'viewer' },
      { accountId: other, role: 'owner' },
    ],
  });
  const session = await signIn(s, dual);
  assert.equal((await call('GET', `/v1/users/${dual.id}/sessions`, owner)).statusCode, 404);
  assert.equal((await call('DELETE', `/v1/sessions/${jti(session.access_token)}`, owner)).statusCode, 404);
  assert.equal((await s.app.inject({ url: '/v1/me', headers: session.headers })).statusCode, 200);
  assert.equal((await call('DELETE', `/v1/sessions/${jti(session.access_token)}`, root)).statusCode, 200);
});
