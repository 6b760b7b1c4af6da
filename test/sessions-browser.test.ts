import assert from 'node:assert/strict';
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { Page } from 'playwright-core';
import { withTx } from '../src/server/db/pool.ts';
import { createLocalUser } from '../src/server/modules/people/users.service.ts';
import { withBrowser } from './helpers/browser.ts';
import { ACCESS, REFRESH, SIGNED_IN } from './helpers/cookie-jar.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

// The cookie session in a real Chromium against a listening server on http://127.0.0.1: what the
// browser stores and sends, what a page's script can see, and what another site can make it do.
// (The attacker's site is http://localhost:<port>: another site than 127.0.0.1 for the browser.)

const PASSWORD = 'correct horse battery';
let s: TestServer;
let tmp: string;
let origin: string;
let attacker: http.Server;
let attackerOrigin: string;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bulwark-browser-session-'));
  fs.mkdirSync(path.join(tmp, 'assets'));
  fs.writeFileSync(
    path.join(tmp, 'index.html'),
    '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>t</title>' +
      '<script type="module" src="/assets/app-1.js"></script></head><body><main>app</main></body></html>',
  );
  fs.writeFileSync(path.join(tmp, 'assets', 'app-1.js'), 'document.body.dataset.ready = "1";\n');
  s = await createTestServer({ dashboardDir: tmp });
  await withTx(s.db.pool, (tx) =>
    createLocalUser(tx, { username: 'petra', password: PASSWORD, platformAdmin: false }),
  );
  await s.app.listen({ host: '127.0.0.1', port: 0 });
  origin = `http://127.0.0.1:${(s.app.server.address() as AddressInfo).port}`;
  // Another site's pages: each tries to make the signed-in browser write to the server.
  attacker = http.createServer((req, res) => {
    res.setHeader('content-type', 'text/html');
    if (req.url === '/form')
      return res.end(
        `<form id="f" method="POST" action="${origin}/v1/me/totp"></form><script>document.getElementById('f').submit()</script>`,
      );
    return res.end('<p>another site</p>');
  });
  await new Promise<void>((r) => attacker.listen(0, '127.0.0.1', r));
  attackerOrigin = `http://localhost:${(attacker.address() as AddressInfo).port}`;
});
after(async () => {
  attacker?.closeAllConnections();
  await new Promise((r) => attacker?.close(r));
  await s?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

type Answer = { status: number; body: Record<string, unknown> | null };

/** A fetch made by the page itself (same origin, the browser's own headers and cookies). */
function call(page: Page, method: string, url: string, opts: { body?: unknown; csrf?: string } = {}) {
  return page.evaluate(
    async ({ method, url, body, csrf }): Promise<Answer> => {
      const headers: Record<string, string> = {};
      if (body !== undefined) headers['content-type'] = 'application/json';
      if (csrf) headers['x-csrf-token'] = csrf;
      const res = await fetch(url, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      const text = await res.text();
      return { status: res.status, body: text ? JSON.parse(text) : null };
    },
    { method, url, body: opts.body, csrf: opts.csrf },
  );
}

const enrolments = async () =>
  (await s.db.pool.query("SELECT 1 FROM audit_events WHERE action = 'user.totp_enrolment_started'")).rowCount;

test('Chromium on http://127.0.0.1 keeps the session cookies from a script’s reach, sends them only to our origin, and another site cannot write with them', async () => {
  await withBrowser(async (browser) => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const violations: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'error') violations.push(m.text());
    });
    const landing = await page.goto(`${origin}/sign-in`);
    assert.equal(landing?.status(), 200);
    // A locator, not a string predicate: waitForFunction('…') is eval inside the page, which its CSP forbids.
    await page.locator('body[data-ready="1"]').waitFor({ state: 'attached', timeout: 10_000 });

    const login = await call(page, 'POST', '/v1/auth/login', {
      body: { username: 'petra', password: PASSWORD, session: 'cookie' },
    });
    assert.equal(login.status, 200, JSON.stringify(login.body));
    assert.deepEqual(Object.keys(login.body!).sort(), ['csrf_token', 'expires_in', 'session']);
    const csrf = String(login.body!.csrf_token);

    // Stored, with every attribute as sent; invisible to the page's scripts.
    const jar = (await context.cookies()).filter((c) => c.name !== SIGNED_IN);
    const byName = Object.fromEntries(jar.map((c) => [c.name, c]));
    assert.deepEqual(Object.keys(byName).sort(), [ACCESS, REFRESH].sort());
    // Both `__Host-`: Path=/, host-only (no Domain), so no sibling host can set or shadow them.
    assert.equal(byName[ACCESS]!.path, '/');
    assert.equal(byName[REFRESH]!.path, '/');
    for (const c of jar) {
      assert.equal(c.httpOnly, true, c.name);
      assert.equal(c.secure, true, c.name);
      assert.equal(c.sameSite, 'Strict', c.name);
      assert.equal(c.domain, '127.0.0.1', c.name);
    }
    // The page sees only the no-secret hint, never a token.
    assert.equal(await page.evaluate('document.cookie'), `${SIGNED_IN}=1`);

    // Sent to our API by the browser itself: /v1/me recognises the session and gives the token back.
    const me = await call(page, 'GET', '/v1/me');
    assert.equal(me.status, 200);
    assert.equal(me.body!.csrf_token, csrf);
    // A write needs the token; with it (and the browser's own Origin and Sec-Fetch-Site), it goes through.
    const forged = await call(page, 'POST', '/v1/me/totp');
    assert.equal(forged.status, 403);
    assert.equal((forged.body!.error as { code: string }).code, 'csrf_failed');
    // (TOTP enrolment needs the session re-authenticated first: the password again.)
    const reauth = await call(page, 'POST', '/v1/auth/reauth', { csrf, body: { password: PASSWORD } });
    assert.equal(reauth.status, 200, JSON.stringify(reauth.body));
    assert.equal((await call(page, 'POST', '/v1/me/totp', { csrf })).status, 200);
    const before = await enrolments();

    // Another site: a form posted at us (a top-level navigation) arrives without the cookies…
    const other = await context.newPage();
    const posted = other.waitForResponse((r) => r.url() === `${origin}/v1/me/totp`, { timeout: 10_000 });
    await other.goto(`${attackerOrigin}/form`);
    assert.equal((await posted).status(), 401, 'SameSite=Strict: no cookie on another site’s request');
    // …a credentialed fetch from its script sends none either, and one with the CSRF header is
    // stopped by the browser itself (a preflight the server never grants).
    await other.goto(`${attackerOrigin}/`);
    const blind = await other.evaluate(async (target) => {
      // Sent, but without the cookies (and its answer withheld from the page: CORP same-origin).
      await fetch(`${target}/v1/me/totp`, { method: 'POST', credentials: 'include', mode: 'no-cors' }).catch(
        () => null,
      );
      try {
        await fetch(`${target}/v1/me/totp`, {
          method: 'POST',
          credentials: 'include',
          headers: { 'x-csrf-token': 'guess' },
        });
        return 'sent';
      } catch {
        return 'blocked';
      }
    }, origin);
    assert.equal(blind, 'blocked');
    assert.equal(await enrolments(), before, 'no write from another site happened');

    // Refresh by cookie rotates both; logout clears them and the session is over.
    const oldRefresh = (await context.cookies()).find((c) => c.name === REFRESH)!.value;
    const refreshed = await call(page, 'POST', '/v1/auth/refresh', { body: {} });
    assert.equal(refreshed.status, 200, JSON.stringify(refreshed.body));
    assert.equal(refreshed.body!.csrf_token, csrf);
    const newRefresh = (await context.cookies()).find((c) => c.name === REFRESH)!.value;
    assert.notEqual(newRefresh, oldRefresh);
    const out = await call(page, 'POST', '/v1/auth/logout', { csrf });
    assert.equal(out.status, 200);
    assert.deepEqual(await context.cookies(), []);
    assert.equal((await call(page, 'GET', '/v1/me')).status, 401);
    assert.deepEqual(
      violations.filter((v) => /Content Security Policy/i.test(v)),
      [],
      'the dashboard CSP let the page run',
    );
    await context.close();
  });
});
