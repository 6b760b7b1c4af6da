/**
 * Reading an archive back: decrypt (every chunk's tag, the final marker), decompress (zstd) and
 * hash the plain `pg_dump -Fc` stream. `verifyArchive` reads all of it and returns its SHA-256,
 * so nothing downstream (pg_restore) ever sees a byte of an archive that is not whole and
 * authentic; `plainStream` is the second read that feeds the consumer.
 */
import { createHash } from 'node:crypto';
import { type Readable, Transform, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createZstdDecompress } from 'node:zlib';
import { ArchiveError, createArchiveDecryptor, type DecryptStats } from '../../shared/backup-archive.ts';
import type { ArchiveRef, BackupStorage } from './backup-storage.ts';

/** Counts and hashes what passes through. */
export function hashingTap(): { tap: Transform; digest: () => string; bytes: () => number } {
  const h = createHash('sha256');
  let n = 0;
  const tap = new Transform({
    transform(chunk: Buffer, _e, cb) {
      h.update(chunk);
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
  const opened = await storage.open(ref);
  try {
    const stats: DecryptStats = { chunks: 0, plainBytes: 0, archiveBytes: 0 };
    const hash = hashingTap();
    const sink = new Writable({ write: (_c, _e, cb) => cb() });
    try {
      await pipeline(
        opened.stream(),
        createArchiveDecryptor(key, { backupId: ref.backupId, databaseId: ref.databaseId }, stats),
        createZstdDecompress({ chunkSize: 1024 * 1024 }),
        hash.tap,
        sink,
        ...(opts.signal ? [{ signal: opts.signal }] : []),
      );
    } catch (err) {
      if (err instanceof ArchiveError) throw err;
      if ((err as NodeJS.ErrnoException).code?.startsWith('ERR_ZSTD') || /zstd|decompress/i.test(String(err)))
        throw new ArchiveError(
          'tampered',
          `the archive's compressed stream is damaged: ${(err as Error).message}`,
        );
      throw err;
    }
    if (stats.archiveBytes !== opened.size)
      throw new ArchiveError('truncated', 'the archive changed while it was read');
    const sha256 = hash.digest();
    if (opts.expectedSha256 && sha256 !== opts.expectedSha256)
      throw new ArchiveError('wrong_archive', "the archive's checksum does not match the backup's record");
    return { sha256, dumpBytes: hash.bytes(), sizeBytes: opened.size, chunks: stats.chunks };
  } finally {
    await opened.close().catch(() => {});
  }
}
