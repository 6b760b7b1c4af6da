import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, test } from 'node:test';
import { serverConfigSchema } from '../src/server/config.ts';
import { createKeyringFile } from '../src/server/crypto/secret-box.ts';
import { createServerContext, type ServerContext } from '../src/server/main.ts';
import { createLogger } from '../src/shared/logger.ts';
import { enrollFakeAgent } from './helpers/databases.ts';
import { createTestDb, type TestDb } from './helpers/db.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';

// A fully wired server with real API keys, and every log line it writes (at trace level).
let db: TestDb;
let ctx: ServerContext;
let keyDir: string;
const logText: string[] = [];
let admin: TestKey;
let reader: TestKey;
let scoped: TestKey;
let stranger: TestKey;

before(async () => {
  db = await createTestDb();
  keyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bulwark-keyring-'));
  const masterKeyFile = path.join(keyDir, 'keyring.json');
  createKeyringFile(masterKeyFile);
  const stream = new Writable({
    write(chunk, _enc, cb) {
      logText.push(String(chunk));
      cb();
    },
  });
  const config = serverConfigSchema.parse({
    databaseUrl: db.url,
    dataDir: '/nonexistent',
    logLevel: 'trace',
    masterKeyFile,
    poolerPublicHost: 'db.example.com',
    poolerSslmode: 'require',
  });
  ctx = await createServerContext({ config, db: db.pool, log: createLogger('test', 'trace', stream) });
  const s = { db, app: ctx.app, nodes: ctx.nodes } as unknown as Parameters<typeof enrollFakeAgent>[0];
  await enrollFakeAgent(s, 'n1');
  admin = await createTestKey({ db }, { account: 'acme' });
  reader = await createTestKey({ db }, { account: 'acme', level: 'read' });
  stranger = await createTestKey({ db }, { account: 'evil' });
  scoped = await createTestKey({ db }, { account: 'acme', level: 'write', databases: ['app_one'] });
});
after(async () => {
  await ctx.close();
  await db.drop();
  fs.rmSync(keyDir, { recursive: true, force: true });
});

type Opts = { key?: TestKey; payload?: unknown; headers?: Record<string, string> };
const call = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, o: Opts = {}) =>
  ctx.app.inject({
    method,
    url,
    headers: { ...(o.key ? o.key.headers : {}), ...o.headers },
    ...(o.payload === undefined ? {} : { payload: o.payload as Record<string, unknown> }),
  });

const dbCount = async () =>
  (await db.pool.query('SELECT count(*)::int AS n FROM databases')).rows[0].n as number;

test('the database API needs a key; create answers 202 provisioning with its node', async () => {
  assert.equal((await call('GET', '/v1/databases')).statusCode, 401);
  assert.equal((await call('POST', '/v1/databases', { payload: { name: 'app_one' } })).statusCode, 401);
  const res = await call('POST', '/v1/databases', { key: admin, payload: { name: 'app_one' } });
  assert.equal(res.statusCode, 202, res.body);
  const body = res.json();
  assert.equal(body.status, 'provisioning');
  assert.equal(body.node, 'n1');
  assert.deepEqual(Object.keys(body).sort(), [
    'created_at',
    'failure_reason',
    'id',
    'name',
    'node',
    'password_version',
    'ready_at',
    'rotated_at',
    'rotation_pending',
    'status',
    'updated_at',
  ]);
  const again = await call('POST', '/v1/databases', { key: admin, payload: { name: 'app_one' } });
  assert.equal(again.statusCode, 409);
  assert.equal(again.json().error.code, 'conflict');

  // Idempotency-Key: the retry replays the first answer and creates nothing more.
  const h = { 'idempotency-key': 'create-app-two-1' };
  const first = await call('POST', '/v1/databases', { key: admin, payload: { name: 'app_two' }, headers: h });
  const replay = await call('POST', '/v1/databases', {
    key: admin,
    payload: { name: 'app_two' },
    headers: h,
  });
  assert.equal(first.statusCode, 202);
  assert.equal(replay.statusCode, 202);
  assert.equal(replay.json().id, first.json().id);
});

test('hostile names are 400 over HTTP and nothing is created', async () => {
  const before = await dbCount();
  for (const name of [
    'a;drop',
    '"x"',
    'x'.repeat(64),
    'рostgres',
    '../x',
    'a/../b',
    'A',
    'template0',
    "a'b",
  ]) {
    const res = await call('POST', '/v1/databases', { key: admin, payload: { name } });
    assert.equal(res.statusCode, 400, `${name}: ${res.body}`);
    const show = await call('GET', `/v1/databases/${encodeURIComponent(name)}`, { key: admin });
    assert.ok([400, 404].includes(show.statusCode), `${name}: ${show.statusCode}`);
  }
  const extra = await call('POST', '/v1/databases', { key: admin, payload: { name: 'ok_name', owner: 'x' } });
  assert.equal(extra.statusCode, 400, 'unknown fields are refused');
  assert.equal(await dbCount(), before);
});

test('levels, scope and tenants: 403 for too little, 404 for what is not yours', async () => {
  assert.equal(
    (await call('POST', '/v1/databases', { key: reader, payload: { name: 'r_db' } })).statusCode,
    403,
  );
  assert.equal(
    (await call('POST', '/v1/databases', { key: scoped, payload: { name: 's_db' } })).statusCode,
    403,
  );
  assert.equal(
    (await call('POST', '/v1/databases/app_one/credentials/reveal', { key: reader })).statusCode,
    403,
  );
  assert.equal((await call('GET', '/v1/databases/app_one/connection', { key: reader })).statusCode, 200);

  const list = await call('GET', '/v1/databases', { key: scoped });
  assert.deepEqual(
    list.json().items.map((d: { name: string }) => d.name),
    ['app_one'],
  );
  assert.equal((await call('GET', '/v1/databases/app_two', { key: scoped })).statusCode, 404);
  assert.equal((await call('GET', '/v1/databases/app_one', { key: scoped })).statusCode, 200);

  for (const [method, url, payload] of [
    ['GET', '/v1/databases/app_one', undefined],
    ['GET', '/v1/databases/app_one/connection', undefined],
    ['GET', '/v1/databases/app_one/allowlist', undefined],
    ['PUT', '/v1/databases/app_one/allowlist', { entries: [] }],
    ['GET', '/v1/databases/app_one/limits', undefined],
    ['POST', '/v1/databases/app_one/credentials/reveal', undefined],
    ['POST', '/v1/databases/app_one/credentials/rotate', undefined],
    ['DELETE', '/v1/databases/app_one', { confirm: 'app_one' }],
  ] as const) {
    const res = await call(method, url, { key: stranger, payload });
    assert.equal(res.statusCode, 404, `${method} ${url}`);
  }
  assert.deepEqual((await call('GET', '/v1/databases', { key: stranger })).json(), {
    items: [],
    next_cursor: null,
  });
});

test('connection info, reveal and limits; the password reaches no log line', async () => {
  const conn = (await call('GET', '/v1/databases/app_one/connection', { key: admin })).json();
  assert.deepEqual(conn, {
    host: 'db.example.com',
    port: 6432,
    user: 'app_one_owner',
    database: 'app_one',
    sslmode: 'require',
    uri: 'postgresql://app_one_owner@db.example.com:6432/app_one?sslmode=require',
  });
  const reveal = await call('POST', '/v1/databases/app_one/credentials/reveal', { key: admin });
  assert.equal(reveal.statusCode, 200);
  assert.equal(reveal.headers['cache-control'], 'no-store');
  const { password } = reveal.json();
  assert.match(password, /^[A-Za-z0-9_-]{43}$/);
  assert.ok(!conn.uri.includes(password));

  const limits = await call('GET', '/v1/databases/app_one/limits', { key: admin });
  assert.equal(limits.json().owner_connection_limit, 50);
  const newLimits = {
    owner_connection_limit: 10,
    reader_connection_limit: 5,
    statement_timeout_ms: 5000,
    idle_in_transaction_timeout_ms: 10000,
  };
  const put = await call('PUT', '/v1/databases/app_one/limits', { key: admin, payload: newLimits });
  assert.equal(put.statusCode, 200, put.body);
  assert.deepEqual(put.json(), newLimits);
  const bad = await call('PUT', '/v1/databases/app_one/limits', {
    key: admin,
    payload: { ...newLimits, owner_connection_limit: 0 },
  });
  assert.equal(bad.statusCode, 400);

  assert.ok(logText.length > 10, 'the server logged at trace level');
  assert.ok(!logText.join('').includes(password), 'no log line holds the password');
});

test('allowlist over HTTP: shape, bounds and notes', async () => {
  const url = '/v1/databases/app_one/allowlist';
  const get = await call('GET', url, { key: admin });
  assert.deepEqual(get.json(), {
    entries: [
      { cidr: '127.0.0.1/32', expires_at: null, note: 'default' },
      { cidr: '::1/128', expires_at: null, note: 'default' },
    ],
  });
  const expires = new Date(Date.now() + 2 * 3_600_000).toISOString();
  const put = await call('PUT', url, {
    key: admin,
    payload: { entries: [{ cidr: '203.0.113.7/32', expires_at: expires, note: 'on call laptop' }] },
  });
  assert.equal(put.statusCode, 200, put.body);
  assert.deepEqual(put.json(), {
    entries: [{ cidr: '203.0.113.7/32', expires_at: expires, note: 'on call laptop' }],
  });
  const many = Array.from({ length: 101 }, (_, i) => ({ cidr: `10.0.${Math.floor(i / 250)}.${i % 250}/32` }));
  for (const entries of [
    many,
    [{ cidr: '203.0.113.7/32', note: 'x'.repeat(201) }],
    [{ cidr: 'not-a-cidr' }],
    [{ cidr: '203.0.113.7/32', expires_at: 'tomorrow' }],
  ]) {
    assert.equal((await call('PUT', url, { key: admin, payload: { entries } })).statusCode, 400);
  }
});

test('delete must repeat the name; rotation needs a ready database', async () => {
  const noConfirm = await call('DELETE', '/v1/databases/app_two', {
    key: admin,
    payload: { confirm: 'app_one' },
  });
  assert.equal(noConfirm.statusCode, 400);
  assert.equal((await call('GET', '/v1/databases/app_two', { key: admin })).json().status, 'provisioning');
  // Rotation needs a ready database.
  assert.equal(
    (await call('POST', '/v1/databases/app_two/credentials/rotate', { key: admin })).statusCode,
    409,
  );
  const del = await call('DELETE', '/v1/databases/app_two', { key: admin, payload: { confirm: 'app_two' } });
  assert.equal(del.statusCode, 202);
  assert.equal(del.json().status, 'deleting');
});
