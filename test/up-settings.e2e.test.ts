import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { accountApi, operatorKey, startUpStack, type UpStack } from './helpers/up-stack.ts';

const CLI = path.resolve(import.meta.dirname, '../src/cli/index.ts');
const stacks: UpStack[] = [];
const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-up-settings-'));

after(async () => {
  for (const s of stacks) await s.destroy();
  await fs.rm(tmp, { recursive: true, force: true });
});

test('bulwark up refuses an unknown BULWARK_* name with exit 2, before starting anything', async () => {
  const dataDir = path.join(tmp, 'unknown');
  const child = spawn(process.execPath, [CLI, 'up', '--data-dir', dataDir], {
    env: { ...process.env, BULWARK_UNSAFE_FAST: '1', BULWARK_FOO: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  assert.equal(code, 2, out);
  assert.match(out, /BULWARK_FOO: unknown setting/);
  assert.match(out, /known names: .*BULWARK_RATE_LIMIT_KEY_PER_MINUTE/);
  await assert.rejects(fs.stat(dataDir), 'nothing was created');
});

test('bulwark up hands the operator settings to its server and says where each came from, never a secret', async () => {
  const operatorToken = `op_${randomBytes(24).toString('hex')}`;
  const serverConfig = path.join(tmp, 'server.json');
  await fs.writeFile(serverConfig, JSON.stringify({ rateLimitIpPerMinute: 1000 }));
  const stack = await startUpStack({
    env: {
      BULWARK_RATE_LIMIT_KEY_PER_MINUTE: '5',
      BULWARK_OPERATOR_TOKEN: operatorToken,
      BULWARK_PORT: '1',
    },
    args: ['--server-config', serverConfig],
  });
  stacks.push(stack);
  const out = stack.output();
  assert.match(
    out,
    /setting \(server\): rateLimitKeyPerMinute from env BULWARK_RATE_LIMIT_KEY_PER_MINUTE = 5/,
  );
  assert.match(
    out,
    /setting \(server\): operatorToken from env BULWARK_OPERATOR_TOKEN \(secret, value not shown\)/,
  );
  assert.match(
    out,
    new RegExp(`setting \\(server\\): rateLimitIpPerMinute from file ${serverConfig} = 1000`),
  );
  assert.match(out, /setting: BULWARK_PORT from env is ignored: bulwark up sets it itself/);
  assert.match(out, /WARNING: BULWARK_UNSAFE_FAST=1 \(test-only\)/);
  assert.ok(!out.includes(operatorToken), 'the secret is never printed');

  // The per-key limit reached the embedded server: 5 a minute, the 6th in a window is 429.
  // Fixed one-minute windows: 11 quick requests put 6 or more into one window.
  const api = accountApi(stack, await operatorKey(stack, 'limited'));
  const statuses: number[] = [];
  for (let i = 0; i < 11; i++) statuses.push((await api('GET', '/v1/databases')).status);
  assert.deepEqual(statuses.slice(0, 5), [200, 200, 200, 200, 200], statuses.join(','));
  assert.ok(statuses.includes(429), statuses.join(','));
});
