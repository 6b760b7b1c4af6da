import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { createTestServer, type TestServer } from './helpers/server.ts';

const CLI = path.resolve(import.meta.dirname, '../src/cli/index.ts');

let s: TestServer;
let url: string;
let tmp: string;
let dataDir: string;
let configHome: string;
before(async () => {
  s = await createTestServer();
  url = (await s.app.listen({ host: '127.0.0.1', port: 0 })).replace('localhost', '127.0.0.1');
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-cli-'));
  dataDir = path.join(tmp, 'data');
  configHome = path.join(tmp, 'config');
  await fs.mkdir(path.join(dataDir, 'secrets'), { recursive: true, mode: 0o700 });
  await fs.writeFile(path.join(dataDir, 'secrets', 'control-database-url'), `${s.db.url}\n`, { mode: 0o600 });
});
after(async () => {
  await s.stop();
  await fs.rm(tmp, { recursive: true, force: true });
});

type Run = { code: number; stdout: string; stderr: string };

function cli(args: string[], env: Record<string, string> = {}, input?: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [CLI, ...args],
      {
        env: { PATH: process.env.PATH ?? '', HOME: tmp, XDG_CONFIG_HOME: configHome, ...env },
        timeout: 90_000,
      },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
    if (input !== undefined) child.stdin?.end(input);
  });
}

let operatorKey: string;

test('admin create-key mints a working key straight through the control DB', async () => {
  // Independent runs in parallel: each CLI start costs about a second.
  const [r, human, badName] = await Promise.all([
    cli(['admin', 'create-key', '--account', 'acme', '--data-dir', dataDir, '--json']),
    cli(['admin', 'create-key', '--account', 'acme', '--level', 'read', '--data-dir', dataDir]),
    cli(['admin', 'create-key', '--account', 'Bad Name', '--data-dir', dataDir]),
  ]);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout) as { key: string; account: string; expires_at: string };
  assert.deepEqual(Object.keys(out).sort(), ['account', 'expires_at', 'key']);
  assert.equal(out.account, 'acme');
  operatorKey = out.key;
  const days = (Date.parse(out.expires_at) - Date.now()) / 86_400_000;
  assert.ok(days > 89.9 && days <= 90, `expires in ${days} days (account maximum)`);
  const who = await s.app.inject({ url: '/v1/whoami', headers: { authorization: `Bearer ${out.key}` } });
  assert.equal(who.statusCode, 200);
  assert.equal(who.json().key.level, 'admin');
  // Human output: the key alone on stdout, the explanation on stderr.
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /^bwk_[0-9A-Za-z]{49}\n$/);
  assert.match(human.stderr, /ccount "acme"; read key/);
  assert.equal(badName.code, 2);
  const accounts = await s.db.pool.query("SELECT count(*)::int AS n FROM accounts WHERE name = 'acme'");
  assert.equal(accounts.rows[0].n, 1, 'the account was created once');

  await fs.chmod(path.join(dataDir, 'secrets', 'control-database-url'), 0o644);
  const open = await cli(['admin', 'create-key', '--account', 'x', '--data-dir', dataDir]);
  await fs.chmod(path.join(dataDir, 'secrets', 'control-database-url'), 0o600);
  assert.equal(open.code, 2, 'a group-readable secret file is refused');
  assert.match(open.stderr, /chmod 600/);
});

test('login stores 0600 credentials; whoami and keys create|list|revoke use them; exit codes', async () => {
  const key = operatorKey;
  const [bad, login] = await Promise.all([
    cli(['login', '--url', url, '--key', `${key.slice(0, -1)}${key.endsWith('x') ? 'y' : 'x'}`]),
    cli(['login', '--url', url, '--key', '-'], {}, `${key}\n`),
  ]);
  assert.equal(bad.code, 2, 'bad checksum is a usage error, caught before any request');
  assert.equal(login.code, 0, login.stderr);
  const file = path.join(configHome, 'bulwark', 'credentials.json');
  assert.equal((await fs.stat(file)).mode & 0o777, 0o600);
  assert.equal((await fs.stat(path.dirname(file))).mode & 0o777, 0o700);
  assert.ok(!login.stdout.includes(key), 'the key is not echoed');

  const [who, created] = await Promise.all([
    cli(['whoami', '--json']),
    cli(['keys', 'create', '--name', 'ci', '--level', 'read', '--databases', 'shop,blog', '--json']),
  ]);
  assert.equal(who.code, 0, who.stderr);
  assert.equal(JSON.parse(who.stdout).account.name, 'acme');
  assert.equal(created.code, 0, created.stderr);
  const made = JSON.parse(created.stdout) as { id: string; key: string; databases: string[] };
  assert.deepEqual(made.databases, ['shop', 'blog']);

  const [list, revoke, missing] = await Promise.all([
    cli(['keys', 'list']),
    cli(['keys', 'revoke', made.id]),
    cli(['keys', 'revoke', randomUUID()]),
  ]);
  assert.equal(list.code, 0, list.stderr);
  assert.match(list.stdout, /^ID\s+PREFIX\s+NAME/);
  assert.equal(revoke.code, 0, revoke.stderr);
  assert.equal(missing.code, 6, 'not found');

  await fs.rm(file);
  const [revoked, notLoggedIn] = await Promise.all([
    cli(['whoami', '--json'], { BULWARK_KEY: made.key, BULWARK_URL: url }),
    cli(['whoami']),
  ]);
  assert.equal(revoked.code, 5, 'a revoked key (from BULWARK_KEY) is not authenticated');
  assert.equal(JSON.parse(revoked.stderr).error.code, 'unauthorized');
  assert.equal(notLoggedIn.code, 5, 'not logged in');
});
