import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import {
  API_KEY_LENGTH,
  API_KEY_PATTERN,
  API_KEY_SCAN_PATTERN,
  generateApiKey,
  generateToken,
  hashApiKey,
  hashToken,
  keyHashesEqual,
  parseApiKey,
} from './api-key.ts';

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';

function replaceAt(s: string, i: number, c: string): string {
  return s.slice(0, i) + c + s.slice(i + 1);
}

describe('generateApiKey', () => {
  it('produces bwk_ + 43 + 6 base62 chars that parse back with the same lookup prefix', () => {
    for (let i = 0; i < 200; i++) {
      const { key, lookupPrefix } = generateApiKey();
      assert.equal(key.length, API_KEY_LENGTH);
      assert.equal(key.length, 53);
      assert.match(key, API_KEY_PATTERN);
      assert.ok(key.startsWith('bwk_'));
      assert.equal(lookupPrefix.length, 12);
      assert.equal(lookupPrefix, key.slice(4, 16));
      assert.deepEqual(parseApiKey(key), { ok: true, lookupPrefix });
    }
  });

  it('never repeats and uses the whole alphabet roughly uniformly (no modulo bias)', () => {
    const seen = new Set<string>();
    const counts = new Map<string, number>();
    const n = 4000;
    for (let i = 0; i < n; i++) {
      const { key } = generateApiKey();
      assert.ok(!seen.has(key));
      seen.add(key);
      for (const c of key.slice(4, 47)) counts.set(c, (counts.get(c) ?? 0) + 1);
    }
    assert.equal(counts.size, 62);
    const expected = (n * 43) / 62; // ~2774 per char
    for (const c of BASE62) {
      const got = counts.get(c) ?? 0;
      // ±15% is > 7 sigma for this sample size; a `% 62` bias on bytes would skew chars 0-7 by ~+25%.
      assert.ok(Math.abs(got - expected) < expected * 0.15, `char ${c}: ${got} vs ${expected}`);
    }
  });
});

describe('parseApiKey', () => {
  const { key } = generateApiKey();

  it('refuses a flipped character in the checksum', () => {
    for (let i = 47; i < 53; i++) {
      const orig = key[i]!;
      const flipped = orig === 'A' ? 'B' : 'A';
      assert.deepEqual(parseApiKey(replaceAt(key, i, flipped)), { ok: false, reason: 'checksum' });
    }
  });

  it('refuses a flipped character in the body', () => {
    for (let i = 4; i < 47; i++) {
      const orig = key[i]!;
      const flipped = orig === 'z' ? 'y' : 'z';
      assert.deepEqual(parseApiKey(replaceAt(key, i, flipped)), { ok: false, reason: 'checksum' });
    }
  });

  it('refuses two swapped adjacent body characters', () => {
    let i = 4;
    while (key[i] === key[i + 1]) i++;
    const swapped = key.slice(0, i) + key[i + 1] + key[i] + key.slice(i + 2);
    assert.deepEqual(parseApiKey(swapped), { ok: false, reason: 'checksum' });
  });

  it('refuses anything that is not exactly the format', () => {
    const bad: unknown[] = [
      '',
      'bwk_',
      key.slice(0, -1),
      key + 'A',
      ` ${key}`,
      `${key}\n`,
      key.toUpperCase(),
      'BWK_' + key.slice(4),
      'bwa_' + key.slice(4),
      replaceAt(key, 10, '-'),
      replaceAt(key, 10, '_'),
      replaceAt(key, 10, 'é'),
      'x'.repeat(10_000),
      null,
      undefined,
      123,
      {},
      Buffer.from(key),
    ];
    for (const b of bad)
      assert.deepEqual(parseApiKey(b as string), { ok: false, reason: 'format' }, String(b));
  });

  it('refuses random well-shaped strings on checksum (~1 in 2^32 false accept)', () => {
    for (let i = 0; i < 1000; i++) {
      let s = 'bwk_';
      for (let j = 0; j < 49; j++) s += BASE62[Math.floor(Math.random() * 62)];
      assert.deepEqual(parseApiKey(s), { ok: false, reason: 'checksum' });
    }
  });
});

describe('patterns', () => {
  it('scan pattern finds keys embedded in text', () => {
    const { key } = generateApiKey();
    const text = `export BULWARK_KEY="${key}" # prod`;
    assert.equal(API_KEY_SCAN_PATTERN.exec(text)?.[0], key);
    assert.equal(API_KEY_SCAN_PATTERN.exec(`x${key}`), null);
    assert.equal(API_KEY_SCAN_PATTERN.exec(`${key}0`), null);
  });
});

describe('hashing', () => {
  it('hashApiKey is SHA-256 of the whole key', () => {
    const { key } = generateApiKey();
    const h = hashApiKey(key);
    assert.equal(h.length, 32);
    assert.deepEqual(h, createHash('sha256').update(key).digest());
    assert.ok(keyHashesEqual(h, hashApiKey(key)));
    assert.ok(!keyHashesEqual(h, hashApiKey(generateApiKey().key)));
  });

  it('keyHashesEqual is false on length mismatch or empty, never throws', () => {
    const h = hashApiKey('x');
    assert.equal(keyHashesEqual(h, h.subarray(0, 31)), false);
    assert.equal(keyHashesEqual(h.subarray(0, 31), h), false);
    assert.equal(keyHashesEqual(Buffer.alloc(0), Buffer.alloc(0)), false);
    assert.equal(keyHashesEqual(h, Buffer.from(h)), true);
    const flipped = Buffer.from(h);
    flipped[31] = flipped[31]! ^ 1;
    assert.equal(keyHashesEqual(h, flipped), false);
    assert.equal(keyHashesEqual(h, null as unknown as Buffer), false);
  });
});

describe('generateToken', () => {
  it('prefix + base64url of the requested number of bytes', () => {
    const t = generateToken('bwa_');
    assert.match(t, /^bwa_[A-Za-z0-9_-]{43}$/);
    assert.equal(Buffer.from(t.slice(4), 'base64url').length, 32);
    const e = generateToken('bwe_', 24);
    assert.match(e, /^bwe_[A-Za-z0-9_-]{32}$/);
    assert.notEqual(generateToken('bwa_'), generateToken('bwa_'));
  });

  it('refuses weak entropy and odd prefixes', () => {
    assert.throws(() => generateToken('bwa_', 8), RangeError);
    assert.throws(() => generateToken('bwa_', 1.5), RangeError);
    assert.throws(() => generateToken('bwa'), TypeError);
    assert.throws(() => generateToken('BWA_'), TypeError);
    assert.throws(() => generateToken(''), TypeError);
  });

  it('hashToken is SHA-256 of the whole token', () => {
    const t = generateToken('bwe_');
    assert.deepEqual(hashToken(t), createHash('sha256').update(t).digest());
    assert.ok(keyHashesEqual(hashToken(t), hashToken(t)));
    assert.ok(!keyHashesEqual(hashToken(t), hashToken(t.slice(0, -1))));
  });
});
