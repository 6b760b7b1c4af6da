// `bulwark login --username` through the real CLI against a real server: the password (and a TOTP
// code) read from stdin, the session stored 0600, API commands refreshing the access token.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { createKeyringFileBox } from '../src/server/crypto/keyring-box.ts';
import { newTotpSecret, totpAt } from '../src/server/modules/people/totp.ts';
import { createLocalUser } from '../src/server/modules/people/users.service.ts';
import { createAccount } from './helpers/databases.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

const CLI = path.resolve(import.meta.dirname, '../src/cli/index.ts');
const PASSWORD = 'correct horse battery staple 42';

let s: TestServer;
let url: string;
let tmp: string;
let configHome: string;
let credentials: string;
before(async () => {
  s = await createTestServer();
  url = (await s.app.listen({ host: '127.0.0.1', port: 0 })).replace('localhost', '127.0.0.1');
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-cli-login-'));
  configHome = path.join(tmp, 'config');
  credentials = path.join(configHome, 'bulwark', 'credentials.json');
  const acme = await createAccount(s, 'acme');
  for (const username of ['alice', 'tom']) {
    const u = await createLocalUser(s.db.pool, { username, password: PASSWORD, platformAdmin: false });
    await s.db.pool.query("INSERT INTO memberships (account_id, user_id, role) VALUES ($1, $2, 'owner')", [
      acme,
      u.id,
    ]);
  }
});
after(async () => {
  await s.stop();
  await fs.rm(tmp, { recursive: true, force: true });
});

type Run = { code: number; stdout: string; stderr: string };

function cli(args: string[], input?: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [CLI, ...args],
      { env: { PATH: process.env.PATH ?? '', HOME: tmp, XDG_CONFIG_HOME: configHome }, timeout: 90_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    child.stdin?.end(input ?? '');
  });
}

type Stored = {
  url: string;
  username: string;
  refresh_token: string;
  access_token: string;
  access_expires_at: number;
};
const stored = async () => JSON.parse(await fs.readFile(credentials, 'utf8')) as Stored;

test('login --username stores the session 0600; API commands use it and refresh it', async () => {
  const bad = await cli(['login', '--url', url, '--username', 'alice'], 'wrong password entirely\n');
  assert.equal(bad.code, 5, bad.stderr);
  assert.match(bad.stderr, /invalid_credentials/);

  const ok = await cli(['login', '--url', url, '--username', 'alice', '--json'], `${PASSWORD}\n`);
  assert.equal(ok.code, 0, ok.stderr);
  const out = JSON.parse(ok.stdout) as { user: { username: string }; memberships: { account: string }[] };
  assert.equal(out.user.username, 'alice');
  assert.deepEqual(
    out.memberships.map((m) => m.account),
    ['acme'],
  );
  assert.equal((await fs.stat(credentials)).mode & 0o777, 0o600);
  const first = await stored();
  assert.match(first.refresh_token, /^bwr_/);
  assert.ok(!JSON.stringify(first).includes(PASSWORD), 'the password is not stored');
  assert.ok(!ok.stdout.includes(first.refresh_token) && !ok.stderr.includes(PASSWORD), 'no secret printed');

  // An API command with a live access token: no refresh.
  const listed = await cli(['keys', 'list', '--json']);
  assert.equal(listed.code, 0, listed.stderr);
  assert.equal((await stored()).refresh_token, first.refresh_token);

  // The access token about to expire: the command refreshes it and stores the rotated refresh token.
  await fs.writeFile(credentials, JSON.stringify({ ...first, access_expires_at: Date.now() }), {
    mode: 0o600,
  });
  const again = await cli(['keys', 'list', '--json']);
  assert.equal(again.code, 0, again.stderr);
  const second = await stored();
  assert.notEqual(second.refresh_token, first.refresh_token);
  assert.notEqual(second.access_token, first.access_token);
  assert.ok(second.access_expires_at > Date.now() + 60_000);

  // A session that ended (logout elsewhere): the command says to sign in again, exit 5.
  const out2 = await s.app.inject({
    method: 'POST',
    url: '/v1/auth/logout',
    headers: { authorization: `Bearer ${second.access_token}` },
  });
  assert.equal(out2.statusCode, 200);
  const ended = await cli(['keys', 'list']);
  assert.equal(ended.code, 5, ended.stderr);
  assert.match(ended.stderr, /login again/);
});

test('login --username asks for a TOTP code when the server requires one', async () => {
  const user = (await s.db.pool.query("SELECT id FROM users WHERE username = 'tom'")).rows[0] as {
    id: string;
  };
  const secret = newTotpSecret();
  const box = createKeyringFileBox(s.config.masterKeyFile!);
  await s.db.pool.query(
    'INSERT INTO user_totp (user_id, secret_sealed, confirmed_at) VALUES ($1, $2, now())',
    [user.id, box.seal(secret.toString('base64'), `user-totp:${user.id}`)],
  );
  const missing = await cli(['login', '--url', url, '--username', 'tom'], `${PASSWORD}\n`);
  assert.equal(missing.code, 2, missing.stderr);
  assert.match(missing.stderr, /no TOTP code on stdin/);
  const ok = await cli(
    ['login', '--url', url, '--username', 'tom'],
    `${PASSWORD}\n${totpAt(secret, Date.now())}\n`,
  );
  assert.equal(ok.code, 0, ok.stderr);
  assert.match(ok.stdout, /Signed in/);
  assert.equal((await stored()).username, 'tom');
  // Both --key and --username: a usage error before any request.
  const both = await cli(['login', '--url', url, '--username', 'tom', '--key', 'bwk_x']);
  assert.equal(both.code, 2);
});
