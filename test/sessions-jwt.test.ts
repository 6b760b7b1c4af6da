// Access tokens under attack, refresh rotation and reuse, logout, suspension, user callers — through
// a fully wired app on a real control database.
import assert from 'node:assert/strict';
import { createHmac, createPrivateKey, generateKeyPairSync, type KeyObject, randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { SignJWT } from 'jose';
import { createKeyringFileBox } from '../src/server/crypto/keyring-box.ts';
import { deleteEndedSessions } from '../src/server/modules/sessions/sessions.repo.ts';
import { createAccount } from './helpers/databases.ts';
import { createTestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { createTestUser, signIn, type TestUser } from './helpers/session-users.ts';

let s: TestServer;
let acmeId: string;
let otherId: string;
let owner: TestUser;
let member: TestUser;
let viewer: TestUser;
let loner: TestUser;
let admin: TestUser;
let signing: { kid: string; key: KeyObject; publicPem: string };

before(async () => {
  s = await createTestServer();
  await s.keyAuth.listenerReady();
  acmeId = await createAccount(s, 'acme');
  otherId = await createAccount(s, 'other');
  owner = await createTestUser(s, {
    username: 'olivia',
    memberships: [{ accountId: acmeId, role: 'owner' }],
  });
  member = await createTestUser(s, {
    username: 'mark',
    memberships: [{ accountId: acmeId, role: 'member' }],
  });
  viewer = await createTestUser(s, {
    username: 'vera',
    memberships: [{ accountId: acmeId, role: 'viewer' }],
  });
  loner = await createTestUser(s, { username: 'lonely' });
  admin = await createTestUser(s, { username: 'root-admin', platformAdmin: true });
  await signIn(s, loner); // makes the signing key
  const row = (
    await s.db.pool.query('SELECT kid, public_key_pem, private_key_sealed FROM session_signing_keys')
  ).rows[0];
  const box = createKeyringFileBox(s.config.masterKeyFile!);
  signing = {
    kid: row.kid,
    key: createPrivateKey(box.open(row.private_key_sealed, `session-signing-key:${row.kid}`)),
    publicPem: row.public_key_pem,
  };
});
after(() => s.stop());

const get = (url: string, token: string, headers: Record<string, string> = {}) =>
  s.app.inject({ method: 'GET', url, headers: { authorization: `Bearer ${token}`, ...headers } });
const post = (url: string, token: string | null, payload?: object) =>
  s.app.inject({
    method: 'POST',
    url,
    headers: token ? { authorization: `Bearer ${token}` } : {},
    ...(payload ? { payload } : {}),
  });

function assertUnauthorized(r: { statusCode: number; json(): unknown; body: string }, what: string) {
  assert.equal(r.statusCode, 401, `${what}: ${r.body}`);
  const e = (r.json() as { error: { code: string; message: string; request_id: string } }).error;
  assert.equal(e.code, 'unauthorized', what);
  assert.equal(typeof e.request_id, 'string', what);
}

const b64 = (o: object) => Buffer.from(JSON.stringify(o)).toString('base64url');

/** A token signed with the real key; `claims`/`header` override the good ones. */
async function forge(
  sub: string,
  jti: string,
  claims: Record<string, unknown> = {},
  header: Record<string, unknown> = {},
  key: KeyObject = signing.key,
) {
  const iat = Math.floor(Date.now() / 1000);
  return new SignJWT({ iss: 'bulwark', aud: 'bulwark-api', sub, jti, iat, exp: iat + 900, ...claims })
    .setProtectedHeader({ alg: 'EdDSA', typ: 'at+jwt', kid: signing.kid, ...header })
    .sign(key);
}

const jtiOf = (token: string) =>
  (JSON.parse(Buffer.from(token.split('.')[1]!, 'base64url').toString()) as { jti: string }).jti;

test('a signed-in user: /v1/me, and the account routes at their role’s level', async () => {
  const t = await signIn(s, owner);
  const me = await get('/v1/me', t.access_token);
  assert.equal(me.statusCode, 200, me.body);
  assert.deepEqual(me.json(), {
    user: { id: owner.id, username: 'olivia', platform_admin: false, status: 'active', totp_enabled: false },
    client_ip: '127.0.0.1',
    memberships: [{ account: 'acme', role: 'owner', databases: null }],
  });
  assert.equal(t.expires_in, 900);
  assert.match(t.refresh_token, /^bwr_[A-Za-z0-9_-]{43}$/);
  // An owner acts as an account admin: listing the account's keys works.
  assert.equal((await get('/v1/keys', t.access_token)).statusCode, 200);
  // A viewer reads but does not write; a member cannot manage keys.
  const v = await signIn(s, viewer);
  assert.equal((await get('/v1/databases', v.access_token)).statusCode, 200);
  const created = await s.app.inject({
    method: 'POST',
    url: '/v1/databases',
    headers: v.headers,
    payload: { name: 'viewerdb' },
  });
  assert.equal(created.statusCode, 403, created.body);
  const m = await signIn(s, member);
  assert.equal((await get('/v1/keys', m.access_token)).statusCode, 403);
  // No membership: /v1/me works, account routes are 403 (not 401: the session is good).
  const l = await signIn(s, loner);
  assert.equal((await get('/v1/me', l.access_token)).statusCode, 200);
  const none = await get('/v1/databases', l.access_token);
  assert.equal(none.statusCode, 403, none.body);
  // Naming an account one is not a member of is the same 403, existing or not.
  const foreign = await get('/v1/databases', t.access_token, { 'bulwark-account': 'other' });
  const missing = await get('/v1/databases', t.access_token, { 'bulwark-account': 'nosuch' });
  assert.equal(foreign.statusCode, 403);
  assert.equal(foreign.json().error.message, missing.json().error.message);
  assert.equal((await get('/v1/databases', t.access_token, { 'bulwark-account': 'acme' })).statusCode, 200);
  // Keys keep working, and a key is not a user.
  const key = await createTestKey(s, { account: 'acme' });
  assert.equal((await get('/v1/whoami', key.key)).statusCode, 200);
  assert.equal((await get('/v1/me', key.key)).statusCode, 403);
  assert.equal((await get('/v1/whoami', t.access_token)).statusCode, 403);
});

test('a user with several memberships names the account, or is refused', async () => {
  const both = await createTestUser(s, {
    username: 'twofold',
    memberships: [
      { accountId: acmeId, role: 'viewer' },
      { accountId: otherId, role: 'admin' },
    ],
  });
  const t = await signIn(s, both);
  assert.equal((await get('/v1/databases', t.access_token)).statusCode, 403);
  assert.equal((await get('/v1/keys', t.access_token, { 'bulwark-account': 'other' })).statusCode, 200);
  assert.equal((await get('/v1/keys', t.access_token, { 'bulwark-account': 'acme' })).statusCode, 403);
  assert.equal((await get('/v1/keys', t.access_token, { 'bulwark-account': 'Bad Name!' })).statusCode, 400);
});

test('JWT attacks: each is 401 in the API error shape', async () => {
  const good = await signIn(s, owner);
  const jti = jtiOf(good.access_token);
  assert.equal((await get('/v1/me', good.access_token)).statusCode, 200, 'control: the good token works');
  assert.equal(
    (await get('/v1/me', await forge(owner.id, jti))).statusCode,
    200,
    'control: forge() is right',
  );

  const [h, p] = good.access_token.split('.') as [string, string, string];
  const attacks: Record<string, string> = {
    'alg none': `${b64({ alg: 'none', typ: 'at+jwt', kid: signing.kid })}.${p}.`,
    'HS256 signed with the public key': (() => {
      const head = b64({ alg: 'HS256', typ: 'at+jwt', kid: signing.kid });
      const sig = createHmac('sha256', signing.publicPem).update(`${head}.${p}`).digest('base64url');
      return `${head}.${p}.${sig}`;
    })(),
    'wrong aud': await forge(owner.id, jti, { aud: 'someone-else' }),
    'wrong iss': await forge(owner.id, jti, { iss: 'https://evil.example' }),
    expired: await forge(owner.id, jti, {
      iat: Math.floor(Date.now() / 1000) - 3600,
      exp: Math.floor(Date.now() / 1000) - 60,
    }),
    'issued in the future': await forge(owner.id, jti, { iat: Math.floor(Date.now() / 1000) + 600 }),
    'lifetime over the limit': await forge(owner.id, jti, { exp: Math.floor(Date.now() / 1000) + 86_400 }),
    'no jti': await forge(owner.id, jti, { jti: undefined }),
    'wrong typ': await forge(owner.id, jti, {}, { typ: 'JWT' }),
    'another user’s session (sub ≠ session user)': await forge(member.id, jti),
    'a session that does not exist': await forge(owner.id, randomUUID()),
    'tampered payload': `${h}.${b64({
      ...JSON.parse(Buffer.from(p, 'base64url').toString()),
      sub: admin.id,
    })}.${good.access_token.split('.')[2]}`,
    'signed with another key under the same kid': await forge(
      owner.id,
      jti,
      {},
      {},
      generateKeyPairSync('ed25519').privateKey,
    ),
    'unknown kid': await forge(owner.id, jti, {}, { kid: 'AAAAAAAAAAAAAAAAAAAAAA' }),
    garbage: 'eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ4In0.AAAA',
  };
  for (const [what, token] of Object.entries(attacks)) assertUnauthorized(await get('/v1/me', token), what);
  // Revoked jti: after logout the very next request is refused.
  assert.equal((await post('/v1/auth/logout', good.access_token)).statusCode, 200);
  assertUnauthorized(await get('/v1/me', good.access_token), 'revoked jti (logout)');
  assertUnauthorized(await get('/v1/me', await forge(owner.id, jti)), 'revoked jti, freshly signed');
  assertUnauthorized(
    await post('/v1/auth/refresh', null, { refresh_token: good.refresh_token }),
    'refresh after logout',
  );
  const logged = await s.db.pool.query(
    "SELECT actor_id, details->>'reason' AS reason FROM audit_events WHERE action = 'session.logout' AND target_id = $1",
    [jti],
  );
  assert.deepEqual(logged.rows, [{ actor_id: owner.id, reason: 'logout' }]);
});

test('refresh rotates; a reused refresh token revokes the whole family', async () => {
  const first = await signIn(s, member);
  const r1 = await post('/v1/auth/refresh', null, { refresh_token: first.refresh_token });
  assert.equal(r1.statusCode, 200, r1.body);
  const second = r1.json() as { access_token: string; refresh_token: string };
  assert.notEqual(second.refresh_token, first.refresh_token);
  assert.equal(jtiOf(second.access_token), jtiOf(first.access_token), 'same session');
  assert.equal((await get('/v1/me', second.access_token)).statusCode, 200);
  const stored = await s.db.pool.query(
    'SELECT count(*)::int AS n, count(used_at)::int AS used FROM refresh_tokens WHERE session_id = $1',
    [jtiOf(first.access_token)],
  );
  assert.deepEqual(stored.rows[0], { n: 2, used: 1 });
  assert.ok(
    !JSON.stringify((await s.db.pool.query('SELECT * FROM refresh_tokens')).rows).includes(
      second.refresh_token,
    ),
    'refresh tokens are stored hashed',
  );

  // The first token again: refused, and the family is gone — the live access and refresh tokens too.
  assertUnauthorized(await post('/v1/auth/refresh', null, { refresh_token: first.refresh_token }), 'reuse');
  assertUnauthorized(await get('/v1/me', second.access_token), 'access token of the reused family');
  assertUnauthorized(
    await post('/v1/auth/refresh', null, { refresh_token: second.refresh_token }),
    'newest refresh token of the reused family',
  );
  const ev = await s.db.pool.query(
    "SELECT outcome, actor_id FROM audit_events WHERE action = 'session.refresh_reused' AND target_id = $1",
    [jtiOf(first.access_token)],
  );
  assert.deepEqual(ev.rows, [{ outcome: 'denied', actor_id: member.id }]);
  // Garbage and unknown tokens are the same 401, with nothing to revoke.
  assertUnauthorized(await post('/v1/auth/refresh', null, { refresh_token: 'bwr_nope' }), 'unknown');
  assertUnauthorized(await post('/v1/auth/refresh', null, { refresh_token: 'x' }), 'malformed');
});

test('concurrent refreshes of one token: one wins, the family is revoked', async () => {
  const t = await signIn(s, viewer);
  const results = await Promise.all(
    Array.from({ length: 5 }, () => post('/v1/auth/refresh', null, { refresh_token: t.refresh_token })),
  );
  const ok = results.filter((r) => r.statusCode === 200);
  assert.equal(ok.length, 1, results.map((r) => r.statusCode).join(','));
  // The others presented a used token: the family is revoked, the winner's tokens with it.
  assertUnauthorized(await get('/v1/me', (ok[0]!.json() as { access_token: string }).access_token), 'winner');
});

test('suspension: platform admin or an owner; sessions end on the next request; reactivation', async () => {
  const victim = await createTestUser(s, {
    username: 'victim',
    memberships: [{ accountId: acmeId, role: 'member' }],
  });
  const stranger = await createTestUser(s, {
    username: 'stranger',
    memberships: [{ accountId: otherId, role: 'owner' }],
  });
  const v1 = await signIn(s, victim);
  const v2 = await signIn(s, victim);
  assert.equal((await get('/v1/databases', v1.access_token)).statusCode, 200);

  // A member cannot (403 by the policy table; 404 from the service without it), an owner of another
  // account cannot see them (404), nobody suspends themselves.
  const m = await signIn(s, member);
  const byMember = (await post(`/v1/users/${victim.id}/suspend`, m.access_token)).statusCode;
  assert.ok(byMember === 403 || byMember === 404, `a member's suspend answered ${byMember}`);
  const st = await signIn(s, stranger);
  assert.equal((await post(`/v1/users/${victim.id}/suspend`, st.access_token)).statusCode, 404);
  const o = await signIn(s, owner);
  assert.equal((await post(`/v1/users/${owner.id}/suspend`, o.access_token)).statusCode, 403);
  const key = await createTestKey(s, { account: 'acme' });
  assert.equal((await post(`/v1/users/${victim.id}/suspend`, key.key)).statusCode, 403);
  assert.equal((await get('/v1/databases', v1.access_token)).statusCode, 200, 'refusals changed nothing');

  const done = await post(`/v1/users/${victim.id}/suspend`, o.access_token);
  assert.equal(done.statusCode, 200, done.body);
  assert.equal(done.json().status, 'suspended');
  assertUnauthorized(await get('/v1/databases', v1.access_token), 'suspended user, session 1');
  assertUnauthorized(await get('/v1/me', v2.access_token), 'suspended user, session 2');
  assertUnauthorized(await post('/v1/auth/refresh', null, { refresh_token: v2.refresh_token }), 'refresh');
  // A token signed now for the suspended user's session is refused too.
  assertUnauthorized(await get('/v1/me', await forge(victim.id, jtiOf(v1.access_token))), 'fresh token');
  const ev = await s.db.pool.query(
    `SELECT action, count(*)::int AS n FROM audit_events
      WHERE (action = 'user.suspended' AND target_id = $1) OR (action = 'session.revoked' AND details->>'user_id' = $1)
      GROUP BY action ORDER BY action`,
    [victim.id],
  );
  assert.deepEqual(ev.rows, [
    { action: 'session.revoked', n: 2 },
    { action: 'user.suspended', n: 1 },
  ]);
  // Reactivation (here by the platform admin) lets them sign in again; old sessions stay ended.
  const a = await signIn(s, admin);
  const back = await post(`/v1/users/${victim.id}/reactivate`, a.access_token);
  assert.equal(back.statusCode, 200, back.body);
  assert.equal(back.json().status, 'active');
  assertUnauthorized(await get('/v1/me', v1.access_token), 'old session after reactivation');
  const fresh = await signIn(s, victim);
  assert.equal((await get('/v1/me', fresh.access_token)).statusCode, 200);
});

test('a suspended user’s API keys stop on the next request', async () => {
  const creator = await createTestUser(s, {
    username: 'keymaker',
    memberships: [{ accountId: acmeId, role: 'admin' }],
  });
  const key = await createTestKey(s, { account: 'acme' });
  await s.db.pool.query('UPDATE api_keys SET created_by_user_id = $2 WHERE id = $1', [key.id, creator.id]);
  assert.equal((await get('/v1/whoami', key.key)).statusCode, 200, 'cached now');
  const a = await signIn(s, admin);
  assert.equal((await post(`/v1/users/${creator.id}/suspend`, a.access_token)).statusCode, 200);
  assertUnauthorized(await get('/v1/whoami', key.key), 'key of a suspended user');
  assert.equal((await post(`/v1/users/${creator.id}/reactivate`, a.access_token)).statusCode, 200);
  assert.equal((await get('/v1/whoami', key.key)).statusCode, 200, 'back with the user');
});

test('sessions that ended a day ago are pruned with their refresh tokens; live ones stay', async () => {
  const u = await createTestUser(s, { username: 'pruned' });
  const [expired, revoked, live, justEnded] = [
    await signIn(s, u),
    await signIn(s, u),
    await signIn(s, u),
    await signIn(s, u),
  ].map((t) => jtiOf(t.access_token)) as [string, string, string, string];
  await s.db.pool.query("UPDATE sessions SET expires_at = now() - interval '2 days' WHERE id = $1", [
    expired,
  ]);
  await s.db.pool.query(
    "UPDATE sessions SET revoked_at = now() - interval '2 days', revoked_reason = 'logout' WHERE id = $1",
    [revoked],
  );
  await s.db.pool.query("UPDATE sessions SET revoked_at = now(), revoked_reason = 'logout' WHERE id = $1", [
    justEnded,
  ]);
  assert.ok((await deleteEndedSessions(s.db.pool, 1_000)) >= 2);
  const left = await s.db.pool.query(
    `SELECT s.id, count(rt.id)::int AS tokens FROM sessions s LEFT JOIN refresh_tokens rt ON rt.session_id = s.id
      WHERE s.user_id = $1 GROUP BY s.id`,
    [u.id],
  );
  assert.deepEqual(new Set(left.rows.map((r) => r.id)), new Set([live, justEnded]));
  const orphans = await s.db.pool.query(
    'SELECT count(*)::int AS n FROM refresh_tokens WHERE session_id = ANY($1)',
    [[expired, revoked]],
  );
  assert.equal(orphans.rows[0].n, 0);
});
