import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AppError } from '../../../shared/errors.ts';
import {
  ARGON2_PARAMS,
  checkPasswordPolicy,
  commonPasswords,
  hashPassword,
  passwordProblem,
  verifyPassword,
} from './passwords.ts';

test('the bundled common-password list is real and large', () => {
  const list = commonPasswords();
  assert.ok(list.size >= 10_000, `${list.size} entries`);
  for (const p of ['123456', 'password', 'qwertyuiop', 'iloveyou']) assert.ok(list.has(p), p);
  for (const p of list) assert.equal(p, p.toLowerCase());
});

test('policy: length 12–256 characters, not common (any case), not the username', () => {
  assert.equal(passwordProblem('short-pw-1', 'alice'), 'too_short');
  assert.equal(passwordProblem('x'.repeat(257), 'alice'), 'too_long');
  assert.equal(passwordProblem('x'.repeat(256), 'alice'), null);
  // Characters, not UTF-16 units: 12 emoji are 12 characters.
  assert.equal(passwordProblem('🔐'.repeat(12), 'alice'), null);
  assert.equal(passwordProblem('🔐'.repeat(11), 'alice'), 'too_short');
  const longCommon = [...commonPasswords()].find((p) => p.length >= 12)!;
  assert.ok(longCommon);
  assert.equal(passwordProblem(longCommon, 'alice'), 'common');
  assert.equal(passwordProblem(longCommon.toUpperCase(), 'alice'), 'common');
  assert.equal(passwordProblem('Alice.Example', 'alice.example'), 'equals_username');
  assert.equal(passwordProblem('correct horse battery', 'alice'), null);
  assert.throws(
    () => checkPasswordPolicy('1234', 'alice'),
    (e: unknown) => e instanceof AppError && e.code === 'weak_password' && e.status === 400,
  );
});

test('hashes are argon2id with the stated parameters; verify accepts only the password', async () => {
  const phc = await hashPassword('correct horse battery');
  const m = /^\$argon2id\$v=19\$m=(\d+),t=(\d+),p=(\d+)\$[A-Za-z0-9+/]+\$[A-Za-z0-9+/]+$/.exec(phc);
  assert.ok(m, phc);
  assert.deepEqual(m.slice(1).map(Number), [
    ARGON2_PARAMS.memoryCost,
    ARGON2_PARAMS.timeCost,
    ARGON2_PARAMS.parallelism,
  ]);
  assert.ok(ARGON2_PARAMS.memoryCost >= 19_456 && ARGON2_PARAMS.timeCost >= 2);
  assert.equal(await verifyPassword(phc, 'correct horse battery'), true);
  assert.equal(await verifyPassword(phc, 'correct horse batterY'), false);
  assert.equal(await verifyPassword('not a hash', 'x'), false);
  // Same salt never reused: two hashes of one password differ.
  assert.notEqual(await hashPassword('correct horse battery'), phc);
  // NFKC: a decomposed "é" verifies against the composed one.
  const composed = await hashPassword('caf\u00e9-au-lait-2024');
  assert.equal(await verifyPassword(composed, 'cafe\u0301-au-lait-2024'), true);
});
