import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createTestServer, type TestServer } from './helpers/server.ts';

let s: TestServer;
before(async () => {
  s = await createTestServer({ rateLimitAuthFailuresPerMinute: 3 });
});
after(() => s.stop());

test('bad agent tokens hit a per-IP failure budget: 401, then 429, and the audit log stops growing', async () => {
  const statuses: number[] = [];
  for (let i = 0; i < 8; i++) {
    const res = await s.app.inject({
      method: 'POST',
      url: '/v1/agent/poll',
      payload: { wait_ms: 0 },
      headers: { authorization: `Bearer bwa_${'x'.repeat(43)}` },
      remoteAddress: '127.0.0.9',
    });
    statuses.push(res.statusCode);
  }
  assert.deepEqual(statuses.slice(0, 3), [401, 401, 401]);
  assert.ok(
    statuses.slice(3).every((c) => c === 429),
    statuses.join(','),
  );
  const audited = await s.db.pool.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM audit_events WHERE action = 'agent.auth' AND source_ip = '127.0.0.9'",
  );
  assert.equal(audited.rows[0]!.n, 3, 'refusals past the budget are not written');
  // Another address is unaffected.
  const other = await s.app.inject({
    method: 'POST',
    url: '/v1/agent/poll',
    payload: { wait_ms: 0 },
    remoteAddress: '127.0.0.10',
  });
  assert.equal(other.statusCode, 401);
});

test('an agent route refuses a missing token before it reads a large body', async () => {
  const res = await s.app.inject({
    method: 'POST',
    url: '/v1/agent/jobs/1/explorer-result',
    headers: { 'content-type': 'application/json' },
    payload: JSON.stringify({ attempt: 1, rows: 'x'.repeat(5_000_000) }),
    remoteAddress: '127.0.0.11',
  });
  assert.equal(res.statusCode, 401);
  assert.equal(res.json().error.code, 'unauthorized');
});
