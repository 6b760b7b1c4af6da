import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { createTestKey } from './helpers/keys.ts';
import { freePort } from './helpers/ports.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

const REDIS = '/usr/bin/redis-server';
let redis: ChildProcess | undefined;
let port = 0;
let a: TestServer;
let b: TestServer;

async function startRedis(): Promise<void> {
  port = await freePort();
  redis = spawn(REDIS, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  for (let i = 0; i < 100; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1', () => {
        s.end();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
    if (up) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error('redis-server did not start');
}

before(async () => {
  if (!existsSync(REDIS))
    throw new Error('redis-server is missing (npm test installs it through the bootstrap)');
  await startRedis();
  const limits = { redisUrl: `redis://127.0.0.1:${port}`, rateLimitKeyPerMinute: 5 };
  a = await createTestServer(limits);
  b = await createTestServer(limits, { db: a.db });
});
after(async () => {
  await b?.stop();
  await a?.stop();
  redis?.kill('SIGKILL');
});

test('two replicas share one per-key budget through Redis', async () => {
  const k = await createTestKey(a, { account: 'shared' });
  const statuses: number[] = [];
  const remaining: string[] = [];
  for (let i = 0; i < 6; i++) {
    const replica = i % 2 === 0 ? a : b;
    const res = await replica.app.inject({ url: '/v1/whoami', headers: k.headers });
    statuses.push(res.statusCode);
    remaining.push(String(res.headers['ratelimit-remaining']));
  }
  assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429], statuses.join(','));
  assert.deepEqual(remaining.slice(0, 5), ['4', '3', '2', '1', '0'], 'both replicas count into one window');
});

test('when Redis is down the API keeps serving (counting fails open) and says so in the log', async () => {
  redis?.kill('SIGKILL');
  await new Promise((r) => setTimeout(r, 200));
  const k = await createTestKey(a, { account: 'outage' });
  const res = await a.app.inject({ url: '/v1/whoami', headers: k.headers });
  assert.equal(res.statusCode, 200);
});
