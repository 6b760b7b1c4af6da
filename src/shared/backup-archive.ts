/**
 * The encrypted backup archive (ADR 0022): chunked AES-256-GCM over the zstd-compressed
 * `pg_dump -Fc` stream. Shared by the agent (writes, reads back, restores) and the server
 * (decrypts a download) — both hold the same per-backup data key, never the master key.
 *
 * Layout (all integers big-endian):
 *
 *   header (80 bytes)
 *     magic        8  "BWBACKUP"
 *     version      1  FORMAT_VERSION (1)
 *     algorithm    1  1 = AES-256-GCM, chunk key from HKDF-SHA256
 *     reserved     2  zero
 *     chunk_size   4  plaintext bytes of every chunk but the last (MIN_CHUNK…MAX_CHUNK)
 *     backup_id   16  uuid bytes
 *     database_id 16  uuid bytes
 *     salt        32  random per archive
 *   chunk*        (one or more; exactly one final, and it is the last)
 *     flag         1  0 = more follow, 1 = final
 *     length       4  ciphertext bytes (= chunk_size unless final; final ≤ chunk_size, may be 0)
 *     ciphertext   length
 *     tag         16  GCM tag
 *
 * chunk key = HKDF-SHA256(data key, salt, "bulwark-backup v1" ‖ backup_id ‖ database_id, 32):
 * a fresh key per archive even if a data key were ever reused, so the counter nonces below never
 * repeat under one key. nonce(i) = 4 zero bytes ‖ u64(i). AAD(i) = header ‖ u64(i) ‖ flag.
 *
 * Therefore: a flipped bit anywhere fails a tag (header bits fail every chunk's tag, header
 * fields are also checked first); a dropped or reordered chunk is decrypted under the wrong index
 * and fails its tag; a chunk marked final that is not last, or a stream that ends without a
 * final chunk (truncation), or a byte after the final chunk, is refused. The decryptor emits a
 * chunk's plaintext only after its tag verified — but a truncated archive is only known at its
 * end, so a consumer that must not act on a partial archive (pg_restore) reads it twice: once to
 * verify all of it (`verifyArchive`), then again to use it (see src/agent/backups/restore.ts).
 */
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';

export const FORMAT_VERSION = 1;
export const ALGORITHM_AES_256_GCM = 1;
export const MAGIC = Buffer.from('BWBACKUP', 'ascii');
export const HEADER_BYTES = 80;
export const FRAME_OVERHEAD = 1 + 4 + 16;
export const DEFAULT_CHUNK = 1024 * 1024;
export const MIN_CHUNK = 16;
export const MAX_CHUNK = 16 * 1024 * 1024;
const TAG_BYTES = 16;
const FLAG_MORE = 0;
const FLAG_FINAL = 1;

/** Why an archive was refused: a stable code and a message safe to show (no key, no bytes). */
export class ArchiveError extends Error {
  readonly code: 'bad_header' | 'wrong_archive' | 'tampered' | 'truncated' | 'trailing_data' | 'bad_frame';
  constructor(code: ArchiveError['code'], message: string) {
    super(message);
    this.name = 'ArchiveError';
    this.code = code;
  }
}

export type ArchiveIds = { backupId: string; databaseId: string };

function uuidBytes(id: string): Buffer {
  const hex = id.replaceAll('-', '').toLowerCase();
  if (!/^[0-9a-f]{32}$/.test(hex)) throw new TypeError('not a uuid');
  return Buffer.from(hex, 'hex');
}

function checkKey(key: Buffer): void {
  if (!Buffer.isBuffer(key) || key.length !== 32) throw new TypeError('a data key is 32 bytes');
}

function chunkKey(key: Buffer, header: Buffer): Buffer {
  const info = Buffer.concat([Buffer.from('bulwark-backup v1', 'ascii'), header.subarray(16, 48)]);
  return Buffer.from(hkdfSync('sha256', key, header.subarray(48, 80), info, 32));
}

function nonce(index: bigint): Buffer {
  const n = Buffer.alloc(12);
  n.writeBigUInt64BE(index, 4);
  return n;
}

function aad(header: Buffer, index: bigint, flag: number): Buffer {
  const a = Buffer.alloc(HEADER_BYTES + 9);
  header.copy(a, 0);
  a.writeBigUInt64BE(index, HEADER_BYTES);
  a[HEADER_BYTES + 8] = flag;
  return a;
}

export function buildHeader(ids: ArchiveIds, chunkSize: number, salt: Buffer = randomBytes(32)): Buffer {
  if (!Number.isInteger(chunkSize) || chunkSize < MIN_CHUNK || chunkSize > MAX_CHUNK)
    throw new RangeError(`chunk size must be ${MIN_CHUNK}…${MAX_CHUNK}`);
  const h = Buffer.alloc(HEADER_BYTES);
  MAGIC.copy(h, 0);
  h[8] = FORMAT_VERSION;
  h[9] = ALGORITHM_AES_256_GCM;
  h.writeUInt32BE(chunkSize, 12);
  uuidBytes(ids.backupId).copy(h, 16);
  uuidBytes(ids.databaseId).copy(h, 32);
  salt.copy(h, 48);
  return h;
}

/** Parses and checks a header against the archive we expect (ids), before any chunk is read. */
export function parseHeader(h: Buffer, expected: ArchiveIds): { chunkSize: number } {
  if (h.length !== HEADER_BYTES || !h.subarray(0, 8).equals(MAGIC))
    throw new ArchiveError('bad_header', 'not a Bulwark backup archive');
  if (h[8] !== FORMAT_VERSION)
    throw new ArchiveError('bad_header', `unsupported archive format version ${h[8]}`);
  if (h[9] !== ALGORITHM_AES_256_GCM || h[10] !== 0 || h[11] !== 0)
    throw new ArchiveError('bad_header', 'unsupported archive algorithm');
  const chunkSize = h.readUInt32BE(12);
  if (chunkSize < MIN_CHUNK || chunkSize > MAX_CHUNK)
    throw new ArchiveError('bad_header', 'archive chunk size out of bounds');
  if (
    !h.subarray(16, 32).equals(uuidBytes(expected.backupId)) ||
    !h.subarray(32, 48).equals(uuidBytes(expected.databaseId))
  )
    throw new ArchiveError('wrong_archive', 'the archive belongs to another backup');
  return { chunkSize };
}

/** A list of buffers read from the front without copying more than needed. */
class ByteQueue {
  private parts: Buffer[] = [];
  length = 0;
  push(b: Buffer): void {
    if (b.length === 0) return;
    this.parts.push(b);
    this.length += b.length;
  }
  /** Removes and returns the first n bytes (n ≤ length). */
  take(n: number): Buffer {
    const first = this.parts[0];
    if (first && first.length >= n) {
      const out = first.subarray(0, n);
      if (first.length === n) this.parts.shift();
      else this.parts[0] = first.subarray(n);
      this.length -= n;
      return out;
    }
    const out = Buffer.allocUnsafe(n);
    let off = 0;
    while (off < n) {
      const p = this.parts[0]!;
      const k = Math.min(p.length, n - off);
      p.copy(out, off, 0, k);
      off += k;
      if (k === p.length) this.parts.shift();
      else this.parts[0] = p.subarray(k);
    }
    this.length -= n;
    return out;
  }
  peekByte(i: number): number {
    let off = i;
    for (const p of this.parts) {
      if (off < p.length) return p[off]!;
      off -= p.length;
    }
    throw new RangeError('peek past end');
  }
  peekUInt32BE(i: number): number {
    return (
      ((this.peekByte(i) << 24) >>> 0) +
      (this.peekByte(i + 1) << 16) +
      (this.peekByte(i + 2) << 8) +
      this.peekByte(i + 3)
    );
  }
}

/** Plaintext in, archive out: header, then chunks of `chunkSize`, the last one marked final. */
export function createArchiveEncryptor(
  key: Buffer,
  ids: ArchiveIds,
  opts: { chunkSize?: number } = {},
): Transform {
  checkKey(key);
  const chunkSize = opts.chunkSize ?? DEFAULT_CHUNK;
  const header = buildHeader(ids, chunkSize);
  const ckey = chunkKey(key, header);
  const pending = new ByteQueue();
  let index = 0n;
  let headerSent = false;

  const frame = (plain: Buffer, flag: number): Buffer => {
    const c = createCipheriv('aes-256-gcm', ckey, nonce(index));
    c.setAAD(aad(header, index, flag));
    const ct = Buffer.concat([c.update(plain), c.final()]);
    const f = Buffer.allocUnsafe(5 + ct.length + TAG_BYTES);
    f[0] = flag;
    f.writeUInt32BE(ct.length, 1);
    ct.copy(f, 5);
    c.getAuthTag().copy(f, 5 + ct.length);
    index += 1n;
    return f;
  };
  const sendHeader = (t: Transform) => {
    if (!headerSent) {
      t.push(header);
      headerSent = true;
    }
  };

  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      try {
        sendHeader(this);
        pending.push(chunk);
        // Strictly more than one chunk held: the last chunk is always emitted by flush, as final.
        while (pending.length > chunkSize) this.push(frame(pending.take(chunkSize), FLAG_MORE));
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
    flush(cb: TransformCallback) {
      try {
        sendHeader(this);
        this.push(frame(pending.take(pending.length), FLAG_FINAL));
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
  });
}

export type DecryptStats = { chunks: number; plainBytes: number; archiveBytes: number };

/**
 * Archive in, plaintext out — each chunk only after its tag verified. Errors (ArchiveError) on a
 * bad header, a failed tag, a malformed frame, a missing final chunk or bytes after it.
 * `stats` is filled as it goes.
 */
export function createArchiveDecryptor(
  key: Buffer,
  expected: ArchiveIds,
  stats: DecryptStats = { chunks: 0, plainBytes: 0, archiveBytes: 0 },
): Transform {
  checkKey(key);
  uuidBytes(expected.backupId);
  uuidBytes(expected.databaseId);
  const q = new ByteQueue();
  let header: Buffer | null = null;
  let ckey: Buffer | null = null;
  let chunkSize = 0;
  let index = 0n;
  let done = false;

  const step = (t: Transform): boolean => {
    if (!header) {
      if (q.length < HEADER_BYTES) return false;
      const h = Buffer.from(q.take(HEADER_BYTES));
      chunkSize = parseHeader(h, expected).chunkSize;
      header = h;
      ckey = chunkKey(key, h);
      return true;
    }
    if (done) {
      if (q.length > 0) throw new ArchiveError('trailing_data', 'bytes after the final chunk of the archive');
      return false;
    }
    if (q.length < 5) return false;
    const flag = q.peekByte(0);
    const len = q.peekUInt32BE(1);
    if (flag !== FLAG_MORE && flag !== FLAG_FINAL)
      throw new ArchiveError('bad_frame', `chunk ${index} has an invalid flag`);
    if (flag === FLAG_MORE ? len !== chunkSize : len > chunkSize)
      throw new ArchiveError('bad_frame', `chunk ${index} has an invalid length`);
    if (q.length < 5 + len + TAG_BYTES) return false;
    q.take(5);
    const ct = q.take(len);
    const tag = q.take(TAG_BYTES);
    const d = createDecipheriv('aes-256-gcm', ckey!, nonce(index));
    d.setAAD(aad(header, index, flag));
    d.setAuthTag(tag);
    let plain: Buffer;
    try {
      plain = Buffer.concat([d.update(ct), d.final()]);
    } catch {
      throw new ArchiveError(
        'tampered',
        `chunk ${index} failed authentication (altered, reordered, dropped, or a wrong key)`,
      );
    }
    stats.chunks += 1;
    stats.plainBytes += plain.length;
    index += 1n;
    if (flag === FLAG_FINAL) done = true;
    if (plain.length > 0) t.push(plain);
    return true;
  };

  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      try {
        stats.archiveBytes += chunk.length;
        q.push(chunk);
        while (step(this)) {}
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
    flush(cb: TransformCallback) {
      try {
        while (step(this)) {}
        if (!header) throw new ArchiveError('truncated', 'the archive ends inside its header');
        if (!done) throw new ArchiveError('truncated', 'the archive ends before its final chunk (truncated)');
        cb();
      } catch (err) {
        cb(err as Error);
      }
    },
  });
}
