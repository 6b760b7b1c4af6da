import assert from 'node:assert/strict';
import { test } from 'node:test';
import { serverEnv } from '../server/config.ts';
import { childEnvironment, describeSources, loadUpConfig, unknownEnvNames } from './up-config.ts';

test('up config: unknown BULWARK_* names are found; known ones, their _FILE forms and other variables pass', () => {
  const env = {
    BULWARK_FOO: '1',
    BULWARK_RATE_LIMIT_KEY_PER_MINUTE: '5',
    BULWARK_REDIS_URL_FILE: '/run/redis',
    BULWARK_UNSAFE_FAST: '1',
    BULWARK_DATA_DIR: '/d',
    BULWARK_TEST_ENV: '{}',
    PATH: '/bin',
  };
  assert.deepEqual(unknownEnvNames(env), ['BULWARK_FOO']);
});

test('up config: the fsync-off switch takes only 0 or 1 and is off by default', () => {
  const off = loadUpConfig({ env: {} });
  assert.ok(off.ok && off.config.unsafeFast === false && off.config.serviceUser === 'postgres');
  const on = loadUpConfig({ env: { BULWARK_UNSAFE_FAST: '1' } });
  assert.ok(on.ok && on.config.unsafeFast === true);
  const wrong = loadUpConfig({ env: { BULWARK_UNSAFE_FAST: 'yes' } });
  assert.ok(!wrong.ok);
  assert.match(wrong.errors.join('\n'), /BULWARK_UNSAFE_FAST.*test-only/);
});

test("up config: a child gets the operator's settings of its own bindings; up's own win", () => {
  const { env, overridden } = childEnvironment(
    {
      BULWARK_RATE_LIMIT_KEY_PER_MINUTE: '5',
      BULWARK_PORT: '1',
      BULWARK_DATABASE_URL: 'postgres://x',
      BULWARK_AGENT_STATE_DIR: '/a',
      HOME: '/root',
    },
    serverEnv,
    { BULWARK_PORT: '8080', BULWARK_DATABASE_URL_FILE: '/f' },
  );
  assert.deepEqual(env, {
    BULWARK_RATE_LIMIT_KEY_PER_MINUTE: '5',
    BULWARK_PORT: '8080',
    BULWARK_DATABASE_URL_FILE: '/f',
  });
  assert.deepEqual(overridden.sort(), ['BULWARK_DATABASE_URL', 'BULWARK_PORT']);
});

test('up config: start-up lines name the source and never a secret value', () => {
  const lines = describeSources(serverEnv, {
    env: { BULWARK_RATE_LIMIT_KEY_PER_MINUTE: '5', BULWARK_REDIS_URL: 'redis://:hunter2@r' },
  });
  assert.deepEqual(lines, [
    'rateLimitKeyPerMinute from env BULWARK_RATE_LIMIT_KEY_PER_MINUTE = 5',
    'redisUrl from env BULWARK_REDIS_URL (secret, value not shown)',
  ]);
});
