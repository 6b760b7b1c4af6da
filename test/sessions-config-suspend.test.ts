// Users listed as suspended in the server's configuration (`suspendedUsers`,
// BULWARK_SUSPENDED_USERS) are suspended at every start, whatever the API did since: their
// sessions end and their reactivation is refused.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { serverConfigSchema } from '../src/server/config.ts';
import { createAccount } from './helpers/databases.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { createTestUser, signIn } from './helpers/session-users.ts';

let a: TestServer;
let acmeId: string;
before(async () => {
  a = await createTestServer();
  acmeId = await createAccount(a, 'acme');
});
after(async () => {
  await a.stop();
});

const me = (s: TestServer, token: string) =>
  s.app.inject({ url: '/v1/me', headers: { authorization: `Bearer ${token}` } });

test('a user the configuration names is suspended at start, and cannot be reactivated through the API', async () => {
  const carol = await createTestUser(a, {
    username: 'carol.ops',
    memberships: [{ accountId: acmeId, role: 'member' }],
  });
  const other = await createTestUser(a, {
    username: 'dave',
    memberships: [{ accountId: acmeId, role: 'member' }],
  });
  const admin = await createTestUser(a, { username: 'root-admin', platformAdmin: true });
  const carolSession = await signIn(a, carol);
  const daveSession = await signIn(a, other);
  assert.equal((await me(a, carolSession.access_token)).statusCode, 200);

  // A second server starts on the same control DB with carol listed (any case, spaces allowed).
  const b = await createTestServer(
    { masterKeyFile: a.config.masterKeyFile, suspendedUsers: ' Carol.Ops , nobody-yet' as never },
    { db: a.db },
  );
  try {
    const row = await a.db.pool.query('SELECT status FROM users WHERE id = $1', [carol.id]);
    assert.equal(row.rows[0].status, 'suspended');
    // Her session ends on every replica (a's cache was evicted by the NOTIFY on commit).
    const deadline = Date.now() + 2_000;
    while ((await me(a, carolSession.access_token)).statusCode !== 401) {
      assert.ok(Date.now() < deadline, 'the suspended session still works on the other replica');
      await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal((await me(b, carolSession.access_token)).statusCode, 401);
    // Others are untouched.
    assert.equal((await me(b, daveSession.access_token)).statusCode, 200);
    // Audited as the configuration's doing.
    const ev = await a.db.pool.query(
      "SELECT actor_type, details FROM audit_events WHERE action = 'user.suspended' AND target_id = $1",
      [carol.id],
    );
    assert.equal(ev.rows.length, 1);
    assert.equal(ev.rows[0].actor_type, 'system');
    assert.equal(ev.rows[0].details.by, 'configuration');
    // A platform admin cannot lift it while the configuration names her.
    const root = await signIn(b, admin);
    const lift = await b.app.inject({
      method: 'POST',
      url: `/v1/users/${carol.id}/reactivate`,
      headers: root.headers,
    });
    assert.equal(lift.statusCode, 409, lift.body);
    assert.equal(lift.json().error.code, 'conflict');
    // Through a server without the setting (a's), the admin may; the next start suspends her again.
    const rootA = await signIn(a, admin);
    const liftA = await a.app.inject({
      method: 'POST',
      url: `/v1/users/${carol.id}/reactivate`,
      headers: rootA.headers,
    });
    assert.equal(liftA.statusCode, 200, liftA.body);
  } finally {
    await b.stop();
  }
  const c = await createTestServer(
    { masterKeyFile: a.config.masterKeyFile, suspendedUsers: ['carol.ops'] as never },
    { db: a.db },
  );
  try {
    const row = await a.db.pool.query('SELECT status FROM users WHERE id = $1', [carol.id]);
    assert.equal(row.rows[0].status, 'suspended', 'suspended again at the next start');
  } finally {
    await c.stop();
  }
});

test('a suspended-users setting that is not a list of usernames is refused', () => {
  const base = { databaseUrl: 'postgres://x@127.0.0.1/x', dataDir: '/nonexistent' };
  const bad = serverConfigSchema.safeParse({ ...base, suspendedUsers: 'ok-user,no spaces inside' });
  assert.equal(bad.success, false);
  assert.match(JSON.stringify(bad.error?.issues), /not a username/);
  const ok = serverConfigSchema.parse({ ...base, suspendedUsers: 'Ok-User, b.c ,' });
  assert.deepEqual(ok.suspendedUsers, ['ok-user', 'b.c']);
});
