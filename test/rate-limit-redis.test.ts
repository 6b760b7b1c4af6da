import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import { Redis } from 'ioredis';
import { serverConfigSchema } from '../src/server/config.ts';
import { createServerContext, type ServerContext } from '../src/server/main.ts';
import { createLogger } from '../src/shared/logger.ts';
import { createTestDb, type TestDb } from './helpers/db.ts';
import { createTestKey } from './helpers/keys.ts';
import { freePort } from './helpers/ports.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

const REDIS = '/usr/bin/redis-server';
const UNREACHABLE = 'rate-limit store unreachable; not counting';
type Line = { level: number; msg: string; err?: { message?: string } };

let redis: ChildProcess | undefined;
let port = 0;
let db: TestDb;
/** Replica A, built here with a logger whose lines the tests read. */
let a: ServerContext;
const logA: Line[] = [];
let b: TestServer;

/** Starts redis-server on a free loopback port; resolves when it says it is ready (10 s at most). */
async function startRedis(): Promise<void> {
  port = await freePort();
  const child = spawn(
    REDIS,
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'],
    { stdio: ['ignore', 'pipe', 'ignore'] },
  );
  redis = child;
  let out = '';
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`redis-server not ready after 10 s:\n${out}`)), 10_000);
    child.stdout?.on('data', (d: Buffer) => {
      out += d;
      if (out.includes('Ready to accept connections')) {
        clearTimeout(timer);
        resolve();
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`redis-server exited (${code}):\n${out}`));
    });
  });
}

before(async () => {
  if (!existsSync(REDIS))
    throw new Error('redis-server is missing (npm test installs it through the bootstrap)');
  await startRedis();
  const limits = { redisUrl: `redis://127.0.0.1:${port}`, rateLimitKeyPerMinute: 5 };
  db = await createTestDb();
  const stream = new Writable({
    write(chunk, _enc, cb) {
      for (const l of String(chunk).split('\n')) if (l) logA.push(JSON.parse(l) as Line);
      cb();
    },
  });
  const config = serverConfigSchema.parse({
    databaseUrl: db.url,
    dataDir: '/nonexistent',
    logLevel: 'warn',
    rateLimitIpPerMinute: 1_000_000,
    rateLimitAuthFailuresPerMinute: 1_000_000,
    ...limits,
  });
  a = await createServerContext({ config, db: db.pool, log: createLogger('test', 'warn', stream) });
  b = await createTestServer(limits, { db });
});
after(async () => {
  await b?.stop();
  await a?.close();
  await db?.drop();
  if (redis && redis.exitCode === null && redis.signalCode === null) {
    redis.kill('SIGKILL');
    await once(redis, 'exit');
  }
});

test('two replicas share one per-key budget through Redis', async () => {
  const k = await createTestKey({ db }, { account: 'shared' });
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
  assert.equal(logA.filter((l) => l.msg === UNREACHABLE).length, 0, 'no outage logged while Redis is up');
});

test('a counter that lost its expiry gets one again, so it cannot lock a key out for good', async () => {
  const k = await createTestKey({ db }, { account: 'no-ttl' });
  const client = new Redis(`redis://127.0.0.1:${port}`, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await client.connect();
    const counter = `bulwark:rl:k:${k.id}`;
    await client.set(counter, '2'); // no expiry
    assert.equal(await client.pttl(counter), -1);
    const res = await a.app.inject({ url: '/v1/whoami', headers: k.headers });
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['ratelimit-remaining'], '2', 'counted on top of the stored 2');
    const ttl = await client.pttl(counter);
    assert.ok(ttl > 0 && ttl <= 60_000, `expiry set again: ${ttl} ms`);
    assert.ok(Number(res.headers['ratelimit-reset']) >= 1, 'the reset header names the new window');
  } finally {
    client.disconnect();
  }
});

test('when Redis is down the API keeps serving (counting fails open) and says so in the log, once', async () => {
  const k = await createTestKey({ db }, { account: 'outage' });
  assert.ok(redis);
  const exited = once(redis, 'exit');
  redis.kill('SIGKILL');
  await exited;
  // More requests than the per-key budget of 5: none is refused while nothing can be counted.
  for (let i = 0; i < 7; i++) {
    const res = await a.app.inject({ url: '/v1/whoami', headers: k.headers });
    assert.equal(res.statusCode, 200, `request ${i + 1}: ${res.body}`);
  }
  const warnings = logA.filter((l) => l.msg === UNREACHABLE);
  assert.equal(warnings.length, 1, 'one warning, not one per request');
  assert.equal(warnings[0]?.level, 40);
  assert.ok(warnings[0]?.err?.message, 'the warning carries the Redis error');
});
