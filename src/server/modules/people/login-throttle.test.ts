import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { createTestDb, type TestDb } from '../../../../test/helpers/db.ts';
import { createSecretBox } from '../../crypto/secret-box.ts';
import { createLoginThrottle, THROTTLE_POLICY, usernameKeyFrom } from './login-throttle.ts';

const nextAllowed = async (db: TestDb, k: { scope: string; key: string }) => {
  const r = await db.pool.query<{ next_allowed_at: Date }>(
    'SELECT next_allowed_at FROM login_throttle WHERE scope = $1 AND key = $2',
    [k.scope, k.key],
  );
  return r.rows[0]?.next_allowed_at.getTime() ?? 0;
};

test('per username: 5 attempts free, then 1 s doubling to 15 min; a sign-in clears it', async () => {
  const db = await createTestDb();
  try {
    const throttle = createLoginThrottle({ usernameKey: randomBytes(32) });
    const keys = throttle.keysFor('alice', '127.0.0.1');
    let t = Date.parse('2026-01-01T00:00:00Z');
    const delays: number[] = [];
    for (let i = 1; i <= 20; i++) {
      assert.equal(await throttle.take(db.pool, [keys.user], new Date(t)), 0, `attempt ${i} allowed`);
      const wait = Math.max(0, (await nextAllowed(db, keys.user)) - t);
      delays.push(wait);
      if (wait > 0) {
        // One millisecond early is refused, and not counted; on time is allowed.
        assert.equal(await throttle.take(db.pool, [keys.user], new Date(t + wait - 1)), 1);
      }
      t += wait;
    }
    assert.deepEqual(delays.slice(0, 4), [0, 0, 0, 0]);
    assert.deepEqual(delays.slice(4, 10), [1_000, 2_000, 4_000, 8_000, 16_000, 32_000]);
    assert.equal(delays[19], THROTTLE_POLICY.user.maxMs, 'capped at 15 minutes');
    await throttle.succeed(db.pool, keys);
    assert.equal(await throttle.take(db.pool, [keys.user], new Date(t)), 0);
  } finally {
    await db.drop();
  }
});

test('a burst of parallel attempts gets no more than sequential ones: 5 per username, 20 per address', async () => {
  const db = await createTestDb();
  try {
    const throttle = createLoginThrottle({ usernameKey: randomBytes(32) });
    const now = new Date('2026-01-01T00:00:00Z');
    const user = throttle.keysFor('bob', '192.0.2.9').user;
    const burst = await Promise.all(Array.from({ length: 30 }, () => throttle.take(db.pool, [user], now)));
    assert.equal(burst.filter((w) => w === 0).length, 5);
    assert.ok(burst.filter((w) => w > 0).every((w) => w === 1_000));
    // One address, 30 different usernames at once: 20 taken; the usernames refused are given back.
    const ip = '192.0.2.7';
    const many = await Promise.all(
      Array.from({ length: 30 }, (_, i) => {
        const k = throttle.keysFor(`u${i}`, ip);
        return throttle.take(db.pool, [k.user, k.ip], now);
      }),
    );
    assert.equal(many.filter((w) => w === 0).length, 20);
    const counted = await db.pool.query<{ n: number }>(
      "SELECT coalesce(sum(failures), 0)::int AS n FROM login_throttle WHERE scope = 'user' AND key <> $1",
      [user.key],
    );
    assert.equal(counted.rows[0]!.n, 20, 'refused attempts leave no count on their usernames');
    const other = throttle.keysFor('x', '192.0.2.8');
    assert.equal(
      await throttle.take(db.pool, [other.user, other.ip], now),
      0,
      'another address is not slowed',
    );
    // A refund gives an attempt back (a request that never reached the password check).
    const carol = throttle.keysFor('carol', '192.0.2.10');
    for (let i = 0; i < 5; i++) await throttle.take(db.pool, [carol.user], now);
    await throttle.refund(db.pool, [carol.user]);
    const row = await db.pool.query<{ failures: number }>(
      "SELECT failures FROM login_throttle WHERE scope = 'user' AND key = $1",
      [carol.user.key],
    );
    assert.equal(row.rows[0]!.failures, 4);
  } finally {
    await db.drop();
  }
});

test('the username is stored and logged only as a keyed hash, the same on every replica of an install', async () => {
  const keyring = { activeKeyId: 'k1', keys: new Map([['k1', randomBytes(32)]]) };
  createSecretBox(keyring); // a valid keyring
  const a = createLoginThrottle({ usernameKey: usernameKeyFrom(keyring) });
  const b = createLoginThrottle({
    usernameKey: usernameKeyFrom({
      activeKeyId: 'k2',
      keys: new Map([...keyring.keys, ['k2', randomBytes(32)]]),
    }),
  });
  assert.equal(
    a.keysFor('Secret-Typed-Here', '::1').user.key,
    b.keysFor('Secret-Typed-Here', '::1').user.key,
  );
  assert.doesNotMatch(a.keysFor('Secret-Typed-Here', '::1').user.key, /secret/i);
  assert.equal(a.usernameTag('alice').length, 12);
  const other = createLoginThrottle({ usernameKey: usernameKeyFrom(null) });
  assert.notEqual(other.usernameTag('alice'), a.usernameTag('alice'));
});

test('rows idle for a day are pruned as failures go on; recent ones stay', async () => {
  const db = await createTestDb();
  try {
    const throttle = createLoginThrottle({ usernameKey: randomBytes(32) });
    const now = new Date('2026-01-03T00:00:00Z');
    await db.pool.query(
      `INSERT INTO login_throttle (scope, key, failures, next_allowed_at, updated_at)
       SELECT 'user', 'old-' || i, 3, $1, $1 FROM generate_series(1, 150) AS i`,
      [new Date('2026-01-01T00:00:00Z')],
    );
    await db.pool.query(
      `INSERT INTO login_throttle (scope, key, failures, next_allowed_at, updated_at) VALUES ('user', 'recent', 3, $1, $1)`,
      [new Date('2026-01-02T12:00:00Z')],
    );
    for (let i = 0; i < 100; i++)
      await throttle.take(db.pool, [throttle.keysFor(`u${i}`, '192.0.2.1').user], now);
    const left = await db.pool.query<{ key: string }>(
      "SELECT key FROM login_throttle WHERE key LIKE 'old-%' OR key = 'recent'",
    );
    assert.deepEqual(
      left.rows.map((r) => r.key),
      ['recent'],
    );
    const fresh = await db.pool.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM login_throttle WHERE scope = 'user'",
    );
    assert.equal(fresh.rows[0]!.n, 101, 'the 100 new rows and the recent one');
  } finally {
    await db.drop();
  }
});
