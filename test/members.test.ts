// Role changes and member removal (PUT /v1/users/:id/role, DELETE /v1/users/:id/membership): who
// may, the last owner, another account's user, the audit events, and the effect on the very next
// request of the same access token and of the user's keys — on a real control database.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createAccount } from './helpers/databases.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { createTestUser, signIn, type TestUser } from './helpers/session-users.ts';

let s: TestServer;
let acme: string;
let other: string;

before(async () => {
  s = await createTestServer();
  await s.keyAuth.listenerReady();
  acme = await createAccount(s, 'acme');
  other = await createAccount(s, 'other');
});
after(() => s.stop());

const bearer = (t: string) => ({ authorization: `Bearer ${t}` });
let n = 0;
const person = (role: 'owner' | 'admin' | 'member' | 'viewer', accountId = acme) =>
  createTestUser(s, { username: `${role}${++n}`, memberships: [{ accountId, role }] });
const setRole = async (by: TestUser | { access_token: string }, id: string, role: string) =>
  s.app.inject({
    method: 'PUT',
    url: `/v1/users/${id}/role`,
    headers: 'id' in by ? (await signIn(s, by)).headers : bearer(by.access_token),
    payload: { role },
  });
const remove = async (by: TestUser, id: string) =>
  s.app.inject({
    method: 'DELETE',
    url: `/v1/users/${id}/membership`,
    headers: (await signIn(s, by)).headers,
  });
const roleIn = async (accountId: string, userId: string) =>
  (
    await s.db.pool.query('SELECT role FROM memberships WHERE account_id = $1 AND user_id = $2', [
      accountId,
      userId,
    ])
  ).rows[0]?.role ?? null;
const auditOf = async (action: string, userId: string) =>
  (
    await s.db.pool.query(
      `SELECT actor_id, account_id, details FROM audit_events WHERE action = $1 AND target_id = $2`,
      [action, userId],
    )
  ).rows;

test('an owner demotes an admin: the same access token and their admin key act as a member at once', async () => {
  const owner = await person('owner');
  const admin = await person('admin');
  const session = await signIn(s, admin);
  const key = await s.app.inject({
    method: 'POST',
    url: '/v1/keys',
    headers: session.headers,
    payload: { name: 'admin key', level: 'admin' },
  });
  assert.equal(key.statusCode, 201, key.body);
  const writeKey = await s.app.inject({
    method: 'POST',
    url: '/v1/keys',
    headers: session.headers,
    payload: { name: 'write key', level: 'write' },
  });
  assert.equal(writeKey.statusCode, 201, writeKey.body);
  // Warm both caches.
  for (let i = 0; i < 2; i++) {
    assert.equal((await s.app.inject({ url: '/v1/users', headers: session.headers })).statusCode, 200);
    assert.equal(
      (await s.app.inject({ url: '/v1/whoami', headers: bearer(key.json().key) })).statusCode,
      200,
    );
    assert.equal(
      (await s.app.inject({ url: '/v1/whoami', headers: bearer(writeKey.json().key) })).statusCode,
      200,
    );
  }

  const r = await setRole(owner, admin.id, 'member');
  assert.equal(r.statusCode, 200, r.body);
  assert.equal(r.json().role, 'member');
  assert.equal(r.json().id, admin.id);

  const users = await s.app.inject({ url: '/v1/users', headers: session.headers });
  assert.equal(users.statusCode, 403, 'the same access token acts as a member on the next request');
  assert.equal((await s.app.inject({ url: '/v1/databases', headers: session.headers })).statusCode, 200);
  const stopped = await s.app.inject({ url: '/v1/whoami', headers: bearer(key.json().key) });
  assert.ok([401, 403].includes(stopped.statusCode), `the admin key stops: ${stopped.statusCode}`);
  const kept = await s.app.inject({ url: '/v1/whoami', headers: bearer(writeKey.json().key) });
  assert.equal(kept.statusCode, 200, 'a key at or below the new role keeps working');

  const events = await auditOf('member.role_changed', admin.id);
  assert.equal(events.length, 1);
  assert.equal(events[0].actor_id, owner.id);
  assert.equal(events[0].account_id, acme);
  assert.deepEqual(events[0].details, { from: 'admin', to: 'member' });

  // The same role again changes nothing and records nothing.
  assert.equal((await setRole(owner, admin.id, 'member')).statusCode, 200);
  assert.equal((await auditOf('member.role_changed', admin.id)).length, 1);
});

test('an admin manages members and viewers up to admin, never an owner or another admin', async () => {
  const owner = await person('owner');
  const admin = await person('admin');
  const peer = await person('admin');
  const member = await person('member');
  const viewer = await person('viewer');

  const up = await setRole(admin, member.id, 'owner');
  assert.equal(up.statusCode, 403, up.body);
  assert.equal(up.json().error.code, 'forbidden');
  assert.equal(await roleIn(acme, member.id), 'member');
  assert.equal((await setRole(admin, owner.id, 'member')).statusCode, 403);
  assert.equal((await setRole(admin, peer.id, 'member')).statusCode, 403);
  assert.equal((await remove(admin, peer.id)).statusCode, 403);
  assert.equal((await remove(admin, owner.id)).statusCode, 403);
  assert.equal(await roleIn(acme, owner.id), 'owner');
  assert.equal(await roleIn(acme, peer.id), 'admin');

  const promoted = await setRole(admin, viewer.id, 'admin');
  assert.equal(promoted.statusCode, 200, promoted.body);
  assert.equal(await roleIn(acme, viewer.id), 'admin');

  // A member or viewer may not at all (the policy table).
  const v2 = await person('viewer');
  assert.equal((await setRole(member, v2.id, 'member')).statusCode, 403);
  assert.equal((await remove(v2, member.id)).statusCode, 403);
  // An owner promotes to owner.
  assert.equal((await setRole(owner, member.id, 'owner')).statusCode, 200);
  assert.equal(await roleIn(acme, member.id), 'owner');
});

test("the account's last owner can be neither demoted nor removed", async () => {
  const solo = await createAccount(s, 'solo');
  const owner = await person('owner', solo);
  const demote = await setRole(owner, owner.id, 'admin');
  assert.equal(demote.statusCode, 409, demote.body);
  assert.equal(demote.json().error.code, 'conflict');
  assert.equal((await remove(owner, owner.id)).statusCode, 409);
  assert.equal(await roleIn(solo, owner.id), 'owner');

  // With a second owner, one may step down; then the other is the last.
  const second = await person('owner', solo);
  assert.equal((await setRole(owner, owner.id, 'admin')).statusCode, 200);
  assert.equal((await setRole(second, second.id, 'member')).statusCode, 409);
  assert.equal((await remove(second, second.id)).statusCode, 409);
  assert.equal(await roleIn(solo, second.id), 'owner');
});

test('removal ends access to the account on the next request; audited', async () => {
  const owner = await person('owner');
  const member = await person('member');
  const session = await signIn(s, member);
  const key = await s.app.inject({
    method: 'POST',
    url: '/v1/keys',
    headers: session.headers,
    payload: { name: 'member key', level: 'write' },
  });
  assert.equal(key.statusCode, 201, key.body);
  for (let i = 0; i < 2; i++) {
    assert.equal((await s.app.inject({ url: '/v1/databases', headers: session.headers })).statusCode, 200);
    assert.equal(
      (await s.app.inject({ url: '/v1/whoami', headers: bearer(key.json().key) })).statusCode,
      200,
    );
  }

  const r = await remove(owner, member.id);
  assert.equal(r.statusCode, 200, r.body);
  assert.deepEqual(r.json(), { removed: true });
  assert.equal(await roleIn(acme, member.id), null);

  const after = await s.app.inject({ url: '/v1/databases', headers: session.headers });
  assert.ok([403, 404].includes(after.statusCode), `no more access to acme: ${after.statusCode}`);
  const stopped = await s.app.inject({ url: '/v1/whoami', headers: bearer(key.json().key) });
  assert.ok([401, 403].includes(stopped.statusCode), `their key stops: ${stopped.statusCode}`);
  const me = await s.app.inject({ url: '/v1/me', headers: session.headers });
  assert.equal(me.statusCode, 200, 'the session itself lives on (the user is not suspended)');
  assert.deepEqual(me.json().memberships, []);

  const events = await auditOf('member.removed', member.id);
  assert.equal(events.length, 1);
  assert.equal(events[0].actor_id, owner.id);
  assert.equal(events[0].account_id, acme);
  assert.deepEqual(events[0].details, { role: 'member' });

  // Removed already: as absent.
  assert.equal((await remove(owner, member.id)).statusCode, 404);
});

test('a platform admin manages the members of the account they act in', async () => {
  const root = await createTestUser(s, { username: 'root', platformAdmin: true });
  const member = await person('member');
  const session = await signIn(s, root);
  const put = (headers: Record<string, string>) =>
    s.app.inject({
      method: 'PUT',
      url: `/v1/users/${member.id}/role`,
      headers: { ...session.headers, ...headers },
      payload: { role: 'viewer' },
    });
  assert.equal((await put({})).statusCode, 404, 'acting in no account: nobody is a member of it');
  const r = await put({ 'bulwark-account': 'acme' });
  assert.equal(r.statusCode, 200, r.body);
  assert.equal(await roleIn(acme, member.id), 'viewer');
});

test("another account's user is a 404, whatever the caller's role", async () => {
  const stranger = await person('owner', other);
  const member = await person('member');
  for (const r of [await setRole(stranger, member.id, 'viewer'), await remove(stranger, member.id)]) {
    assert.equal(r.statusCode, 404, r.body);
    assert.equal(r.json().error.code, 'not_found');
  }
  assert.equal(await roleIn(acme, member.id), 'member');
  const ghost = await setRole(stranger, '00000000-0000-4000-8000-000000000000', 'viewer');
  assert.equal(ghost.statusCode, 404);
  assert.equal((await auditOf('member.role_changed', member.id)).length, 0);
});
