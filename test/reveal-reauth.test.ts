// Revealing a database password as a signed-in user needs a fresh proof: a local user's password
// (or a TOTP code when enrolled), an OIDC user's recent sign-in. Wrong answers are audited and
// throttled with the sign-in's budget; API keys are unchanged; the CLI prompts for the password.
// A fully wired server on its own control DB, real sessions, the real CLI for the last test.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { createKeyringFileBox } from '../src/server/crypto/keyring-box.ts';
import { newTotpSecret, totpAt } from '../src/server/modules/people/totp.ts';
import { createLocalUser } from '../src/server/modules/people/users.service.ts';
import { createAccount, enrollFakeAgent } from './helpers/databases.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { createTestUser, signIn } from './helpers/session-users.ts';

const PASSWORD = 'correct horse battery staple 42';
const DB = 'secrets';
const CLI = path.resolve(import.meta.dirname, '../src/cli/index.ts');

let s: TestServer;
let key: TestKey;
let acme: string;
let truth: string;

before(async () => {
  s = await createTestServer();
  acme = await createAccount(s, 'acme');
  await createAccount(s, 'other');
  await enrollFakeAgent(s, 'n1');
  key = await createTestKey(s, { account: 'acme' });
  const r = await s.app.inject({
    method: 'POST',
    url: '/v1/databases',
    headers: key.headers,
    payload: { name: DB },
  });
  assert.equal(r.statusCode, 202, r.body);
  // API keys are unchanged: no body, the password.
  const revealed = await reveal(key.headers);
  assert.equal(revealed.statusCode, 200, revealed.body);
  truth = revealed.json().password;
});
after(() => s?.stop());

function reveal(headers: Record<string, string>, body?: object, name = DB) {
  return s.app.inject({
    method: 'POST',
    url: `/v1/databases/${name}/credentials/reveal`,
    headers,
    ...(body ? { payload: body } : {}),
  });
}

async function localUser(username: string, role: 'owner' | 'member' = 'member', account = acme) {
  const u = await createLocalUser(s.db.pool, { username, password: PASSWORD, platformAdmin: false });
  await s.db.pool.query('INSERT INTO memberships (account_id, user_id, role) VALUES ($1, $2, $3)', [
    account,
    u.id,
    role,
  ]);
  return { id: u.id, headers: (await signIn(s, u)).headers };
}

const failures = async (userId: string) =>
  (
    await s.db.pool.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM audit_events WHERE action = 'user.reauth_failed' AND actor_id = $1 AND outcome = 'failure'",
      [userId],
    )
  ).rows[0]!.n;

test('a local user must re-enter their password; a wrong one is refused and audited', async () => {
  const u = await localUser('alice');
  const none = await reveal(u.headers);
  assert.equal(none.statusCode, 403, none.body);
  assert.equal(none.json().error.code, 'reauth_required');
  assert.deepEqual(none.json().error.details.methods, ['password']);
  assert.equal((await reveal(u.headers, {})).json().error.code, 'reauth_required');
  // A TOTP code is no substitute for a user without TOTP.
  assert.equal((await reveal(u.headers, { totp_code: '123456' })).json().error.code, 'reauth_required');

  const wrong = await reveal(u.headers, { password: 'not the password at all' });
  assert.equal(wrong.statusCode, 403);
  assert.equal(wrong.json().error.code, 'reauth_failed');
  assert.doesNotMatch(wrong.body, /"password":/);
  assert.equal(await failures(u.id), 1);

  const ok = await reveal(u.headers, { password: PASSWORD });
  assert.equal(ok.statusCode, 200, ok.body);
  assert.equal(ok.json().password, truth);
  assert.equal(ok.headers['cache-control'], 'no-store');
  const audited = await s.db.pool.query(
    "SELECT 1 FROM audit_events WHERE action = 'database.credentials_revealed' AND actor_id = $1",
    [u.id],
  );
  assert.equal(audited.rowCount, 1);
  // Bounds: an over-long password or code, or an unknown field, is a 400 before any work.
  for (const body of [
    { password: 'x'.repeat(1025) },
    { totp_code: '1'.repeat(33) },
    { password: PASSWORD, x: 1 },
  ])
    assert.equal((await reveal(u.headers, body)).statusCode, 400);
});

test("another account's database is a 404 before anything is asked", async () => {
  const other = await localUser(
    'olga',
    'owner',
    (await s.db.pool.query("SELECT id FROM accounts WHERE name = 'other'")).rows[0].id,
  );
  const r = await reveal(other.headers, { password: PASSWORD });
  assert.equal(r.statusCode, 404, r.body);
  const none = await reveal(other.headers);
  assert.equal(none.statusCode, 404, none.body);
});

test('a user with TOTP may send a code instead; each code works once', async () => {
  const u = await localUser('tom');
  const secret = newTotpSecret();
  const box = createKeyringFileBox(s.config.masterKeyFile!);
  await s.db.pool.query(
    'INSERT INTO user_totp (user_id, secret_sealed, confirmed_at) VALUES ($1, $2, now())',
    [u.id, box.seal(secret.toString('base64'), `user-totp:${u.id}`)],
  );
  const none = await reveal(u.headers);
  assert.deepEqual(none.json().error.details.methods, ['password', 'totp']);
  const code = totpAt(secret, Date.now());
  const ok = await reveal(u.headers, { totp_code: code });
  assert.equal(ok.statusCode, 200, ok.body);
  assert.equal(ok.json().password, truth);
  const replay = await reveal(u.headers, { totp_code: code });
  assert.equal(replay.statusCode, 403);
  assert.equal(replay.json().error.code, 'reauth_failed');
  assert.equal((await reveal(u.headers, { password: PASSWORD })).statusCode, 200, 'the password works too');
});

test('an OIDC user (no local password): allowed within 10 minutes of signing in, then asked to sign in again', async () => {
  const u = await createTestUser(s, {
    username: 'oidc-user',
    memberships: [{ accountId: acme, role: 'member' }],
  });
  const session = await signIn(s, u);
  const fresh = await reveal(session.headers);
  assert.equal(fresh.statusCode, 200, fresh.body);
  await s.db.pool.query("UPDATE sessions SET created_at = now() - interval '11 minutes' WHERE user_id = $1", [
    u.id,
  ]);
  const stale = await reveal(session.headers, { password: 'anything' });
  assert.equal(stale.statusCode, 403, stale.body);
  assert.equal(stale.json().error.code, 'reauth_required');
  assert.deepEqual(stale.json().error.details.methods, ['sign_in']);
  // A viewer is refused by the policy, whatever they send.
  const viewer = await createTestUser(s, {
    username: 'viewer-1',
    memberships: [{ accountId: acme, role: 'viewer' }],
  });
  const v = await reveal((await signIn(s, viewer)).headers, { password: PASSWORD });
  assert.equal(v.statusCode, 403);
  assert.equal(v.json().error.code, 'forbidden');
});

test('guessing the password is throttled like sign-in (Retry-After), even the right one then waits', async () => {
  const u = await localUser('mallory');
  const codes: number[] = [];
  let retryAfter: string | undefined;
  for (let i = 0; i < 8; i++) {
    const r = await reveal(u.headers, { password: `guess number ${i} is wrong` });
    codes.push(r.statusCode);
    if (r.statusCode === 429) {
      retryAfter = String(r.headers['retry-after']);
      assert.equal(r.json().error.code, 'rate_limited');
    }
  }
  assert.deepEqual(codes.slice(0, 5), [403, 403, 403, 403, 403], 'five free attempts');
  assert.ok(
    codes.slice(5).every((c) => c === 429),
    `then throttled: ${codes.join(',')}`,
  );
  assert.ok(Number(retryAfter) >= 1, `Retry-After ${retryAfter}`);
  const right = await reveal(u.headers, { password: PASSWORD });
  assert.equal(right.statusCode, 429, 'no answer is checked while throttled');
  assert.equal(await failures(u.id), 5, 'each checked wrong answer audited once');
  // The same budget as the sign-in: the username is throttled there too.
  const login = await s.app.inject({
    method: 'POST',
    url: '/v1/auth/login',
    payload: { username: 'mallory', password: PASSWORD },
  });
  assert.equal(login.statusCode, 429, login.body);
});

test('the CLI, signed in as a user, prompts for the password when the server asks (once per window)', async () => {
  const carol = await localUser('carol', 'owner');
  const url = (await s.app.listen({ host: '127.0.0.1', port: 0 })).replace('localhost', '127.0.0.1');
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-reveal-'));
  const env = { PATH: process.env.PATH ?? '', HOME: tmp, XDG_CONFIG_HOME: path.join(tmp, 'config') };
  const cli = (args: string[], input: string) =>
    new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
      const child = execFile(
        process.execPath,
        [CLI, ...args],
        { env, timeout: 90_000 },
        (err, stdout, stderr) =>
          resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
      );
      child.stdin?.end(input);
    });
  try {
    const login = await cli(['login', '--url', url, '--username', 'carol'], `${PASSWORD}\n`);
    assert.equal(login.code, 0, login.stderr);
    const r = await cli(['db', 'reveal', DB, '--json'], `${PASSWORD}\n`);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(JSON.parse(r.stdout).password, truth);
    // The prompt opened the session's window: within it, a key is minted without asking again.
    const k = await cli(['keys', 'create', '--name', 'from-cli', '--level', 'read', '--json'], '');
    assert.equal(k.code, 0, k.stderr);
    assert.match(JSON.parse(k.stdout).key, /^bwk_/);
    // The window closed (5 minutes later): asked again; a wrong answer is refused.
    await s.db.pool.query(
      "UPDATE sessions SET reauthenticated_at = now() - interval '6 minutes' WHERE user_id = $1",
      [carol.id],
    );
    const wrong = await cli(['db', 'reveal', DB], 'not the password at all\n');
    assert.equal(wrong.code, 5, wrong.stderr);
    assert.match(wrong.stderr, /reauth_failed/);
    assert.doesNotMatch(wrong.stdout, new RegExp(truth));
    // Creating a key outside the window: the same prompt, once, then the key.
    const asked = await cli(['keys', 'create', '--name', 'after-prompt', '--json'], `${PASSWORD}\n`);
    assert.equal(asked.code, 0, asked.stderr);
    assert.match(JSON.parse(asked.stdout).key, /^bwk_/);
    // No answer on stdin: a usage error, no key.
    await s.db.pool.query('UPDATE sessions SET reauthenticated_at = NULL WHERE user_id = $1', [carol.id]);
    const silent = await cli(['keys', 'create', '--name', 'no-answer', '--json'], '');
    assert.equal(silent.code, 2, silent.stderr);
  } finally {
    await fs.rm(tmp, { recursive: true, force: true });
  }
});
