import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { enrollFakeAgent } from './helpers/databases.ts';
import { createTestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

const CLI = path.resolve(import.meta.dirname, '../src/cli/index.ts');

let s: TestServer;
let tmp: string;
let dataDir: string;
let env: Record<string, string>;
before(async () => {
  s = await createTestServer();
  const url = (await s.app.listen({ host: '127.0.0.1', port: 0 })).replace('localhost', '127.0.0.1');
  await enrollFakeAgent(s, 'n1');
  const key = await createTestKey(s, { account: 'acme' });
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-cli-db-'));
  dataDir = path.join(tmp, 'data');
  await fs.mkdir(path.join(dataDir, 'secrets'), { recursive: true, mode: 0o700 });
  await fs.writeFile(path.join(dataDir, 'secrets', 'control-database-url'), `${s.db.url}\n`, { mode: 0o600 });
  env = { BULWARK_URL: url, BULWARK_KEY: key.key };
});
after(async () => {
  s.app.server.closeAllConnections();
  await s.stop();
  await fs.rm(tmp, { recursive: true, force: true });
});

type Run = { code: number; stdout: string; stderr: string };
function cli(args: string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      { env: { PATH: process.env.PATH ?? '', HOME: tmp, XDG_CONFIG_HOME: tmp, ...env }, timeout: 20_000 },
      (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
      },
    );
  });
}

test('bulwark db: create, list, show, allow/deny, reveal, delete; bad input exits 2 before any call', async () => {
  const [created, hostile, other] = await Promise.all([
    cli(['db', 'create', 'shop', '--json']),
    cli(['db', 'create', 'a;drop']),
    cli(['db', 'create', 'blog', '--node', 'n1']),
  ]);
  assert.equal(created.code, 0, created.stderr);
  assert.equal(JSON.parse(created.stdout).status, 'provisioning');
  assert.equal(hostile.code, 2);
  assert.equal(other.code, 0, other.stderr);
  assert.match(other.stdout, /database blog is provisioning on node n1/);

  const [list, show, allow, reveal, badConfirm] = await Promise.all([
    cli(['db', 'list', '--json']),
    cli(['db', 'show', 'shop']),
    cli(['db', 'allow', 'shop', '203.0.113.7', '--for', '2h', '--note', 'laptop', '--json']),
    cli(['db', 'reveal', 'shop']),
    cli(['db', 'delete', 'shop', '--confirm', 'shops']),
  ]);
  assert.deepEqual(
    JSON.parse(list.stdout)
      .items.map((d: { name: string }) => d.name)
      .sort(),
    ['blog', 'shop'],
  );
  assert.match(show.stdout, /postgresql:\/\/shop_owner@127\.0\.0\.1:6432\/shop/);
  const entries = JSON.parse(allow.stdout).entries as {
    cidr: string;
    expires_at: string | null;
    note: string;
  }[];
  const added = entries.find((e) => e.cidr === '203.0.113.7/32');
  assert.equal(added?.note, 'laptop');
  assert.ok(added?.expires_at && Date.parse(added.expires_at) > Date.now() + 3_500_000);
  assert.equal(reveal.code, 0, reveal.stderr);
  const api = await s.app.inject({
    method: 'POST',
    url: '/v1/databases/shop/credentials/reveal',
    headers: { authorization: `Bearer ${env.BULWARK_KEY}` },
  });
  assert.equal(reveal.stdout.trim(), api.json().password);
  assert.equal(badConfirm.code, 2);

  const deny = await cli(['db', 'deny', 'shop', '203.0.113.7/32']);
  assert.equal(deny.code, 0, deny.stderr);
  // Concurrent allows all survive (each is one atomic add on the server, not read-edit-write).
  const [net, both, ...more] = await Promise.all([
    cli(['db', 'allow', 'shop', '198.51.100.0/24', '--expires-in', '30m', '--json']),
    cli(['db', 'allow', 'shop', '198.51.100.9', '--for', '1h', '--expires-in', '1h']),
    cli(['db', 'allow', 'shop', '192.0.2.10']),
    cli(['db', 'allow', 'shop', '192.0.2.11']),
    cli(['db', 'allow', 'shop', '2001:DB8::7']),
  ]);
  for (const r of more) assert.equal(r.code, 0, r.stderr);
  assert.equal(net.code, 0, net.stderr);
  const netEntry = (JSON.parse(net.stdout).entries as { cidr: string; expires_at: string | null }[]).find(
    (e) => e.cidr === '198.51.100.0/24',
  );
  const left = Date.parse(netEntry?.expires_at ?? '') - Date.now();
  assert.ok(left > 25 * 60_000 && left <= 30 * 60_000, '--expires-in 30m');
  assert.ok(!JSON.parse(net.stdout).entries.some((e: { cidr: string }) => e.cidr === '203.0.113.7/32'));
  assert.equal(both.code, 2, 'not both --for and --expires-in');
  const shown = await cli(['db', 'show', 'shop', '--json']);
  const cidrs = (JSON.parse(shown.stdout).allowlist as { cidr: string }[]).map((e) => e.cidr);
  for (const c of ['198.51.100.0/24', '192.0.2.10/32', '192.0.2.11/32', '2001:db8::7/128'])
    assert.ok(cidrs.includes(c), c);
  const [denyAgain, denyV6, del, missing] = await Promise.all([
    cli(['db', 'deny', 'shop', '203.0.113.7']),
    cli(['db', 'deny', 'shop', '2001:db8::7', '--json']),
    cli(['db', 'delete', 'blog', '--confirm', 'blog']),
    cli(['db', 'show', 'nothere']),
  ]);
  assert.equal(denyAgain.code, 6);
  assert.match(denyAgain.stderr, /203\.0\.113\.7\/32 is not on the allowlist of shop/);
  assert.equal(denyV6.code, 0, denyV6.stderr);
  assert.ok(!JSON.parse(denyV6.stdout).entries.some((e: { cidr: string }) => e.cidr === '2001:db8::7/128'));
  assert.equal(del.code, 0, del.stderr);
  assert.match(del.stdout, /deleting/);
  assert.equal(missing.code, 6);
});

test('bulwark master-key rotate adds a key and re-seals every password; the server keeps revealing', async () => {
  const headers = { authorization: `Bearer ${env.BULWARK_KEY}` };
  await s.app.inject({ method: 'POST', url: '/v1/databases', headers, payload: { name: 'mk_cli' } });
  const before = await s.app.inject({
    method: 'POST',
    url: '/v1/databases/mk_cli/credentials/reveal',
    headers,
  });
  const r = await cli([
    'master-key',
    'rotate',
    '--data-dir',
    dataDir,
    '--key-file',
    s.config.masterKeyFile!,
    '--json',
  ]);
  assert.equal(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.equal(out.active_key, 'k2');
  assert.ok(out.resealed >= 1 && out.resealed === out.checked);
  const sealed = await s.db.pool.query(
    "SELECT count(*)::int AS n FROM databases WHERE password_sealed NOT LIKE 'v1.k2.%'",
  );
  assert.equal(sealed.rows[0].n, 0);
  const afterRotate = await s.app.inject({
    method: 'POST',
    url: '/v1/databases/mk_cli/credentials/reveal',
    headers,
  });
  assert.equal(afterRotate.json().password, before.json().password);
});
