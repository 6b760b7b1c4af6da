import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
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

/** A large JSON body, produced only as the server pulls it; `pulled` is how much it pulled. */
function meteredBody(total: number) {
  const meter = { pulled: 0 };
  const chunk = Buffer.alloc(64 * 1024, 'x');
  const head = Buffer.from('{"attempt":1,"outcome":"');
  const stream = new Readable({
    read() {
      if (meter.pulled >= total) return void this.push(null);
      const piece =
        meter.pulled === 0 ? head : chunk.subarray(0, Math.min(chunk.length, total - meter.pulled));
      meter.pulled += piece.length;
      this.push(piece);
    },
  });
  return { stream, meter };
}

test('an agent route refuses a missing token before it reads a large body', async () => {
  const total = 5_000_000;
  const send = async (headers: Record<string, string>) => {
    const body = meteredBody(total);
    const res = await s.app.inject({
      method: 'POST',
      url: '/v1/agent/jobs/1/explorer-result',
      headers: { 'content-type': 'application/json', 'content-length': String(total), ...headers },
      payload: body.stream,
      remoteAddress: '127.0.0.11',
    });
    return { res, pulled: body.meter.pulled };
  };
  const refused = await send({});
  assert.equal(refused.res.statusCode, 401);
  assert.equal(refused.res.json().error.code, 'unauthorized');
  assert.ok(refused.pulled < 256 * 1024, `pulled ${refused.pulled} of ${total} bytes before refusing`);

  // The control: with a valid agent token the same body is read (to its end, or to the limit).
  const { token } = await s.nodes.createEnrollment('abuse-body', 10);
  const enrolled = await s.app.inject({
    method: 'POST',
    url: '/v1/agent/enroll',
    payload: { enrollment_token: token, agent_version: 't' },
    remoteAddress: '127.0.0.12',
  });
  const agentToken = enrolled.json().agent_token as string;
  const read = await send({ authorization: `Bearer ${agentToken}` });
  assert.notEqual(read.res.statusCode, 401, read.res.body);
  assert.ok(read.pulled >= 1_000_000, `the control pulled only ${read.pulled} bytes`);
});
