// `bulwark policy` as a real process against a real server: a bad file prints each error's
// file:line:column and field and exits 1 before anything is sent; a good one is applied as the
// next version and read back by show and versions; who may not apply gets exit 5.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { activePolicy } from '../src/server/modules/policies/policies.repo.ts';
import { createAccount } from './helpers/databases.ts';
import { createTestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

const CLI = path.resolve(import.meta.dirname, '../src/cli/index.ts');
const EXAMPLE = path.resolve(import.meta.dirname, '../docs/examples/policy.yaml');

let s: TestServer;
let tmp: string;
let acme: string;
let env: Record<string, string>;
before(async () => {
  s = await createTestServer();
  const url = (await s.app.listen({ host: '127.0.0.1', port: 0 })).replace('localhost', '127.0.0.1');
  acme = await createAccount(s, 'acme');
  const key = await createTestKey(s, { account: 'acme' });
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-cli-policy-'));
  env = { BULWARK_URL: url, BULWARK_KEY: key.key };
});
after(async () => {
  s.app.server.closeAllConnections();
  await s.stop();
  await fs.rm(tmp, { recursive: true, force: true });
});

type Run = { code: number; stdout: string; stderr: string };
function cli(args: string[], over: Record<string, string> = {}, input?: string): Promise<Run> {
  return new Promise((resolve) => {
    const child = execFile(
      process.execPath,
      [CLI, ...args],
      {
        env: { PATH: process.env.PATH ?? '', HOME: tmp, XDG_CONFIG_HOME: tmp, ...env, ...over },
        timeout: 60_000,
      },
      (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : 1) : 0, stdout, stderr });
      },
    );
    child.stdin?.end(input ?? '');
  });
}

test('a bad file: every error as file:line:column field, exit 1, nothing applied', async () => {
  const file = path.join(tmp, 'bad.yaml');
  await fs.writeFile(
    file,
    [
      'version: 1',
      'defaults:',
      '  classes:',
      '    write: { approvals: 11 }',
      'databases:',
      '  shop:',
      '    environment: production',
      '    max_access: 2w',
      '',
    ].join('\n'),
  );
  const r = await cli(['policy', 'apply', file]);
  assert.equal(r.code, 1, r.stderr);
  assert.equal(r.stdout, '');
  const lines = r.stderr.trim().split('\n');
  assert.match(lines[0] ?? '', /is not a valid policy \(3 errors\)/);
  assert.deepEqual(lines.slice(1), [
    `${file}:4:25 defaults.classes.write.approvals: must be a whole number from 0 to 10`,
    `${file}:7:18 databases.shop.environment: environment "production" is not declared under environments (declare it, even empty: \`production: {}\`)`,
    `${file}:8:17 databases.shop.max_access: must be a duration: a whole number and one unit (s, m, h, d), e.g. 30m, 24h, 7d`,
  ]);
  assert.equal((await activePolicy(s.db.pool, acme)).version, 0);

  // check: the same verdict without a server; --json on stderr for scripts.
  const checked = await cli(['policy', 'check', file, '--json'], { BULWARK_URL: 'http://127.0.0.1:1' });
  assert.equal(checked.code, 1);
  assert.match(JSON.parse(checked.stderr).error.message, /3 errors/);
  assert.deepEqual(
    JSON.parse(checked.stderr).error.details.errors.map((e: { line: number; field: string }) => [
      e.line,
      e.field,
    ]),
    [
      [4, 'defaults.classes.write.approvals'],
      [7, 'databases.shop.environment'],
      [8, 'databases.shop.max_access'],
    ],
  );
  const missing = await cli(['policy', 'apply', path.join(tmp, 'nope.yaml')]);
  assert.equal(missing.code, 1);
  assert.match(missing.stderr, /cannot read .*nope\.yaml: ENOENT/);
});

test('apply, show, versions: the example is version 1, then stdin version 2', async () => {
  const applied = await cli(['policy', 'apply', EXAMPLE]);
  assert.equal(applied.code, 0, applied.stderr);
  assert.match(applied.stdout, /as policy version 1 \(sha256 [0-9a-f]{64}\)/);

  const show = await cli(['policy', 'show']);
  assert.equal(show.code, 0, show.stderr);
  assert.match(show.stdout, /^policy version 1, applied .* by .* \(key\)/);
  assert.ok(show.stdout.includes('shop_preview:\n    environment: staging'), show.stdout);

  const second = await cli(
    ['policy', 'apply', '-', '--json'],
    {},
    'version: 1\ndefaults:\n  max_executions: 2\n',
  );
  assert.equal(second.code, 0, second.stderr);
  assert.equal(JSON.parse(second.stdout).version, 2);
  assert.equal(JSON.parse(second.stdout).policy.defaults.max_executions, 2);

  const versions = await cli(['policy', 'versions']);
  assert.equal(versions.code, 0, versions.stderr);
  assert.match(versions.stdout, /^VERSION\s+APPLIED\s+BY\s+SHA256\n2\s.*\n1\s/);
  const json = JSON.parse((await cli(['policy', 'show', '--json'])).stdout);
  assert.equal(json.version, 2);
});

test('a key that may not apply exits 5, and the policy is unchanged', async () => {
  const write = await createTestKey(s, { account: 'acme', level: 'write' });
  const r = await cli(['policy', 'apply', EXAMPLE], { BULWARK_KEY: write.key });
  assert.equal(r.code, 5, r.stderr);
  assert.match(r.stderr, /forbidden/);
  const before = (await activePolicy(s.db.pool, acme)).version;
  const scoped = await createTestKey(s, { account: 'acme', databases: ['shop'] });
  assert.equal((await cli(['policy', 'apply', EXAMPLE], { BULWARK_KEY: scoped.key })).code, 5);
  assert.equal((await activePolicy(s.db.pool, acme)).version, before);
  const view = await cli(['policy', 'show'], { BULWARK_KEY: scoped.key });
  assert.equal(view.code, 0, view.stderr);
  assert.match(view.stdout, /not shown to a database-scoped caller/);
});
