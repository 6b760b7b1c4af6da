/**
 * Where archives live: the local directory (here) and S3-compatible object storage
 * (`s3-storage.ts`), both with the same keys (`backupStorageKey`: ids only). With off-site copies
 * configured the agent uses `withOffsiteCopy` (`offsite-storage.ts`): local first, S3 besides.
 *
 * Paths are built from the two uuids only (validated again here), resolved, and checked to lie
 * inside the backup dir before anything is opened; the directory tree is 0700 and files 0600.
 * A new archive is written as `<key>.partial` (created exclusively, never following a link),
 * fsynced, renamed over nothing, and its directory fsynced: a crash leaves either no archive or a
 * whole one, plus at most a `.partial` that the start-up sweep (and any failure) removes.
 */
import { createHash } from 'node:crypto';
import { constants, createReadStream, createWriteStream } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { backupStorageKey } from '../../shared/contracts/backups.ts';

const PARTIAL = '.partial';

export type ArchiveRef = { databaseId: string; backupId: string };

/** A write in progress: write to `stream`, then `commit()` or `abort()` (exactly one). */
export type PendingArchive = {
  stream: Writable;
  commit(): Promise<{ sizeBytes: number }>;
  abort(): Promise<void>;
};

export type BackupStorage = {
  /**
   * A short tag of this storage (8 hex of the backup dir's SHA-256): scratch databases carry it,
   * so an agent's start-up sweep drops only its own (several agents may share a cluster in tests).
   */
  tag: string;
  /**
   * Starts a new archive (fails if one is already there: a backup id is written once).
   * `expectedBytes`, when known (a copy), lets an object store size its upload parts.
   */
  create(ref: ArchiveRef, expectedBytes?: number): Promise<PendingArchive>;
  /** Opens a finished archive for reading; `size` in bytes. */
  open(
    ref: ArchiveRef,
  ): Promise<{ stream: (start?: number) => Readable; size: number; close(): Promise<void> }>;
  exists(ref: ArchiveRef): Promise<boolean>;
  /** Removes the archive and any `.partial` of it; false when there was nothing. */
  remove(ref: ArchiveRef): Promise<boolean>;
  /** Removes every `.partial` left by a crashed agent; returns how many. */
  sweepPartials(): Promise<number>;
  /** The absolute path of an archive (for diagnostics and tests). */
  pathOf(ref: ArchiveRef): string;
  /**
   * Present when off-site copies are configured: uploads the finished (verified) archive and
   * returns the object key; throws, leaving no object, when the copy cannot be made whole.
   */
  copyOffsite?(ref: ArchiveRef): Promise<{ key: string; sizeBytes: number }>;
  /** The off-site store alone (drills verify its copy too). */
  offsite?: BackupStorage;
};

/** Resolves `key` under `root` and refuses anything that would land outside it. */
export function resolveInside(root: string, key: string): string {
  const base = path.resolve(root);
  const full = path.resolve(base, key);
  if (!full.startsWith(base + path.sep)) throw new Error('backup path escapes the backup dir');
  return full;
}

async function fsyncDir(dir: string): Promise<void> {
  const h = await fs.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
  try {
    await h.sync();
  } finally {
    await h.close();
  }
}

export function createLocalStorage(root: string): BackupStorage {
  const base = path.resolve(root);
  const pathOf = (ref: ArchiveRef) => resolveInside(base, backupStorageKey(ref.databaseId, ref.backupId));

  const ensureDir = async (dir: string) => {
    await fs.mkdir(base, { recursive: true, mode: 0o700 });
    await fs.mkdir(dir, { recursive: false, mode: 0o700 }).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err;
    });
    // The database's directory must be a directory of ours, not a link planted elsewhere.
    const st = await fs.lstat(dir);
    if (!st.isDirectory()) throw new Error('backup directory is not a directory');
  };

  return {
    tag: createHash('sha256').update(base).digest('hex').slice(0, 8),
    pathOf,
    async create(ref) {
      const file = pathOf(ref);
      const partial = file + PARTIAL;
      const dir = path.dirname(file);
      await ensureDir(dir);
      if (await exists(file)) throw new Error('an archive of this backup already exists');
      // A stale partial of the same backup (an earlier attempt) goes first.
      await fs.rm(partial, { force: true });
      const handle = await fs.open(
        partial,
        constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW,
        0o600,
      );
      const stream = createWriteStream('', { fd: handle.fd, autoClose: false, highWaterMark: 1024 * 1024 });
      let done = false;
      const closeQuietly = async () => {
        if (!stream.destroyed) stream.destroy();
        await handle.close().catch(() => {});
      };
      return {
        stream,
        async commit() {
          if (done) throw new Error('archive already finished');
          done = true;
          try {
            await handle.sync();
            const { size } = await handle.stat();
            await handle.close();
            await fs.rename(partial, file);
            await fsyncDir(dir);
            return { sizeBytes: size };
          } catch (err) {
            await closeQuietly();
            await fs.rm(partial, { force: true }).catch(() => {});
            throw err;
          }
        },
        async abort() {
          if (done) return;
          done = true;
          await closeQuietly();
          await fs.rm(partial, { force: true }).catch(() => {});
        },
      };
    },
    async open(ref) {
      const handle = await fs.open(pathOf(ref), constants.O_RDONLY | constants.O_NOFOLLOW);
      try {
        const { size } = await handle.stat();
        return {
          size,
          // Every pass reads the same open file (a file renamed over it later changes nothing).
          stream: (start = 0) =>
            createReadStream('', { fd: handle.fd, autoClose: false, start, highWaterMark: 1024 * 1024 }),
          close: () => handle.close(),
        };
      } catch (err) {
        await handle.close().catch(() => {});
        throw err;
      }
    },
    exists: (ref) => exists(pathOf(ref)),
    async remove(ref) {
      const file = pathOf(ref);
      const had = await exists(file);
      await fs.rm(file, { force: true });
      await fs.rm(file + PARTIAL, { force: true });
      if (had) await fsyncDir(path.dirname(file)).catch(() => {});
      return had;
    },
    async sweepPartials() {
      let removed = 0;
      const dirs = await fs.readdir(base, { withFileTypes: true }).catch(() => []);
      for (const d of dirs) {
        if (!d.isDirectory()) continue;
        const dir = path.join(base, d.name);
        for (const f of await fs.readdir(dir).catch(() => [] as string[])) {
          if (!f.endsWith(PARTIAL)) continue;
          await fs.rm(path.join(dir, f), { force: true });
          removed += 1;
        }
      }
      return removed;
    },
  };
}

async function exists(file: string): Promise<boolean> {
  try {
    await fs.lstat(file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}
