import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { createTestServer, type TestServer } from './helpers/server.ts';

// `bulwark admin invite` on the host: straight through the control database of a real server
// (the data dir's secret file names it), its invites redeemed over the server's API.

const CLI = path.resolve(import.meta.dirname, '../src/cli/index.ts');

let s: TestServer;
let tmp: string;
let dataDir: string;
before(async () => {
  s = await createTestServer();
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-invite-cli-'));
  dataDir = path.join(tmp, 'data');
  await fs.mkdir(path.join(dataDir, 'secrets'), { recursive: true, mode: 0o700 });
  await fs.writeFile(path.join(dataDir, 'secrets', 'control-database-url'), `${s.db.url}\n`, { mode: 0o600 });
});
after(async () => {
  await s.stop();
  await fs.rm(tmp, { recursive: true, force: true });
});

type Run = { code: number; stdout: string; stderr: string };

function cli(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, 'admin', 'invite', '--data-dir', dataDir, ...args],
      { env: { PATH: process.env.PATH ?? '', HOME: tmp }, timeout: 90_000 },
      (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

const redeem = (code: string, username: string) =>
  s.app.inject({
    method: 'POST',
    url: '/v1/auth/invites/redeem',
    payload: { code, username, password: 'a long enough passphrase' },
  });

test('admin invite --json: an owner of a new account and a platform admin, each redeemable once', async () => {
  // Independent runs in parallel: each CLI start costs about a second.
  const [owner, platform, both, noTarget, roleAlone, badRole, badHours, badUrl] = await Promise.all([
    cli(['--account', 'acme', '--json', '--url', 'https://bulwark.example.com/']),
    cli(['--platform-admin', '--json', '--expires-in-hours', '2']),
    cli(['--platform-admin', '--account', 'acme', '--role', 'viewer', '--json']),
    cli(['--json']),
    cli(['--role', 'admin']),
    cli(['--account', 'acme', '--role', 'root']),
    cli(['--account', 'acme', '--expires-in-hours', '721']),
    cli(['--account', 'acme', '--url', 'https://user:secret@example.com']),
  ]);
  assert.equal(owner.code, 0, owner.stderr);
  const o = JSON.parse(owner.stdout) as { code: string; url: string | null; expires_at: string };
  assert.deepEqual(Object.keys(o).sort(), ['code', 'expires_at', 'url']);
  assert.match(o.code, /^bwi_[A-Za-z0-9_-]{43}$/);
  assert.equal(o.url, `https://bulwark.example.com/#invite=${o.code}`, 'the code in the fragment');
  const hours = (Date.parse(o.expires_at) - Date.now()) / 3_600_000;
  assert.ok(hours > 71.9 && hours <= 72, `default expiry ${hours} h`);

  assert.equal(platform.code, 0, platform.stderr);
  const p = JSON.parse(platform.stdout) as { code: string; url: string | null; expires_at: string };
  assert.equal(p.url, null, 'no server address known (no --url, no up.json)');
  assert.ok((Date.parse(p.expires_at) - Date.now()) / 3_600_000 <= 2);
  assert.equal(both.code, 0, both.stderr);
  const b = JSON.parse(both.stdout) as { code: string };

  for (const bad of [noTarget, roleAlone, badRole, badHours, badUrl]) assert.equal(bad.code, 2, bad.stderr);
  assert.match(noTarget.stderr, /--account NAME, --platform-admin, or both/);
  assert.match(badUrl.stderr, /without credentials/);

  const asOwner = await redeem(o.code, 'olivia');
  assert.equal(asOwner.statusCode, 201, asOwner.body);
  assert.equal(asOwner.json().role, 'owner');
  assert.equal(asOwner.json().account.name, 'acme');
  assert.equal((await redeem(o.code, 'olivia2')).statusCode, 400, 'single use');
  const asAdmin = await redeem(p.code, 'paul');
  assert.equal(asAdmin.statusCode, 201, asAdmin.body);
  assert.equal(asAdmin.json().user.platform_admin, true);
  assert.equal(asAdmin.json().account, null);
  const asBoth = await redeem(b.code, 'bea');
  assert.equal(asBoth.json().user.platform_admin, true);
  assert.equal(asBoth.json().role, 'viewer');

  const events = await s.db.pool.query(
    "SELECT actor_type, count(*)::int AS n FROM audit_events WHERE action = 'invite.created' GROUP BY actor_type",
  );
  assert.deepEqual(events.rows, [{ actor_type: 'operator', n: 3 }]);
  const stored = await s.db.pool.query(
    'SELECT count(*)::int AS n FROM audit_events WHERE details::text LIKE $1',
    [`%${o.code.slice(4)}%`],
  );
  assert.equal(stored.rows[0].n, 0, 'no code in any audit event');
});

test('admin invite (human output): the link alone on stdout, from the address `bulwark up` wrote', async () => {
  await fs.writeFile(
    path.join(dataDir, 'up.json'),
    JSON.stringify({ server_url: 'http://127.0.0.1:7777', pids: {} }),
    { mode: 0o600 },
  );
  const r = await cli(['--account', 'acme', '--role', 'member']);
  await fs.rm(path.join(dataDir, 'up.json'));
  assert.equal(r.code, 0, r.stderr);
  assert.match(r.stdout, /^http:\/\/127\.0\.0\.1:7777\/#invite=bwi_[A-Za-z0-9_-]{43}\n$/);
  assert.match(r.stderr, /member of account "acme"; single use, expires /);
  const code = r.stdout.trim().split('#invite=')[1]!;
  assert.equal((await redeem(code, 'mia')).json().role, 'member');
});
