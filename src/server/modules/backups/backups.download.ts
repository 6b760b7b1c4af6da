/**
 * Backup downloads (ADR 0023). `POST …/backups/:id/download-link` signs a link valid 10 minutes
 * for that one backup, that account and that caller; the GET of the link (the same caller,
 * authenticated as on any route) streams the plain `pg_dump -Fc` archive, decrypted and
 * decompressed on the fly from the backup directory this server shares with its node's agent.
 *
 * The signature is HMAC-SHA256 under an install secret (`backup-download-key`, shared by the
 * replicas, sealed by the master keyring) over the version, backup id, account id, caller and
 * expiry; it is compared in constant time. The file read is `<backup dir>/<storage key>` from
 * the backup's row — built from two uuids by the server, resolved and checked to lie inside the
 * directory; nothing the client sends reaches a path.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createZstdDecompress } from 'node:zlib';
import type { Logger } from 'pino';
import { createArchiveDecryptor } from '../../../shared/backup-archive.ts';
import { backupKeyContext, backupStorageKey } from '../../../shared/contracts/backups.ts';
import { AppError, forbidden, unavailable } from '../../../shared/errors.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import type { Db } from '../../db/pool.ts';
import { type Caller, callerActor } from '../../http/caller.ts';
import type { RequireStepUp } from '../sessions/step-up.ts';
import * as repo from './backups.repo.ts';

export const DOWNLOAD_LINK_TTL_S = 600;
const VERSION = 'v1';

export type LinkClaims = { backupId: string; accountId: string; caller: string; expires: number };

/** Who a link is for: the key or the user (never their session: a refreshed sign-in keeps its links). */
export const callerTag = (c: Caller): string => {
  const a = callerActor(c);
  return `${a.type}:${a.id}`;
};

function mac(key: Buffer, c: LinkClaims): Buffer {
  return createHmac('sha256', key)
    .update(`bulwark-backup-download:${VERSION}\n${c.backupId}\n${c.accountId}\n${c.caller}\n${c.expires}`)
    .digest();
}

/** The signature (base64url) of a link's claims. */
export function signLink(key: Buffer, c: LinkClaims): string {
  return `${VERSION}.${mac(key, c).toString('base64url')}`;
}

/**
 * True when `sig` is the signature of these claims and they have not expired. The presented
 * signature is decoded to exactly 32 bytes (anything else fails) and compared in constant time.
 */
export function verifyLink(
  key: Buffer,
  c: LinkClaims,
  sig: string,
  nowS = Math.floor(Date.now() / 1000),
): boolean {
  if (!Number.isSafeInteger(c.expires) || c.expires < nowS || c.expires > nowS + DOWNLOAD_LINK_TTL_S)
    return false;
  const [v, body, extra] = sig.split('.');
  if (v !== VERSION || body === undefined || extra !== undefined || !/^[A-Za-z0-9_-]{43}$/.test(body))
    return false;
  const given = Buffer.from(body, 'base64url');
  if (given.length !== 32) return false;
  return timingSafeEqual(given, mac(key, c));
}

/** The archive's path inside the backup dir, checked to lie inside it (ids only; symlinks resolved). */
export async function archivePath(backupDir: string, databaseId: string, backupId: string): Promise<string> {
  const root = await realpath(backupDir);
  const rel = backupStorageKey(databaseId, backupId);
  const candidate = path.resolve(root, rel);
  if (!candidate.startsWith(root + path.sep)) throw forbidden('Invalid backup path');
  let real: string;
  try {
    real = await realpath(candidate);
  } catch {
    throw new AppError('not_found', 'The backup file is not on this server');
  }
  if (!real.startsWith(root + path.sep)) throw forbidden('Invalid backup path');
  const s = await stat(real);
  if (!s.isFile()) throw new AppError('not_found', 'The backup file is not on this server');
  return real;
}

/**
 * A stream of the plain archive: file → authenticated decryption → zstd → out. A tampered,
 * truncated or foreign archive fails mid-stream (the response is cut, never completed), and the
 * caller checks the result against the backup's sha256.
 */
export function openPlainArchive(
  file: string,
  dataKey: Buffer,
  ids: { backupId: string; databaseId: string },
  log: Logger,
): Readable {
  const out = new PassThrough({ highWaterMark: 1024 * 1024 });
  pipeline(
    createReadStream(file, { highWaterMark: 1024 * 1024 }),
    createArchiveDecryptor(dataKey, ids),
    createZstdDecompress(),
    out,
  ).catch((err: unknown) => {
    log.warn(
      { backup_id: ids.backupId, err: { message: (err as Error)?.message } },
      'backup download stopped',
    );
    out.destroy(err as Error);
  });
  return out;
}

export function createBackupDownloads(deps: {
  db: Db;
  box: SecretBox | null;
  log: Logger;
  linkKey: () => Promise<Buffer>;
  backupDir: string | null;
  /**
   * A download is the whole database in the clear, like revealing its password: a signed-in user
   * needs the re-authentication window (a stolen session cannot walk away with the data).
   */
  stepUp?: RequireStepUp;
}) {
  return {
    async sign(caller: Caller, backupId: string, nowS = Math.floor(Date.now() / 1000)) {
      if (caller.kind === 'user') {
        if (!deps.stepUp) throw forbidden('Signed-in users cannot download backups on this server');
        await deps.stepUp({ userId: caller.userId, sessionId: caller.sessionId }, 'download a backup');
      }
      const claims = {
        backupId,
        accountId: caller.accountId,
        caller: callerTag(caller),
        expires: nowS + DOWNLOAD_LINK_TTL_S,
      };
      return { expires: claims.expires, sig: signLink(await deps.linkKey(), claims) };
    },

    async verify(caller: Caller, backupId: string, expires: number, sig: string): Promise<boolean> {
      const claims = { backupId, accountId: caller.accountId, caller: callerTag(caller), expires };
      return verifyLink(await deps.linkKey(), claims, sig);
    },

    /** Opens the plain archive of a completed backup (already found in the caller's account). */
    async open(backup: repo.BackupRow): Promise<Readable> {
      if (!deps.backupDir)
        throw unavailable(
          'Downloads need the backup directory on this server (BULWARK_BACKUP_DIR; ADR 0023)',
        );
      if (!deps.box) throw unavailable('The server has no master key configured');
      const sealed = await repo.findWrappedKey(deps.db, backup.id);
      if (!sealed || sealed.account_id !== backup.account_id)
        throw new AppError('not_found', 'Backup not found');
      const file = await archivePath(deps.backupDir, backup.database_id, backup.id);
      const key = Buffer.from(deps.box.open(sealed.wrapped_key, backupKeyContext(backup.id)), 'base64url');
      return openPlainArchive(file, key, { backupId: backup.id, databaseId: backup.database_id }, deps.log);
    },
  };
}

export type BackupDownloads = ReturnType<typeof createBackupDownloads>;
