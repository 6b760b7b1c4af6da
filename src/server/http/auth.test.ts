import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { createTestDb, type TestDb } from '../../../test/helpers/db.ts';
import { createTestKey } from '../../../test/helpers/keys.ts';
import { generateApiKey } from '../../shared/api-key.ts';
import { createLogger } from '../../shared/logger.ts';
import { serverConfigSchema } from '../config.ts';
import { createServerContext, type ServerContext } from '../main.ts';

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
  const config = serverConfigSchema.parse({
    databaseUrl: db.url,
    dataDir: '/nonexistent',
    logLevel: 'info',
    rateLimitKeyPerMinute: 5,
    rateLimitAuthFailuresPerMinute: 6,
  });
  ctx = await createServerContext({ config, db: db.pool, log: c.log });
  await ctx.keyAuth.listenerReady();
});
after(async () => {
  await ctx.close();
  await db.drop();
});

const whoami = (authorization?: string, ip = '127.0.0.1') =>
  ctx.app.inject({ url: '/v1/whoami', remoteAddress: ip, headers: authorization ? { authorization } : {} });

function badChecksum(key: string): string {
  const last = key.at(-1) === 'A' ? 'B' : 'A';
  return key.slice(0, -1) + last;
}

test('a key with a bad checksum or format is refused without any database lookup', async () => {
  // A second server whose control DB pool is closed: any lookup would fail with a 500.
  const closed = new pg.Pool({ connectionString: db.url });
  await closed.end();
  const config = serverConfigSchema.parse({
    databaseUrl: db.url,
    dataDir: '/nonexistent',
    logLevel: 'silent',
  });
  const other = await createServerContext({ config, db: closed, log: createLogger('t', 'silent') });
  try {
    const { key } = generateApiKey();
    for (const auth of [
      `Bearer ${badChecksum(key)}`,
      'Bearer bwk_short',
      `Bearer ${key.toLowerCase()}`,
      `Bearer  ${key}`,
      `Basic ${key}`,
      'Bearer ',
    ]) {
      const res = await other.app.inject({ url: '/v1/whoami', headers: { authorization: auth } });
      assert.equal(res.statusCode, 401, auth);
      assert.equal(res.json().error.code, 'unauthorized');
    }
    // The control: a well-formed key with a valid checksum does reach the (closed) database.
    const res = await other.app.inject({ url: '/v1/whoami', headers: { authorization: `Bearer ${key}` } });
    assert.equal(res.statusCode, 500);
  } finally {
    await other.close();
  }
});

test('whoami describes the key; failures are one 401 shape with a fail2ban line and no key material', async () => {
  const k = await createTestKey({ db }, { account: 'acme', level: 'write' });
  const ok = await whoami(k.headers.authorization, '10.0.0.1');
  assert.equal(ok.statusCode, 200);
  const body = ok.json();
  assert.equal(body.account.name, 'acme');
  assert.equal(body.key.id, k.id);
  assert.equal(body.key.level, 'write');
  assert.equal(body.key.databases, null);
  assert.equal(body.key.prefix, k.key.slice(0, 16));
  assert.ok(Date.parse(body.key.expires_at) > Date.now() + 89 * 86_400_000);
  assert.ok(!ok.body.includes(k.key));
  assert.equal(ok.headers['ratelimit-limit'], '5');
  assert.equal(ok.headers['ratelimit-remaining'], '4');

  const unknown = await whoami(`Bearer ${generateApiKey().key}`, '10.0.0.2');
  const missing = await whoami(undefined, '10.0.0.2');
  for (const r of [unknown, missing]) {
    assert.equal(r.statusCode, 401);
    assert.equal(r.headers['www-authenticate'], 'Bearer');
    assert.deepEqual(Object.keys(r.json().error).sort(), ['code', 'message', 'request_id']);
  }
  assert.equal(unknown.json().error.message, missing.json().error.message);
  const failures = logs.filter((l) => /^bulwark auth failure /.test(l.msg));
  assert.ok(failures.some((l) => l.msg === 'bulwark auth failure ip=10.0.0.2 reason=unknown'));
  assert.ok(failures.some((l) => l.msg === 'bulwark auth failure ip=10.0.0.2 reason=missing'));
  assert.ok(failures.every((l) => l.level === 40));
  assert.ok(!JSON.stringify(logs).includes(k.key.slice(4)), 'no key material in any log line');
});

test('per-key limit: RateLimit headers, then 429 rate_limited with Retry-After', async () => {
  const k = await createTestKey({ db }, { account: 'limited' });
  const statuses: number[] = [];
  let last = await whoami(k.headers.authorization, '10.0.1.1');
  statuses.push(last.statusCode);
  for (let i = 0; i < 5; i++) {
    last = await whoami(k.headers.authorization, '10.0.1.1');
    statuses.push(last.statusCode);
  }
  assert.deepEqual(statuses, [200, 200, 200, 200, 200, 429]);
  assert.equal(last.json().error.code, 'rate_limited');
  assert.equal(last.headers['ratelimit-remaining'], '0');
  const retry = Number(last.headers['retry-after']);
  assert.ok(retry >= 1 && retry <= 60, String(retry));
  // Another key is not affected.
  const other = await createTestKey({ db }, { account: 'limited' });
  assert.equal((await whoami(other.headers.authorization, '10.0.1.1')).statusCode, 200);
});

test('auth failures per IP are limited more strictly, and then even a good key is refused', async () => {
  const k = await createTestKey({ db }, { account: 'brute' });
  const ip = '10.0.2.1';
  for (let i = 0; i < 6; i++)
    assert.equal((await whoami(`Bearer ${generateApiKey().key}`, ip)).statusCode, 401);
  const blocked = await whoami(k.headers.authorization, ip);
  assert.equal(blocked.statusCode, 429);
  assert.ok(Number(blocked.headers['retry-after']) >= 1);
  // Other addresses are unaffected.
  assert.equal((await whoami(k.headers.authorization, '10.0.2.2')).statusCode, 200);
  assert.ok(logs.some((l) => l.msg === `bulwark auth failure ip=${ip} reason=too_many_failures`));
});

test('a decoy key is refused like an unknown one and raises a fatal log line', async () => {
  const admin = await createTestKey({ db }, { account: 'canary' });
  const created = await ctx.app.inject({
    method: 'POST',
    url: '/v1/keys',
    headers: admin.headers,
    remoteAddress: '10.0.3.1',
    payload: { name: 'aws-backup-creds', level: 'admin', decoy: true },
  });
  assert.equal(created.statusCode, 201);
  const decoy = created.json();
  assert.equal(decoy.decoy, true);
  const res = await whoami(`Bearer ${decoy.key}`, '10.0.3.2');
  const unknown = await whoami(`Bearer ${generateApiKey().key}`, '10.0.3.2');
  assert.equal(res.statusCode, 401);
  assert.equal(res.json().error.message, unknown.json().error.message);
  const alert = logs.find((l) => l.event === 'key.decoy_used');
  assert.ok(alert, 'decoy use is logged');
  assert.equal(alert.level, 60, 'at fatal level');
  assert.equal(alert.key_id, decoy.id);
  assert.equal(alert.ip, '10.0.3.2');
});

test('last use is recorded in batches, not per request, with the first use noticed', async () => {
  const k = await createTestKey({ db }, { account: 'usage' });
  assert.equal((await whoami(k.headers.authorization, '10.0.4.1')).statusCode, 200);
  assert.equal((await whoami(k.headers.authorization, '10.0.4.2')).statusCode, 200);
  const before = await db.pool.query('SELECT last_used_at FROM api_keys WHERE id = $1', [k.id]);
  assert.equal(before.rows[0].last_used_at, null, 'nothing written on the request path');
  await ctx.keyAuth.flushUsage();
  const row = (
    await db.pool.query('SELECT last_used_at, host(last_used_ip) AS ip FROM api_keys WHERE id = $1', [k.id])
  ).rows[0];
  assert.ok(row.last_used_at instanceof Date);
  assert.equal(row.ip, '10.0.4.2');
  assert.ok(logs.some((l) => l.event === 'key.first_use' && (l.key_ids as string[]).includes(k.id)));
});

test("a suspended account's keys are refused at once (cache dropped by NOTIFY)", async () => {
  const k = await createTestKey({ db }, { account: 'suspendme' });
  assert.equal((await whoami(k.headers.authorization, '10.0.5.1')).statusCode, 200);
  await db.pool.query("UPDATE accounts SET status = 'suspended' WHERE id = $1", [k.accountId]);
  await ctx.keys.accountChanged(k.accountId);
  const deadline = Date.now() + 2_000;
  let status = 200;
  while (Date.now() < deadline && status === 200) {
    status = (await whoami(k.headers.authorization, '10.0.5.1')).statusCode;
    if (status === 200) await new Promise((r) => setTimeout(r, 2));
  }
  assert.equal(status, 401);
  assert.ok(logs.some((l) => l.msg === 'bulwark auth failure ip=10.0.5.1 reason=account_suspended'));
});

test('routes outside the key-protected API are left alone', async () => {
  assert.equal((await ctx.app.inject({ url: '/health' })).statusCode, 200);
  assert.equal((await ctx.app.inject({ url: '/v1/openapi.json' })).statusCode, 200);
  assert.equal((await ctx.app.inject({ url: '/v1/nope' })).statusCode, 404);
  const agent = await ctx.app.inject({ method: 'POST', url: '/v1/agent/poll', payload: { wait_ms: 0 } });
  assert.equal(agent.statusCode, 401);
  assert.equal(agent.json().error.message, 'Invalid agent token', 'the agent API authenticates itself');
});
