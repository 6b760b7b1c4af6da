import assert from 'node:assert/strict';
import { test } from 'node:test';
import { base32Decode, base32Encode, hotp, matchTotp, otpauthUri, totpAt } from './totp.ts';

// RFC 6238, Appendix B: T0 = 0, X = 30 s, 8 digits; the seed per algorithm is the ASCII string.
const SEEDS = {
  sha1: Buffer.from('12345678901234567890'),
  sha256: Buffer.from('12345678901234567890123456789012'),
  sha512: Buffer.from('1234567890123456789012345678901234567890123456789012345678901234'),
};
const VECTORS: [number, string, string, string][] = [
  [59, '94287082', '46119246', '90693936'],
  [1111111109, '07081804', '68084774', '25091201'],
  [1111111111, '14050471', '67062674', '99943326'],
  [1234567890, '89005924', '91819424', '93441116'],
  [2000000000, '69279037', '90698825', '38618901'],
  [20000000000, '65353130', '77737706', '47863826'],
];

test('RFC 6238 test vectors (SHA-1, SHA-256, SHA-512; 8 digits)', () => {
  for (const [t, sha1, sha256, sha512] of VECTORS) {
    const counter = Math.floor(t / 30);
    assert.equal(hotp(SEEDS.sha1, counter, 8, 'sha1'), sha1, `sha1 at ${t}`);
    assert.equal(hotp(SEEDS.sha256, counter, 8, 'sha256'), sha256, `sha256 at ${t}`);
    assert.equal(hotp(SEEDS.sha512, counter, 8, 'sha512'), sha512, `sha512 at ${t}`);
  }
});

test('RFC 4226 HOTP vectors (6 digits), and our 6-digit TOTP is their last six digits', () => {
  const expected = [
    '755224',
    '287082',
    '359152',
    '969429',
    '338314',
    '254676',
    '287922',
    '162583',
    '399871',
    '520489',
  ];
  for (const [counter, code] of expected.entries()) assert.equal(hotp(SEEDS.sha1, counter, 6), code);
  for (const [t, sha1] of VECTORS) assert.equal(totpAt(SEEDS.sha1, t * 1000), sha1.slice(2));
});

test('a code matches its own step and one step either side, nothing further', () => {
  const t = 1_111_111_111_000;
  const step = Math.floor(t / 30_000);
  const code = totpAt(SEEDS.sha1, t);
  assert.equal(matchTotp(SEEDS.sha1, code, t), step);
  assert.equal(matchTotp(SEEDS.sha1, code, t + 30_000), step, 'one step later');
  assert.equal(matchTotp(SEEDS.sha1, code, t - 30_000), step, 'one step earlier');
  assert.equal(matchTotp(SEEDS.sha1, code, t + 60_000), null, 'two steps later');
  assert.equal(matchTotp(SEEDS.sha1, code, t - 60_000), null, 'two steps earlier');
  assert.equal(matchTotp(SEEDS.sha1, '12345', t), null);
  assert.equal(matchTotp(SEEDS.sha1, 'abcdef', t), null);
});

test('base32 round-trips (RFC 4648 vectors) and the otpauth URI names the parameters', () => {
  assert.equal(base32Encode(Buffer.from('foobar')), 'MZXW6YTBOI');
  assert.equal(base32Encode(Buffer.from('f')), 'MY');
  assert.equal(base32Decode('mzxw6ytboi======').toString(), 'foobar');
  const secret = Buffer.from('0123456789abcdefghij');
  assert.deepEqual(base32Decode(base32Encode(secret)), secret);
  assert.throws(() => base32Decode('MZ1!'));
  const uri = new URL(otpauthUri('MZXW6YTBOI', 'Bulwark', 'alice'));
  assert.equal(uri.protocol, 'otpauth:');
  assert.equal(uri.searchParams.get('secret'), 'MZXW6YTBOI');
  assert.equal(uri.searchParams.get('digits'), '6');
  assert.equal(uri.searchParams.get('period'), '30');
  assert.equal(uri.searchParams.get('algorithm'), 'SHA1');
});
