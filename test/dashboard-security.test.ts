/**
 * The dashboard as served by a real `bulwark up`, seen from Debian's headless Chromium: every
 * page response carries the strict CSP and the browser enforces it; no request leaves for a
 * non-loopback origin; assets have hashed names and are cached for a year, immutable; index.html
 * (at / and at every deep link) is revalidated on each load and holds no inline script or style.
 */
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { Browser, Response } from 'playwright-core';
import { assertAccessible, guardedPage, launchChromium, screenshot } from './helpers/browser.ts';
import { type DashboardStack, startDashboardStack } from './helpers/dashboard-stack.ts';
import { waitFor } from './helpers/wait.ts';

const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; " +
  "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
const IMMUTABLE = 'public, max-age=31536000, immutable';

let stack: DashboardStack;
let browser: Browser;

before(async () => {
  stack = await startDashboardStack();
  browser = await launchChromium();
});

after(async () => {
  await browser?.close().catch(() => {});
  await stack?.destroy();
});

const directives = (csp: string) =>
  csp
    .split(';')
    .map((d) => d.trim())
    .filter(Boolean)
    .sort();

test('a signed-out visit: strict CSP, loopback only, hashed immutable assets, no-cache index.html', async () => {
  const g = await guardedPage(browser, { name: 'visitor' });
  const responses: Response[] = [];
  g.page.on('response', (r) => responses.push(r));
  g.expect({ method: 'GET', url: /\/v1\/me$/, status: 401 });
  g.expect({ method: 'POST', url: /\/v1\/auth\/refresh$/, status: 401 });
  try {
    await g.page.goto(stack.url);
    await g.page.getByRole('heading', { name: 'Sign in', level: 1 }).waitFor();
    await g.page.waitForLoadState('load');
    await assertAccessible(g.page, 'sign-in');
    await screenshot(g.page, 'sign-in-first-steps');

    const documents = responses.filter((r) => r.request().resourceType() === 'document');
    assert.ok(documents.length >= 1);
    for (const doc of documents) {
      const h = await doc.allHeaders();
      assert.deepEqual(directives(h['content-security-policy'] ?? ''), directives(CSP), doc.url());
      assert.equal(h['cache-control'], 'no-cache', `${doc.url()} is revalidated`);
    }
    const assets = responses.filter((r) => new URL(r.url()).pathname.startsWith('/assets/'));
    const scripts = assets.filter((r) => r.request().resourceType() === 'script');
    assert.ok(scripts.length >= 1, 'the app is loaded from /assets/');
    assert.ok(
      assets.some((r) => r.request().resourceType() === 'stylesheet'),
      'styles come from /assets/ too',
    );
    for (const a of assets) {
      assert.equal(a.status(), 200, a.url());
      assert.match(
        new URL(a.url()).pathname,
        /^\/assets\/[\w.-]+-[\w-]{8,}\.(js|css|woff2|svg|png)$/,
        'hashed',
      );
      assert.equal((await a.allHeaders())['cache-control'], IMMUTABLE, a.url());
    }
    for (const url of g.requests()) {
      const { protocol, hostname } = new URL(url);
      assert.ok(
        protocol === 'data:' || protocol === 'blob:' || hostname === '127.0.0.1',
        `loopback only: ${url}`,
      );
    }
    await g.assertClean('signed-out visit');
  } finally {
    await g.close();
  }
});

test('a deep link gets the same index.html with the same headers; an unknown asset is a 404', async () => {
  const root = await fetch(`${stack.url}/`);
  const deep = await fetch(`${stack.url}/databases/shop/explorer`);
  const html = await root.text();
  assert.equal(await deep.text(), html, 'history routing serves index.html');
  for (const r of [root, deep]) {
    assert.equal(r.status, 200);
    assert.equal(r.headers.get('cache-control'), 'no-cache');
    assert.deepEqual(directives(r.headers.get('content-security-policy') ?? ''), directives(CSP));
  }
  assert.doesNotMatch(html, /<script(?![^>]*\bsrc=)[^>]*>/i, 'no inline script');
  assert.doesNotMatch(html, /<style|\sstyle=/i, 'no inline style');
  assert.doesNotMatch(html, /https?:\/\/(?!127\.0\.0\.1|localhost)/i, 'no third-party URL');
  const missing = await fetch(`${stack.url}/assets/index-00000000.js`);
  assert.equal(missing.status, 404, 'an unknown asset is not index.html');
  await missing.body?.cancel();
  const api = await fetch(`${stack.url}/v1/no-such-route`);
  assert.equal(api.status, 404);
  assert.match(api.headers.get('content-type') ?? '', /json/, 'API paths never fall back to the dashboard');
  await api.body?.cancel();
});

test('the browser enforces the CSP: an injected inline script does not run and is reported', async () => {
  const g = await guardedPage(browser, { name: 'injector' });
  g.expect({ method: 'GET', url: /\/v1\/me$/, status: 401 });
  g.expect({ method: 'POST', url: /\/v1\/auth\/refresh$/, status: 401 });
  try {
    await g.page.goto(`${stack.url}/sign-in`);
    await g.page.getByRole('heading', { name: 'Sign in', level: 1 }).waitFor();
    await g.assertClean('before the injection');
    await g.page.evaluate(`(() => {
      const s = document.createElement('script');
      s.textContent = 'globalThis.__injected = true';
      document.head.append(s);
      const st = document.createElement('style');
      st.textContent = 'body { background: red }';
      document.head.append(st);
    })()`);
    await waitFor('both violations reported', () => g.cspViolations().length >= 4, { timeoutMs: 5_000 });
    assert.equal(
      await g.page.evaluate('globalThis.__injected === true'),
      false,
      'the inline script was blocked',
    );
    const kinds = g.problems().map((p) => p.kind);
    assert.ok(kinds.includes('csp-violation'), `violations reported: ${kinds.join()}`);
    assert.ok(g.cspViolations().some((v) => v.includes('script-src')));
    assert.ok(g.cspViolations().some((v) => v.includes('style-src')));
  } finally {
    await g.close();
  }
});
