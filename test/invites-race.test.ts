import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createTestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

// 50 concurrent redemptions of one code over real HTTP (a listening server, a real control
// database): the code is taken by deleting its row, so exactly one of them creates a user.

let s: TestServer;
let base: string;
before(async () => {
  s = await createTestServer();
  base = (await s.app.listen({ host: '127.0.0.1', port: 0 })).replace('localhost', '127.0.0.1');
});
after(() => s.stop());

test('50 concurrent redemptions of one code: exactly one 201, one user, the code gone', async (t) => {
  const admin = await createTestKey(s, { account: 'race' });
  const made = await s.app.inject({
    method: 'POST',
    url: '/v1/invites',
    headers: admin.headers,
    payload: { count: 1, role: 'member' },
  });
  assert.equal(made.statusCode, 201, made.body);
  const [invite] = made.json().invites as { id: string; code: string }[];
  const N = 50;
  const started = Date.now();
  // Different usernames: only the code can stop the other 49 (a shared username would too).
  const answers = await Promise.all(
    Array.from({ length: N }, async (_, i) => {
      const res = await fetch(`${base}/v1/auth/invites/redeem`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          code: invite!.code,
          username: `racer${i}`,
          password: 'a long enough passphrase',
        }),
        signal: AbortSignal.timeout(30_000),
      });
      return {
        status: res.status,
        body: (await res.json()) as { error?: { code: string; message: string } },
      };
    }),
  );
  t.diagnostic(`${N} redemptions in ${Date.now() - started} ms`);
  const created = answers.filter((a) => a.status === 201);
  const refused = answers.filter((a) => a.status === 400 && a.body.error?.code === 'invalid_invite');
  assert.equal(created.length, 1, JSON.stringify(answers.map((a) => a.status)));
  assert.equal(refused.length, N - 1, 'every other one is the invalid-invite answer');
  assert.equal(new Set(refused.map((a) => a.body.error?.message)).size, 1);
  const users = await s.db.pool.query("SELECT count(*)::int AS n FROM users WHERE username LIKE 'racer%'");
  assert.equal(users.rows[0].n, 1, 'one user');
  const members = await s.db.pool.query('SELECT count(*)::int AS n FROM memberships WHERE account_id = $1', [
    admin.accountId,
  ]);
  assert.equal(members.rows[0].n, 1, 'one membership');
  const row = await s.db.pool.query('SELECT count(*)::int AS n FROM invites WHERE id = $1', [invite!.id]);
  assert.equal(row.rows[0].n, 0, 'the code is gone');
  const failed = await s.db.pool.query(
    "SELECT count(*)::int AS n FROM audit_events WHERE action = 'invite.redeem_failed' AND details->>'username' LIKE 'racer%'",
  );
  assert.equal(failed.rows[0].n, N - 1, 'each refusal audited');
});
