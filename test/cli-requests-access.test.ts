// `bulwark request` for just-in-time credentials, as real processes: a real server, a real agent
// with its own PgBouncer, a database made through the API. The access request is pending (exit 2)
// until a second person approves; `execute` prints the login, password and connection string once
// (they work through PgBouncer), and `show` never prints them again.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import type { RunningAgent } from '../src/agent/main.ts';
import { startTestAgent } from './helpers/agent.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { type PrivatePooler, startPrivatePooler } from './pooler-harness.ts';
import { type Person, person } from './requests-helpers.ts';

const CLI = path.resolve(import.meta.dirname, '../src/cli/index.ts');

let pooler: PrivatePooler;
let s: TestServer;
let url: string;
let agent: RunningAgent;
let key: TestKey;
let requester: Person;
let approver: Person;
let tmp: string;

before(async () => {
  pooler = await startPrivatePooler();
  s = await createTestServer({ poolerPort: pooler.port, poolerSslmode: 'disable' });
  url = (await s.app.listen({ host: '127.0.0.1', port: 0 })).replace('localhost', '127.0.0.1');
  agent = await startTestAgent(s, url, { name: 'cli-jit-node', pooler });
  key = await createTestKey(s, { account: 'clijit' });
  requester = await person(s, key.accountId, 'member', 'cli-jit-req');
  approver = await person(s, key.accountId, 'member', 'cli-jit-appr');
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-cli-jit-'));
});
after(async () => {
  await agent?.stop();
  s?.app.server.closeAllConnections();
  await s?.stop();
  await pooler?.stop();
  if (tmp) await fs.rm(tmp, { recursive: true, force: true });
});

type Run = { code: number; stdout: string; stderr: string };
function cli(who: Person | TestKey, args: string[]): Promise<Run> {
  const bearer = 'key' in who ? who.key : who.headers.authorization!.slice('Bearer '.length);
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...args],
      {
        env: {
          PATH: process.env.PATH ?? '',
          HOME: tmp,
          XDG_CONFIG_HOME: tmp,
          BULWARK_URL: url,
          BULWARK_KEY: bearer,
        },
        timeout: 90_000,
      },
      (err, stdout, stderr) =>
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr }),
    );
  });
}

test('an access request: pending (2), approved, executed with the credentials printed once', async () => {
  const name = `cjit_${randomBytes(4).toString('hex')}`;
  const created = await cli(key, ['db', 'create', name, '--wait', '--timeout', '60', '--json']);
  assert.equal(created.code, 0, created.stderr);
  // Its name on the node is generated, never the label (ADR 0039): the login is named after it.
  const physical = (
    await s.app.inject({ method: 'GET', url: `/v1/databases/${name}/connection`, headers: key.headers })
  ).json().database as string;
  assert.match(physical, /^bulwark_db_/);

  const asked = await cli(requester, [
    'request',
    'create',
    name,
    '--reason',
    'look into an order',
    '--access',
    'reader',
    '--for',
    '30m',
    '--json',
  ]);
  assert.equal(asked.code, 2, asked.stderr);
  const r = JSON.parse(asked.stdout);
  assert.equal(r.kind, 'access');
  assert.deepEqual(r.access, { role: 'reader', duration_s: 1800 });
  const show = await cli(requester, ['request', 'show', name, r.id]);
  assert.equal(show.code, 2);
  assert.match(show.stdout, /what: {7}reader access for 30m/);

  assert.equal((await cli(approver, ['request', 'approve', name, r.id])).code, 0);
  const executed = await cli(requester, ['request', 'execute', name, r.id]);
  assert.equal(executed.code, 0, executed.stderr);
  assert.match(executed.stdout, /: EXECUTED/);
  assert.match(executed.stdout, /Credentials \(shown once/);
  const password = /password: {3}(\S+)/.exec(executed.stdout)?.[1];
  const connection = /connection: (\S+)/.exec(executed.stdout)?.[1];
  assert.ok(password && connection, executed.stdout);
  const u = new URL(connection);
  assert.match(decodeURIComponent(u.username), new RegExp(`^${physical}_jit_[0-9a-f]{8}$`));
  const c = new pg.Client({
    host: '127.0.0.1',
    port: Number(u.port),
    user: decodeURIComponent(u.username),
    password,
    database: physical,
    connectionTimeoutMillis: 5_000,
  });
  await c.connect();
  try {
    assert.equal((await c.query('SELECT current_user AS u')).rows[0].u, decodeURIComponent(u.username));
  } finally {
    await c.end();
  }

  const again = await cli(requester, ['request', 'show', name, r.id, '--json']);
  assert.equal(again.code, 0, again.stderr);
  assert.ok(!again.stdout.includes(password), 'the password is shown once');
  assert.equal('credentials' in JSON.parse(again.stdout), false);

  const tooLong = await cli(requester, ['request', 'create', name, '--reason', 'x', '--access', 'reader']);
  assert.equal(tooLong.code, 1, 'a usage error: --access without --for');
  assert.match(tooLong.stderr, /--access and --for go together/);
});
