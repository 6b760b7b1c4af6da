import assert from 'node:assert/strict';
import { test } from 'node:test';
import { checkChildSettings } from './child-settings.ts';
import { dataLayout } from './layout.ts';

const placement = {
  layout: dataLayout('no-such-dir-child-settings'),
  host: '127.0.0.1',
  port: 8080,
  poolerPort: 6432,
};

test("up's own values (files not made yet) pass the children's schemas; the operator's defaults too", () => {
  assert.deepEqual(checkChildSettings({ env: {}, placement }), []);
});

test('what up sets itself wins over a bad operator value; the operator enrollment token file is never read', () => {
  const problems = checkChildSettings({
    env: { BULWARK_PORT: 'abc', BULWARK_ENROLLMENT_TOKEN_FILE: 'no-such-file' },
    placement,
  });
  assert.deepEqual(problems, []);
});

test('a bad value is named with its child and source; a secret value is never in the message', () => {
  const secret = 'rediss-not-a-url-but-secret-value';
  const problems = checkChildSettings({
    env: {
      BULWARK_RATE_LIMIT_KEY_PER_MINUTE: 'abc',
      BULWARK_REDIS_URL: secret,
      BULWARK_AGENT_HEARTBEAT_MS: '1',
      BULWARK_METRICS_TOKEN_FILE: 'no-such-file',
    },
    placement,
  });
  assert.equal(problems.length, 3, problems.join('\n'));
  assert.match(
    problems[0] ?? '',
    /^server: rateLimitKeyPerMinute .*\[from env BULWARK_RATE_LIMIT_KEY_PER_MINUTE\]$/,
  );
  assert.match(problems[1] ?? '', /^server: redisUrl .*\[from env BULWARK_REDIS_URL\]$/);
  assert.match(problems[2] ?? '', /^agent: heartbeatMs .*\[from env BULWARK_AGENT_HEARTBEAT_MS\]$/);
  assert.ok(!problems.join('\n').includes(secret));
});
