/**
 * The browser harness catches what it promises to catch (test/helpers/browser.ts), checked on
 * small pages served from loopback under the dashboard's own strict CSP: a CSP violation, a
 * console error, an uncaught error, an undeclared ≥ 400 response, a serious axe finding — and a
 * clean page stays clean, with axe's own injection tripping nothing.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import type { Browser } from 'playwright-core';
import { axeSerious, type GuardedPage, guardedPage, launchChromium } from './helpers/browser.ts';
import { waitFor } from './helpers/wait.ts';

const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; " +
  "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

const shell = (body: string, script = '') =>
  `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>t</title><link rel="icon" href="data:,">` +
  `${script ? `<script src="/${script}.js"></script>` : ''}</head><body><main>${body}</main></body></html>`;

const pages: Record<string, { type: string; body: string; status?: number }> = {
  '/clean': { type: 'text/html', body: shell('<h1>Fine</h1><label>Name <input name="n"></label>', 'ok') },
  '/ok.js': { type: 'text/javascript', body: 'document.title = "clean";' },
  '/inline': { type: 'text/html', body: shell('<h1>x</h1><script>document.title = "ran"</script>') },
  '/inline-style': { type: 'text/html', body: shell('<h1 style="color: red">x</h1>') },
  '/console': { type: 'text/html', body: shell('<h1>x</h1>', 'console') },
  '/console.js': { type: 'text/javascript', body: 'console.error("something broke");' },
  '/throws': { type: 'text/html', body: shell('<h1>x</h1>', 'throws') },
  '/throws.js': { type: 'text/javascript', body: 'setTimeout(() => { throw new Error("boom"); });' },
  '/fetch404': { type: 'text/html', body: shell('<h1>x</h1>', 'fetch404') },
  '/fetch404.js': {
    type: 'text/javascript',
    body: 'fetch("/missing").then(() => { document.title = "done"; });',
  },
  '/unlabelled': { type: 'text/html', body: shell('<h1>x</h1><input type="text"><button></button>') },
};

let server: http.Server;
let base = '';
let browser: Browser;

before(async () => {
  server = http.createServer((req, res) => {
    const p = pages[req.url ?? ''];
    res.writeHead(p ? (p.status ?? 200) : 404, {
      'content-type': p?.type ?? 'text/plain',
      'content-security-policy': CSP,
    });
    res.end(p?.body ?? 'not found');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await new Promise((r) => server?.close(r));
});

/** The page's title becomes `title` (polled from the test: the CSP forbids eval in the page). */
const titled = (g: GuardedPage, title: string) =>
  waitFor(`the title ${title}`, async () => (await g.page.title()) === title, {
    timeoutMs: 10_000,
    everyMs: 50,
  });
const settle = () => new Promise((r) => setTimeout(r, 300));

test('a clean page under the strict CSP stays clean, axe included', async () => {
  const g = await guardedPage(browser);
  try {
    await g.page.goto(`${base}/clean`);
    assert.equal(await g.page.title(), 'clean');
    assert.deepEqual(await axeSerious(g.page), []);
    await settle();
    await g.assertClean('clean page');
    assert.deepEqual(g.cspViolations(), []);
  } finally {
    await g.close();
  }
});

test('an inline script and an inline style are CSP violations the harness reports', async () => {
  for (const url of ['/inline', '/inline-style']) {
    const g = await guardedPage(browser);
    try {
      await g.page.goto(`${base}${url}`);
      await settle();
      assert.ok(
        g.problems().some((p) => p.kind === 'csp-violation'),
        JSON.stringify(g.problems()),
      );
      assert.ok(
        g.problems().some((p) => p.kind === 'csp-console'),
        JSON.stringify(g.problems()),
      );
      await assert.rejects(g.assertClean(), /csp-violation/);
      if (url === '/inline') assert.equal(await g.page.title(), 't', 'the inline script must not have run');
    } finally {
      await g.close();
    }
  }
});

test('a console error and an uncaught error fail the page', async () => {
  const g = await guardedPage(browser);
  try {
    await g.page.goto(`${base}/console`);
    await g.page.goto(`${base}/throws`);
    await settle();
    const kinds = g.problems().map((p) => p.kind);
    assert.ok(kinds.includes('console-error'), kinds.join());
    assert.ok(kinds.includes('page-error'), kinds.join());
  } finally {
    await g.close();
  }
});

test('an undeclared ≥ 400 response fails the page; a declared one does not', async () => {
  const g = await guardedPage(browser);
  try {
    await g.page.goto(`${base}/fetch404`);
    await titled(g, 'done');
    await settle();
    assert.ok(g.problems().some((p) => p.kind === 'http-error' && p.detail.includes('/missing')));
  } finally {
    await g.close();
  }
  const declared = await guardedPage(browser);
  try {
    declared.expect({ method: 'GET', url: /\/missing$/, status: 404 });
    await declared.page.goto(`${base}/fetch404`);
    await titled(declared, 'done');
    await settle();
    await declared.assertClean('declared 404');
  } finally {
    await declared.close();
  }
});

test('axe finds the serious violations of an unlabelled control', async () => {
  const g = await guardedPage(browser);
  try {
    await g.page.goto(`${base}/unlabelled`);
    const ids = (await axeSerious(g.page)).map((v) => v.id);
    assert.ok(ids.includes('label') && ids.includes('button-name'), ids.join());
    await settle();
    await g.assertClean('axe on an unlabelled page');
  } finally {
    await g.close();
  }
});
