import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Writable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import fc from 'fast-check';
import type { ServerConfig } from '../src/server/config.ts';
import { createKeyringFileBox } from '../src/server/crypto/keyring-box.ts';
import { createOidcService } from '../src/server/modules/oidc/oidc.service.ts';
import { createLogger } from '../src/shared/logger.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { startOidcProvider, startTamperedDiscovery, type TestOidcProvider } from './helpers/oidc-provider.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

// OIDC sign-in against a real OpenID Provider (oidc-provider) started here on a loopback port:
// authorization code + PKCE, driven through the provider's own login page with plain HTTP.
// The server is never contacted by the provider; the browser's last hop is replayed with inject().

const CALLBACK = 'http://127.0.0.1:8080/v1/auth/oidc/callback';
// docs/operations.md's fail2ban filter, as a JavaScript regex (<ADDR> → an address).
const FAILREGEX = /"msg":"login failed from ([0-9A-Fa-f.:]+): [a-z_]+"/;
const roleMap = (...entries: string[]) => entries as unknown as ServerConfig['oidcRoleMap'];

type Started = { location: URL; cookie: string };

async function start(s: TestServer, query = ''): Promise<Started> {
  const res = await s.app.inject({ method: 'GET', url: `/v1/auth/oidc/start${query}` });
  assert.equal(res.statusCode, 302, res.body);
  const setCookie = String(res.headers['set-cookie']);
  assert.match(
    setCookie,
    /^bulwark_oidc=[A-Za-z0-9_-]+; Path=\/v1\/auth\/oidc; Max-Age=600; HttpOnly; SameSite=Lax/,
  );
  return { location: new URL(String(res.headers.location)), cookie: setCookie.split(';')[0]! };
}

async function callback(s: TestServer, back: URL, cookie: string | null) {
  return s.app.inject({
    method: 'GET',
    url: `${back.pathname}${back.search}`,
    headers: { ...(cookie ? { cookie } : {}), 'user-agent': 'oidc-test' },
  });
}

async function loginEvents(s: TestServer) {
  const r = await s.db.pool.query<{
    outcome: string;
    actor_type: string;
    actor_id: string | null;
    details: { method?: string; reason?: string };
  }>(
    `SELECT outcome, actor_type, actor_id, details FROM audit_events WHERE action = 'auth.login' ORDER BY id`,
  );
  return r.rows;
}

async function lastLoginEvent(s: TestServer) {
  const rows = await loginEvents(s);
  return rows[rows.length - 1];
}

function assertError(res: { statusCode: number; body: string }, status: number, code: string) {
  assert.equal(res.statusCode, status, res.body);
  const body = JSON.parse(res.body) as { error: { code: string; message: string; request_id: string } };
  assert.equal(body.error.code, code);
  assert.equal(typeof body.error.request_id, 'string');
  assert.doesNotMatch(
    res.body,
    /invalid_grant|nonce|issuer claim|OAUTH_/i,
    'the reason stays in the audit log',
  );
}

describe('OIDC sign-in against a real provider', () => {
  let provider: TestOidcProvider;
  let s: TestServer;
  let acmeKey: TestKey;

  before(async () => {
    provider = await startOidcProvider({
      redirectUri: CALLBACK,
      accounts: {
        alice: { groups: ['dba', 'staff'], email: 'alice@example.test', name: 'Alice' },
        bob: { groups: ['staff'] },
        dora: { groups: 'dba' as unknown as string[] },
        erin: { groups: ['staff'] },
        frank: {},
      },
    });
    s = await createTestServer({
      oidcIssuer: provider.issuer,
      oidcClientId: provider.clientId,
      oidcClientSecret: provider.clientSecret,
      oidcRedirectUrl: CALLBACK,
      oidcRoleMap: roleMap('dba=acme:admin', 'dba=nowhere:viewer'),
    });
    acmeKey = await createTestKey(s, { account: 'acme' });
  });
  after(async () => {
    await s?.stop();
    await provider?.close();
  });

  async function invite(role: string): Promise<string> {
    const res = await s.app.inject({
      method: 'POST',
      url: '/v1/invites',
      headers: acmeKey.headers,
      payload: { count: 1, role },
    });
    assert.equal(res.statusCode, 201, res.body);
    return (JSON.parse(res.body) as { invites: { code: string }[] }).invites[0]!.code;
  }

  test('a full sign-in: PKCE S256, state, nonce, scope openid only; a user with the mapped role; no subject in clear', async () => {
    const { location, cookie } = await start(s, '?redirect=/databases');
    assert.equal(location.origin, provider.issuer);
    const p = location.searchParams;
    assert.equal(p.get('response_type'), 'code');
    assert.equal(p.get('scope'), 'openid');
    assert.equal(p.get('code_challenge_method'), 'S256');
    assert.match(p.get('code_challenge') ?? '', /^[A-Za-z0-9_-]{43}$/);
    assert.match(p.get('state') ?? '', /^[A-Za-z0-9_-]{43}$/);
    assert.match(p.get('nonce') ?? '', /^[A-Za-z0-9_-]{43}$/);
    assert.equal(p.get('redirect_uri'), CALLBACK);

    const back = await provider.authorize(location.href, 'alice');
    assert.ok(back.searchParams.get('code'));
    const res = await callback(s, back, cookie);
    assert.equal(res.statusCode, 200, res.body);
    const body = JSON.parse(res.body) as Record<string, unknown>;
    assert.equal(body.created, true);
    assert.equal(body.redirect, '/databases');
    assert.match(String(body.refresh_token), /^bwr_/);
    assert.ok(Number(body.expires_in) > 0);
    assert.match(String(res.headers['set-cookie']), /^bulwark_oidc=; .*Max-Age=0/);

    // The access token is a session of that user.
    const me = await s.app.inject({
      method: 'GET',
      url: '/v1/me',
      headers: { authorization: `Bearer ${body.access_token}` },
    });
    assert.equal(me.statusCode, 200, me.body);
    assert.match(me.body, new RegExp(String(body.user_id)));

    const ids = await s.db.pool.query<{
      user_id: string;
      issuer: string;
      subject_hmac: Buffer;
      email: string | null;
      display_name: string | null;
    }>('SELECT user_id, issuer, subject_hmac, email, display_name FROM user_identities');
    assert.equal(ids.rows.length, 1);
    const row = ids.rows[0]!;
    assert.equal(row.user_id, body.user_id);
    assert.equal(row.issuer, provider.issuer);
    assert.equal(row.subject_hmac.length, 32);
    assert.notDeepEqual(row.subject_hmac, createHash('sha256').update('alice').digest());
    assert.notDeepEqual(row.subject_hmac, createHash('sha256').update(`${provider.issuer}alice`).digest());
    assert.equal(row.email, null, 'no email without the opt-in');
    assert.equal(row.display_name, null, 'no name without the opt-in');
    // Nothing anywhere in the people tables holds the subject in clear.
    const clear = await s.db.pool.query(
      `SELECT 1 FROM user_identities i JOIN users u ON u.id = i.user_id
        WHERE position('alice' in i::text) > 0 OR position('alice' in u::text) > 0`,
    );
    assert.equal(clear.rowCount, 0);
    const m = await s.db.pool.query<{ name: string; role: string }>(
      'SELECT a.name, m.role FROM memberships m JOIN accounts a ON a.id = m.account_id WHERE m.user_id = $1',
      [body.user_id],
    );
    assert.deepEqual(m.rows, [{ name: 'acme', role: 'admin' }], 'the unknown account of the map is skipped');
    const event = await lastLoginEvent(s);
    assert.equal(event?.outcome, 'success');
    assert.equal(event?.actor_type, 'user');
    assert.equal(event?.actor_id, body.user_id);
    assert.equal(event?.details.method, 'oidc');

    // The same identity again: the same user, not a new one.
    const again = await start(s);
    const res2 = await callback(s, await provider.authorize(again.location.href, 'alice'), again.cookie);
    assert.equal(res2.statusCode, 200, res2.body);
    const body2 = JSON.parse(res2.body) as Record<string, unknown>;
    assert.equal(body2.user_id, body.user_id);
    assert.equal(body2.created, false);
    assert.equal(body2.redirect, null);
    assert.equal((await s.db.pool.query('SELECT 1 FROM user_identities')).rowCount, 1);

    // A role claim that is a single string maps too.
    const d = await start(s);
    const resD = await callback(s, await provider.authorize(d.location.href, 'dora'), d.cookie);
    assert.equal(resD.statusCode, 200, resD.body);
  });

  test('a sign-in started on one replica finishes on another (shared flow table and install key)', async () => {
    const replica = await createTestServer(
      {
        oidcIssuer: provider.issuer,
        oidcClientId: provider.clientId,
        oidcClientSecret: provider.clientSecret,
        oidcRedirectUrl: CALLBACK,
        oidcRoleMap: roleMap('dba=acme:admin'),
        masterKeyFile: s.config.masterKeyFile,
      },
      { db: s.db },
    );
    try {
      const { location, cookie } = await start(s);
      const back = await provider.authorize(location.href, 'alice');
      const res = await callback(replica, back, cookie);
      assert.equal(res.statusCode, 200, res.body);
      assert.equal((JSON.parse(res.body) as { created: boolean }).created, false);
      // ... and the state is spent there too.
      assertError(await callback(s, back, cookie), 401, 'unauthorized');
    } finally {
      await replica.stop();
    }
  });

  test('a replayed state is refused (the state is single use), and audited', async () => {
    const { location, cookie } = await start(s);
    const back = await provider.authorize(location.href, 'alice');
    assert.equal((await callback(s, back, cookie)).statusCode, 200);
    const replay = await callback(s, back, cookie);
    assertError(replay, 401, 'unauthorized');
    const event = await lastLoginEvent(s);
    assert.equal(event?.outcome, 'failure');
    assert.equal(event?.actor_type, 'user');
    assert.equal(event?.actor_id, null);
    assert.equal(event?.details.reason, 'unknown_state');
  });

  test('a code used twice is refused by the provider, and audited', async () => {
    const first = await start(s);
    const back = await provider.authorize(first.location.href, 'alice');
    assert.equal((await callback(s, back, first.cookie)).statusCode, 200);
    // The spent code under a fresh, valid state of the same browser.
    const second = await start(s);
    const forged = new URL(back);
    forged.searchParams.set('state', second.location.searchParams.get('state')!);
    assertError(await callback(s, forged, second.cookie), 401, 'unauthorized');
    assert.equal((await lastLoginEvent(s))?.details.reason, 'code_refused');
  });

  test('an ID token minted for another nonce is refused', async () => {
    const { location, cookie } = await start(s);
    // Same state and PKCE challenge, another nonce: only the nonce check can tell.
    const tampered = new URL(location);
    tampered.searchParams.set('nonce', 'another-nonce-0123456789abcdefghijklmnopqrs');
    const back = await provider.authorize(tampered.href, 'alice');
    assertError(await callback(s, back, cookie), 401, 'unauthorized');
    assert.equal((await lastLoginEvent(s))?.details.reason, 'wrong_nonce');
  });

  test('a callback from another browser (no flow cookie, or another one) is refused', async () => {
    const a = await start(s);
    const b = await start(s);
    const back = await provider.authorize(a.location.href, 'alice');
    assertError(await callback(s, back, null), 401, 'unauthorized');
    assert.equal((await lastLoginEvent(s))?.details.reason, 'browser_mismatch');
    // The state was spent by that attempt: even the right browser cannot use it now.
    assertError(await callback(s, back, a.cookie), 401, 'unauthorized');
    const c = await start(s);
    const backC = await provider.authorize(c.location.href, 'alice');
    assertError(await callback(s, backC, b.cookie), 401, 'unauthorized');
    assert.equal((await lastLoginEvent(s))?.details.reason, 'browser_mismatch');
  });

  test('an identity whose claims map to no role, without an invite, is refused with 403 and no user', async () => {
    const users = Number((await s.db.pool.query('SELECT count(*) FROM users')).rows[0].count);
    const { location, cookie } = await start(s);
    const res = await callback(s, await provider.authorize(location.href, 'bob'), cookie);
    assertError(res, 403, 'forbidden');
    assert.equal(Number((await s.db.pool.query('SELECT count(*) FROM users')).rows[0].count), users);
    const event = await lastLoginEvent(s);
    assert.equal(event?.outcome, 'denied');
    assert.equal(event?.details.reason, 'no_role');
  });

  test('a new identity without a mapped role joins by an invite its flow carries, once', async () => {
    const code = await invite('member');
    const { location, cookie } = await start(s, `?invite=${code}`);
    assert.ok(!location.href.includes(code), 'the invite never goes to the provider');
    const res = await callback(s, await provider.authorize(location.href, 'erin'), cookie);
    assert.equal(res.statusCode, 200, res.body);
    const body = JSON.parse(res.body) as { user_id: string; created: boolean };
    assert.equal(body.created, true);
    const m = await s.db.pool.query<{ name: string; role: string }>(
      'SELECT a.name, m.role FROM memberships m JOIN accounts a ON a.id = m.account_id WHERE m.user_id = $1',
      [body.user_id],
    );
    assert.deepEqual(m.rows, [{ name: 'acme', role: 'member' }]);
    assert.equal((await s.db.pool.query('SELECT 1 FROM invites')).rowCount, 0, 'the invite is spent');
    const redeemed = await s.db.pool.query<{ actor_type: string; actor_id: string }>(
      `SELECT actor_type, actor_id FROM audit_events WHERE action = 'invite.redeemed'`,
    );
    assert.deepEqual(redeemed.rows, [{ actor_type: 'user', actor_id: body.user_id }]);

    // The spent code, an unknown one and an expired one: the same 403 as no role at all.
    const expired = await invite('viewer');
    await s.db.pool.query(`UPDATE invites SET expires_at = now() - interval '1 second'`);
    for (const c of [code, 'bwi_never-issued-0123456789abcdefghijklmnopqrstuvw', expired]) {
      const users = Number((await s.db.pool.query('SELECT count(*) FROM users')).rows[0].count);
      const again = await start(s, `?invite=${c}`);
      const refused = await callback(s, await provider.authorize(again.location.href, 'frank'), again.cookie);
      assertError(refused, 403, 'forbidden');
      assert.equal(Number((await s.db.pool.query('SELECT count(*) FROM users')).rows[0].count), users);
      const event = await lastLoginEvent(s);
      assert.equal(event?.details.reason, 'no_role');
    }
  });

  test('a suspended user is refused with 403', async () => {
    await s.db.pool.query(`UPDATE users SET status = 'suspended', suspended_at = now()`);
    try {
      const { location, cookie } = await start(s);
      assertError(
        await callback(s, await provider.authorize(location.href, 'alice'), cookie),
        403,
        'forbidden',
      );
      assert.equal((await lastLoginEvent(s))?.details.reason, 'user_suspended');
    } finally {
      await s.db.pool.query(`UPDATE users SET status = 'active', suspended_at = NULL`);
    }
  });

  test('an expired flow, an error from the provider and invalid parameters are refused', async () => {
    const { location, cookie } = await start(s);
    const back = await provider.authorize(location.href, 'alice');
    await s.db.pool.query(`UPDATE oidc_flows SET expires_at = now() - interval '1 second'`);
    assertError(await callback(s, back, cookie), 401, 'unauthorized');
    assert.equal((await lastLoginEvent(s))?.details.reason, 'expired_state');

    const other = await start(s);
    const denied = new URL(CALLBACK);
    denied.searchParams.set('error', 'access_denied');
    denied.searchParams.set('state', other.location.searchParams.get('state')!);
    assertError(await callback(s, denied, other.cookie), 401, 'unauthorized');
    assert.equal((await lastLoginEvent(s))?.details.reason, 'idp_error');

    const bad = await s.app.inject({ method: 'GET', url: '/v1/auth/oidc/start?redirect=//evil.example/x' });
    assertError(bad, 400, 'validation_failed');
  });

  test('junk at the callback is a 400 or a 401 in the error shape, never a 500, and spends no real flow', async () => {
    const pending = await start(s);
    const text = fc.string({ maxLength: 80, unit: 'grapheme' });
    await fc.assert(
      fc.asyncProperty(
        fc.record(
          { code: text, state: text, iss: text, error: text, error_description: text, cookie: text },
          { requiredKeys: [] },
        ),
        async (q) => {
          const url = new URL(CALLBACK);
          for (const [k, v] of Object.entries(q)) if (k !== 'cookie') url.searchParams.set(k, v);
          const res = await s.app.inject({
            method: 'GET',
            url: `${url.pathname}${url.search}`,
            headers: q.cookie === undefined ? {} : { cookie: `bulwark_oidc=${encodeURIComponent(q.cookie)}` },
          });
          assert.ok([400, 401].includes(res.statusCode), `${res.statusCode} ${res.body}`);
          const body = JSON.parse(res.body) as { error?: { code?: string; request_id?: string } };
          assert.ok(body.error?.code && body.error.request_id, res.body);
        },
      ),
      { numRuns: 150, seed: 12_2026 },
    );
    // The flow started before the junk still signs in.
    const res = await callback(s, await provider.authorize(pending.location.href, 'alice'), pending.cookie);
    assert.equal(res.statusCode, 200, res.body);
  });

  test('an expired ID token is refused (the server clock moved past exp + tolerance)', async () => {
    const box = createKeyringFileBox(s.config.masterKeyFile!);
    let shift = 0;
    const lines: string[] = [];
    const sink = new Writable({
      write(chunk, _enc, done) {
        lines.push(...String(chunk).split('\n').filter(Boolean));
        done();
      },
    });
    const oidc = createOidcService({
      db: s.db.pool,
      log: createLogger('bulwark-server', 'info', sink),
      box,
      config: s.config,
      audit: s.audit,
      sessions: s.sessions,
      now: () => Date.now() + shift,
    });
    provider.setIdTokenTtl(1);
    try {
      const started = await oidc.start({});
      const back = await provider.authorize(started.url, 'alice');
      // 1 s of lifetime + openid-client's 30 s tolerance are behind us; the flow (10 min) is not.
      shift = 45_000;
      const info = { sourceIp: '127.0.0.1', userAgent: null, requestId: 'expired-id-token' };
      await assert.rejects(
        oidc.callback(
          {
            code: back.searchParams.get('code')!,
            state: back.searchParams.get('state')!,
            iss: back.searchParams.get('iss')!,
            binding: started.binding,
          },
          info,
        ),
        (err: { code?: string; status?: number }) => err.code === 'unauthorized' && err.status === 401,
      );
      assert.equal((await lastLoginEvent(s))?.details.reason, 'id_token_expired');
      // One line for fail2ban (docs/operations.md's filter), without the code or the state.
      const failed = lines.filter((l) => FAILREGEX.test(l));
      assert.equal(failed.length, 1, lines.join('\n'));
      assert.match(failed[0]!, /login failed from 127\.0\.0\.1: oidc_id_token_expired/);
      assert.ok(!failed[0]!.includes(back.searchParams.get('code')!));
      assert.ok(!failed[0]!.includes(back.searchParams.get('state')!));
      // Control: the same flow without the clock moved signs in.
      shift = 0;
      const ok = await oidc.start({});
      const okBack = await provider.authorize(ok.url, 'alice');
      const signedIn = await oidc.callback(
        {
          code: okBack.searchParams.get('code')!,
          state: okBack.searchParams.get('state')!,
          iss: okBack.searchParams.get('iss')!,
          binding: ok.binding,
        },
        info,
      );
      assert.equal(signedIn.created, false);
    } finally {
      provider.setIdTokenTtl(300);
    }
  });
});

describe('OIDC sign-in: the wrong issuer', () => {
  let provider: TestOidcProvider;
  let tampered: { issuer: string; close(): Promise<void> };
  let lying: { issuer: string; close(): Promise<void> };
  let s: TestServer;
  let s2: TestServer;

  before(async () => {
    provider = await startOidcProvider({ redirectUri: CALLBACK, accounts: { alice: { groups: ['dba'] } } });
    // A discovery document that names itself the issuer while every endpoint is `provider`'s.
    tampered = await startTamperedDiscovery(provider, { issParameter: false });
    // One that names an issuer other than the address it was fetched from.
    lying = await startTamperedDiscovery(provider, { issParameter: true, claimedIssuer: provider.issuer });
    const common = {
      oidcClientId: provider.clientId,
      oidcClientSecret: provider.clientSecret,
      oidcRedirectUrl: CALLBACK,
      oidcRoleMap: roleMap('dba=acme:admin'),
    };
    s = await createTestServer({ ...common, oidcIssuer: tampered.issuer });
    s2 = await createTestServer({ ...common, oidcIssuer: lying.issuer });
    await createTestKey(s, { account: 'acme' });
  });
  after(async () => {
    await s?.stop();
    await s2?.stop();
    await tampered?.close();
    await lying?.close();
    await provider?.close();
  });

  test('a redirect carrying another issuer (RFC 9207 iss) is refused', async () => {
    const { location, cookie } = await start(s);
    const back = await provider.authorize(location.href, 'alice');
    assert.equal(back.searchParams.get('iss'), provider.issuer);
    assertError(await callback(s, back, cookie), 401, 'unauthorized');
    const event = await lastLoginEvent(s);
    assert.equal(event?.details.reason, 'wrong_issuer');
    assert.equal((await s.db.pool.query('SELECT 1 FROM users')).rowCount, 0);
  });

  test('an ID token from another issuer is refused (iss claim)', async () => {
    const { location, cookie } = await start(s);
    const back = await provider.authorize(location.href, 'alice');
    back.searchParams.delete('iss');
    assertError(await callback(s, back, cookie), 401, 'unauthorized');
    assert.equal((await lastLoginEvent(s))?.details.reason, 'wrong_issuer');
    assert.equal((await s.db.pool.query('SELECT 1 FROM users')).rowCount, 0);
  });

  test('a discovery document naming another issuer is refused: no sign-in starts', async () => {
    const res = await s2.app.inject({ method: 'GET', url: '/v1/auth/oidc/start' });
    assertError(res, 503, 'unavailable');
    assert.equal((await s2.db.pool.query('SELECT 1 FROM oidc_flows')).rowCount, 0);
  });
});

describe('OIDC sign-in: not configured, and the profile opt-in', () => {
  let provider: TestOidcProvider;
  let off: TestServer;
  let on: TestServer;

  before(async () => {
    provider = await startOidcProvider({
      redirectUri: CALLBACK,
      accounts: { alice: { groups: ['dba'], email: 'alice@example.test', name: 'Alice' } },
    });
    off = await createTestServer();
    on = await createTestServer({
      oidcIssuer: provider.issuer,
      oidcClientId: provider.clientId,
      oidcClientSecret: provider.clientSecret,
      oidcRedirectUrl: CALLBACK,
      oidcRoleMap: roleMap('dba=acme:viewer'),
      oidcStoreProfile: true,
    });
    await createTestKey(on, { account: 'acme' });
  });
  after(async () => {
    await off?.stop();
    await on?.stop();
    await provider?.close();
  });

  test('without an issuer both routes answer 404', async () => {
    assertError(await off.app.inject({ method: 'GET', url: '/v1/auth/oidc/start' }), 404, 'not_found');
    assertError(
      await off.app.inject({ method: 'GET', url: '/v1/auth/oidc/callback?state=x&code=y' }),
      404,
      'not_found',
    );
  });

  test('with the opt-in, email and name are requested and stored', async () => {
    const { location, cookie } = await start(on);
    assert.deepEqual(location.searchParams.get('scope')?.split(' ').sort(), ['email', 'openid', 'profile']);
    const res = await callback(on, await provider.authorize(location.href, 'alice'), cookie);
    assert.equal(res.statusCode, 200, res.body);
    const r = await on.db.pool.query<{ email: string; display_name: string }>(
      'SELECT email, display_name FROM user_identities',
    );
    assert.deepEqual(r.rows, [{ email: 'alice@example.test', display_name: 'Alice' }]);
  });
});
