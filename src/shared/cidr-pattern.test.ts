import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { parseCidr } from './cidr.ts';
import { CIDR_PATTERN } from './cidr-pattern.ts';

const parses = (s: string) => {
  try {
    parseCidr(s);
    return true;
  } catch {
    return false;
  }
};

test('CIDR_PATTERN matches the usual spellings and refuses what is not a CIDR', () => {
  for (const ok of [
    '0.0.0.0/0',
    '203.0.113.7/32',
    '10.0.0.0/8',
    '::/0',
    '::1/128',
    '2001:db8::/32',
    'fe80::1/64',
    '2001:0db8:0000:0000:0000:ff00:0042:8329/128',
    '::ffff:192.0.2.1/128',
    '64:ff9b::192.0.2.33/96',
  ]) {
    assert.ok(CIDR_PATTERN.test(ok), ok);
    assert.ok(parses(ok), ok);
  }
  for (const bad of [
    '',
    '10.0.0.0',
    '10.0.0.0/33',
    '256.0.0.0/8',
    '1.2.3/24',
    '::/129',
    ':::/0',
    '1::2::3/64',
    'fe80::1%eth0/64',
    ' 10.0.0.0/8',
    '10.0.0.0/8 ',
    'a.b.c.d/8',
  ]) {
    assert.equal(CIDR_PATTERN.test(bad), false, bad);
  }
});

test('everything CIDR_PATTERN matches parses (generated from the pattern itself)', () => {
  fc.assert(
    fc.property(fc.stringMatching(CIDR_PATTERN), (s) => parses(s)),
    { seed: 19, numRuns: 3000 },
  );
});
