// Step-up re-authentication ("sudo mode"): a signed-in user's session mints lasting access (an
// API key, an invite, a TOTP factor) or reveals a password only within 5 minutes of proving itself
// again with POST /v1/auth/reauth. A stolen session alone cannot; API keys are not asked.
// A fully wired server on its own control DB, real sessions, the real throttle.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createKeyringFileBox } from '../src/server/crypto/keyring-box.ts';
import { createLoginThrottle, usernameKeyFrom } from '../src/server/modules/people/login-throttle.ts';
import { createPasswordGate } from '../src/server/modules/people/password-gate.ts';
import { createReauth } from '../src/server/modules/people/reauth.ts';
import { newTotpSecret, totpAt } from '../src/server/modules/people/totp.ts';
import { createLocalUser } from '../src/server/modules/people/users.service.ts';
import { createStepUp, STEP_UP_WINDOW_MS } from '../src/server/modules/sessions/step-up.ts';
import { createLogger } from '../src/shared/logger.ts';
import { createAccount, enrollFakeAgent } from './helpers/databases.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { createTestUser, signIn } from './helpers/session-users.ts';

const PASSWORD = 'correct horse battery staple 42';
const DB = 'vault';

let s: TestServer;
let acme: string;
let key: TestKey;
let ip = 1;
const freshIp = () => `127.0.7.${ip++}`;

before(async () => {
  s = await createTestServer();
  acme = await createAccount(s, 'acme');
  await enrollFakeAgent(s, 'n1');
  key = await createTestKey(s, { account: 'acme', level: 'admin' });
  const db = await s.app.inject({
    method: 'POST',
    url: '/v1/databases',
    headers: key.headers,
    payload: { name: DB },
  });
  assert.equal(db.statusCode, 202, db.body);
});
after(() => s?.stop());

/** A local user (with a password), owner of acme, and a session issued to them as a sign-in would. */
async function owner(username: string) {
  const u = await createLocalUser(s.db.pool, { username, password: PASSWORD, platformAdmin: false });
  await s.db.pool.query('INSERT INTO memberships (account_id, user_id, role) VALUES ($1, $2, $3)', [
    acme,
    u.id,
    'owner',
  ]);
  const t = await signIn(s, u);
  return { id: u.id, sessionId: t.session.id, headers: t.headers };
}

const post = (url: string, headers: Record<string, string>, payload?: object, remoteAddress = '127.0.0.1') =>
  s.app.inject({ method: 'POST', url, headers, ...(payload ? { payload } : {}), remoteAddress });
const reauth = (headers: Record<string, string>, payload: object, remoteAddress = freshIp()) =>
  post('/v1/auth/reauth', headers, payload, remoteAddress);

/** The three actions that mint lasting access, and a reveal without an inline password. */
const guarded = (headers: Record<string, string>) => ({
  key: () => post('/v1/keys', headers, { name: `k-${ip++}`, level: 'read' }),
  invite: () => post('/v1/invites', headers, { count: 1, role: 'member' }),
  totp: () => post('/v1/me/totp', headers),
  reveal: () => post(`/v1/databases/${DB}/credentials/reveal`, headers, {}),
});

const count = async (sql: string, params: unknown[]) =>
  (await s.db.pool.query<{ n: number }>(sql, params)).rows[0]!.n;

test('a fresh session (a thief’s) cannot enrol TOTP, mint a key or an invite, or reveal: 403 reauth_required, nothing made', async () => {
  const u = await owner('thief-target');
  for (const [what, run] of Object.entries(guarded(u.headers))) {
    const r = await run();
    assert.equal(r.statusCode, 403, `${what}: ${r.body}`);
    assert.equal(r.json().error.code, 'reauth_required', what);
    assert.deepEqual(r.json().error.details, { methods: ['password'] }, what);
  }
  assert.equal(
    await count('SELECT count(*)::int AS n FROM api_keys WHERE created_by_user_id = $1', [u.id]),
    0,
  );
  assert.equal(
    await count('SELECT count(*)::int AS n FROM invites WHERE created_by_user_id = $1', [u.id]),
    0,
  );
  assert.equal(await count('SELECT count(*)::int AS n FROM user_totp WHERE user_id = $1', [u.id]), 0);
});

test('POST /v1/auth/reauth with the password opens a 5-minute window for exactly this session', async () => {
  const u = await owner('olivia');
  const before = Date.now();
  const r = await reauth(u.headers, { password: PASSWORD });
  assert.equal(r.statusCode, 200, r.body);
  const body = r.json();
  assert.deepEqual(Object.keys(body).sort(), ['reauthenticated_at', 'valid_until']);
  const at = Date.parse(body.reauthenticated_at);
  assert.ok(at >= before - 1000 && at <= Date.now() + 1000, body.reauthenticated_at);
  assert.equal(Date.parse(body.valid_until) - at, STEP_UP_WINDOW_MS);
  const g = guarded(u.headers);
  assert.equal((await g.key()).statusCode, 201);
  assert.equal((await g.invite()).statusCode, 201);
  assert.equal((await g.totp()).statusCode, 200);
  const revealed = await g.reveal();
  assert.equal(revealed.statusCode, 200, revealed.body);
  assert.ok(revealed.json().password);
  // Another session of the same user (a new sign-in) starts without the window.
  const other = await signIn(s, { id: u.id });
  const k = await guarded(other.headers).key();
  assert.equal(k.statusCode, 403);
  assert.equal(k.json().error.code, 'reauth_required');
  // Audited: the re-authentication, on the session.
  assert.equal(
    await count(
      "SELECT count(*)::int AS n FROM audit_events WHERE action = 'user.reauthenticated' AND actor_id = $1 AND target_id = $2",
      [u.id, u.sessionId],
    ),
    1,
  );
});

test('the window closes after 5 minutes (the row is read at the time of each action)', async () => {
  const u = await owner('paula');
  assert.equal((await reauth(u.headers, { password: PASSWORD })).statusCode, 200);
  assert.equal((await guarded(u.headers).key()).statusCode, 201);
  await s.db.pool.query(
    "UPDATE sessions SET reauthenticated_at = now() - interval '5 minutes 1 second' WHERE id = $1",
    [u.sessionId],
  );
  const late = await guarded(u.headers).key();
  assert.equal(late.statusCode, 403, late.body);
  assert.equal(late.json().error.code, 'reauth_required');
});

test('the window by an injected clock: open up to 5 minutes after the re-auth, closed a millisecond later', async () => {
  const u = await owner('quinn');
  let t = Date.parse('2030-01-01T00:00:00Z');
  // The server's own parts, on its control DB, with a clock of the test's.
  const reauthCheck = createReauth({
    db: s.db.pool,
    log: createLogger('test', 'silent'),
    audit: s.audit,
    box: createKeyringFileBox(s.config.masterKeyFile!),
    throttle: createLoginThrottle({ usernameKey: usernameKeyFrom(null) }),
    gate: createPasswordGate(),
    now: () => t,
  });
  const stepUp = createStepUp({ db: s.db.pool, reauth: reauthCheck, audit: s.audit, now: () => t });
  const session = { userId: u.id, sessionId: u.sessionId };
  await assert.rejects(stepUp.require(session, 'test'), /reauth|Confirm/i);
  const opened = await stepUp.open({ ...session, sourceIp: '127.0.0.1' }, { password: PASSWORD }, 'req-1');
  assert.equal(opened.reauthenticated_at, '2030-01-01T00:00:00.000Z');
  assert.equal(opened.valid_until, '2030-01-01T00:05:00.000Z');
  t += STEP_UP_WINDOW_MS;
  await stepUp.require(session, 'test');
  t += 1;
  await assert.rejects(
    stepUp.require(session, 'test'),
    (err: { code?: string }) => err.code === 'reauth_required',
  );
});

test('wrong answers: 403 reauth_failed, audited; nothing sent: the methods; TOTP users may send a code', async () => {
  const u = await owner('rita');
  const none = await reauth(u.headers, {});
  assert.equal(none.statusCode, 403);
  assert.equal(none.json().error.code, 'reauth_required');
  assert.deepEqual(none.json().error.details.methods, ['password']);
  const wrong = await reauth(u.headers, { password: 'not the password at all' });
  assert.equal(wrong.statusCode, 403, wrong.body);
  assert.equal(wrong.json().error.code, 'reauth_failed');
  assert.equal(
    await count(
      "SELECT count(*)::int AS n FROM audit_events WHERE action = 'user.reauth_failed' AND actor_id = $1 AND outcome = 'failure'",
      [u.id],
    ),
    1,
  );
  assert.equal((await guarded(u.headers).key()).statusCode, 403, 'a failed re-auth opens nothing');
  // Over-long or unknown fields are refused by validation.
  assert.equal((await reauth(u.headers, { password: 'x'.repeat(1025) })).statusCode, 400);
  assert.equal((await reauth(u.headers, { password: PASSWORD, extra: 1 })).statusCode, 400);
  // A user with TOTP confirmed: the methods say so, and a current code opens the window.
  const secret = newTotpSecret();
  const box = createKeyringFileBox(s.config.masterKeyFile!);
  await s.db.pool.query(
    'INSERT INTO user_totp (user_id, secret_sealed, confirmed_at) VALUES ($1, $2, now())',
    [u.id, box.seal(secret.toString('base64'), `user-totp:${u.id}`)],
  );
  const asked = await guarded(u.headers).invite();
  assert.deepEqual(asked.json().error.details.methods, ['password', 'totp']);
  const code = totpAt(secret, Date.now());
  assert.equal((await reauth(u.headers, { totp_code: code })).statusCode, 200);
  assert.equal((await guarded(u.headers).invite()).statusCode, 201);
  // The same code again is refused (each step once).
  assert.equal((await reauth(u.headers, { totp_code: code })).json().error.code, 'reauth_failed');
});

test('guessing is throttled with the sign-in’s budget: 429 with Retry-After, then the sign-in waits too', async () => {
  const u = await owner('sybil');
  const from = '127.0.8.1';
  const codes: number[] = [];
  let retryAfter: string | undefined;
  for (let i = 0; i < 7; i++) {
    const r = await reauth(u.headers, { password: `wrong guess ${i} here` }, from);
    codes.push(r.statusCode);
    if (r.statusCode === 429) retryAfter = String(r.headers['retry-after']);
  }
  assert.deepEqual(codes.slice(0, 5), [403, 403, 403, 403, 403], codes.join(','));
  assert.ok(
    codes.slice(5).every((c) => c === 429),
    codes.join(','),
  );
  assert.ok(Number(retryAfter) >= 1, `Retry-After ${retryAfter}`);
  assert.equal((await reauth(u.headers, { password: PASSWORD }, from)).statusCode, 429);
  const login = await s.app.inject({
    method: 'POST',
    url: '/v1/auth/login',
    payload: { username: 'sybil', password: PASSWORD },
    remoteAddress: freshIp(),
  });
  assert.equal(login.statusCode, 429, 'the username is throttled at sign-in too');
});

test('a user without a local password (OIDC): a sign-in within 10 minutes counts; reauth says sign_in', async () => {
  const u = await createTestUser(s, {
    username: 'oidc-owner',
    memberships: [{ accountId: acme, role: 'owner' }],
  });
  const t = await signIn(s, u);
  const r = await reauth(t.headers, { password: 'anything at all' });
  assert.equal(r.statusCode, 403);
  assert.equal(r.json().error.code, 'reauth_required');
  assert.deepEqual(r.json().error.details.methods, ['sign_in']);
  assert.equal((await guarded(t.headers).key()).statusCode, 201, 'a fresh sign-in counts');
  await s.db.pool.query("UPDATE sessions SET created_at = now() - interval '11 minutes' WHERE id = $1", [
    t.session.id,
  ]);
  const stale = await guarded(t.headers).invite();
  assert.equal(stale.statusCode, 403);
  assert.deepEqual(stale.json().error.details.methods, ['sign_in']);
});

test('API keys are not asked: an admin key mints keys and invites and reveals; it cannot call reauth', async () => {
  const g = guarded(key.headers);
  assert.equal((await g.key()).statusCode, 201);
  assert.equal((await g.invite()).statusCode, 201);
  assert.equal((await post(`/v1/databases/${DB}/credentials/reveal`, key.headers)).statusCode, 200);
  const r = await reauth(key.headers, { password: PASSWORD });
  assert.equal(r.statusCode, 403);
  assert.equal(r.json().error.code, 'forbidden');
});

test('by cookie: reauth needs the CSRF token like any write; with it the window opens', async () => {
  await createLocalUser(s.db.pool, { username: 'tina', password: PASSWORD, platformAdmin: false });
  const login = await s.app.inject({
    method: 'POST',
    url: '/v1/auth/login',
    payload: { username: 'tina', password: PASSWORD, session: 'cookie' },
    remoteAddress: freshIp(),
  });
  assert.equal(login.statusCode, 200, login.body);
  const cookies = ([] as string[]).concat(login.headers['set-cookie'] as string | string[]);
  const cookie = cookies.map((c) => c.split(';', 1)[0]).join('; ');
  const csrf = login.json().csrf_token as string;
  const page = { cookie, origin: 'http://127.0.0.1', host: '127.0.0.1', 'sec-fetch-site': 'same-origin' };
  const noToken = await reauth(page, { password: PASSWORD });
  assert.equal(noToken.statusCode, 403);
  assert.equal(noToken.json().error.code, 'csrf_failed');
  const crossSite = await reauth(
    { ...page, 'x-csrf-token': csrf, 'sec-fetch-site': 'cross-site' },
    { password: PASSWORD },
  );
  assert.equal(crossSite.json().error.code, 'csrf_failed');
  const ok = await reauth({ ...page, 'x-csrf-token': csrf }, { password: PASSWORD });
  assert.equal(ok.statusCode, 200, ok.body);
  const enrol = await post('/v1/me/totp', { ...page, 'x-csrf-token': csrf });
  assert.equal(enrol.statusCode, 200, enrol.body);
});

test('the window survives a refresh (the same session) and ends with the session', async () => {
  const u = await createLocalUser(s.db.pool, { username: 'uma', password: PASSWORD, platformAdmin: false });
  await s.db.pool.query('INSERT INTO memberships (account_id, user_id, role) VALUES ($1, $2, $3)', [
    acme,
    u.id,
    'owner',
  ]);
  const t = await signIn(s, u);
  assert.equal((await reauth(t.headers, { password: PASSWORD })).statusCode, 200);
  const refreshed = await s.app.inject({
    method: 'POST',
    url: '/v1/auth/refresh',
    payload: { refresh_token: t.refresh_token },
  });
  assert.equal(refreshed.statusCode, 200, refreshed.body);
  const next = { authorization: `Bearer ${refreshed.json().access_token}` };
  assert.equal((await guarded(next).key()).statusCode, 201, 'a refresh keeps the window');
  assert.equal((await post('/v1/auth/logout', next)).statusCode, 200);
  assert.equal((await guarded(next).key()).statusCode, 401, 'a logged-out session has no window');
});

test('a promotion needs the window (a stolen owner session cannot raise an accomplice); a demotion never does', async () => {
  const o = await owner('promoter');
  const member = await createTestUser(s, {
    username: 'accomplice',
    memberships: [{ accountId: acme, role: 'member' }],
  });
  const roleOf = async () =>
    (
      await s.db.pool.query('SELECT role FROM memberships WHERE account_id = $1 AND user_id = $2', [
        acme,
        member.id,
      ])
    ).rows[0]?.role;
  const setRole = (headers: Record<string, string>, role: string) =>
    s.app.inject({ method: 'PUT', url: `/v1/users/${member.id}/role`, headers, payload: { role } });

  const refused = await setRole(o.headers, 'owner');
  assert.equal(refused.statusCode, 403, refused.body);
  assert.equal(refused.json().error.code, 'reauth_required');
  assert.equal(await roleOf(), 'member', 'nothing changed');

  assert.equal((await reauth(o.headers, { password: PASSWORD })).statusCode, 200);
  const promoted = await setRole(o.headers, 'admin');
  assert.equal(promoted.statusCode, 200, promoted.body);
  assert.equal(await roleOf(), 'admin');

  // Another session of the same owner, with no window: a demotion goes through at once.
  const fresh = await signIn(s, { id: o.id });
  const demoted = await setRole(fresh.headers, 'viewer');
  assert.equal(demoted.statusCode, 200, demoted.body);
  assert.equal(await roleOf(), 'viewer');
  // …and promoting back from that session is asked again.
  assert.equal((await setRole(fresh.headers, 'member')).json().error.code, 'reauth_required');
});
