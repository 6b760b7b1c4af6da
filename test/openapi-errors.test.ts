import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { InjectOptions } from 'fastify';
import { ERROR_CODES, errorStatuses } from '../src/shared/errors.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

let s: TestServer;
before(async () => {
  s = await createTestServer();
});
after(() => s.stop());

type Op = {
  parameters?: { in: string }[];
  requestBody?: unknown;
  security?: Record<string, string[]>[];
  responses?: Record<string, { description?: string; content?: Record<string, unknown> }>;
};
type Doc = {
  paths: Record<string, Record<string, Op>>;
  components: { securitySchemes: Record<string, unknown> };
};

test('every error response in the OpenAPI document comes from the error catalog', async () => {
  const doc = (await s.app.inject({ url: '/v1/openapi.json' })).json() as Doc;
  const seen = new Map<string, string>();
  let checked = 0;
  for (const [path, ops] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(ops)) {
      for (const [status, res] of Object.entries(op.responses ?? {})) {
        if (Number(status) < 400) continue;
        // The readiness probe answers 503 with its own body (`{status, reason}`), not an error.
        if (path === '/ready') continue;
        checked++;
        const where = `${method.toUpperCase()} ${path} ${status}`;
        const m = /^Error: ([a-z_]+(?:, [a-z_]+)*)$/.exec(res.description ?? '');
        assert.ok(m, `${where}: described "${res.description}", not by its catalog codes`);
        for (const code of m[1]!.split(', ')) {
          assert.ok((ERROR_CODES as string[]).includes(code), `${where}: ${code} is not in the catalog`);
          assert.ok(
            errorStatuses(code as (typeof ERROR_CODES)[number]).includes(Number(status)),
            `${where}: ${code} is not answered with ${status}`,
          );
          seen.set(code, where);
        }
      }
    }
  }
  assert.ok(checked > 100, `checked ${checked} error responses`);
  // The route-specific codes are declared where they are answered.
  const q = doc.paths['/v1/databases/{name}/explorer/query']?.post?.responses ?? {};
  assert.match(q['400']?.description ?? '', /query_refused, query_failed/);
  assert.match(q['499']?.description ?? '', /cancelled/);
  assert.match(q['504']?.description ?? '', /timeout/);
  assert.match(
    doc.paths['/v1/agent/jobs/{id}/complete']?.post?.responses?.['422']?.description ?? '',
    /invalid_job_result/,
  );
  assert.match(
    doc.paths['/v1/databases']?.post?.responses?.['409']?.description ?? '',
    /conflict, capacity_exceeded/,
  );
});

const apiShape = (status: number, body: string, where: string) => {
  const parsed = JSON.parse(body) as { error?: { code?: unknown; message?: unknown; request_id?: unknown } };
  assert.equal(typeof parsed.error?.code, 'string', `${where}: ${body}`);
  assert.ok(
    errorStatuses(parsed.error?.code as (typeof ERROR_CODES)[number]).includes(status),
    `${where}: ${body}`,
  );
  assert.equal(typeof parsed.error?.message, 'string', where);
  assert.equal(typeof parsed.error?.request_id, 'string', where);
  assert.deepEqual(Object.keys(parsed), ['error'], where);
};

test("every error Fastify raises is answered in the API's shape", async () => {
  const cases: { what: string; status: number; req: InjectOptions }[] = [
    { what: 'unknown route', status: 404, req: { url: '/v1/nope' } },
    { what: 'unknown method', status: 404, req: { method: 'PATCH', url: '/v1/databases' } },
    { what: 'over-long path parameter', status: 414, req: { url: `/v1/databases/${'a'.repeat(201)}` } },
    { what: 'bad percent-encoding', status: 400, req: { url: '/v1/databases/%zz' } },
    {
      what: 'malformed JSON',
      status: 400,
      req: {
        method: 'POST',
        url: '/v1/agent/enroll',
        headers: { 'content-type': 'application/json' },
        payload: '{"a": ',
      },
    },
    {
      what: 'empty JSON body',
      status: 400,
      req: {
        method: 'POST',
        url: '/v1/agent/enroll',
        headers: { 'content-type': 'application/json' },
        payload: '',
      },
    },
    {
      what: 'unsupported content type',
      status: 415,
      req: {
        method: 'POST',
        url: '/v1/agent/enroll',
        headers: { 'content-type': 'application/xml' },
        payload: '<a/>',
      },
    },
    {
      what: 'body over the limit',
      status: 413,
      req: {
        method: 'POST',
        url: '/v1/agent/enroll',
        headers: { 'content-type': 'application/json' },
        payload: JSON.stringify({ enrollment_token: 'x'.repeat(2 * 1024 * 1024) }),
      },
    },
  ];
  for (const c of cases) {
    const res = await s.app.inject(c.req);
    assert.equal(res.statusCode, c.status, `${c.what}: ${res.body}`);
    assert.match(String(res.headers['content-type']), /^application\/json/, c.what);
    apiShape(res.statusCode, res.body, c.what);
  }
});
