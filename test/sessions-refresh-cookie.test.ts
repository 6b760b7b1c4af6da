import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { withTx } from '../src/server/db/pool.ts';
import { createOperatorInvite } from '../src/server/modules/invites/invites.operator.ts';
import { createLocalUser } from '../src/server/modules/people/users.service.ts';
import { ACCESS, apiCookie, type CookieSession, REFRESH, sessionFrom } from './helpers/cookie-jar.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

// The refresh cookie is `__Host-bulwark_refresh` (Path=/, no Domain): no sibling host can set or
// shadow it. The server reads it only to refresh and, at a cookie sign-in, to end the browser's
// previous session; a refresh cookie under the old `__Secure-` name (all a sibling host can still
// toss) is never read.

let s: TestServer;
const PASSWORD = 'correct horse battery';
const TOSSED = '__Secure-bulwark_refresh';

before(async () => {
  s = await createTestServer();
  for (const username of ['ann', 'bob'])
    await withTx(s.db.pool, (tx) =>
      createLocalUser(tx, { username, password: PASSWORD, platformAdmin: false }),
    );
});
after(() => s?.stop());

let ip = 10;
const page = { origin: 'http://127.0.0.1', host: '127.0.0.1', 'sec-fetch-site': 'same-origin' };

async function cookieLogin(username: string, cookie?: string) {
  return s.app.inject({
    method: 'POST',
    url: '/v1/auth/login',
    payload: { username, password: PASSWORD, session: 'cookie' },
    headers: { ...page, ...(cookie ? { cookie } : {}) },
    remoteAddress: `127.0.6.${ip++}`,
  });
}
const both = (c: Pick<CookieSession, 'access' | 'refresh'>) =>
  `${ACCESS}=${c.access}; ${REFRESH}=${c.refresh}`;
const refresh = (cookie: string) =>
  s.app.inject({ method: 'POST', url: '/v1/auth/refresh', payload: {}, headers: { ...page, cookie } });
const whoAmI = async (access: string) => {
  const r = await s.app.inject({ method: 'GET', url: '/v1/me', headers: apiCookie({ access }) });
  return r.statusCode === 200 ? (r.json().user.username as string) : r.statusCode;
};

test('a refresh cookie tossed under the old __Secure- name is never read: beside the real one, or alone', async () => {
  const victim = sessionFrom(await cookieLogin('ann'));
  const attacker = sessionFrom(await cookieLogin('bob'));
  // Beside the victim's cookies: the victim's own refresh goes through, as the victim.
  const beside = await refresh(`${both(victim)}; ${TOSSED}=${attacker.refresh}`);
  assert.equal(beside.statusCode, 200, beside.body);
  assert.equal(await whoAmI(sessionFrom(beside).access), 'ann');
  // Alone (a signed-out victim): no refresh, no session of the attacker's.
  const alone = await refresh(`${TOSSED}=${attacker.refresh}`);
  assert.equal(alone.statusCode, 401);
  // The attacker's refresh token was not spent either: it still refreshes for its holder.
  assert.equal((await refresh(both(attacker))).statusCode, 200);
});

test('the refresh cookie authenticates nothing else: only POST /v1/auth/refresh reads it', async () => {
  const c = sessionFrom(await cookieLogin('ann'));
  const me = await s.app.inject({
    method: 'GET',
    url: '/v1/me',
    headers: { cookie: `${REFRESH}=${c.refresh}` },
  });
  assert.equal(me.statusCode, 401);
  const logout = await s.app.inject({
    method: 'POST',
    url: '/v1/auth/logout',
    headers: { ...page, cookie: `${REFRESH}=${c.refresh}`, 'x-csrf-token': c.csrf },
  });
  assert.equal(logout.statusCode, 401);
  assert.equal(await whoAmI(c.access), 'ann', 'the session was not touched');
});

test('a cookie sign-in with the browser’s live refresh cookie ends that previous session first', async () => {
  const first = sessionFrom(await cookieLogin('ann'));
  const second = await cookieLogin('bob', both(first));
  assert.equal(second.statusCode, 200, second.body);
  assert.equal(await whoAmI(sessionFrom(second).access), 'bob');
  // The previous session is over: its access cookie and its refresh cookie are refused.
  assert.equal(await whoAmI(first.access), 401);
  assert.equal((await refresh(both(first))).statusCode, 401);
  const ended = await s.db.pool.query<{ revoked_reason: string }>(
    'SELECT revoked_reason FROM sessions WHERE id = $1',
    [JSON.parse(Buffer.from(first.access.split('.')[1]!, 'base64url').toString()).jti],
  );
  assert.equal(ended.rows[0]?.revoked_reason, 'logout');
  // A used, unknown or malformed refresh cookie at sign-in changes nothing and refuses nothing.
  const a = sessionFrom(await cookieLogin('ann'));
  const rotated = sessionFrom(await refresh(both(a)));
  for (const stale of [a.refresh, 'bwr_unknownunknownunknownunknownunknown12345', 'junk']) {
    const again = await cookieLogin('ann', `${REFRESH}=${stale}`);
    assert.equal(again.statusCode, 200, again.body);
  }
  assert.equal(await whoAmI(rotated.access), 'ann', 'a used refresh cookie at sign-in is not reuse');
  // Without session: "cookie" (API clients), cookies are not looked at.
  const c = sessionFrom(await cookieLogin('ann'));
  const tokens = await s.app.inject({
    method: 'POST',
    url: '/v1/auth/login',
    payload: { username: 'ann', password: PASSWORD },
    headers: { cookie: both(c) },
    remoteAddress: `127.0.6.${ip++}`,
  });
  assert.equal(tokens.statusCode, 200);
  assert.equal(await whoAmI(c.access), 'ann');
});

test('an invite redemption with session "cookie" also ends the browser’s previous session', async () => {
  const first = sessionFrom(await cookieLogin('bob'));
  const invite = await createOperatorInvite(s.db.pool, {
    accountName: 'acme',
    role: 'member',
    platformAdmin: false,
  });
  const res = await s.app.inject({
    method: 'POST',
    url: '/v1/auth/invites/redeem',
    payload: { code: invite.code, username: 'carl', password: PASSWORD, session: 'cookie' },
    headers: { ...page, cookie: both(first) },
  });
  assert.equal(res.statusCode, 201, res.body);
  assert.equal(await whoAmI(sessionFrom(res).access), 'carl');
  assert.equal(await whoAmI(first.access), 401);
});
