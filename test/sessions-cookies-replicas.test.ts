// Two server replicas on one control DB: a dashboard session made on one works on the other (its
// CSRF token too: the install secret is shared), and its logout on one is refused by the other
// within the revocation bound.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { withTx } from '../src/server/db/pool.ts';
import { createLocalUser } from '../src/server/modules/people/users.service.ts';
import { apiCookie, pageWrite, sessionFrom } from './helpers/cookie-jar.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

let a: TestServer;
let b: TestServer;
const PASSWORD = 'correct horse battery';

before(async () => {
  a = await createTestServer();
  b = await createTestServer({ masterKeyFile: a.config.masterKeyFile }, { db: a.db });
  assert.ok(await a.keyAuth.listenerReady());
  assert.ok(await b.keyAuth.listenerReady());
  await withTx(a.db.pool, (tx) =>
    createLocalUser(tx, { username: 'yara', password: PASSWORD, platformAdmin: false }),
  );
});
after(async () => {
  await b?.stop();
  await a?.stop();
});

test('a cookie session from one replica works on the other, CSRF token included; its logout reaches the other within the bound', async () => {
  const times: number[] = [];
  for (let i = 0; i < 5; i++) {
    const login = await a.app.inject({
      method: 'POST',
      url: '/v1/auth/login',
      payload: { username: 'yara', password: PASSWORD, session: 'cookie' },
    });
    assert.equal(login.statusCode, 200, login.body);
    const session = sessionFrom(login);
    // b knows the session, and derives the same CSRF token (one install secret for every replica).
    const onB = await b.app.inject({ method: 'GET', url: '/v1/me', headers: apiCookie(session) });
    assert.equal(onB.statusCode, 200, onB.body);
    assert.equal(onB.json().csrf_token, session.csrf);
    // Re-authenticated on a, the session's step-up window holds on b too (it is on the session row).
    const reauth = await a.app.inject({
      method: 'POST',
      url: '/v1/auth/reauth',
      payload: { password: PASSWORD },
      headers: pageWrite(session),
    });
    assert.equal(reauth.statusCode, 200, reauth.body);
    const write = await b.app.inject({ method: 'POST', url: '/v1/me/totp', headers: pageWrite(session) });
    assert.equal(write.statusCode, 200, write.body);

    const out = await a.app.inject({ method: 'POST', url: '/v1/auth/logout', headers: pageWrite(session) });
    assert.equal(out.statusCode, 200, out.body);
    const t0 = performance.now();
    let refusedAfter = Number.POSITIVE_INFINITY;
    while (performance.now() - t0 < 2_000) {
      const res = await b.app.inject({ method: 'GET', url: '/v1/me', headers: apiCookie(session) });
      if (res.statusCode === 401) {
        refusedAfter = performance.now() - t0;
        break;
      }
      await new Promise((r) => setImmediate(r));
    }
    times.push(refusedAfter);
  }
  times.sort((x, y) => x - y);
  const median = times[Math.floor(times.length / 2)]!;
  assert.ok(median < 100, `median ${median} ms (all: ${times.join(', ')})`);
  assert.ok(times.at(-1)! < 1_000, `max ${times.at(-1)} ms`);
});
