import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import Fastify from 'fastify';
import { createTestDb, type TestDb } from '../../../test/helpers/db.ts';
import { generateApiKey } from '../../shared/api-key.ts';
import { createLogger } from '../../shared/logger.ts';
import { serverConfigSchema } from '../config.ts';
import { createServerContext, type ServerContext } from '../main.ts';
import { enqueueJob } from '../modules/jobs/jobs.repo.ts';
import { registerProxyCheck } from './proxy-check.ts';

type Line = { level: number; msg: string; [k: string]: unknown };

function capture() {
  const lines: Line[] = [];
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l) lines.push(JSON.parse(l) as Line);
      cb();
    },
  });
  return { lines, log: createLogger('test', 'info', stream) };
}

let db: TestDb;
let ctx: ServerContext;
let logs: Line[];
before(async () => {
  db = await createTestDb();
  const c = capture();
  logs = c.lines;
  // The production default budget (20 failures a minute per address), no trusted proxy.
  const config = serverConfigSchema.parse({ databaseUrl: db.url, dataDir: '/nonexistent', logLevel: 'info' });
  ctx = await createServerContext({ config, db: db.pool, log: c.log });
});
after(async () => {
  await ctx.close();
  await db.drop();
});

const AGENT_IP = '127.0.0.1';

const agentCall = (url: string, token: string, payload: object) =>
  ctx.app.inject({
    method: 'POST',
    url,
    remoteAddress: AGENT_IP,
    headers: { authorization: `Bearer ${token}` },
    payload,
  });

test("other callers' failures from the agent's address never refuse the agent's valid token", async () => {
  const { token: enrollment } = await ctx.nodes.createEnrollment('node-a', 10);
  const enrolled = await ctx.app.inject({
    method: 'POST',
    url: '/v1/agent/enroll',
    remoteAddress: AGENT_IP,
    payload: { enrollment_token: enrollment, agent_version: 'test' },
  });
  assert.equal(enrolled.statusCode, 200, enrolled.body);
  const { node_id: nodeId, agent_token: agentToken } = enrolled.json() as {
    node_id: string;
    agent_token: string;
  };
  const job = await enqueueJob(db.pool, { nodeId, kind: 'node.ping', payload: {} });

  // 25 bad API keys from the agent's address: the clients' budget is spent (429 past 20)...
  const clients: number[] = [];
  for (let i = 0; i < 25; i++) {
    const res = await ctx.app.inject({
      url: '/v1/whoami',
      remoteAddress: AGENT_IP,
      headers: { authorization: `Bearer ${generateApiKey().key}` },
    });
    clients.push(res.statusCode);
  }
  assert.equal(clients.at(-1), 429, clients.join(','));
  // ...and 25 bad agent tokens from it: the agent-token budget is spent too, still limited.
  const badAgents: number[] = [];
  for (let i = 0; i < 25; i++)
    badAgents.push((await agentCall('/v1/agent/heartbeat', `bwa_${'x'.repeat(43)}`, {})).statusCode);
  assert.deepEqual(badAgents.slice(0, 20), Array(20).fill(401));
  assert.deepEqual(badAgents.slice(20), Array(5).fill(429), badAgents.join(','));

  // The real agent, same address, valid token: heartbeat, poll, complete all work.
  const hb = await agentCall('/v1/agent/heartbeat', agentToken, { agent_version: 'test' });
  assert.equal(hb.statusCode, 200, hb.body);
  const polled = await agentCall('/v1/agent/poll', agentToken, { wait_ms: 0 });
  assert.equal(polled.statusCode, 200, polled.body);
  const leased = (polled.json() as { job: { id: number; attempt: number } | null }).job;
  assert.equal(leased?.id, job.id, 'the job is leased to the agent');
  const done = await agentCall(`/v1/agent/jobs/${job.id}/complete`, agentToken, {
    attempt: leased.attempt,
    result: { pg_version: 'PostgreSQL 17', server_version_num: 170000, checked_at: new Date().toISOString() },
  });
  assert.equal(done.statusCode, 200, done.body);
  assert.equal((done.json() as { status: string }).status, 'succeeded');

  // Bad agent tokens are still refused past the budget, and not audited past it.
  assert.equal((await agentCall('/v1/agent/poll', `bwa_${'y'.repeat(43)}`, { wait_ms: 0 })).statusCode, 429);
  const audited = await db.pool.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM audit_events WHERE action = 'agent.auth' AND source_ip = $1",
    [AGENT_IP],
  );
  assert.equal(audited.rows[0]!.n, 20);
});

test('X-Forwarded-For from a peer that is not a trusted proxy is warned about once per peer', async () => {
  const before = logs.filter((l) => l.event === 'proxy.untrusted').length;
  for (let i = 0; i < 3; i++) {
    const res = await ctx.app.inject({
      url: '/health',
      remoteAddress: '10.9.9.9',
      headers: { 'x-forwarded-for': '203.0.113.7' },
    });
    assert.equal(res.statusCode, 200);
  }
  const warned = logs.filter((l) => l.event === 'proxy.untrusted');
  assert.equal(warned.length - before, 1, 'once for that peer');
  assert.equal(warned.at(-1)!.peer, '10.9.9.9');
  assert.equal(warned.at(-1)!.level, 40);
  assert.match(warned.at(-1)!.msg, /BULWARK_TRUST_PROXY/);
});

test('a trusted proxy is not warned about; trusting every peer is warned about at start', async () => {
  const trusted = capture();
  const app = Fastify({ trustProxy: '10.0.0.5' });
  registerProxyCheck(app, { trustProxy: '10.0.0.5', log: trusted.log });
  app.get('/x', async (req) => ({ ip: req.ip }));
  const res = await app.inject({
    url: '/x',
    remoteAddress: '10.0.0.5',
    headers: { 'x-forwarded-for': '203.0.113.7' },
  });
  assert.equal(res.json().ip, '203.0.113.7');
  assert.equal(trusted.lines.length, 0);
  await app.close();

  const all = capture();
  registerProxyCheck(Fastify(), { trustProxy: true, log: all.log });
  assert.equal(all.lines.filter((l) => l.event === 'proxy.trust_all' && l.level === 40).length, 1);
});
