import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { watchQueries } from '../../test/helpers/db.ts';
import { createTestServer, type TestServer } from '../../test/helpers/server.ts';
import { registeredRoutes } from './app.ts';

let s: TestServer;
before(async () => {
  s = await createTestServer({ bodyLimitBytes: 2048 });
});
after(() => s.stop());

test('security headers and a request id on every response', async () => {
  for (const url of ['/health', '/nope', '/']) {
    const res = await s.app.inject({ url });
    assert.equal(res.headers['x-content-type-options'], 'nosniff', url);
    assert.equal(res.headers['x-frame-options'], 'DENY', url);
    assert.match(String(res.headers['content-security-policy']), /frame-ancestors 'none'/, url);
    assert.match(String(res.headers['strict-transport-security']), /max-age=/, url);
    assert.ok(res.headers['x-request-id'], url);
  }
  const given = await s.app.inject({ url: '/health', headers: { 'x-request-id': 'trace-12345678' } });
  assert.equal(given.headers['x-request-id'], 'trace-12345678');
  const hostile = await s.app.inject({ url: '/health', headers: { 'x-request-id': 'bad\u0001id<script>' } });
  assert.notEqual(hostile.headers['x-request-id'], 'bad\u0001id<script>');
});

test('errors have one shape, with the request id', async () => {
  const res = await s.app.inject({ url: '/v1/does-not-exist' });
  assert.equal(res.statusCode, 404);
  const body = res.json() as { error: { code: string; message: string; request_id: string } };
  assert.equal(body.error.code, 'not_found');
  assert.equal(body.error.request_id, res.headers['x-request-id']);
});

test('oversized bodies get 413 and malformed ones 400, in the error shape', async () => {
  const big = await s.app.inject({
    method: 'POST',
    url: '/v1/agent/enroll',
    headers: { 'content-type': 'application/json' },
    payload: JSON.stringify({ enrollment_token: 'x'.repeat(5000), agent_version: '1' }),
  });
  assert.equal(big.statusCode, 413);
  assert.equal(big.json().error.code, 'payload_too_large');
  const bad = await s.app.inject({
    method: 'POST',
    url: '/v1/agent/enroll',
    headers: { 'content-type': 'application/json' },
    payload: '{"enrollment_token":',
  });
  assert.equal(bad.statusCode, 400);
  const invalid = await s.app.inject({
    method: 'POST',
    url: '/v1/agent/enroll',
    payload: { agent_version: 7 },
  });
  assert.equal(invalid.statusCode, 400);
  assert.equal(invalid.json().error.code, 'validation_failed');
});

test('/health and /ready answer; / names the API docs', async () => {
  assert.equal((await s.app.inject({ url: '/health' })).json().status, 'ok');
  assert.equal((await s.app.inject({ url: '/ready' })).statusCode, 200);
  const home = await s.app.inject({ url: '/' });
  assert.match(home.body, /\/docs/);
  assert.match(String(home.headers['content-type']), /text\/html/);
});

test('every route is in the OpenAPI document', async () => {
  const doc = (await s.app.inject({ url: '/v1/openapi.json' })).json() as {
    openapi: string;
    paths: Record<string, Record<string, unknown>>;
  };
  assert.match(doc.openapi, /^3\.1/);
  const documented = new Set(
    Object.entries(doc.paths).flatMap(([p, ops]) =>
      Object.keys(ops).map((m) => `${m.toUpperCase()} ${p.replace(/\{(\w+)\}/g, ':$1')}`),
    ),
  );
  const routes = registeredRoutes(s.app);
  assert.ok(routes.length >= 7);
  for (const r of routes.filter((x) => !x.hidden)) {
    assert.ok(
      documented.has(`${r.method} ${r.url}`),
      `${r.method} ${r.url} is missing from the OpenAPI document`,
    );
  }
});

test('agent routes refuse a missing or malformed token without a lookup, and an unknown one after one', async () => {
  const lookups = watchQueries(s.db.pool);
  const tokenLookups = () => lookups.count((q) => /FROM nodes WHERE token_hash/.test(q.text));
  try {
    for (const [auth, expected] of [
      [undefined, 0],
      ['Bearer ', 0],
      ['Bearer bwa_short', 0],
      ['Basic abc', 0],
      // Well-formed but unknown: the one case that must look the token up (the control that the
      // count sees lookups at all).
      [`Bearer bwa_${'A'.repeat(43)}`, 1],
    ] as const) {
      const before = tokenLookups();
      const res = await s.app.inject({
        method: 'POST',
        url: '/v1/agent/poll',
        payload: { wait_ms: 0 },
        headers: auth ? { authorization: auth } : {},
      });
      assert.equal(res.statusCode, 401, String(auth));
      assert.equal(res.json().error.code, 'unauthorized');
      assert.equal(tokenLookups() - before, expected, `token lookups for ${String(auth)}`);
    }
  } finally {
    lookups.stop();
  }
});
