import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { createTestKey, type TestKey } from '../../../../test/helpers/keys.ts';
import { createTestServer, type TestServer } from '../../../../test/helpers/server.ts';

let s: TestServer;
let admin: TestKey;
before(async () => {
  s = await createTestServer({ rateLimitKeyPerMinute: 100_000, rateLimitAuthFailuresPerMinute: 100_000 });
  await s.keyAuth.listenerReady();
  admin = await createTestKey(s, { account: 'acme' });
});
after(() => s.stop());

type Json = Record<string, unknown> & { id: string; key?: string };

async function call(method: 'GET' | 'POST' | 'DELETE', url: string, key: TestKey | string, payload?: object) {
  const authorization = typeof key === 'string' ? `Bearer ${key}` : key.headers.authorization;
  return s.app.inject({ method, url, headers: { authorization }, ...(payload ? { payload } : {}) });
}

async function createKey(by: TestKey | string, body: object): Promise<Json> {
  const res = await call('POST', '/v1/keys', by, body);
  assert.equal(res.statusCode, 201, res.body);
  return res.json() as Json;
}

/** Body of an error without its request id (to compare "foreign" with "missing"). */
const shape = (r: { statusCode: number; json(): unknown }) => {
  const e = (r.json() as { error: Record<string, unknown> }).error;
  return { status: r.statusCode, code: e.code, message: e.message };
};

test('create shows the key once; only a hash is stored; list, show and revoke', async () => {
  const made = await createKey(admin, {
    name: 'ci deploy',
    level: 'write',
    databases: ['shop', 'shop', 'blog'],
  });
  assert.match(made.key!, /^bwk_[0-9A-Za-z]{49}$/);
  assert.equal(made.prefix, made.key!.slice(0, 16));
  assert.deepEqual(made.databases, ['shop', 'blog']);
  assert.equal(made.status, 'active');
  assert.equal(made.created_by_key_id, admin.id);
  const stored = await s.db.pool.query('SELECT * FROM api_keys WHERE id = $1', [made.id]);
  assert.equal(stored.rows[0].key_hash.length, 32);
  assert.ok(!JSON.stringify(stored.rows).includes(made.key!.slice(16)), 'the key is not stored');

  const shown = await call('GET', `/v1/keys/${made.id}`, admin);
  assert.equal(shown.statusCode, 200);
  assert.equal(shown.json().key, undefined);
  assert.ok(!shown.body.includes('hash'));

  const listed = await call('GET', '/v1/keys', admin);
  assert.ok((listed.json().items as Json[]).some((k) => k.id === made.id));

  assert.equal((await call('GET', '/v1/whoami', made.key!)).statusCode, 200);
  const revoked = await call('DELETE', `/v1/keys/${made.id}`, admin);
  assert.equal(revoked.statusCode, 200);
  assert.equal(revoked.json().status, 'revoked');
  assert.equal(
    (await call('GET', '/v1/whoami', made.key!)).statusCode,
    401,
    'refused at once on this replica',
  );
  const again = await call('DELETE', `/v1/keys/${made.id}`, admin);
  assert.equal(again.json().revoked_at, revoked.json().revoked_at, 'revoking twice keeps the first time');
  // The revoked key's use is in the audit log (scanners' garbage is not).
  assert.equal((await call('GET', '/v1/whoami', `bwk_${'A'.repeat(49)}`)).statusCode, 401);
  const deadline = Date.now() + 2_000;
  let refusals: { actor_id: string; details: Record<string, unknown> }[] = [];
  while (refusals.length === 0 && Date.now() < deadline) {
    refusals = (
      await s.db.pool.query("SELECT actor_id, details FROM audit_events WHERE action = 'key.refused'")
    ).rows;
    if (refusals.length === 0) await new Promise((r) => setTimeout(r, 20));
  }
  assert.deepEqual(refusals, [
    { actor_id: made.id, details: { key_prefix: made.prefix, reason: 'revoked' } },
  ]);
});

test('a key never exceeds its creator: level, scope, explorer, lifetime', async () => {
  const scoped = await createKey(admin, { name: 'shop admin', level: 'admin', databases: ['shop', 'blog'] });
  const by = scoped.key!;
  assert.equal(
    (await call('POST', '/v1/keys', by, { name: 'x', level: 'read', databases: ['other'] })).statusCode,
    403,
  );
  assert.equal(
    (await call('POST', '/v1/keys', by, { name: 'x', level: 'read', decoy: true })).statusCode,
    403,
  );
  assert.equal(
    (await call('POST', '/v1/keys', by, { name: 'x', level: 'read', explorer: true })).statusCode,
    403,
  );
  const inherited = await createKey(by, { name: 'child', level: 'read' });
  assert.deepEqual(inherited.databases, ['shop', 'blog'], 'a scoped creator passes on its scope');
  const narrowed = await createKey(by, { name: 'child2', level: 'write', databases: ['blog'] });
  assert.deepEqual(narrowed.databases, ['blog']);

  const writer = await createKey(admin, { name: 'writer', level: 'write' });
  assert.equal((await call('POST', '/v1/keys', writer.key!, { name: 'x', level: 'read' })).statusCode, 403);

  const far = new Date(Date.now() + 91 * 86_400_000).toISOString();
  const past = new Date(Date.now() - 1000).toISOString();
  for (const expires_at of [far, past]) {
    const r = await call('POST', '/v1/keys', admin, { name: 'x', level: 'read', expires_at });
    assert.equal(r.statusCode, 400, expires_at);
  }
  const short = await createKey(admin, {
    name: 'short',
    level: 'admin',
    expires_at: new Date(Date.now() + 3_600_000).toISOString(),
  });
  const child = await createKey(short.key!, { name: 'child', level: 'read' });
  assert.equal(child.expires_at, short.expires_at, 'default expiry is capped by the creator');
  const later = new Date(Date.now() + 7_200_000).toISOString();
  assert.equal(
    (await call('POST', '/v1/keys', short.key!, { name: 'x', level: 'read', expires_at: later })).statusCode,
    400,
  );

  for (const bad of [
    { name: '', level: 'read' },
    { name: 'x', level: 'owner' },
    { name: 'x', level: 'read', databases: ['Bad-Name'] },
    { name: 'x', level: 'read', databases: [] },
    { name: 'x', level: 'read', hash: 'x' },
    { name: 'x'.repeat(101), level: 'read' },
  ]) {
    const r = await call('POST', '/v1/keys', admin, bad);
    assert.equal(r.statusCode, 400, JSON.stringify(bad));
  }
});

test('a key loses its rights when its creator is revoked (cache included)', async () => {
  const parent = await createKey(admin, { name: 'parent', level: 'admin' });
  const child = await createKey(parent.key!, { name: 'child', level: 'admin' });
  const grandchild = await createKey(child.key!, { name: 'grandchild', level: 'read' });
  assert.equal((await call('GET', '/v1/whoami', grandchild.key!)).statusCode, 200, 'cached now');
  assert.equal((await call('DELETE', `/v1/keys/${parent.id}`, admin)).statusCode, 200);
  // No wait: the revoking replica evicts the whole chain from its cache before it answers.
  assert.equal((await call('GET', '/v1/whoami', child.key!)).statusCode, 401);
  assert.equal((await call('GET', '/v1/whoami', grandchild.key!)).statusCode, 401);
  // The chain is checked at validation too, not only by eviction: revoke a creator behind
  // the server's back (no NOTIFY), then use its never-cached child for the first time.
  const p2 = await createKey(admin, { name: 'p2', level: 'admin' });
  const c2 = await createKey(p2.key!, { name: 'c2', level: 'read' });
  await s.db.pool.query('UPDATE api_keys SET revoked_at = now() WHERE id = $1', [p2.id]);
  assert.equal((await call('GET', '/v1/whoami', c2.key!)).statusCode, 401);
});

test('object-level authorization on every route with an id; foreign is indistinguishable from missing', async () => {
  const target = await createKey(admin, { name: 'target', level: 'read' });
  const other = await createTestKey(s, { account: 'globex' });
  const otherTarget = await createKey(other, { name: 'theirs', level: 'read' });
  const scoped = await createKey(admin, { name: 'scoped admin', level: 'admin', databases: ['shop'] });
  const scopedChild = await createKey(scoped.key!, { name: 'scoped child', level: 'read' });
  const reader = await createKey(admin, { name: 'reader', level: 'read' });
  const expired = await createKey(admin, { name: 'expired', level: 'admin' });
  await s.db.pool.query("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1", [
    expired.id,
  ]);
  const revoked = await createKey(admin, { name: 'revoked', level: 'admin' });
  await call('DELETE', `/v1/keys/${revoked.id}`, admin);
  const decoy = await createKey(admin, { name: 'decoy', level: 'admin', decoy: true });

  const missing = randomUUID();
  for (const method of ['GET', 'DELETE'] as const) {
    const url = (id: string) => `/v1/keys/${id}`;
    const notFound = shape(await call(method, url(missing), admin));
    assert.deepEqual(notFound, { status: 404, code: 'not_found', message: 'Key not found' });
    // Another account's key: the same answer as a missing one, to every caller kind.
    assert.deepEqual(shape(await call(method, url(otherTarget.id), admin)), notFound, `${method} foreign`);
    assert.deepEqual(shape(await call(method, url(target.id), other)), notFound, `${method} other account`);
    // A database-scoped admin sees only the keys it created.
    assert.deepEqual(shape(await call(method, url(target.id), scoped.key!)), notFound, `${method} scoped`);
    assert.equal(
      (await call(method, url(scopedChild.id), scoped.key!)).statusCode,
      200,
      `${method} scoped own`,
    );
    // Read level on an admin route: 403 whatever the id (nothing learnt about existence).
    const r1 = shape(await call(method, url(target.id), reader.key!));
    const r2 = shape(await call(method, url(missing), reader.key!));
    assert.equal(r1.status, 403);
    assert.deepEqual(r1, r2);
    // Expired, revoked and decoy keys: the same 401 as an unknown key.
    for (const k of [expired, revoked, decoy]) {
      assert.deepEqual(shape(await call(method, url(target.id), k.key!)).status, 401, `${method} ${k.name}`);
    }
  }
  const stillThere = await call('GET', `/v1/keys/${otherTarget.id}`, other);
  assert.equal(stillThere.json().status, 'active', 'the foreign DELETE did nothing');
  const scopedList = (await call('GET', '/v1/keys', scoped.key!)).json().items as Json[];
  assert.deepEqual(
    scopedList.map((k) => k.id),
    [scopedChild.id],
  );
});

test('cursor pagination: one shape, newest first, no duplicates, bad cursor 400', async () => {
  const acct = await createTestKey(s, { account: 'paged' });
  const made: string[] = [];
  for (let i = 0; i < 7; i++) made.push((await createKey(acct, { name: `k${i}`, level: 'read' })).id);
  const seen: string[] = [];
  let cursor: string | null = null;
  for (let pages = 0; pages < 10; pages++) {
    const q: string = cursor ? `?limit=3&cursor=${cursor}` : '?limit=3';
    const res = await call('GET', `/v1/keys${q}`, acct);
    assert.equal(res.statusCode, 200);
    const body = res.json() as { items: Json[]; next_cursor: string | null };
    assert.deepEqual(Object.keys(body).sort(), ['items', 'next_cursor']);
    assert.ok(body.items.length <= 3);
    seen.push(...body.items.map((k) => k.id));
    cursor = body.next_cursor;
    if (!cursor) break;
  }
  assert.deepEqual(seen, [...made.reverse(), acct.id]);
  for (const q of ['?cursor=nope!', '?cursor=eyJ4IjoxfQ', '?limit=0', '?limit=101']) {
    assert.equal((await call('GET', `/v1/keys${q}`, acct)).statusCode, 400, q);
  }
});

test('Idempotency-Key: a replay returns the same key id and creates nothing; reuse for another body is 409', async () => {
  const acct = await createTestKey(s, { account: 'idem' });
  const post = (body: object, key = 'create-ci-key-1') =>
    s.app.inject({
      method: 'POST',
      url: '/v1/keys',
      headers: { ...acct.headers, 'idempotency-key': key },
      payload: body,
    });
  const first = await post({ name: 'ci', level: 'read' });
  const second = await post({ name: 'ci', level: 'read' });
  assert.equal(first.statusCode, 201);
  assert.equal(second.statusCode, 201);
  assert.equal(second.json().id, first.json().id);
  assert.equal(second.headers['idempotent-replayed'], 'true');
  assert.match(first.json().key, /^bwk_/);
  assert.equal(second.json().key, undefined, 'the secret is never stored for replays');
  const count = await s.db.pool.query("SELECT count(*)::int AS n FROM api_keys WHERE name = 'ci'");
  assert.equal(count.rows[0].n, 1);
  const stored = await s.db.pool.query('SELECT response_body::text AS b FROM idempotency_keys');
  assert.ok(!stored.rows.some((r) => r.b.includes(first.json().key)));
  const mismatch = await post({ name: 'ci', level: 'write' });
  assert.equal(mismatch.statusCode, 409);
  assert.equal(mismatch.json().error.code, 'conflict');
  assert.equal((await post({ name: 'ci', level: 'read' }, 'bad key with spaces')).statusCode, 400);
  // A failed request frees its key: a corrected retry succeeds.
  const failed = await post(
    { name: 'y', level: 'read', databases: ['x'], expires_at: '2000-01-01T00:00:00Z' },
    'k2',
  );
  assert.equal(failed.statusCode, 400);
  const retried = await post({ name: 'y', level: 'read', databases: ['x'] }, 'k2');
  assert.equal(retried.statusCode, 201);
  assert.equal(retried.headers['idempotent-replayed'], undefined);
});

test('idle-revoke policy revokes keys unused for N days', async () => {
  const acct = await createTestKey(s, { account: 'idle' });
  const stale = await createKey(acct, { name: 'stale', level: 'read' });
  await s.db.pool.query("UPDATE accounts SET key_idle_revoke_days = 30 WHERE name = 'idle'");
  await s.db.pool.query("UPDATE api_keys SET created_at = now() - interval '31 days' WHERE id = $1", [
    stale.id,
  ]);
  assert.equal(await s.keys.revokeIdleKeys(), 1);
  assert.equal((await call('GET', '/v1/whoami', stale.key!)).statusCode, 401);
  assert.equal((await call('GET', '/v1/whoami', acct)).statusCode, 200);
});
