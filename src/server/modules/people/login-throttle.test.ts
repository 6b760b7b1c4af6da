import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { createTestDb } from '../../../../test/helpers/db.ts';
import { createSecretBox } from '../../crypto/secret-box.ts';
import { createLoginThrottle, THROTTLE_POLICY, usernameKeyFrom } from './login-throttle.ts';

test('per username: 5 failures free, then 1 s doubling to 15 min; a success clears it', async () => {
  const db = await createTestDb();
  try {
    const throttle = createLoginThrottle({ usernameKey: randomBytes(32) });
    const keys = throttle.keysFor('alice', '127.0.0.1');
    let t = Date.parse('2026-01-01T00:00:00Z');
    const at = () => new Date(t);
    const delays: number[] = [];
    for (let i = 1; i <= 20; i++) {
      assert.equal(await throttle.waitMs(db.pool, [keys.user], at()), 0, `attempt ${i} allowed`);
      await throttle.fail(db.pool, [keys.user], at());
      const wait = await throttle.waitMs(db.pool, [keys.user], at());
      delays.push(wait);
      t += wait; // the client waits exactly as long as it was told
    }
    assert.deepEqual(delays.slice(0, 4), [0, 0, 0, 0]);
    assert.deepEqual(delays.slice(4, 10), [1_000, 2_000, 4_000, 8_000, 16_000, 32_000]);
    assert.equal(delays[19], THROTTLE_POLICY.user.maxMs, 'capped at 15 minutes');
    // One millisecond early is still refused; on time is allowed.
    await throttle.fail(db.pool, [keys.user], at());
    assert.ok((await throttle.waitMs(db.pool, [keys.user], new Date(t + 1))) > 0);
    await throttle.succeed(db.pool, keys.user);
    assert.equal(await throttle.waitMs(db.pool, [keys.user], at()), 0);
  } finally {
    await db.drop();
  }
});

test('per address: 20 failures free (the 21st attempt in a row waits); counts survive concurrency', async () => {
  const db = await createTestDb();
  try {
    const throttle = createLoginThrottle({ usernameKey: randomBytes(32) });
    const now = new Date('2026-01-01T00:00:00Z');
    const ip = throttle.keysFor('x', '192.0.2.7').ip;
    // 20 failures at once (different usernames, one address): none lost to a race.
    await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        throttle.fail(db.pool, [throttle.keysFor(`u${i}`, '192.0.2.7').ip], now),
      ),
    );
    const row = await db.pool.query<{ failures: number }>(
      "SELECT failures FROM login_throttle WHERE scope = 'ip' AND key = $1",
      [ip.key],
    );
    assert.equal(row.rows[0]?.failures, 20);
    assert.equal(await throttle.waitMs(db.pool, [ip], now), 1_000, 'the 21st attempt waits 1 s');
    const other = throttle.keysFor('x', '192.0.2.8').ip;
    assert.equal(await throttle.waitMs(db.pool, [other], now), 0, 'another address is not slowed');
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
      await throttle.fail(db.pool, [throttle.keysFor(`u${i}`, '192.0.2.1').user], now);
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
