// Two server replicas on one control DB (and one master keyring): a session revoked or a user
// suspended through one is refused by the other within the bound; with its listener down a
// replica reads the database on every request (fails closed).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createAccount } from './helpers/databases.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { createTestUser, signIn } from './helpers/session-users.ts';

let a: TestServer;
let b: TestServer;
let acmeId: string;
before(async () => {
  a = await createTestServer();
  b = await createTestServer({ masterKeyFile: a.config.masterKeyFile }, { db: a.db });
  assert.ok(await a.keyAuth.listenerReady());
  assert.ok(await b.keyAuth.listenerReady());
  acmeId = await createAccount(a, 'acme');
});
after(async () => {
  await b.stop();
  await a.stop();
});

/** Documented bound (docs/security.md): the median within 100 ms; no sample over 1 s. */
const BOUND_MS = 100;
const HARD_BOUND_MS = 1_000;

const me = (s: TestServer, token: string) =>
  s.app.inject({ url: '/v1/me', headers: { authorization: `Bearer ${token}` } });

/** Polls `s` until the token is refused; ms from now, or Infinity after 2 s. */
async function refusedWithin(s: TestServer, token: string): Promise<number> {
  const t0 = performance.now();
  while (performance.now() - t0 < 2_000) {
    if ((await me(s, token)).statusCode === 401) return performance.now() - t0;
    await new Promise((r) => setImmediate(r));
  }
  return Number.POSITIVE_INFINITY;
}

async function cachedOnB(token: string) {
  assert.equal((await me(b, token)).statusCode, 200);
  const hits = b.sessionAuth.stats.hits;
  assert.equal((await me(b, token)).statusCode, 200);
  assert.equal(b.sessionAuth.stats.hits, hits + 1, 'served from b’s cache');
}

function report(t: { diagnostic(m: string): void }, what: string, times: number[]) {
  times.sort((x, y) => x - y);
  const median = times[Math.floor(times.length / 2)]!;
  t.diagnostic(
    `${what} propagation ms: median ${median.toFixed(2)}, max ${times.at(-1)!.toFixed(2)} (all: ${times.map((x) => x.toFixed(1)).join(', ')})`,
  );
  assert.ok(median < BOUND_MS, `median ${median} ms`);
  assert.ok(times.at(-1)! < HARD_BOUND_MS, `max ${times.at(-1)} ms`);
}

test('a logout through one replica is refused by the other within the bound', async (t) => {
  const user = await createTestUser(a, {
    username: 'lou',
    memberships: [{ accountId: acmeId, role: 'member' }],
  });
  const times: number[] = [];
  for (let i = 0; i < 10; i++) {
    const s = await signIn(a, user);
    await cachedOnB(s.access_token);
    const out = await a.app.inject({ method: 'POST', url: '/v1/auth/logout', headers: s.headers });
    assert.equal(out.statusCode, 200);
    times.push(await refusedWithin(b, s.access_token));
  }
  report(t, 'logout', times);
});

test('a suspension through one replica is refused by the other within the bound', async (t) => {
  const admin = await createTestUser(a, { username: 'root', platformAdmin: true });
  const adm = await signIn(a, admin);
  const times: number[] = [];
  for (let i = 0; i < 10; i++) {
    const user = await createTestUser(a, { username: `sus${i}` });
    const s = await signIn(a, user);
    await cachedOnB(s.access_token);
    const r = await a.app.inject({
      method: 'POST',
      url: `/v1/users/${user.id}/suspend`,
      headers: adm.headers,
    });
    assert.equal(r.statusCode, 200, r.body);
    times.push(await refusedWithin(b, s.access_token));
  }
  report(t, 'suspension', times);
});

test('while its listener is down a replica checks every request against the database', async () => {
  const user = await createTestUser(a, { username: 'quiet' });
  const s = await signIn(a, user);
  await cachedOnB(s.access_token);
  // Cut every LISTEN connection of this control DB (both replicas'), then wait until b noticed.
  const killed = await a.db.pool.query(
    `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
      WHERE datname = current_database() AND application_name = 'bulwark-server-listen'`,
  );
  assert.ok(killed.rowCount! >= 1);
  const lost = Date.now() + 2_000;
  while (Date.now() < lost && b.keyAuth.listenerConnected()) await new Promise((r) => setTimeout(r, 1));
  assert.equal(b.keyAuth.listenerConnected(), false, 'b noticed its listener was cut');
  // Revoked behind everyone's back (no NOTIFY): b refuses on the very next request.
  await a.db.pool.query(
    "UPDATE sessions SET revoked_at = now(), revoked_reason = 'revoked' WHERE user_id = $1",
    [user.id],
  );
  // (Whether or not it has reconnected meanwhile: a reconnect clears the cache, nothing stale is trusted.)
  assert.equal((await me(b, s.access_token)).statusCode, 401);
  assert.ok(await waitConnected(b));
  assert.equal((await me(b, s.access_token)).statusCode, 401);
});

async function waitConnected(s: TestServer): Promise<boolean> {
  const until = Date.now() + 10_000;
  while (Date.now() < until) {
    if (s.keyAuth.listenerConnected()) return true;
    await new Promise((r) => setTimeout(r, 10));
  }
  return false;
}
