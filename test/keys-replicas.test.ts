import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createTestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

/** Two server replicas on one control DB, each with its own key cache and LISTEN connection. */
let a: TestServer;
let b: TestServer;
before(async () => {
  a = await createTestServer({ rateLimitKeyPerMinute: 1_000_000 });
  b = await createTestServer({ rateLimitKeyPerMinute: 1_000_000 }, { db: a.db });
  assert.ok(await a.keyAuth.listenerReady());
  assert.ok(await b.keyAuth.listenerReady());
});
after(async () => {
  await b.stop();
  await a.stop();
});

const whoami = (s: TestServer, key: string) =>
  s.app.inject({ url: '/v1/whoami', headers: { authorization: `Bearer ${key}` } });

/**
 * Documented bound (docs/api.md): a revoked key is refused by every replica within 100 ms
 * (the median must meet it); no single sample may exceed 1 s even on a loaded CI machine.
 */
const BOUND_MS = 100;
const HARD_BOUND_MS = 1_000;

test('a key revoked through one replica is refused by the other within the bound', async (t) => {
  const admin = await createTestKey(a, { account: 'acme' });
  const times: number[] = [];
  for (let i = 0; i < 10; i++) {
    const made = await a.app.inject({
      method: 'POST',
      url: '/v1/keys',
      headers: admin.headers,
      payload: { name: `k${i}`, level: 'read' },
    });
    const { id, key } = made.json() as { id: string; key: string };
    // Replica b has the key in its cache (a hit from here on).
    assert.equal((await whoami(b, key)).statusCode, 200);
    const hits = b.keyAuth.cacheStats.hits;
    assert.equal((await whoami(b, key)).statusCode, 200);
    assert.equal(b.keyAuth.cacheStats.hits, hits + 1, 'served from the cache');

    const revoked = await a.app.inject({ method: 'DELETE', url: `/v1/keys/${id}`, headers: admin.headers });
    assert.equal(revoked.statusCode, 200);
    const t0 = performance.now();
    let refusedAfter = Number.POSITIVE_INFINITY;
    while (performance.now() - t0 < 2_000) {
      if ((await whoami(b, key)).statusCode === 401) {
        refusedAfter = performance.now() - t0;
        break;
      }
      await new Promise((r) => setImmediate(r));
    }
    times.push(refusedAfter);
  }
  times.sort((x, y) => x - y);
  t.diagnostic(
    `revocation propagation ms: median ${times[5]!.toFixed(2)}, max ${times.at(-1)!.toFixed(2)} (all: ${times.map((x) => x.toFixed(1)).join(', ')})`,
  );
  assert.ok(times[5]! < BOUND_MS, `median ${times[5]} ms`);
  assert.ok(times.at(-1)! < HARD_BOUND_MS, `max ${times.at(-1)} ms`);
});

test('while its listener is down a replica does not trust its cache; on reconnect it clears it', async () => {
  const k = await createTestKey(a, { account: 'initech' });
  assert.equal((await whoami(b, k.key)).statusCode, 200);
  // Kill b's LISTEN connection (only ours: filter by this test's database and b's pid set).
  const killed = await a.db.pool.query(
    `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
      WHERE datname = current_database() AND application_name IN ('bulwark-server-listen', 'bulwark-keys')`,
  );
  assert.ok(killed.rowCount! >= 1);
  const lost = Date.now() + 2_000;
  while (Date.now() < lost && b.keyAuth.listenerConnected()) await new Promise((r) => setTimeout(r, 1));
  assert.equal(b.keyAuth.listenerConnected(), false, 'the listener noticed its connection was cut');
  // Revoke behind everyone's back: no NOTIFY at all.
  await a.db.pool.query('UPDATE api_keys SET revoked_at = now() WHERE id = $1', [k.id]);
  assert.equal((await whoami(b, k.key)).statusCode, 401, 'no stale cache hit while disconnected');
  // Both replicas reconnect (backoff starts at 100 ms) and keep working.
  const deadline = Date.now() + 5_000;
  while (Date.now() < deadline && !(b.keyAuth.listenerConnected() && a.keyAuth.listenerConnected())) {
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.ok(b.keyAuth.listenerConnected(), 'listener reconnected');
  const fresh = await createTestKey(a, { account: 'initech' });
  assert.equal((await whoami(b, fresh.key)).statusCode, 200);
  assert.equal((await whoami(b, k.key)).statusCode, 401);
});
