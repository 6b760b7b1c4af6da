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

/** Runs `bulwark up` expected to refuse at once (bounded); its exit code and all it printed. */
async function refusedUp(
  dataDir: string,
  env: NodeJS.ProcessEnv,
  args: string[] = [],
): Promise<{ code: number | null; out: string }> {
  const child = spawn(process.execPath, [CLI, 'up', '--data-dir', dataDir, ...args], {
    env: { ...process.env, BULWARK_UNSAFE_FAST: '1', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const timer = setTimeout(() => child.kill('SIGINT'), 20_000);
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  clearTimeout(timer);
  return { code, out };
}

test('bulwark up refuses an unknown BULWARK_* name with exit 2, before starting anything', async () => {
  const dataDir = path.join(tmp, 'unknown');
  const { code, out } = await refusedUp(dataDir, { BULWARK_FOO: '1' });
  assert.equal(code, 2, out);
  assert.match(out, /BULWARK_FOO: unknown setting/);
  assert.match(out, /known names: .*BULWARK_RATE_LIMIT_KEY_PER_MINUTE/);
  await assert.rejects(fs.stat(dataDir), 'nothing was created');
});

test("bulwark up checks the server's and the agent's settings before starting anything: exit 2, each named with its source, no secret shown", async () => {
  const dataDir = path.join(tmp, 'invalid');
  const redisSecret = `s3cret${randomBytes(12).toString('hex')}`;
  const serverConfig = path.join(tmp, 'bad-server.json');
  await fs.writeFile(serverConfig, JSON.stringify({ bodyLimitBytes: 5 }));
  const { code, out } = await refusedUp(
    dataDir,
    {
      BULWARK_RATE_LIMIT_KEY_PER_MINUTE: 'abc',
      // A secret with a bad value: named, its value never printed.
      BULWARK_REDIS_URL: `http://user:${redisSecret}@127.0.0.1:1`,
      BULWARK_AGENT_POLL_WAIT_MS: '5',
    },
    ['--server-config', serverConfig],
  );
  assert.equal(code, 2, out);
  assert.match(out, /nothing was started/);
  assert.match(
    out,
    /server: rateLimitKeyPerMinute \(BULWARK_RATE_LIMIT_KEY_PER_MINUTE\): .*\[from env BULWARK_RATE_LIMIT_KEY_PER_MINUTE\]/,
  );
  assert.match(out, /server: redisUrl \(BULWARK_REDIS_URL\): .*\[from env BULWARK_REDIS_URL\]/);
  assert.match(
    out,
    /agent: pollWaitMs \(BULWARK_AGENT_POLL_WAIT_MS\): .*\[from env BULWARK_AGENT_POLL_WAIT_MS\]/,
  );
  assert.match(
    out,
    new RegExp(
      `server: bodyLimitBytes \\(BULWARK_BODY_LIMIT_BYTES\\): .*from the config file ${serverConfig}`,
    ),
  );
  assert.ok(!out.includes(redisSecret), 'the secret is never printed');
  assert.doesNotMatch(out, /initialising the PostgreSQL cluster|Bulwark is ready/);
  await assert.rejects(fs.stat(dataDir), 'no data dir was created');
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
