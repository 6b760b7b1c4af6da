import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import { createTestDb, type TestDb } from '../../../test/helpers/db.ts';
import { createTestKey } from '../../../test/helpers/keys.ts';
import { createLogger } from '../../shared/logger.ts';
import { serverConfigSchema } from '../config.ts';
import { createServerContext, type ServerContext } from '../main.ts';

let db: TestDb;
let ctx: ServerContext;
const lines: string[] = [];
before(async () => {
  db = await createTestDb();
  const stream = new Writable({
    write(chunk, _enc, cb) {
      lines.push(String(chunk));
      cb();
    },
  });
  const config = serverConfigSchema.parse({
    databaseUrl: db.url,
    dataDir: '/nonexistent',
    logLevel: 'debug',
  });
  ctx = await createServerContext({ config, db: db.pool, log: createLogger('server', 'debug', stream) });
  await ctx.keyAuth.listenerReady();
});
after(async () => {
  await ctx.close();
  await db.drop();
});

test('encoded traversal, NUL, separators and bad percent-encoding: 404 or 400, never 500, no stack logged', async () => {
  const k = await createTestKey({ db }, { account: 'acme' });
  const notFound = [
    '/docs/static/%2e%2e/%2e%2e/package.json',
    '/docs/static/%2e%2e%2f%2e%2e%2fpackage.json',
    '/docs/static/..%2f..%2fpackage.json',
    '/docs/static/%2e%2e%5c%2e%2e%5cpackage.json',
    '/docs/static/%2e%2e%5c',
    '/docs/static/%00',
    '/docs/static/index.css%00.html',
    '/docs/static/../../package.json',
    '/docs/%2e%2e/package.json',
  ];
  // Outside the API a path is the dashboard's own route (its index.html, or the plain page without
  // a build): never a file from elsewhere. (The injected URL's dot segments are resolved by the
  // client; test/spa-serving.test.ts sends them raw.)
  for (const url of [
    '/%2e%2e/%2e%2e/etc/passwd',
    '/..%2f..%2fetc%2fpasswd',
    '/%2e%2e%5c%2e%2e%5cetc%5cpasswd',
  ]) {
    const res = await ctx.app.inject({ url });
    assert.ok(res.statusCode === 404 || res.statusCode === 200, `${url}: ${res.statusCode}`);
    assert.ok(!res.body.includes('root:'), url);
    if (res.statusCode === 200) assert.match(String(res.headers['content-type']), /^text\/html/);
  }
  const malformed = [
    '/docs/static/%',
    '/docs/static/%zz',
    '/docs/static/%C0%AE%C0%AE/package.json',
    '/docs/static/%e2%28%a1',
    '/v1/keys/%',
    '/%',
  ];
  const from = lines.length;
  for (const url of notFound) {
    const res = await ctx.app.inject({ url });
    assert.equal(res.statusCode, 404, `${url}: ${res.statusCode} ${res.body}`);
    assert.equal(res.json().error.code, 'not_found', url);
  }
  for (const url of malformed) {
    const res = await ctx.app.inject({ url, headers: k.headers });
    assert.equal(res.statusCode, 400, `${url}: ${res.statusCode} ${res.body}`);
    assert.equal(res.json().error.code, 'bad_request', url);
    assert.ok(!res.body.includes(url), 'the URL is not echoed back');
    assert.equal(res.headers['x-content-type-options'], 'nosniff', 'security headers on every response');
    assert.ok(res.headers['x-request-id']);
  }
  // Over-long parameters are the client's too.
  const long = await ctx.app.inject({ url: `/v1/keys/${'a'.repeat(300)}`, headers: k.headers });
  assert.equal(long.statusCode, 414);
  // A NUL inside an API route parameter is a validation error, not a crash.
  const nul = await ctx.app.inject({ url: '/v1/keys/%00', headers: k.headers });
  assert.equal(nul.statusCode, 400, nul.body);

  const logged = lines.slice(from);
  assert.ok(logged.length > 0, 'the requests were logged');
  for (const l of logged) {
    assert.ok(!/"stack"|\\n\s+at /.test(l), `a log line carries a stack: ${l}`);
    assert.ok(!/"level":50/.test(l), `an error was logged: ${l}`);
  }
  // The static files themselves still serve.
  assert.equal((await ctx.app.inject({ url: '/docs/static/index.css' })).statusCode, 200);
});
