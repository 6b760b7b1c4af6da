import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { ServerConfig } from '../src/server/config.ts';
import { ACCESS, apiCookie, cookieValue, REFRESH, SIGNED_IN, setCookies } from './helpers/cookie-jar.ts';
import { startOidcProvider, type TestOidcProvider } from './helpers/oidc-provider.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

// The dashboard's OIDC sign-in against a real provider: the flow ends in the session cookies and a
// 302 into the dashboard; a failure lands there too, with the error code in the fragment.

const CALLBACK = 'http://127.0.0.1:8080/v1/auth/oidc/callback';

let provider: TestOidcProvider;
let s: TestServer;

before(async () => {
  provider = await startOidcProvider({
    redirectUri: CALLBACK,
    accounts: { alice: { groups: ['dba'] }, frank: {} },
  });
  s = await createTestServer({
    oidcIssuer: provider.issuer,
    oidcClientId: provider.clientId,
    oidcClientSecret: provider.clientSecret,
    oidcRedirectUrl: CALLBACK,
    oidcRoleMap: ['dba=acme:admin'] as unknown as ServerConfig['oidcRoleMap'],
    oidcLabel: 'Example SSO',
  });
  await s.db.pool.query("INSERT INTO accounts (name) VALUES ('acme')");
});
after(async () => {
  await s?.stop();
  await provider?.close();
});

async function start(query: string) {
  const res = await s.app.inject({ method: 'GET', url: `/v1/auth/oidc/start${query}` });
  assert.equal(res.statusCode, 302, res.body);
  return { location: String(res.headers.location), flow: cookieValue(res, 'bulwark_oidc') };
}

const callback = (back: URL, flow: string) =>
  s.app.inject({
    method: 'GET',
    url: `${back.pathname}${back.search}`,
    headers: { cookie: `bulwark_oidc=${flow}`, 'user-agent': 'oidc-cookie-test' },
  });

test('session=cookie: the callback sets both session cookies and sends the browser into the dashboard', async () => {
  const { location, flow } = await start('?session=cookie&redirect=/databases');
  assert.match(flow, /^c\.[A-Za-z0-9_-]{43}$/, 'the flow binding says it ends in cookies');
  const back = await provider.authorize(location, 'alice');
  const res = await callback(back, flow);
  assert.equal(res.statusCode, 302, res.body);
  assert.equal(res.headers.location, '/databases');
  assert.equal(res.headers['cache-control'], 'no-store');
  assert.doesNotMatch(res.body, /bwr_|eyJ|access_token/);
  const names = setCookies(res).map((c) => `${c.name}=${c.value === '' ? '' : '…'}`);
  assert.deepEqual(names, ['bulwark_oidc=', `${ACCESS}=…`, `${REFRESH}=…`, `${SIGNED_IN}=…`]);
  const access = cookieValue(res, ACCESS);
  const me = await s.app.inject({ method: 'GET', url: '/v1/me', headers: apiCookie({ access }) });
  assert.equal(me.statusCode, 200, me.body);
  assert.deepEqual(me.json().memberships, [{ account: 'acme', role: 'admin', databases: null }]);
  assert.match(me.json().csrf_token, /^[A-Za-z0-9_-]{43}$/);

  // The same answer from the IdP again (a replayed state): back into the dashboard, signed out.
  const replay = await callback(back, flow);
  assert.equal(replay.statusCode, 302);
  assert.match(String(replay.headers.location), /^\/#oidc_error=unauthorized&request_id=[A-Za-z0-9._-]+$/);
  assert.deepEqual(
    setCookies(replay).map((c) => c.name),
    ['bulwark_oidc'],
    'no session cookie on a failure',
  );
});

test('an identity without a role lands in the dashboard with oidc_error=forbidden', async () => {
  const { location, flow } = await start('?session=cookie');
  const res = await callback(await provider.authorize(location, 'frank'), flow);
  assert.equal(res.statusCode, 302);
  assert.match(String(res.headers.location), /^\/#oidc_error=forbidden&/);
});

test('the mode is bound to the flow: changing the flow cookie’s prefix fails the sign-in either way', async () => {
  // Started for tokens, presented as a cookie flow.
  const tokens = await start('');
  assert.doesNotMatch(tokens.flow, /^c\./);
  const upgraded = await callback(await provider.authorize(tokens.location, 'alice'), `c.${tokens.flow}`);
  assert.equal(upgraded.statusCode, 302);
  assert.match(String(upgraded.headers.location), /oidc_error=unauthorized/);
  assert.equal(setCookies(upgraded).length, 1);
  // Started for cookies, presented as a token flow.
  const cookies = await start('?session=cookie');
  const downgraded = await callback(
    await provider.authorize(cookies.location, 'alice'),
    cookies.flow.slice(2),
  );
  assert.equal(downgraded.statusCode, 401, downgraded.body);
  assert.doesNotMatch(downgraded.body, /access_token/);
  // The token flow itself is unchanged: JSON tokens.
  const plain = await start('?redirect=/keys');
  const ok = await callback(await provider.authorize(plain.location, 'alice'), plain.flow);
  assert.equal(ok.statusCode, 200, ok.body);
  assert.deepEqual(Object.keys(ok.json()).sort(), [
    'access_token',
    'created',
    'expires_in',
    'redirect',
    'refresh_token',
    'user_id',
  ]);
});

test('providers: OIDC enabled with its configured label; a cookie flow from a plain-http remote host is refused', async () => {
  const res = await s.app.inject({ method: 'GET', url: '/v1/auth/providers' });
  assert.deepEqual(res.json(), { local: true, oidc: { enabled: true, label: 'Example SSO' } });
  const remote = await s.app.inject({
    method: 'GET',
    url: '/v1/auth/oidc/start?session=cookie',
    headers: { host: 'bulwark.example.com' },
  });
  assert.equal(remote.statusCode, 400, remote.body);
});

test('an OIDC cookie sign-in ends the browser’s previous session; the fresh one counts as re-authenticated', async () => {
  const signInOnce = async (cookie = '') => {
    const { location, flow } = await start('?session=cookie');
    const back = await provider.authorize(location, 'alice');
    const res = await s.app.inject({
      method: 'GET',
      url: `${back.pathname}${back.search}`,
      headers: { cookie: `bulwark_oidc=${flow}${cookie}`, 'user-agent': 'oidc-cookie-test' },
    });
    assert.equal(res.statusCode, 302, res.body);
    return { access: cookieValue(res, ACCESS), refresh: cookieValue(res, REFRESH) };
  };
  const first = await signInOnce();
  const second = await signInOnce(`; ${ACCESS}=${first.access}; ${REFRESH}=${first.refresh}`);
  const asFirst = await s.app.inject({ method: 'GET', url: '/v1/me', headers: apiCookie(first) });
  assert.equal(asFirst.statusCode, 401, 'the previous session was ended');
  const me = await s.app.inject({ method: 'GET', url: '/v1/me', headers: apiCookie(second) });
  assert.equal(me.statusCode, 200, me.body);
  // No local password: a session started within 10 minutes may mint a key without re-entering anything.
  const page = { origin: 'http://127.0.0.1', host: '127.0.0.1', 'sec-fetch-site': 'same-origin' };
  const key = await s.app.inject({
    method: 'POST',
    url: '/v1/keys',
    payload: { name: 'from-oidc', level: 'read' },
    headers: { ...apiCookie(second), ...page, 'x-csrf-token': me.json().csrf_token },
  });
  assert.equal(key.statusCode, 201, key.body);
});
