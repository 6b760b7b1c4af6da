import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { gunzipSync } from 'node:zlib';
import { createTestServer, type TestServer } from './helpers/server.ts';

// The dashboard as the server serves it, from a build made here (a stand-in for web/dist).

const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; " +
  "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";
const SECRET = 'not-for-the-browser-3f9a';
const INDEX =
  '<!doctype html><html><head><script type="module" src="/assets/index-Ab12Cd34.js"></script></head><body><div id="root"></div></body></html>';
const SCRIPT = `export const app = ${JSON.stringify('x'.repeat(4000))};\n`;

let s: TestServer;
let tmp: string;
let port: number;

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'bulwark-spa-'));
  const dist = path.join(tmp, 'dist');
  fs.mkdirSync(path.join(dist, 'assets'), { recursive: true });
  fs.writeFileSync(path.join(dist, 'index.html'), INDEX);
  fs.writeFileSync(path.join(dist, 'assets', 'index-Ab12Cd34.js'), SCRIPT);
  fs.writeFileSync(path.join(dist, 'assets', 'index-Ef56Gh78.css'), 'body{margin:0}');
  fs.writeFileSync(path.join(dist, 'assets', 'font-Ij90.woff2'), Buffer.from([0x77, 0x4f, 0x46, 0x32]));
  fs.writeFileSync(path.join(dist, 'assets', 'notes-Kl12.exe'), 'MZ');
  fs.writeFileSync(path.join(dist, 'favicon.svg'), '<svg xmlns="http://www.w3.org/2000/svg"/>');
  // Outside the build, and a link from inside it to there.
  fs.writeFileSync(path.join(tmp, 'secret.txt'), SECRET);
  fs.writeFileSync(path.join(dist, '.env'), SECRET);
  fs.symlinkSync(path.join(tmp, 'secret.txt'), path.join(dist, 'assets', 'leak-Zz99.js'));
  s = await createTestServer({ dashboardDir: dist });
  await s.app.listen({ host: '127.0.0.1', port: 0 });
  port = (s.app.server.address() as net.AddressInfo).port;
});
after(async () => {
  await s?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
});

const get = (url: string, headers: Record<string, string> = {}) =>
  s.app.inject({ method: 'GET', url, headers });

/** One request exactly as written (no client normalises its path), over a real socket. */
function raw(target: string): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const sock = net.connect(port, '127.0.0.1');
    let data = '';
    sock.setTimeout(5_000, () => sock.destroy(new Error(`timeout on ${target}`)));
    sock.on('data', (d) => {
      data += d.toString('latin1');
    });
    sock.on('error', reject);
    sock.on('close', () => resolve({ status: Number(data.slice(9, 12)), text: data }));
    sock.write(`GET ${target} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n\r\n`);
  });
}

test('/ and the app’s own routes are index.html: no-cache, revalidated by ETag, under the dashboard CSP', async () => {
  for (const url of ['/', '/databases', '/databases/orders/explorer', '/admin/users?page=2', '/sign-in']) {
    const res = await get(url);
    assert.equal(res.statusCode, 200, url);
    assert.equal(res.body, INDEX, url);
    assert.equal(res.headers['content-type'], 'text/html; charset=utf-8');
    assert.equal(res.headers['cache-control'], 'no-cache');
    assert.equal(res.headers['content-security-policy'], CSP);
    assert.equal(res.headers['x-frame-options'], 'DENY');
    assert.equal(res.headers['x-content-type-options'], 'nosniff');
  }
  const first = await get('/');
  const again = await get('/', { 'if-none-match': String(first.headers.etag) });
  assert.equal(again.statusCode, 304);
  assert.equal(again.body, '');
  const head = await s.app.inject({ method: 'HEAD', url: '/databases' });
  assert.equal(head.statusCode, 200);
  assert.equal(head.body, '');
});

test('hashed assets: a year, immutable, their own types, gzip when accepted; unknown ones are 404, never index.html', async () => {
  const js = await get('/assets/index-Ab12Cd34.js');
  assert.equal(js.statusCode, 200);
  assert.equal(js.body, SCRIPT);
  assert.equal(js.headers['content-type'], 'text/javascript; charset=utf-8');
  assert.equal(js.headers['cache-control'], 'public, max-age=31536000, immutable');
  assert.equal(js.headers['content-security-policy'], CSP);
  const gz = await get('/assets/index-Ab12Cd34.js', { 'accept-encoding': 'gzip, br' });
  assert.equal(gz.headers['content-encoding'], 'gzip');
  assert.equal(gz.headers.vary, 'accept-encoding');
  assert.ok(gz.rawPayload.length < SCRIPT.length / 4);
  assert.equal(gunzipSync(gz.rawPayload).toString(), SCRIPT);
  assert.notEqual(gz.headers.etag, js.headers.etag, 'one ETag per representation');
  const notModified = await get('/assets/index-Ab12Cd34.js', {
    'accept-encoding': 'gzip',
    'if-none-match': String(gz.headers.etag),
  });
  assert.equal(notModified.statusCode, 304);
  assert.equal(
    (await get('/assets/index-Ab12Cd34.js', { 'if-none-match': String(gz.headers.etag) })).statusCode,
    200,
  );
  assert.equal((await get('/assets/index-Ef56Gh78.css')).headers['content-type'], 'text/css; charset=utf-8');
  assert.equal((await get('/assets/font-Ij90.woff2')).headers['content-type'], 'font/woff2');
  assert.equal((await get('/favicon.svg')).headers['content-type'], 'image/svg+xml');
  for (const url of [
    '/assets/missing-0000.js',
    '/assets/notes-Kl12.exe',
    '/assets/',
    '/missing.png',
    '/index.html.bak',
  ]) {
    const res = await get(url);
    assert.equal(res.statusCode, 404, url);
    assert.equal(res.json().error.code, 'not_found', url);
  }
});

test('the API keeps its own answers: unknown /v1 routes, over-long parameters, /docs, /metrics, health, other methods', async () => {
  const unknown = await get('/v1/nothing-here');
  assert.equal(unknown.statusCode, 404);
  assert.equal(unknown.json().error.code, 'not_found');
  assert.equal((await get(`/v1/keys/${'a'.repeat(300)}`)).statusCode, 414);
  for (const url of ['/v1', '/metrics', '/health/extra', '/ready/x', '/docsx/../v1']) {
    const res = await get(url);
    assert.notEqual(res.body, INDEX, url);
  }
  assert.equal((await get('/metrics')).statusCode, 404, 'disabled without a token');
  assert.equal((await get('/health')).json().status, 'ok');
  const post = await s.app.inject({ method: 'POST', url: '/databases', payload: {} });
  assert.equal(post.statusCode, 404, 'only GET and HEAD are the app’s');
  // Swagger UI keeps its own page and CSP (it needs inline styles; the dashboard does not).
  const docs = await get('/docs/');
  assert.equal(docs.statusCode, 200, docs.body);
  assert.match(docs.body, /swagger/i);
  assert.match(String(docs.headers['content-security-policy']), /style-src 'self' 'unsafe-inline'/);
  // A page whose path merely starts with "docs" is the app's, under the strict CSP.
  const docsLike = await get('/docsearch');
  assert.equal(docsLike.body, INDEX);
  assert.equal(docsLike.headers['content-security-policy'], CSP);
});

test('no path reaches a file outside the build: .., encoded dots and slashes, backslashes, NUL, symlinks, dotfiles', async () => {
  const targets = [
    '/assets/../../secret.txt',
    '/assets/..%2f..%2fsecret.txt',
    '/assets/%2e%2e/%2e%2e/secret.txt',
    '/assets/%2e%2e%2f%2e%2e%2fsecret.txt',
    '/assets/..%5c..%5csecret.txt',
    '/assets/..\\..\\secret.txt',
    '/assets/leak-Zz99.js',
    '/assets/index-Ab12Cd34.js%00.html',
    '/assets/%00',
    '/../secret.txt',
    '/%2e%2e/secret.txt',
    '/..%2fsecret.txt',
    '/%2e%2e%5csecret.txt',
    '/.env',
    '/%2eenv',
    '/secret.txt',
    '/assets/%252e%252e%252fsecret.txt',
  ];
  for (const t of targets) {
    const res = await raw(t);
    assert.ok(!res.text.includes(SECRET), `${t} leaked the file`);
    assert.ok([200, 400, 404].includes(res.status), `${t}: ${res.status}`);
    // Only a plain app route may be index.html; every file-looking or dotted path is refused.
    if (res.status === 200) assert.ok(res.text.includes('<div id="root">'), t);
    if (t.startsWith('/assets/') || t.includes('%2e') || t.includes('..') || t.includes('.env'))
      assert.notEqual(res.status, 200, `${t} should be refused`);
  }
});

test('without a build, / is a plain page that says how to build it (no script, no style, the strictest CSP)', async () => {
  const bare = await createTestServer({ dashboardDir: path.join(tmp, 'no-such-dist') });
  try {
    const res = await bare.app.inject({ method: 'GET', url: '/' });
    assert.equal(res.statusCode, 200);
    assert.match(res.body, /npm run build:web/);
    assert.match(res.body, /\/docs/);
    assert.doesNotMatch(res.body, /<script|<style|style=/i);
    assert.match(String(res.headers['content-security-policy']), /^default-src 'none';/);
    assert.equal(
      (await bare.app.inject({ method: 'GET', url: '/assets/index-Ab12Cd34.js' })).statusCode,
      404,
    );
  } finally {
    await bare.stop();
  }
});
