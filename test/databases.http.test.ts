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
  assert.equal(body.kind, 'hosted');
  assert.equal(body.attached, null);
  assert.deepEqual(Object.keys(body).sort(), [
    'attached',
    'created_at',
    'failure_reason',
    'id',
    'kind',
    'last_rotation',
    'name',
    'node',
    'node_status',
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
    ['POST', '/v1/databases/app_one/allowlist', { cidr: '203.0.113.7/32' }],
    ['DELETE', '/v1/databases/app_one/allowlist/127.0.0.1%2F32', undefined],
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
  // Its name on the node is generated (ADR 0039), never the label.
  const physical = (
    await db.pool.query("SELECT pg_name FROM databases WHERE name = 'app_one' AND deleted_at IS NULL")
  ).rows[0].pg_name as string;
  assert.match(physical, /^bulwark_db_p_[0-9a-f]{16}$/);
  assert.deepEqual(conn, {
    host: 'db.example.com',
    port: 6432,
    user: `${physical}_owner`,
    database: physical,
    sslmode: 'require',
    uri: `postgresql://${physical}_owner@db.example.com:6432/${physical}?sslmode=require`,
  });
  const reveal = await call('POST', '/v1/databases/app_one/credentials/reveal', { key: admin });
  assert.equal(reveal.statusCode, 200);
  assert.equal(reveal.headers['cache-control'], 'no-store');
  const { password } = reveal.json();
  assert.match(password, /^[A-Za-z0-9_-]{43}$/);
  assert.ok(!conn.uri.includes(password));

  const limits = await call('GET', '/v1/databases/app_one/limits', { key: admin });
  assert.equal(limits.json().owner_connection_limit, 20);
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
  // Past the node's tenant connection budget: 409 with a stable code, and no node totals.
  const full = await call('PUT', '/v1/databases/app_one/limits', {
    key: admin,
    payload: { ...newLimits, owner_connection_limit: 10_000 },
  });
  assert.equal(full.statusCode, 409, full.body);
  assert.equal(full.json().error.code, 'capacity_exceeded');
  // The cut to 10 + 5 keeps the default 20 + 2 committed until a rotation ends older sessions.
  assert.deepEqual(full.json().error.details, { node: 'n1', requested: 10_000 + 5 - 22 });
  assert.deepEqual((await call('GET', '/v1/databases/app_one/limits', { key: admin })).json(), newLimits);

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

const allowlistJobs = async (name: string) =>
  (
    await db.pool.query(
      "SELECT count(*)::int AS n FROM jobs WHERE kind = 'database.allowlist' AND payload->>'name' = $1",
      [name],
    )
  ).rows[0].n as number;
const cidrsOf = async (url: string) =>
  ((await call('GET', url, { key: admin })).json().entries as { cidr: string }[]).map((e) => e.cidr).sort();

test('per-entry allowlist edits are atomic: concurrent adds and removes all survive, one job each', async () => {
  const url = '/v1/databases/app_one/allowlist';
  const kept = Array.from({ length: 5 }, (_, i) => `192.0.2.${i + 1}/32`);
  const gone = Array.from({ length: 5 }, (_, i) => `192.0.2.${i + 101}/32`);
  const added = Array.from({ length: 10 }, (_, i) => `198.51.100.${i + 1}/32`);
  const put = await call('PUT', url, {
    key: admin,
    payload: { entries: [...kept, ...gone].map((cidr) => ({ cidr })) },
  });
  assert.equal(put.statusCode, 200, put.body);
  const jobsBefore = await allowlistJobs('app_one');

  // Every edit starts before any finishes. A read-modify-write (read the list, change it, write it
  // back) loses most of them here: each writer overwrites the others' changes.
  const results = await Promise.all([
    ...added.map((cidr) => call('POST', url, { key: admin, payload: { cidr, note: 'ci runner' } })),
    ...gone.map((cidr) => call('DELETE', `${url}/${encodeURIComponent(cidr)}`, { key: admin })),
  ]);
  for (const r of results) assert.equal(r.statusCode, 200, r.body);
  assert.deepEqual(await cidrsOf(url), [...kept, ...added].sort());
  assert.equal(await allowlistJobs('app_one'), jobsBefore + 15, 'one pooler job per change');
  const last = await db.pool.query(
    "SELECT payload FROM jobs WHERE kind = 'database.allowlist' AND payload->>'name' = 'app_one' ORDER BY id DESC LIMIT 1",
  );
  assert.deepEqual(
    (last.rows[0].payload.allowlist as { cidr: string }[]).map((e) => e.cidr).sort(),
    [...kept, ...added].sort(),
    'the last job queued carries the final list',
  );
  const audited = await db.pool.query(
    `SELECT details FROM audit_events WHERE action = 'database.allowlist_changed'
        AND details->>'name' = 'app_one' AND (details ? 'added' OR details ? 'removed')`,
  );
  assert.equal(audited.rowCount, 15);

  // The answer is the list, like the whole-list update's; adding the same entry again changes
  // nothing (no job); a new expiry replaces the old one in place.
  const one = await call('POST', url, {
    key: admin,
    payload: { cidr: '198.51.100.1/32', note: 'ci runner' },
  });
  assert.equal(one.statusCode, 200, one.body);
  assert.deepEqual(
    one.json().entries.find((e: { cidr: string }) => e.cidr === '198.51.100.1/32'),
    {
      cidr: '198.51.100.1/32',
      expires_at: null,
      note: 'ci runner',
    },
  );
  assert.equal(await allowlistJobs('app_one'), jobsBefore + 15);
  const expires = new Date(Date.now() + 3_600_000).toISOString();
  const renewed = await call('POST', url, {
    key: admin,
    payload: { cidr: '198.51.100.1/32', expires_at: expires },
  });
  assert.equal(renewed.statusCode, 200, renewed.body);
  assert.deepEqual(
    renewed.json().entries.filter((e: { cidr: string }) => e.cidr === '198.51.100.1/32'),
    [{ cidr: '198.51.100.1/32', expires_at: expires, note: null }],
  );
  assert.equal(await allowlistJobs('app_one'), jobsBefore + 16);

  // A CIDR in the path is normalised like an entry's (IPv6 case, URL-encoded).
  await call('POST', url, { key: admin, payload: { cidr: '2001:db8:a::/48' } });
  const v6 = await call('DELETE', `${url}/${encodeURIComponent('2001:DB8:A::/48')}`, { key: admin });
  assert.equal(v6.statusCode, 200, v6.body);
  assert.ok(!(await cidrsOf(url)).includes('2001:db8:a::/48'));
  assert.equal(await allowlistJobs('app_one'), jobsBefore + 18);
});

test('per-entry allowlist edits: 404 for a missing entry, 400 for bad input, scope and levels; nothing changes', async () => {
  const url = '/v1/databases/app_one/allowlist';
  const before = await cidrsOf(url);
  const jobsBefore = await allowlistJobs('app_one');

  const missing = await call('DELETE', `${url}/203.0.113.99%2F32`, { key: admin });
  assert.equal(missing.statusCode, 404, missing.body);
  assert.equal(missing.json().error.code, 'not_found');
  assert.match(missing.json().error.message, /203\.0\.113\.99\/32 is not on the allowlist of app_one/);
  assert.equal(
    (await call('DELETE', '/v1/databases/no_such_db/allowlist/203.0.113.99%2F32', { key: admin })).statusCode,
    404,
  );

  for (const payload of [
    { cidr: 'not-a-cidr' },
    { cidr: '10.0.0.1' },
    { cidr: '10.0.0.0/33' },
    { cidr: '300.1.1.1/32' },
    { cidr: '203.0.113.7/32', note: 'x'.repeat(201) },
    { cidr: '203.0.113.7/32', expires_at: 'tomorrow' },
    { cidr: '203.0.113.7/32', expires_at: new Date(Date.now() - 1000).toISOString() },
    { cidr: '203.0.113.7/32', expires_in: 3600 },
    { cidr: '1'.repeat(65) },
    { entries: [{ cidr: '203.0.113.7/32' }] },
    {},
  ]) {
    const res = await call('POST', url, { key: admin, payload });
    assert.equal(res.statusCode, 400, `${JSON.stringify(payload)}: ${res.body}`);
  }
  for (const cidr of ['nope', '10.0.0.1', '10.0.0.0%2F33']) {
    const res = await call('DELETE', `${url}/${cidr}`, { key: admin });
    assert.equal(res.statusCode, 400, `${cidr}: ${res.body}`);
  }

  // Levels and scope, as for the whole-list update: read is 403, out of scope or another tenant 404.
  const add = { cidr: '203.0.113.50/32' };
  assert.equal((await call('POST', url, { key: reader, payload: add })).statusCode, 403);
  assert.equal((await call('DELETE', `${url}/192.0.2.1%2F32`, { key: reader })).statusCode, 403);
  for (const key of [stranger, scoped]) {
    const other = key === scoped ? '/v1/databases/app_two/allowlist' : url;
    assert.equal((await call('POST', other, { key, payload: add })).statusCode, 404);
    assert.equal((await call('DELETE', `${other}/192.0.2.1%2F32`, { key })).statusCode, 404);
  }
  assert.deepEqual(await cidrsOf(url), before, 'nothing changed');
  assert.equal(await allowlistJobs('app_one'), jobsBefore, 'no job queued');

  // At most 100 entries: a new CIDR on a full list is refused; replacing one of them is not.
  const full = Array.from({ length: 100 }, (_, i) => ({ cidr: `10.1.${Math.floor(i / 250)}.${i % 250}/32` }));
  assert.equal((await call('PUT', url, { key: admin, payload: { entries: full } })).statusCode, 200);
  assert.equal((await call('POST', url, { key: admin, payload: add })).statusCode, 400);
  const replace = await call('POST', url, { key: admin, payload: { cidr: '10.1.0.0/32', note: 'first' } });
  assert.equal(replace.statusCode, 200, replace.body);
  assert.equal(replace.json().entries.length, 100);

  // A scoped key edits its own database; an Idempotency-Key retry replays and queues nothing more.
  const jobs = await allowlistJobs('app_one');
  const h = { 'idempotency-key': 'allow-app-one-1' };
  const small = { key: scoped, headers: h, payload: { cidr: '10.1.0.1/32', note: 'retry' } };
  const first = await call('POST', url, small);
  const replay = await call('POST', url, small);
  assert.equal(first.statusCode, 200, first.body);
  assert.equal(replay.statusCode, 200);
  assert.equal(replay.headers['idempotent-replayed'], 'true');
  assert.deepEqual(replay.json(), first.json());
  assert.equal(await allowlistJobs('app_one'), jobs + 1);
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
