import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { ERROR_CATALOG, ERROR_CODES } from '../src/shared/errors.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

let s: TestServer;
before(async () => {
  s = await createTestServer();
});
after(() => s.stop());

type Doc = {
  paths: Record<string, Record<string, { responses?: Record<string, { description?: string }> }>>;
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
          assert.equal(
            ERROR_CATALOG[code as keyof typeof ERROR_CATALOG].status,
            Number(status),
            `${where}: ${code}`,
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
