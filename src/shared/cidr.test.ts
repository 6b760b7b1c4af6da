import assert from 'node:assert/strict';
import { test } from 'node:test';
import fc from 'fast-check';
import { parseCidr } from './cidr.ts';

test('tricky spellings: each has one canonical form, or is refused', () => {
  const same: [string, string][] = [
    // IPv4-mapped IPv6, dotted or hex, any case: one spelling, in hex.
    ['::ffff:1.2.3.4/128', '::ffff:102:304/128'],
    ['::FFFF:1.2.3.4/128', '::ffff:102:304/128'],
    ['0:0:0:0:0:ffff:102:304/128', '::ffff:102:304/128'],
    ['::ffff:10.0.0.0/104', '::ffff:a00:0/104'],
    // The deprecated IPv4-compatible form is its own address, not the IPv4-mapped one (ipaddr.js
    // alone would read `::1.2.3.4` as `::ffff:1.2.3.4`).
    ['::1.2.3.4/128', '::102:304/128'],
    ['::0:1.2.3.4/128', '::102:304/128'],
    ['64:ff9b::192.0.2.33/128', '64:ff9b::c000:221/128'],
    // RFC 5952: the first longest run of zero groups is compressed, a single zero group is not.
    ['2001:db8:0:0:1:0:0:1/128', '2001:db8::1:0:0:1/128'],
    ['1:2:3:4:5:6:7::/128', '1:2:3:4:5:6:7:0/128'],
    ['1::2:3:4:5:6:7/128', '1:0:2:3:4:5:6:7/128'],
    ['0001:0002:0000:0000:0000:0000:0000:0000/32', '1:2::/32'],
    // Host bits cleared, at every boundary.
    ['255.255.255.255/0', '0.0.0.0/0'],
    ['255.255.255.255/1', '128.0.0.0/1'],
    ['192.168.1.255/23', '192.168.0.0/23'],
    ['192.168.1.255/32', '192.168.1.255/32'],
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/0', '::/0'],
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/65', 'ffff:ffff:ffff:ffff:8000::/65'],
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff/128'],
    ['::1/128', '::1/128'],
    ['\t10.0.0.1/8\n', '10.0.0.0/8'],
  ];
  for (const [raw, canonical] of same) assert.equal(parseCidr(raw), canonical, raw);

  for (const bad of [
    // Leading zeros and octal- or hex-looking octets (read as octal or hex by some parsers).
    '010.0.0.1/32',
    '10.0.0.01/32',
    '0x0a.0.0.1/32',
    '0xa000001/32',
    '::ffff:010.0.0.1/128',
    '::ffff:0x1.2.3.4/128',
    // Short and long IPv4 forms.
    '10.1/16',
    '167772161/32',
    '1.2.3.4.5/32',
    '256.0.0.1/32',
    // Zone ids, brackets, ports, spaces inside.
    'fe80::1%eth0/64',
    'fe80::1%25eth0/64',
    '[::1]/128',
    '10.0.0.1:5432/32',
    '10.0.0.1 /32',
    '10.0.0.1/ 32',
    // Prefix lengths: out of range, signed, with leading zeros, not decimal.
    '10.0.0.1/33',
    '::1/129',
    '10.0.0.1/-1',
    '10.0.0.1/+8',
    '10.0.0.0/08',
    '::/000',
    '10.0.0.0/0x8',
    '10.0.0.0/8/8',
    // Malformed IPv6.
    '1:2:3:4:5:6:7:8:9/128',
    '1::2::3/128',
    ':::/128',
    '12345::/16',
    'g::/16',
    // Not a CIDR at all.
    '10.0.0.1',
    '/8',
    '',
  ]) {
    assert.throws(() => parseCidr(bad), Error, JSON.stringify(bad));
  }
});

/** 16 bytes → 8 hex groups, each in the given case and padding. */
const groups = (bytes: number[]) =>
  Array.from({ length: 8 }, (_, i) => (((bytes[2 * i] ?? 0) << 8) | (bytes[2 * i + 1] ?? 0)).toString(16));

/** The network of a prefix, computed with BigInt: an oracle independent of the parser. */
const masked = (bytes: number[], bits: number) => {
  const width = bytes.length * 8;
  const value = bytes.reduce((n, b) => (n << 8n) | BigInt(b), 0n);
  const mask = bits === 0 ? 0n : ((1n << BigInt(bits)) - 1n) << BigInt(width - bits);
  const net = value & mask;
  return Array.from({ length: bytes.length }, (_, i) =>
    Number((net >> BigInt(8 * (bytes.length - 1 - i))) & 0xffn),
  );
};

test('any IPv4 prefix: host bits cleared, octets as given', () => {
  fc.assert(
    fc.property(
      fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 4, maxLength: 4 }),
      fc.integer({ min: 0, max: 32 }),
      (bytes, bits) => {
        assert.equal(parseCidr(`${bytes.join('.')}/${bits}`), `${masked(bytes, bits).join('.')}/${bits}`);
      },
    ),
    { numRuns: 2_000 },
  );
});

test('any IPv6 prefix, in any spelling: host bits cleared, the compressed form URL parsing gives', () => {
  fc.assert(
    fc.property(
      fc.array(fc.oneof(fc.constant(0), fc.integer({ min: 0, max: 255 })), { minLength: 16, maxLength: 16 }),
      fc.integer({ min: 0, max: 128 }),
      fc.boolean(),
      fc.boolean(),
      (bytes, bits, upper, padded) => {
        let spelled = groups(bytes).map((g) => (padded ? g.padStart(4, '0') : g));
        if (upper) spelled = spelled.map((g) => g.toUpperCase());
        // The WHATWG URL parser's serialisation of an IPv6 host is RFC 5952's compressed form.
        const expected = new URL(`http://[${groups(masked(bytes, bits)).join(':')}]`).hostname.slice(1, -1);
        assert.equal(parseCidr(`${spelled.join(':')}/${bits}`), `${expected}/${bits}`);
        // The same address with its last 32 bits dotted is the same entry.
        const dotted = `${spelled.slice(0, 6).join(':')}:${bytes.slice(12).join('.')}`;
        assert.equal(parseCidr(`${dotted}/${bits}`), `${expected}/${bits}`);
      },
    ),
    { numRuns: 2_000 },
  );
});
