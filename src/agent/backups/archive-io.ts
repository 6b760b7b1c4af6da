/**
 * Reading an archive back (ADR 0022).
 * - `authenticateArchive`: reads every stored byte — the header against the expected ids, every
 *   chunk's GCM tag under its index, exactly one final chunk and nothing after it — and hashes the
 *   stored bytes; no decompression. The backup's read-back and the first pass of every restore.
 * - `verifyArchive`: all that, plus zstd to the end and the plain dump's SHA-256 against the
 *   record (the off-site copy's check in a drill).
 * - `plainStream` feeds a consumer; `heldUntilChecked` keeps the last piece of the plain dump from
 *   pg_restore until the whole dump hashed to the backup's record.
 */
import { createHash } from 'node:crypto';
import { type Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createZstdDecompress } from 'node:zlib';
import { ArchiveError, createArchiveDecryptor, type DecryptStats } from '../../shared/backup-archive.ts';
import type { ArchiveRef, BackupStorage } from './backup-storage.ts';

/** Counts and hashes what passes through (and shows every piece to `also`, in order). */
export function hashingTap(also?: (chunk: Buffer) => void): {
  tap: Transform;
  digest: () => string;
  bytes: () => number;
} {
  const h = createHash('sha256');
  let n = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _e, cb) {
      h.update(chunk);
      also?.(chunk);
      n += chunk.length;
      cb(null, chunk);
    },
  });
  let hex: string | null = null;
  return { tap, digest: () => (hex ??= h.digest('hex')), bytes: () => n };
}

/**
 * Gathers small writes (a pipe delivers 64 KiB at a time) into pieces of at least `size` bytes:
 * each zstd call is a round trip to the thread pool, so fewer, larger calls are much faster.
 */
export function coalesce(size = 1024 * 1024): Transform {
  let parts: Buffer[] = [];
  let held = 0;
  return new Transform({
    transform(chunk: Buffer, _e, cb) {
      parts.push(chunk);
      held += chunk.length;
      if (held >= size) {
        const out = Buffer.concat(parts, held);
        parts = [];
        held = 0;
        cb(null, out);
      } else cb();
    },
    flush(cb) {
      cb(null, held > 0 ? Buffer.concat(parts, held) : undefined);
    },
  });
}

export type Authenticated = {
  /** SHA-256 of the stored (encrypted) bytes. */
  archiveSha256: string;
  sizeBytes: number;
  /** Bytes of the compressed stream the chunks carry. */
  compressedBytes: number;
  chunks: number;
};

/** Maps a failure of a read pass: archive errors as they are, a damaged zstd frame as `tampered`. */
function archiveReadError(err: unknown): unknown {
  if (err instanceof ArchiveError) return err;
  if ((err as NodeJS.ErrnoException).code?.startsWith('ERR_ZSTD') || /zstd|decompress/i.test(String(err)))
    return new ArchiveError(
      'tampered',
      `the archive's compressed stream is damaged: ${(err as Error).message}`,
    );
  return err;
}

/**
 * One read pass over the whole stored archive: decrypts every chunk (header, tags with their
 * index, the final marker, no trailing byte), decompresses when `plain`, and hashes the stored
 * bytes (`plain` false) or the plain dump (`plain` true). The size must not change while read.
 */
async function readWhole(
  storage: BackupStorage,
  ref: ArchiveRef,
  key: Buffer,
  plain: boolean,
  signal: AbortSignal | undefined,
): Promise<{ sha256: string; hashedBytes: number; sizeBytes: number; stats: DecryptStats }> {
  const opened = await storage.open(ref);
  try {
    const stats: DecryptStats = { chunks: 0, plainBytes: 0, archiveBytes: 0 };
    const hash = hashingTap();
    const decrypt = createArchiveDecryptor(
      key,
      { backupId: ref.backupId, databaseId: ref.databaseId },
      stats,
    );
    const stages = plain
      ? [decrypt, createZstdDecompress({ chunkSize: 1024 * 1024 }), hash.tap]
      : [hash.tap, decrypt];
    try {
      await pipeline(
        [opened.stream(), ...stages, new Writable({ write: (_c, _e, cb) => cb() })],
        signal ? { signal } : {},
      );
    } catch (err) {
      throw archiveReadError(err);
    }
    if (stats.archiveBytes !== opened.size)
      throw new ArchiveError('truncated', 'the archive changed while it was read');
    return { sha256: hash.digest(), hashedBytes: hash.bytes(), sizeBytes: opened.size, stats };
  } finally {
    await opened.close().catch(() => {});
  }
}

/**
 * Reads the whole archive and authenticates it without decompressing: header, every chunk's tag
 * (with its index), the final marker, no trailing byte, the size unchanged while read. With
 * `expectedArchiveSha256` the stored bytes must hash to it (the backup's read-back: the file on
 * disk is byte for byte what was written). Throws an ArchiveError for anything wrong.
 */
export async function authenticateArchive(
  storage: BackupStorage,
  ref: ArchiveRef,
  key: Buffer,
  opts: { expectedArchiveSha256?: string; signal?: AbortSignal } = {},
): Promise<Authenticated> {
  const read = await readWhole(storage, ref, key, false, opts.signal);
  if (opts.expectedArchiveSha256 && read.sha256 !== opts.expectedArchiveSha256)
    throw new ArchiveError('wrong_archive', 'the archive read back differs from the archive written');
  return {
    archiveSha256: read.sha256,
    sizeBytes: read.sizeBytes,
    compressedBytes: read.stats.plainBytes,
    chunks: read.stats.chunks,
  };
}

/**
 * Passes the plain dump through, hashing it, but holds back the last piece it received until
 * the stream ended and the whole dump hashed to `expectedSha256`; otherwise it fails with an
 * ArchiveError and the held piece never leaves. pg_restore cannot finish — let alone commit its
 * single transaction — without the archive's last bytes (the end of its last block), so an
 * authentic archive that is not the recorded one (an earlier attempt's) is never restored.
 */
export function heldUntilChecked(expectedSha256: string): Transform {
  const h = createHash('sha256');
  let held: Buffer | null = null;
  return new Transform({
    transform(chunk: Buffer, _e, cb) {
      h.update(chunk);
      const out = held;
      held = chunk;
      cb(null, out ?? undefined);
    },
    flush(cb) {
      if (h.digest('hex') !== expectedSha256)
        return cb(
          new ArchiveError(
            'wrong_archive',
            "the archive's checksum does not match the backup's record (the dump's SHA-256)",
          ),
        );
      cb(null, held ?? undefined);
    },
  });
}

export type Verified = { sha256: string; dumpBytes: number; sizeBytes: number; chunks: number };

/** The plain dump of an opened archive (decrypted chunk by chunk, decompressed). */
export function plainStream(source: Readable, key: Buffer, ref: ArchiveRef, stats?: DecryptStats): Readable {
  const decrypt = createArchiveDecryptor(key, { backupId: ref.backupId, databaseId: ref.databaseId }, stats);
  const unzstd = createZstdDecompress({ chunkSize: 1024 * 1024 });
  source.on('error', (e) => decrypt.destroy(e));
  decrypt.on('error', (e) => unzstd.destroy(e));
  return source.pipe(decrypt).pipe(unzstd);
}

/**
 * Reads the whole archive: header, every chunk's tag, the final marker, a complete zstd frame;
 * the plain dump's SHA-256 must equal `expectedSha256` when given. Throws an ArchiveError for
 * anything wrong with the archive (never retried: reading it again will not fix it).
 */
export async function verifyArchive(
  storage: BackupStorage,
  ref: ArchiveRef,
  key: Buffer,
  opts: { expectedSha256?: string; signal?: AbortSignal } = {},
): Promise<Verified> {
  const read = await readWhole(storage, ref, key, true, opts.signal);
  if (opts.expectedSha256 && read.sha256 !== opts.expectedSha256)
    throw new ArchiveError('wrong_archive', "the archive's checksum does not match the backup's record");
  return {
    sha256: read.sha256,
    dumpBytes: read.hashedBytes,
    sizeBytes: read.sizeBytes,
    chunks: read.stats.chunks,
  };
}
