/**
 * API key and opaque token formats.
 *
 * API key: `bwk_` + 43 base62 chars (256 bits of entropy, each char drawn uniformly by
 * rejection sampling) + 6 base62 chars of CRC32 checksum over the 43-char body.
 *
 *   bwk_<43 random base62><6 checksum base62>   (53 chars in total)
 *
 * The checksum lets us reject typos and random garbage without touching the database and
 * lets secret scanners recognise real keys with near-zero false positives. It is NOT a
 * security control: anyone can compute it. Authentication is the SHA-256 of the whole key
 * compared in constant time against the stored hash (plain SHA-256 is appropriate here:
 * the key carries 256 bits of entropy, so there is nothing to brute-force).
 *
 * The lookup prefix (first 12 body chars, ~71 bits) is what we store in clear and index,
 * so a presented key resolves to one row before the hash comparison. Display it as
 * `bwk_<lookupPrefix>…`.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { crc32 } from 'node:zlib';

export const API_KEY_PREFIX = 'bwk_';
export const API_KEY_BODY_LENGTH = 43;
export const API_KEY_CHECKSUM_LENGTH = 6;
export const API_KEY_LOOKUP_PREFIX_LENGTH = 12;
export const API_KEY_LENGTH = API_KEY_PREFIX.length + API_KEY_BODY_LENGTH + API_KEY_CHECKSUM_LENGTH;

/** Whole-string match of a well-formed API key (the checksum is not checked by a regex). */
export const API_KEY_PATTERN = /^bwk_[0-9A-Za-z]{49}$/;
/** Unanchored form for secret scanners (add the `g` flag yourself; this one is stateless). */
export const API_KEY_SCAN_PATTERN = /\bbwk_[0-9A-Za-z]{49}\b/;

const BASE62 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz';
// Largest multiple of 62 that fits in a byte: bytes >= 248 are rejected, so `b % 62` is unbiased.
const REJECT_AT = 248;

function randomBase62(length: number): string {
  let out = '';
  while (out.length < length) {
    // 248/256 acceptance: ask for ~10% more than needed so one draw is almost always enough.
    const buf = randomBytes(Math.ceil((length - out.length) * 1.1) + 4);
    for (let i = 0; i < buf.length && out.length < length; i++) {
      const b = buf[i]!;
      if (b < REJECT_AT) out += BASE62[b % 62];
    }
  }
  return out;
}

/** Fixed-width base62 of a uint32 (62^6 > 2^32, so 6 chars always suffice). */
function checksumOf(body: string): string {
  let n = crc32(body) >>> 0;
  let out = '';
  for (let i = 0; i < API_KEY_CHECKSUM_LENGTH; i++) {
    out = BASE62[n % 62] + out;
    n = Math.floor(n / 62);
  }
  return out;
}

export function generateApiKey(): { key: string; lookupPrefix: string } {
  const body = randomBase62(API_KEY_BODY_LENGTH);
  return {
    key: API_KEY_PREFIX + body + checksumOf(body),
    lookupPrefix: body.slice(0, API_KEY_LOOKUP_PREFIX_LENGTH),
  };
}

export type ParsedApiKey = { ok: true; lookupPrefix: string } | { ok: false; reason: 'format' | 'checksum' };

/**
 * Validates shape and checksum without any I/O. Cost does not depend on the content of a
 * well-sized input; anything that is not exactly the format (wrong type, length, prefix,
 * alphabet, surrounding whitespace) is `format`.
 */
export function parseApiKey(raw: string): ParsedApiKey {
  if (typeof raw !== 'string' || raw.length !== API_KEY_LENGTH || !API_KEY_PATTERN.test(raw)) {
    return { ok: false, reason: 'format' };
  }
  const bodyEnd = API_KEY_PREFIX.length + API_KEY_BODY_LENGTH;
  const body = raw.slice(API_KEY_PREFIX.length, bodyEnd);
  if (checksumOf(body) !== raw.slice(bodyEnd)) return { ok: false, reason: 'checksum' };
  return { ok: true, lookupPrefix: body.slice(0, API_KEY_LOOKUP_PREFIX_LENGTH) };
}

/** SHA-256 of the full key string (including `bwk_` and checksum): 32 bytes, store as bytea. */
export function hashApiKey(key: string): Buffer {
  return createHash('sha256').update(key, 'utf8').digest();
}

/** Constant-time comparison of two digests; false (not an exception) on length mismatch. */
export function keyHashesEqual(a: Buffer, b: Buffer): boolean {
  if (!Buffer.isBuffer(a) || !Buffer.isBuffer(b) || a.length !== b.length || a.length === 0) return false;
  return timingSafeEqual(a, b);
}

/**
 * Opaque bearer token: `prefix` + base64url(`bytes` random bytes). Used for agent tokens
 * (`bwa_`) and enrollment tokens (`bwe_`). Store only `hashToken(token)`.
 */
export function generateToken(prefix: string, bytes = 32): string {
  if (typeof prefix !== 'string' || !/^[a-z][a-z0-9]{0,15}_$/.test(prefix)) {
    throw new TypeError('token prefix must look like "abc_" (lowercase letters/digits, ending in "_")');
  }
  if (!Number.isInteger(bytes) || bytes < 16 || bytes > 1024) {
    throw new RangeError('token entropy must be an integer number of bytes between 16 and 1024');
  }
  return prefix + randomBytes(bytes).toString('base64url');
}

/** SHA-256 of the full token string: 32 bytes. Compare with `keyHashesEqual`. */
export function hashToken(t: string): Buffer {
  return createHash('sha256').update(t, 'utf8').digest();
}
