import assert from 'node:assert/strict';
import { test } from 'node:test';
import { cliEnvNames, knownEnvNames } from '../embedded/up-config.ts';
import { cliEnv, cliSetting } from './settings.ts';

test("the CLI's settings are the names `bulwark up` knows as the CLI's", () => {
  assert.deepEqual(
    Object.values(cliEnv)
      .map((b) => b.env)
      .sort(),
    [...cliEnvNames].sort(),
  );
  for (const b of Object.values(cliEnv)) assert.ok(knownEnvNames().has(b.env), b.env);
});

test('a CLI setting: empty is unset, a default applies, a bad value is a usage error naming the variable only', () => {
  assert.equal(cliSetting('dataDir', {}), '.bulwark');
  assert.equal(cliSetting('dataDir', { BULWARK_DATA_DIR: '' }), '.bulwark');
  assert.equal(cliSetting('dataDir', { BULWARK_DATA_DIR: 'here' }), 'here');
  assert.equal(cliSetting('allowInsecure', {}), false);
  assert.equal(cliSetting('allowInsecure', { BULWARK_ALLOW_INSECURE: '1' }), true);
  assert.equal(cliSetting('databaseUrl', {}), undefined);
  assert.throws(
    () => cliSetting('allowInsecure', { BULWARK_ALLOW_INSECURE: 'yes-please' }),
    (err: Error & { exitCode?: number }) => {
      assert.match(err.message, /^BULWARK_ALLOW_INSECURE: /);
      assert.ok(!err.message.includes('yes-please'));
      assert.equal(err.exitCode, 2);
      return true;
    },
  );
});
