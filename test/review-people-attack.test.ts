import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { withTx } from '../src/server/db/pool.ts';
import { THROTTLE_POLICY } from '../src/server/modules/people/login-throttle.ts';
import { createLocalUser } from '../src/server/modules/people/users.service.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { createTestUser, signIn } from './helpers/session-users.ts';

// Review of issue 12 (people, sessions, invites, policy): attacks on a fully wired server and a
// real control database.

let s: TestServer;
let keyA: TestKey;
let keyB: TestKey;
const PASSWORD = 'correct horse battery staple';

before(async () => {
  s = await createTestServer();
  keyA = await createTestKey(s, { account: 'acct-a' });
  keyB = await createTestKey(s, { account: 'acct-b' });
});
after(() => s?.stop());

function login(username: string, password: string, ip: string) {
  return s.app.inject({
    method: 'POST',
    url: '/v1/auth/login',
    payload: { username, password },
    remoteAddress: ip,
  });
}

test('a password spray from one IPv6 /64 is throttled like one from a single address', async () => {
  for (let i = 0; i < 30; i++) {
    await withTx(s.db.pool, (tx) =>
      createLocalUser(tx, { username: `sprayed${i}`, password: PASSWORD, platformAdmin: false }),
    );
  }
  // One wrong password per username, each from another address of the same /64.
  const statuses: number[] = [];
  const startedAt: number[] = [];
  const endedAt: number[] = [];
  for (let i = 0; i < 30; i++) {
    startedAt.push(performance.now());
    statuses.push(
      (await login(`sprayed${i}`, 'not the password at all', `2001:db8:1:2::${(i + 1).toString(16)}`))
        .statusCode,
    );
    endedAt.push(performance.now());
  }
  assert.ok(
    statuses.slice(0, 20).every((c) => c === 401),
    statuses.join(','),
  );
  // Past the per-address allowance the /64 is one address: an attempt is let through (and fails)
  // only once the backoff since the last failure let through has run out (1 s, then 2 s, …) —
  // which a slow host may reach within the 10 attempts; never sooner.
  const backoffMs = THROTTLE_POLICY.ip.baseMs;
  let lastFailure = 19;
  let throttled = 0;
  for (let i = 20; i < 30; i++) {
    if (statuses[i] === 429) throttled++;
    else {
      assert.equal(statuses[i], 401, statuses.join(','));
      // The server saw at most this long between that failure and this attempt.
      const waited = endedAt[i]! - startedAt[lastFailure]!;
      assert.ok(
        waited >= backoffMs,
        `attempt ${i + 1} from the /64 got through ${waited.toFixed(0)} ms after the last failure; got ${statuses.join(',')}`,
      );
      lastFailure = i;
    }
  }
  assert.ok(throttled >= 5, `past the per-address allowance the /64 is throttled; got ${statuses.join(',')}`);
  // The same IPv4 client in its two spellings shares one count.
  const mapped: number[] = [];
  for (let i = 0; i < 26; i++) {
    mapped.push(
      (await login(`sprayed${i}`, 'not the password at all', i % 2 ? '::ffff:198.51.100.7' : '198.51.100.7'))
        .statusCode,
    );
  }
  assert.equal(mapped.at(-1), 429, mapped.join(','));
});

test('the owner of one account cannot suspend (or end the sessions of) a user who also owns another account', async () => {
  const ownerA = await createTestUser(s, {
    username: 'x-owner-a',
    memberships: [{ accountId: keyA.accountId, role: 'owner' }],
  });
  const dual = await createTestUser(s, {
    username: 'x-dual',
    memberships: [
      { accountId: keyA.accountId, role: 'viewer' },
      { accountId: keyB.accountId, role: 'owner' },
    ],
  });
  const tOwnerA = await signIn(s, ownerA);
  const tDual = await signIn(s, dual);
  const inB = { ...tDual.headers, 'bulwark-account': 'acct-b' };
  const made = await s.app.inject({
    method: 'POST',
    url: '/v1/keys',
    headers: inB,
    payload: { name: 'b-ops', level: 'admin' },
  });
  assert.equal(made.statusCode, 201, made.body);
  const bKey = { authorization: `Bearer ${made.json().key}` };
  assert.equal((await s.app.inject({ url: '/v1/keys', headers: bKey })).statusCode, 200);

  const sus = await s.app.inject({
    method: 'POST',
    url: `/v1/users/${dual.id}/suspend`,
    headers: tOwnerA.headers,
  });
  assert.ok(
    [403, 404].includes(sus.statusCode),
    `A's owner suspended B's owner: ${sus.statusCode} ${sus.body}`,
  );
  assert.equal(
    (await s.app.inject({ url: '/v1/keys', headers: bKey })).statusCode,
    200,
    "B's key must live on",
  );
  assert.equal(
    (await s.app.inject({ url: '/v1/me', headers: inB })).statusCode,
    200,
    "B's owner stays signed in",
  );
});

test("an account admin cannot list or end the sessions of the account's owner or of a platform admin", async () => {
  const owner = await createTestUser(s, {
    username: 'y-owner',
    memberships: [{ accountId: keyA.accountId, role: 'owner' }],
  });
  const pa = await createTestUser(s, {
    username: 'y-platform',
    platformAdmin: true,
    memberships: [{ accountId: keyA.accountId, role: 'viewer' }],
  });
  const admin = await createTestUser(s, {
    username: 'y-admin',
    memberships: [{ accountId: keyA.accountId, role: 'admin' }],
  });
  const tOwner = await signIn(s, owner);
  const tPa = await signIn(s, pa);
  const tAdmin = await signIn(s, admin);
  const sessionOf = async (userId: string) =>
    (await s.db.pool.query<{ id: string }>('SELECT id FROM sessions WHERE user_id = $1', [userId])).rows[0]!
      .id;
  for (const [who, u, t] of [
    ['owner', owner, tOwner],
    ['platform admin', pa, tPa],
  ] as const) {
    const list = await s.app.inject({ url: `/v1/users/${u.id}/sessions`, headers: tAdmin.headers });
    assert.ok(
      [403, 404].includes(list.statusCode),
      `an admin listed the ${who}'s sessions: ${list.statusCode}`,
    );
    const end = await s.app.inject({
      method: 'DELETE',
      url: `/v1/sessions/${await sessionOf(u.id)}`,
      headers: tAdmin.headers,
    });
    assert.ok([403, 404].includes(end.statusCode), `an admin ended the ${who}'s session: ${end.statusCode}`);
    assert.equal(
      (await s.app.inject({ url: '/v1/me', headers: t.headers })).statusCode,
      200,
      `${who} signed out`,
    );
  }
});

test("an account's sign-ins, failed sign-ins and logouts are readable through GET /v1/audit/events", async () => {
  const u = await withTx(s.db.pool, (tx) =>
    createLocalUser(tx, { username: 'z-audited', password: PASSWORD, platformAdmin: false }),
  );
  await s.db.pool.query('INSERT INTO memberships (account_id, user_id, role) VALUES ($1, $2, $3)', [
    keyA.accountId,
    u.id,
    'member',
  ]);
  assert.equal((await login('z-audited', 'not the password at all', '192.0.2.44')).statusCode, 401);
  const ok = await login('z-audited', PASSWORD, '192.0.2.44');
  assert.equal(ok.statusCode, 200, ok.body);
  const bye = await s.app.inject({
    method: 'POST',
    url: '/v1/auth/logout',
    headers: { authorization: `Bearer ${ok.json().access_token}` },
  });
  assert.equal(bye.statusCode, 200, bye.body);
  const events = await s.app.inject({ url: '/v1/audit/events?limit=100', headers: keyA.headers });
  assert.equal(events.statusCode, 200, events.body);
  const mine = (events.json().items as { action: string }[]).filter((e) => JSON.stringify(e).includes(u.id));
  const seen = mine.map((e) => e.action);
  // Recorded they are (in the control DB), each with no account:
  const recorded = await s.db.pool.query<{ action: string; account_id: string | null }>(
    'SELECT action, account_id FROM audit_events WHERE actor_id = $1 ORDER BY id',
    [u.id],
  );
  assert.ok(recorded.rows.filter((r) => r.action === 'auth.login').length >= 2);
  assert.equal(
    seen.filter((a) => a === 'auth.login').length,
    2,
    `the account's admin reads: ${seen.join(' ') || 'nothing'}`,
  );
  assert.ok(seen.includes('session.logout'), seen.join(' '));
});
