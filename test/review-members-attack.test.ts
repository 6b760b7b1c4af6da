// Review of the member role changes, the configuration's suspensions and the audit listing of
// members' account-less events: each attack below found something, and each test failed on the
// code it was written against.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { createAccount, enrollFakeAgent } from './helpers/databases.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { createTestUser, signIn } from './helpers/session-users.ts';

let s: TestServer;
let acme: string;
let other: string;
let third: string;

before(async () => {
  s = await createTestServer();
  await s.keyAuth.listenerReady();
  acme = await createAccount(s, 'acme');
  other = await createAccount(s, 'other');
  third = await createAccount(s, 'third');
});
after(() => s.stop());

type Ev = { action: string; target_id?: string | null; details?: unknown };
const listAudit = async (headers: Record<string, string>) => {
  const r = await s.app.inject({ url: '/v1/audit/events?limit=100', headers });
  assert.equal(r.statusCode, 200, r.body);
  return r.json().items as Ev[];
};

test("an account's audit listing does not show a platform admin member's account-less actions on users of other accounts", async () => {
  const owner = await createTestUser(s, {
    username: 'acme-owner',
    memberships: [{ accountId: acme, role: 'owner' }],
  });
  // A platform admin who is also a viewer in acme.
  const pa = await createTestUser(s, {
    username: 'plat-admin',
    platformAdmin: true,
    memberships: [{ accountId: acme, role: 'viewer' }],
  });
  // A user of another account only.
  const victim = await createTestUser(s, {
    username: 'other-user',
    memberships: [{ accountId: other, role: 'member' }],
  });
  await signIn(s, victim); // a session, so the suspension also ends one (session.revoked, details.user_id)
  const sus = await s.app.inject({
    method: 'POST',
    url: `/v1/users/${victim.id}/suspend`,
    headers: (await signIn(s, pa)).headers,
  });
  assert.equal(sus.statusCode, 200, sus.body);
  const items = await listAudit((await signIn(s, owner)).headers);
  const leaked = items.filter((e) => JSON.stringify(e).includes(victim.id));
  assert.deepEqual(
    leaked.map((e) => e.action),
    [],
    `acme's owner reads events about a user of another account: ${JSON.stringify(leaked)}`,
  );
});

test("an owner of two accounts who is a viewer elsewhere does not leak their suspension of a two-account user into the third account's listing", async () => {
  const boss = await createTestUser(s, {
    username: 'boss',
    memberships: [
      { accountId: acme, role: 'owner' },
      { accountId: other, role: 'owner' },
      { accountId: third, role: 'viewer' },
    ],
  });
  const thirdOwner = await createTestUser(s, {
    username: 'third-owner',
    memberships: [{ accountId: third, role: 'owner' }],
  });
  const target = await createTestUser(s, {
    username: 'two-account-user',
    memberships: [
      { accountId: acme, role: 'member' },
      { accountId: other, role: 'member' },
    ],
  });
  await signIn(s, target);
  const sus = await s.app.inject({
    method: 'POST',
    url: `/v1/users/${target.id}/suspend`,
    headers: { ...(await signIn(s, boss)).headers, 'bulwark-account': 'acme' },
  });
  assert.equal(sus.statusCode, 200, sus.body);
  const items = await listAudit((await signIn(s, thirdOwner)).headers);
  const leaked = items.filter((e) => JSON.stringify(e).includes(target.id));
  assert.deepEqual(
    leaked.map((e) => e.action),
    [],
    `third's owner reads events about a non-member: ${JSON.stringify(leaked)}`,
  );
});

test("a demoted admin's write key granted the explorer stops (a member could never grant it)", async () => {
  const owner = await createTestUser(s, {
    username: 'x-owner',
    memberships: [{ accountId: acme, role: 'owner' }],
  });
  const admin = await createTestUser(s, {
    username: 'x-admin',
    memberships: [{ accountId: acme, role: 'admin' }],
  });
  const agent = await enrollFakeAgent(s, 'node-x');
  await s.db.pool.query(
    `INSERT INTO databases (id, account_id, node_id, name, status, password_sealed, limits)
       VALUES ($1, $2, $3, 'xdb', 'provisioning', 'sealed', '{}'::jsonb)`,
    [randomUUID(), acme, agent.nodeId],
  );
  const made = await s.app.inject({
    method: 'POST',
    url: '/v1/keys',
    headers: (await signIn(s, admin)).headers,
    payload: { name: 'explorer write key', level: 'write', explorer: true },
  });
  assert.equal(made.statusCode, 201, made.body);
  const keyHeaders = { authorization: `Bearer ${made.json().key}` };
  const explore = () =>
    s.app.inject({
      method: 'POST',
      url: '/v1/databases/xdb/explorer/query',
      headers: keyHeaders,
      payload: { sql: 'select 1' },
    });
  // Granted: past the explorer check (409 = the database is not ready, not 403).
  assert.equal((await explore()).statusCode, 409);
  const demoted = await s.app.inject({
    method: 'PUT',
    url: `/v1/users/${admin.id}/role`,
    headers: (await signIn(s, owner)).headers,
    payload: { role: 'member' },
  });
  assert.equal(demoted.statusCode, 200, demoted.body);
  // A key whose grants its creator can no longer give stops, as one above the creator's level does
  // (a member may not grant the explorer): refused outright, explorer included.
  assert.equal((await s.app.inject({ url: '/v1/whoami', headers: keyHeaders })).statusCode, 401);
  const after = await explore();
  assert.ok(
    [401, 403].includes(after.statusCode),
    `the demoted member's key still reaches the explorer: ${after.statusCode} ${after.body}`,
  );
});

test("a removed (or demoted) admin's pending admin invite no longer admits a new admin to the account", async () => {
  const owner = await createTestUser(s, {
    username: 'i-owner',
    memberships: [{ accountId: acme, role: 'owner' }],
  });
  const admin = await createTestUser(s, {
    username: 'i-admin',
    memberships: [{ accountId: acme, role: 'admin' }],
  });
  const made = await s.app.inject({
    method: 'POST',
    url: '/v1/invites',
    headers: (await signIn(s, admin)).headers,
    payload: { count: 1, role: 'admin' },
  });
  assert.equal(made.statusCode, 201, made.body);
  const code = made.json().invites[0].code as string;
  const removed = await s.app.inject({
    method: 'DELETE',
    url: `/v1/users/${admin.id}/membership`,
    headers: (await signIn(s, owner)).headers,
  });
  assert.equal(removed.statusCode, 200, removed.body);
  const back = await s.app.inject({
    method: 'POST',
    url: '/v1/auth/invites/redeem',
    payload: { code, username: 'i-admin-again', password: 'correct horse battery staple' },
    remoteAddress: '203.0.113.9',
  });
  const role = await s.db.pool.query(
    `SELECT m.role FROM users u JOIN memberships m ON m.user_id = u.id AND m.account_id = $1 WHERE u.username = 'i-admin-again'`,
    [acme],
  );
  assert.deepEqual(
    { status: back.statusCode, roles: role.rows.map((r) => r.role) },
    { status: 400, roles: [] },
    `the removed admin's invite made a new member: ${back.statusCode} ${back.body}`,
  );
});

test('a username the configuration keeps suspended cannot be taken through an invite', async () => {
  const b = await createTestServer({ suspendedUsers: 'blocked-name' as never });
  try {
    const acct = await createAccount(b, 'blk');
    const owner = await createTestUser(b, {
      username: 'blk-owner',
      memberships: [{ accountId: acct, role: 'owner' }],
    });
    const made = await b.app.inject({
      method: 'POST',
      url: '/v1/invites',
      headers: (await signIn(b, owner)).headers,
      payload: { count: 1, role: 'member' },
    });
    assert.equal(made.statusCode, 201, made.body);
    const red = await b.app.inject({
      method: 'POST',
      url: '/v1/auth/invites/redeem',
      payload: {
        code: made.json().invites[0].code,
        username: 'blocked-name',
        password: 'correct horse battery staple',
      },
      remoteAddress: '203.0.113.10',
    });
    const row = await b.db.pool.query("SELECT status FROM users WHERE username = 'blocked-name'");
    assert.ok(
      red.statusCode !== 201 || row.rows[0]?.status === 'suspended',
      `a listed username was created active: ${red.statusCode} ${JSON.stringify(row.rows)}`,
    );
  } finally {
    await b.stop();
  }
});
