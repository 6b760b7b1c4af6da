import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createKeyringFileBox } from '../src/server/crypto/keyring-box.ts';
import { withTx } from '../src/server/db/pool.ts';
import { newTotpSecret, totpAt } from '../src/server/modules/people/totp.ts';
import { createLocalUser } from '../src/server/modules/people/users.service.ts';
import {
  ACCESS,
  apiCookie,
  type CookieSession,
  pageWrite,
  REFRESH,
  refreshCookie,
  SIGNED_IN,
  sessionFrom,
  setCookies,
} from './helpers/cookie-jar.ts';
import { createTestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

// The dashboard's session: the same session as the bearer tokens, kept in HttpOnly cookies.

let s: TestServer;
const PASSWORD = 'correct horse battery';
const JWT = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

before(async () => {
  s = await createTestServer();
});
after(() => s?.stop());

let ip = 10;
const freshIp = () => `127.0.9.${ip++}`;

const newUser = (username: string) =>
  withTx(s.db.pool, (tx) => createLocalUser(tx, { username, password: PASSWORD, platformAdmin: false }));

const login = (body: Record<string, unknown>, headers: Record<string, string> = {}) =>
  s.app.inject({
    method: 'POST',
    url: '/v1/auth/login',
    payload: body,
    headers,
    remoteAddress: freshIp(),
  });

async function cookieLogin(username: string): Promise<CookieSession> {
  const res = await login({ username, password: PASSWORD, session: 'cookie' });
  assert.equal(res.statusCode, 200, res.body);
  return sessionFrom(res);
}

const me = (headers: Record<string, string>) => s.app.inject({ method: 'GET', url: '/v1/me', headers });
const refresh = (headers: Record<string, string>) =>
  s.app.inject({
    method: 'POST',
    url: '/v1/auth/refresh',
    payload: {},
    headers: { ...headers, origin: 'http://127.0.0.1', host: '127.0.0.1', 'sec-fetch-site': 'same-origin' },
  });

/** The session's cookies told to go away: empty, Max-Age=0, the same Path and attributes as when set. */
function assertCleared(res: { headers: Record<string, unknown> }) {
  assert.deepEqual(
    setCookies(res).map((c) => c.raw),
    [
      `${ACCESS}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict`,
      `${REFRESH}=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Strict`,
      `${SIGNED_IN}=; Path=/; Max-Age=0; Secure; SameSite=Strict`,
      // The refresh cookie's earlier name and path, so an upgraded browser holds no stale one.
      '__Secure-bulwark_refresh=; Path=/v1/auth/refresh; Max-Age=0; HttpOnly; Secure; SameSite=Strict',
    ],
  );
}

test('password sign-in with session "cookie": the TOTP step, both cookies exactly as designed, no token in the body', async () => {
  const frank = await newUser('frank');
  const secret = newTotpSecret();
  const box = createKeyringFileBox(s.config.masterKeyFile!);
  await s.db.pool.query(
    'INSERT INTO user_totp (user_id, secret_sealed, confirmed_at) VALUES ($1, $2, now())',
    [frank.id, box.seal(secret.toString('base64'), `user-totp:${frank.id}`)],
  );

  const step = await login({ username: 'frank', password: PASSWORD, session: 'cookie' });
  assert.equal(step.statusCode, 401, step.body);
  assert.equal(step.json().error.code, 'totp_required');
  assert.deepEqual(setCookies(step), [], 'no cookie before the second factor');

  const res = await login({
    username: 'frank',
    password: PASSWORD,
    totp_code: totpAt(secret, Date.now()),
    session: 'cookie',
  });
  assert.equal(res.statusCode, 200, res.body);
  const body = res.json();
  assert.deepEqual(Object.keys(body).sort(), ['csrf_token', 'expires_in', 'session']);
  assert.equal(body.session, 'cookie');
  assert.equal(body.expires_in, 900);
  assert.match(body.csrf_token, /^[A-Za-z0-9_-]{43}$/);
  assert.equal(res.headers['cache-control'], 'no-store');

  const [access, refreshC, signedIn, ...more] = setCookies(res);
  assert.equal(more.length, 0);
  // The page's hint that a session may be there: no secret, not HttpOnly, gone with the session.
  assert.equal(
    signedIn!.raw.replace(/Max-Age=\d+/, 'Max-Age=N'),
    `${SIGNED_IN}=1; Path=/; Max-Age=N; Secure; SameSite=Strict`,
  );
  assert.equal(access!.name, ACCESS);
  assert.match(access!.value, JWT);
  assert.deepEqual(access!.attributes, ['Path=/', 'Max-Age=900', 'HttpOnly', 'Secure', 'SameSite=Strict']);
  assert.equal(refreshC!.name, REFRESH);
  assert.match(refreshC!.value, /^bwr_[A-Za-z0-9_-]{43}$/);
  const [path, maxAge, ...rest] = refreshC!.attributes;
  // `__Host-`: Path=/ and no Domain, so no sibling host can set or shadow it.
  assert.equal(path, 'Path=/');
  // The session's own end (30 days from sign-in), not a fresh 30 days at every refresh.
  assert.ok(Math.abs(Number(maxAge!.slice('Max-Age='.length)) - 30 * 86_400) <= 2, maxAge);
  assert.deepEqual(rest, ['HttpOnly', 'Secure', 'SameSite=Strict']);
  // Neither token is anywhere in the body.
  assert.ok(!res.body.includes(access!.value) && !res.body.includes(refreshC!.value));
  assert.doesNotMatch(res.body, /access_token|refresh_token|bwr_|eyJ/);

  // The cookie authenticates; /v1/me hands the page its CSRF token back (and only by cookie).
  const session = sessionFrom(res);
  const byCookie = await me(apiCookie(session));
  assert.equal(byCookie.statusCode, 200, byCookie.body);
  assert.equal(byCookie.json().user.id, frank.id);
  assert.equal(byCookie.json().csrf_token, body.csrf_token);
  const byBearer = await me({ authorization: `Bearer ${session.access}` });
  assert.equal(byBearer.statusCode, 200);
  assert.equal(byBearer.json().csrf_token, undefined, 'no CSRF token for a bearer client');
  assert.equal(byBearer.json().client_ip, '127.0.0.1');

  // Without `session` the answer is the API's, as before.
  await newUser('gina');
  const tokens = await login({ username: 'gina', password: PASSWORD });
  assert.deepEqual(Object.keys(tokens.json()).sort(), ['access_token', 'expires_in', 'refresh_token']);
  assert.deepEqual(setCookies(tokens), []);
});

test('refresh by cookie rotates both cookies (same session, same CSRF token); an old refresh cookie replayed ends the session', async () => {
  await newUser('hana');
  const first = await cookieLogin('hana');

  const res = await refresh(refreshCookie(first));
  assert.equal(res.statusCode, 200, res.body);
  assert.deepEqual(Object.keys(res.json()).sort(), ['csrf_token', 'expires_in', 'session']);
  const second = sessionFrom(res);
  assert.notEqual(second.refresh, first.refresh);
  assert.equal(second.csrf, first.csrf, 'the CSRF token is the session’s, across refreshes');
  assert.doesNotMatch(res.body, /bwr_|eyJ/);
  assert.equal((await me(apiCookie(second))).statusCode, 200);

  // The first refresh cookie again: someone else holds it. The whole session ends.
  const reuse = await refresh(refreshCookie(first));
  assert.equal(reuse.statusCode, 401, reuse.body);
  assert.equal(reuse.json().error.code, 'unauthorized');
  assertCleared(reuse);
  assert.equal((await me(apiCookie(second))).statusCode, 401, 'the live access cookie is revoked too');
  assert.equal((await refresh(refreshCookie(second))).statusCode, 401, 'and the live refresh cookie');
  const events = await s.db.pool.query(
    "SELECT 1 FROM audit_events WHERE action = 'session.refresh_reused' AND outcome = 'denied'",
  );
  assert.equal(events.rowCount, 1);

  // No refresh cookie at all: 401 and cleared, no session touched.
  const none = await refresh({});
  assert.equal(none.statusCode, 401);
  assertCleared(none);
  // A refresh token in the body still answers tokens (API clients), never cookies.
  const api = await login({ username: 'hana', password: PASSWORD });
  const byBody = await s.app.inject({
    method: 'POST',
    url: '/v1/auth/refresh',
    payload: { refresh_token: api.json().refresh_token },
  });
  assert.equal(byBody.statusCode, 200, byBody.body);
  assert.deepEqual(Object.keys(byBody.json()).sort(), ['access_token', 'expires_in', 'refresh_token']);
  assert.deepEqual(setCookies(byBody), []);
});

test('logout by cookie needs the CSRF token, revokes the session and clears both cookies; the old cookies replayed are 401', async () => {
  await newUser('ivan');
  const session = await cookieLogin('ivan');
  const noToken = await s.app.inject({ method: 'POST', url: '/v1/auth/logout', headers: apiCookie(session) });
  assert.equal(noToken.statusCode, 403, noToken.body);
  assert.equal(noToken.json().error.code, 'csrf_failed');
  assert.equal((await me(apiCookie(session))).statusCode, 200, 'a refused logout ends nothing');

  const out = await s.app.inject({ method: 'POST', url: '/v1/auth/logout', headers: pageWrite(session) });
  assert.equal(out.statusCode, 200, out.body);
  assert.deepEqual(out.json(), { logged_out: true });
  assertCleared(out);
  const replay = await me(apiCookie(session));
  assert.equal(replay.statusCode, 401);
  assert.equal(replay.json().error.code, 'unauthorized');
  assert.equal((await refresh(refreshCookie(session))).statusCode, 401);
});

test('a suspended user’s next request by cookie is 401, and so is their refresh', async () => {
  const judy = await newUser('judy');
  const session = await cookieLogin('judy');
  assert.equal((await me(apiCookie(session))).statusCode, 200);
  const admin = await withTx(s.db.pool, (tx) =>
    createLocalUser(tx, { username: 'root-admin', password: PASSWORD, platformAdmin: true }),
  );
  const adminSession = await cookieLogin(admin.username!);
  const suspend = await s.app.inject({
    method: 'POST',
    url: `/v1/users/${judy.id}/suspend`,
    headers: pageWrite(adminSession),
  });
  assert.equal(suspend.statusCode, 200, suspend.body);
  assert.equal((await me(apiCookie(session))).statusCode, 401);
  assert.equal((await refresh(refreshCookie(session))).statusCode, 401);
});

test('invite redemption with session "cookie" signs the new user in; without it, the answer is as before', async () => {
  const key = await createTestKey(s, { account: 'acme' });
  const codes = await s.app.inject({
    method: 'POST',
    url: '/v1/invites',
    headers: key.headers,
    payload: { count: 2, role: 'member' },
  });
  assert.equal(codes.statusCode, 201, codes.body);
  const [a, b] = codes.json().invites as { code: string }[];
  const redeem = (payload: Record<string, unknown>) =>
    s.app.inject({
      method: 'POST',
      url: '/v1/auth/invites/redeem',
      payload,
      headers: { origin: 'http://127.0.0.1', host: '127.0.0.1', 'sec-fetch-site': 'same-origin' },
    });
  const res = await redeem({ code: a!.code, username: 'kate', password: PASSWORD, session: 'cookie' });
  assert.equal(res.statusCode, 201, res.body);
  const body = res.json();
  assert.equal(body.user.username, 'kate');
  assert.equal(body.session, 'cookie');
  assert.equal(body.role, 'member');
  assert.doesNotMatch(res.body, /bwr_|eyJ|access_token|refresh_token/);
  const session = sessionFrom(res);
  const who = await me(apiCookie(session));
  assert.equal(who.statusCode, 200, who.body);
  assert.equal(who.json().user.username, 'kate');
  assert.equal(who.json().csrf_token, body.csrf_token);

  const plain = await redeem({ code: b!.code, username: 'liam', password: PASSWORD });
  assert.equal(plain.statusCode, 201, plain.body);
  assert.deepEqual(Object.keys(plain.json()).sort(), ['account', 'role', 'user']);
  assert.deepEqual(setCookies(plain), []);
});

test('cookie sessions only where the browser keeps Secure cookies: plain http to a non-loopback host is refused', async () => {
  await newUser('mona');
  const remote = await login(
    { username: 'mona', password: PASSWORD, session: 'cookie' },
    { host: 'bulwark.example.com' },
  );
  assert.equal(remote.statusCode, 400, remote.body);
  assert.match(remote.json().error.message, /https/);
  assert.deepEqual(setCookies(remote), []);
  for (const host of ['127.0.0.1:8080', 'localhost:3000', '[::1]:8080']) {
    const res = await login({ username: 'mona', password: PASSWORD, session: 'cookie' }, { host });
    assert.equal(res.statusCode, 200, `${host}: ${res.body}`);
  }
  // Bearer tokens need no cookies: the API works over anything.
  const api = await login({ username: 'mona', password: PASSWORD }, { host: 'bulwark.example.com' });
  assert.equal(api.statusCode, 200, api.body);
});

test('behind a trusted TLS proxy (X-Forwarded-Proto: https) a remote host gets cookie sessions', async () => {
  const proxied = await createTestServer({ trustProxy: true });
  try {
    await withTx(proxied.db.pool, (tx) =>
      createLocalUser(tx, { username: 'nina', password: PASSWORD, platformAdmin: false }),
    );
    const send = (proto: string) =>
      proxied.app.inject({
        method: 'POST',
        url: '/v1/auth/login',
        payload: { username: 'nina', password: PASSWORD, session: 'cookie' },
        headers: { host: 'db.example.com', 'x-forwarded-proto': proto, origin: `${proto}://db.example.com` },
      });
    assert.equal((await send('http')).statusCode, 400);
    const ok = await send('https');
    assert.equal(ok.statusCode, 200, ok.body);
    assert.equal(setCookies(ok).length, 3);
  } finally {
    await proxied.stop();
  }
});

test('GET /v1/auth/providers says which sign-in methods exist (public)', async () => {
  const res = await s.app.inject({ method: 'GET', url: '/v1/auth/providers' });
  assert.equal(res.statusCode, 200, res.body);
  assert.deepEqual(res.json(), { local: true, oidc: { enabled: false, label: null } });
});

test('providers is rate limited per address like the other public routes', async () => {
  const limited = await createTestServer({ rateLimitIpPerMinute: 3 });
  try {
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++)
      statuses.push((await limited.app.inject({ method: 'GET', url: '/v1/auth/providers' })).statusCode);
    assert.deepEqual(statuses, [200, 200, 200, 429]);
  } finally {
    await limited.stop();
  }
});

test('a cookie refresh may come without any body', async () => {
  await newUser('omar');
  const session = await cookieLogin('omar');
  const res = await s.app.inject({
    method: 'POST',
    url: '/v1/auth/refresh',
    headers: refreshCookie(session),
  });
  assert.equal(res.statusCode, 200, res.body);
  assert.equal(res.json().csrf_token, session.csrf);
});
