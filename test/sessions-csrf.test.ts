import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import type { InjectOptions } from 'fastify';
import { serverConfigSchema } from '../src/server/config.ts';
import { createKeyringFile } from '../src/server/crypto/secret-box.ts';
import { withTx } from '../src/server/db/pool.ts';
import { createServerContext } from '../src/server/main.ts';
import { createLocalUser } from '../src/server/modules/people/users.service.ts';
import { createLogger } from '../src/shared/logger.ts';
import {
  ACCESS,
  apiCookie,
  type CookieSession,
  pageWrite,
  REFRESH,
  refreshCookie,
  sessionFrom,
  setCookies,
} from './helpers/cookie-jar.ts';
import { createTestDb } from './helpers/db.ts';
import { createTestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { createTestUser, signIn } from './helpers/session-users.ts';

// Attacks on the dashboard's cookie sessions: forged writes, other sites, mixed credentials, fixation.

let s: TestServer;
const PASSWORD = 'correct horse battery';

before(async () => {
  s = await createTestServer();
});
after(() => s?.stop());

/** A signed-in user's session as the dashboard holds it (the CSRF token read back from /v1/me). */
async function browserSession(username: string): Promise<CookieSession & { userId: string }> {
  const user = await createTestUser(s, { username });
  const t = await signIn(s, user);
  const me = await s.app.inject({
    method: 'GET',
    url: '/v1/me',
    headers: apiCookie({ access: t.access_token }),
  });
  assert.equal(me.statusCode, 200, me.body);
  return { userId: user.id, access: t.access_token, refresh: t.refresh_token, csrf: me.json().csrf_token };
}

/** The write used below: TOTP enrolment (POST, no body), whose effect is a row. */
const enrol = (headers: Record<string, string>) =>
  s.app.inject({ method: 'POST', url: '/v1/me/totp', headers });
const enrolments = async (userId: string) =>
  (await s.db.pool.query('SELECT 1 FROM user_totp WHERE user_id = $1', [userId])).rowCount;

const B64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';
/** The base64url character with the same high four bits and other low two (unused at the end of 32 bytes). */
const spareBitsFlipped = (c: string) => B64URL[B64URL.indexOf(c) ^ 1]!;

function assertCsrfRefused(res: { statusCode: number; body: string }, what: string) {
  assert.equal(res.statusCode, 403, `${what}: ${res.body}`);
  const body = JSON.parse(res.body) as { error: { code: string; message: string; request_id: string } };
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message', 'request_id'], what);
  assert.equal(body.error.code, 'csrf_failed', what);
}

test('a write by cookie without its session’s X-CSRF-Token is 403 csrf_failed and changes nothing', async () => {
  const victim = await browserSession('victim');
  const other = await browserSession('other');
  // A token the same user had in an earlier session (ended): bound to that session, not to the user.
  const earlier = await signIn(s, { id: victim.userId });
  const earlierMe = await s.app.inject({
    method: 'GET',
    url: '/v1/me',
    headers: apiCookie({ access: earlier.access_token }),
  });
  const earlierToken = earlierMe.json().csrf_token as string;
  await s.app.inject({
    method: 'POST',
    url: '/v1/auth/logout',
    headers: { authorization: `Bearer ${earlier.access_token}` },
  });
  assert.notEqual(earlierToken, victim.csrf);

  const base = { ...apiCookie(victim), origin: 'http://127.0.0.1', host: '127.0.0.1' };
  const tokens: [string, string | undefined][] = [
    ['no token', undefined],
    ['an empty token', ''],
    ['a random token of the right shape', randomBytes(32).toString('base64url')],
    ['an over-long token', 'A'.repeat(500)],
    ['a token with other characters', `${victim.csrf.slice(0, 42)}=`],
    [
      'the token with one character changed',
      `${victim.csrf.slice(0, 20)}${victim.csrf[20] === 'A' ? 'B' : 'A'}${victim.csrf.slice(21)}`,
    ],
    // The same bytes spelt otherwise: base64url's last character has two bits a decoder ignores.
    ['another spelling of the token', `${victim.csrf.slice(0, 42)}${spareBitsFlipped(victim.csrf.at(-1)!)}`],
    ['another user’s token', other.csrf],
    ['the token of the same user’s ended session', earlierToken],
  ];
  for (const [what, token] of tokens) {
    const res = await enrol(token === undefined ? base : { ...base, 'x-csrf-token': token });
    assertCsrfRefused(res, what);
  }
  // Every write method is held to it, not only POST.
  const key = await s.app.inject({ method: 'DELETE', url: `/v1/sessions/${victim.userId}`, headers: base });
  assertCsrfRefused(key, 'DELETE');
  const put = await s.app.inject({
    method: 'PUT',
    url: `/v1/users/${other.userId}/role`,
    headers: base,
    payload: { role: 'viewer' },
  });
  assertCsrfRefused(put, 'PUT');
  assert.equal(await enrolments(victim.userId), 0, 'no refused write happened');

  // A read needs no token; the right token lets the write through.
  const read = await s.app.inject({ method: 'GET', url: '/v1/me', headers: apiCookie(victim) });
  assert.equal(read.statusCode, 200);
  const ok = await enrol(pageWrite(victim));
  assert.equal(ok.statusCode, 200, ok.body);
  assert.equal(await enrolments(victim.userId), 1);
});

test('a write from another site is refused even with the right token (Origin, Sec-Fetch-Site)', async () => {
  const u = await browserSession('olga');
  const withToken = { ...apiCookie(u), 'x-csrf-token': u.csrf, host: '127.0.0.1:8080' };
  const foreign: [string, Record<string, string>][] = [
    ['another site', { origin: 'https://evil.example' }],
    [
      'another site naming itself in X-Forwarded-Host (no trusted proxy)',
      { origin: 'http://evil.example', 'x-forwarded-host': 'evil.example' },
    ],
    ['a sandboxed frame (Origin: null)', { origin: 'null' }],
    ['the same host on another port', { origin: 'http://127.0.0.1:9999' }],
    ['a look-alike host', { origin: 'http://127.0.0.1:8080.evil.example' }],
    ['a non-web scheme', { origin: 'file://127.0.0.1:8080' }],
    ['Sec-Fetch-Site: cross-site', { 'sec-fetch-site': 'cross-site' }],
    ['Sec-Fetch-Site: same-site (a sibling subdomain)', { 'sec-fetch-site': 'same-site' }],
    ['Sec-Fetch-Site: none (typed or bookmarked)', { 'sec-fetch-site': 'none' }],
    [
      'same-origin fetch metadata with a foreign Origin',
      { 'sec-fetch-site': 'same-origin', origin: 'https://evil.example' },
    ],
  ];
  for (const [what, headers] of foreign) assertCsrfRefused(await enrol({ ...withToken, ...headers }), what);
  assert.equal(await enrolments(u.userId), 0);

  // Our own page (both headers right), or a client that sends neither (curl with the cookie): through.
  const page = await enrol({
    ...withToken,
    origin: 'http://127.0.0.1:8080',
    'sec-fetch-site': 'same-origin',
  });
  assert.equal(page.statusCode, 200, page.body);
  const curl = await enrol(withToken);
  assert.equal(curl.statusCode, 200, curl.body);
});

test('behind a proxy, the configured public URL is this server’s origin whatever the Host header', async () => {
  const pub = await createTestServer({ publicUrl: 'https://bulwark.example.com' });
  try {
    const user = await createTestUser(pub, { username: 'pia' });
    const t = await signIn(pub, user);
    const cookie = apiCookie({ access: t.access_token });
    const me = await pub.app.inject({ method: 'GET', url: '/v1/me', headers: cookie });
    const headers = { ...cookie, 'x-csrf-token': me.json().csrf_token, host: '10.0.0.5:8080' };
    const ok = await pub.app.inject({
      method: 'POST',
      url: '/v1/me/totp',
      headers: { ...headers, origin: 'https://bulwark.example.com' },
    });
    assert.equal(ok.statusCode, 200, ok.body);
    const bad = await pub.app.inject({
      method: 'POST',
      url: '/v1/me/totp',
      headers: { ...headers, origin: 'http://bulwark.example.com' },
    });
    assertCsrfRefused(bad, 'the public host over another scheme');
  } finally {
    await pub.stop();
  }
});

test('a bearer header always wins over the cookie: API clients are unaffected, and a bad one is not rescued', async () => {
  const a = await browserSession('quinn');
  const b = await browserSession('rosa');
  // B's bearer with A's cookie, no CSRF token: B acts (a bearer request is not a browser's own).
  const asB = await enrol({ ...apiCookie(a), authorization: `Bearer ${b.access}` });
  assert.equal(asB.statusCode, 200, asB.body);
  assert.equal(await enrolments(b.userId), 1);
  assert.equal(await enrolments(a.userId), 0);
  // A wrong, malformed or empty Authorization header is a 401 even with a valid cookie and token.
  for (const authorization of ['Bearer not-a-token', 'Basic dXNlcjpwYXNz', '', `Bearer ${a.access}x`]) {
    const res = await s.app.inject({
      method: 'GET',
      url: '/v1/me',
      headers: { ...apiCookie(a), 'x-csrf-token': a.csrf, authorization },
    });
    assert.equal(res.statusCode, 401, `${JSON.stringify(authorization)}: ${res.body}`);
  }
  // An API key with a cookie: the key acts (and /v1/me refuses keys).
  const key = await createTestKey(s, { account: 'acme' });
  const whoami = await s.app.inject({
    method: 'GET',
    url: '/v1/whoami',
    headers: { ...apiCookie(a), ...key.headers },
  });
  assert.equal(whoami.statusCode, 200, whoami.body);
  // Only an access token travels in the cookie: an API key put there is nobody.
  const keyInCookie = await s.app.inject({
    method: 'GET',
    url: '/v1/whoami',
    headers: { cookie: `${ACCESS}=${key.key}` },
  });
  assert.equal(keyInCookie.statusCode, 401, keyInCookie.body);
});

test('sign-in from another site is refused before the password is looked at (login CSRF)', async () => {
  await withTx(s.db.pool, (tx) =>
    createLocalUser(tx, { username: 'sami', password: PASSWORD, platformAdmin: false }),
  );
  const before = (await s.db.pool.query("SELECT 1 FROM audit_events WHERE action = 'auth.login'")).rowCount;
  for (const headers of [{ origin: 'https://evil.example' }, { 'sec-fetch-site': 'cross-site' }]) {
    const res = await s.app.inject({
      method: 'POST',
      url: '/v1/auth/login',
      payload: { username: 'sami', password: PASSWORD, session: 'cookie' },
      headers,
    });
    assertCsrfRefused(res, JSON.stringify(headers));
    assert.deepEqual(setCookies(res), []);
  }
  const afterCount = (await s.db.pool.query("SELECT 1 FROM audit_events WHERE action = 'auth.login'"))
    .rowCount;
  assert.equal(afterCount, before, 'no sign-in was attempted');
  // The same for a cookie refresh sent by another site.
  const refresh = await s.app.inject({
    method: 'POST',
    url: '/v1/auth/refresh',
    payload: {},
    headers: { origin: 'https://evil.example' },
  });
  assertCsrfRefused(refresh, 'refresh');
});

test('session fixation: a session cookie planted before sign-in is never adopted', async () => {
  const attacker = await browserSession('mallory');
  await withTx(s.db.pool, (tx) =>
    createLocalUser(tx, { username: 'tess', password: PASSWORD, platformAdmin: false }),
  );
  // The victim's browser carries the attacker's cookies (and a garbage one) when signing in.
  const res = await s.app.inject({
    method: 'POST',
    url: '/v1/auth/login',
    payload: { username: 'tess', password: PASSWORD, session: 'cookie' },
    headers: { cookie: `${ACCESS}=${attacker.access}; ${REFRESH}=${attacker.refresh}; junk=1` },
  });
  assert.equal(res.statusCode, 200, res.body);
  const victim = sessionFrom(res);
  assert.notEqual(victim.access, attacker.access);
  assert.notEqual(victim.refresh, attacker.refresh);
  assert.notEqual(victim.csrf, attacker.csrf);
  const asVictim = await s.app.inject({ method: 'GET', url: '/v1/me', headers: apiCookie(victim) });
  assert.equal(asVictim.json().user.username, 'tess');
  // The planted session was this browser's previous one: the sign-in ended it (logged out), and
  // nothing of the victim's sign-in reached it.
  const asPlanted = await s.app.inject({ method: 'GET', url: '/v1/me', headers: apiCookie(attacker) });
  assert.equal(asPlanted.statusCode, 401, asPlanted.body);
  const sessions = await s.db.pool.query<{ user_id: string }>(
    'SELECT DISTINCT user_id FROM sessions WHERE id = $1',
    [JSON.parse(Buffer.from(victim.access.split('.')[1]!, 'base64url').toString()).jti],
  );
  assert.deepEqual(
    sessions.rows.map((r) => r.user_id),
    [(await asVictim.json()).user.id],
  );
});

test('two session cookies at once (a shadowing cookie) authenticate nobody', async () => {
  const a = await browserSession('uma');
  const b = await browserSession('vera');
  const res = await s.app.inject({
    method: 'GET',
    url: '/v1/me',
    headers: { cookie: `${ACCESS}=${a.access}; ${ACCESS}=${b.access}` },
  });
  assert.equal(res.statusCode, 401);
  const refresh = await s.app.inject({
    method: 'POST',
    url: '/v1/auth/refresh',
    payload: {},
    headers: { cookie: `${REFRESH}=${a.refresh}; ${REFRESH}=${b.refresh}` },
  });
  assert.equal(refresh.statusCode, 401);
  // Neither session was spent by that: each refreshes once on its own.
  assert.equal(
    (await s.app.inject({ method: 'POST', url: '/v1/auth/refresh', payload: {}, headers: refreshCookie(a) }))
      .statusCode,
    200,
  );
});

test('no password, token or CSRF token reaches the log; a refused write is one greppable line', async () => {
  const db = await createTestDb();
  const keyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bulwark-keyring-'));
  const masterKeyFile = path.join(keyDir, 'master-keyring.json');
  createKeyringFile(masterKeyFile);
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, done) {
      lines.push(...String(chunk).split('\n').filter(Boolean));
      done();
    },
  });
  const config = serverConfigSchema.parse({
    databaseUrl: db.url,
    dataDir: '/nonexistent',
    port: 0,
    logLevel: 'debug',
    masterKeyFile,
    dashboardDir: path.join(keyDir, 'none'),
  });
  const ctx = await createServerContext({
    config,
    db: db.pool,
    log: createLogger('bulwark-server', 'debug', sink),
  });
  try {
    await withTx(db.pool, (tx) =>
      createLocalUser(tx, { username: 'walt', password: PASSWORD, platformAdmin: false }),
    );
    const inject = (o: InjectOptions) => ctx.app.inject(o);
    const login = await inject({
      method: 'POST',
      url: '/v1/auth/login',
      payload: { username: 'walt', password: PASSWORD, session: 'cookie' },
    });
    assert.equal(login.statusCode, 200, login.body);
    const first = sessionFrom(login);
    const forged = await inject({
      method: 'POST',
      url: '/v1/me/totp',
      headers: { ...apiCookie(first), 'x-csrf-token': `${first.csrf.slice(0, 40)}abc` },
    });
    assert.equal(forged.statusCode, 403);
    // What a browser sends now: both cookies (Path=/) with every request.
    const browserWrite = { ...pageWrite(first), cookie: refreshCookie(first).cookie };
    // Enrolment needs the session re-authenticated first (the password again: never logged either).
    const reauth = await inject({
      method: 'POST',
      url: '/v1/auth/reauth',
      payload: { password: PASSWORD },
      headers: browserWrite,
    });
    assert.equal(reauth.statusCode, 200, reauth.body);
    assert.equal(
      (await inject({ method: 'POST', url: '/v1/me/totp', headers: browserWrite })).statusCode,
      200,
    );
    const rotated = await inject({
      method: 'POST',
      url: '/v1/auth/refresh',
      payload: {},
      headers: refreshCookie(first),
    });
    assert.equal(rotated.statusCode, 200);
    const second = sessionFrom(rotated);
    assert.equal(
      (await inject({ method: 'POST', url: '/v1/auth/refresh', payload: {}, headers: refreshCookie(first) }))
        .statusCode,
      401,
    );
    await inject({ method: 'POST', url: '/v1/auth/logout', headers: pageWrite(second) });

    const text = lines.join('\n');
    assert.ok(lines.length > 5, 'the requests were logged');
    for (const secret of [PASSWORD, first.access, first.refresh, first.csrf, second.access, second.refresh]) {
      assert.ok(!text.includes(secret), `a secret reached the log: ${secret.slice(0, 12)}…`);
    }
    assert.doesNotMatch(text, /bwr_[A-Za-z0-9_-]{8}|eyJ[A-Za-z0-9_-]{20}/);
    assert.ok(
      lines.some((l) => /bulwark csrf failure ip=127\.0\.0\.1 reason=wrong_token/.test(l)),
      'the refused write is one greppable line',
    );
  } finally {
    await ctx.close();
    await db.drop();
    fs.rmSync(keyDir, { recursive: true, force: true });
  }
});

test('behind a trusted proxy that rewrites Host, X-Forwarded-Host names this server', async () => {
  const proxied = await createTestServer({ trustProxy: true });
  try {
    const user = await createTestUser(proxied, { username: 'xena' });
    const t = await signIn(proxied, user);
    const cookie = apiCookie({ access: t.access_token });
    const me = await proxied.app.inject({ method: 'GET', url: '/v1/me', headers: cookie });
    const write = (headers: Record<string, string>) =>
      proxied.app.inject({
        method: 'POST',
        url: '/v1/me/totp',
        headers: { ...cookie, 'x-csrf-token': me.json().csrf_token, host: '127.0.0.1:8080', ...headers },
      });
    const ok = await write({ origin: 'https://db.example.com', 'x-forwarded-host': 'db.example.com' });
    assert.equal(ok.statusCode, 200, ok.body);
    assertCsrfRefused(
      await write({ origin: 'https://db.example.com' }),
      'Host rewritten, no X-Forwarded-Host',
    );
  } finally {
    await proxied.stop();
  }
});
