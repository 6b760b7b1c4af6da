import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createTestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { createTestUser, signIn } from './helpers/session-users.ts';

// Invites made by signed-in users: owners and admins in their own account up to their own role,
// platform admins anywhere (and platform-admin invites, with or without an account).

let s: TestServer;
let acmeId: string;
before(async () => {
  s = await createTestServer();
  acmeId = (await createTestKey(s, { account: 'acme' })).accountId;
  await createTestKey(s, { account: 'globex' });
});
after(() => s.stop());

async function as(username: string, opts: Omit<Parameters<typeof createTestUser>[1], 'username'>) {
  const user = await createTestUser(s, { username, ...opts });
  return { user, headers: (await signIn(s, user)).headers };
}

const invite = (headers: Record<string, string>, body: Record<string, unknown>) =>
  s.app.inject({ method: 'POST', url: '/v1/invites', headers, payload: body });

test('owners and admins invite into their own account up to their own role; members and viewers cannot', async () => {
  const owner = await as('owner.user', { memberships: [{ accountId: acmeId, role: 'owner' }] });
  const admin = await as('admin.user', { memberships: [{ accountId: acmeId, role: 'admin' }] });
  const member = await as('member.user', { memberships: [{ accountId: acmeId, role: 'member' }] });
  const cases: [typeof owner, Record<string, unknown>, number][] = [
    [owner, { count: 2, role: 'owner' }, 201],
    [admin, { count: 1, role: 'admin' }, 201],
    [admin, { count: 1, role: 'owner' }, 403],
    [owner, { count: 1, role: 'member', platform_admin: true }, 403],
    [owner, { count: 1, role: 'member', account: 'globex' }, 404],
    [member, { count: 1, role: 'viewer' }, 403],
  ];
  for (const [who, body, status] of cases) {
    const res = await invite(who.headers, body);
    assert.equal(res.statusCode, status, `${who.user.username} ${JSON.stringify(body)}: ${res.body}`);
  }
  const rows = await s.db.pool.query(
    'SELECT role, count(*)::int AS n FROM invites WHERE created_by_user_id = $1 GROUP BY role',
    [owner.user.id],
  );
  assert.deepEqual(rows.rows, [{ role: 'owner', n: 2 }], 'the creator is recorded');
  const events = await s.db.pool.query(
    "SELECT DISTINCT actor_type, actor_id FROM audit_events WHERE action = 'invite.created' AND actor_id = $1",
    [owner.user.id],
  );
  assert.deepEqual(events.rows, [{ actor_type: 'user', actor_id: owner.user.id }]);
});

test('a platform admin without any membership invites anywhere, platform admins included, and sees every invite', async () => {
  const root = await as('root.user', { platformAdmin: true });
  const platform = await invite(root.headers, { count: 1, role: 'viewer', platform_admin: true });
  assert.equal(platform.statusCode, 201, platform.body);
  const intoGlobex = await invite(root.headers, { count: 1, role: 'owner', account: 'globex' });
  assert.equal(intoGlobex.statusCode, 201, intoGlobex.body);
  const missing = await invite(root.headers, { count: 1, role: 'owner', account: 'nosuch' });
  assert.equal(missing.statusCode, 404);
  const nowhere = await invite(root.headers, { count: 1, role: 'owner' });
  assert.equal(nowhere.statusCode, 400, 'no account and not a platform admin: nothing to join');

  const list = await s.app.inject({ url: '/v1/invites?limit=100', headers: root.headers });
  assert.equal(list.statusCode, 200, list.body);
  const items = list.json().items as {
    id: string;
    account: { name: string } | null;
    platform_admin: boolean;
  }[];
  const p = items.find((i) => i.id === platform.json().invites[0].id);
  assert.deepEqual([p?.account, p?.platform_admin], [null, true]);
  assert.equal(items.find((i) => i.id === intoGlobex.json().invites[0].id)?.account?.name, 'globex');

  const redeemed = await s.app.inject({
    method: 'POST',
    url: '/v1/auth/invites/redeem',
    payload: {
      code: platform.json().invites[0].code,
      username: 'second.root',
      password: 'a long enough passphrase',
    },
  });
  assert.equal(redeemed.statusCode, 201, redeemed.body);
  assert.equal(redeemed.json().user.platform_admin, true);
  const revoke = await s.app.inject({
    method: 'DELETE',
    url: `/v1/invites/${intoGlobex.json().invites[0].id}`,
    headers: root.headers,
  });
  assert.equal(revoke.statusCode, 200);
});

test('the invites of a suspended user stop working (the same answer as an unknown code) until they are reactivated', async () => {
  const owner = await as('suspended.owner', { memberships: [{ accountId: acmeId, role: 'owner' }] });
  const made = await invite(owner.headers, { count: 1, role: 'member' });
  assert.equal(made.statusCode, 201, made.body);
  const code = made.json().invites[0].code as string;
  const redeem = (username: string) =>
    s.app.inject({
      method: 'POST',
      url: '/v1/auth/invites/redeem',
      payload: { code, username, password: 'a long enough passphrase' },
    });
  await s.db.pool.query("UPDATE users SET status = 'suspended', suspended_at = now() WHERE id = $1", [
    owner.user.id,
  ]);
  const refused = await redeem('joiner');
  assert.equal(refused.statusCode, 400);
  assert.equal(refused.json().error.code, 'invalid_invite');
  await s.db.pool.query("UPDATE users SET status = 'active', suspended_at = NULL WHERE id = $1", [
    owner.user.id,
  ]);
  assert.equal((await redeem('joiner')).statusCode, 201);
});
