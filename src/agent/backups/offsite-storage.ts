/**
 * The local backup dir with an off-site copy in S3 (ADR 0022 "Off-site copies"):
 * - a backup is written and verified locally as always, then copied to the bucket
 *   (`copyOffsite`, called by `backup.create` before it reports success); a failed copy fails
 *   the backup, which removes both copies (the queue retries);
 * - reads (restores, drills) use the local archive, and the object when the local file is gone
 *   (a lost disk, a new host): either is verified whole against the backup's record first;
 *   a drill also reads the object whole and verifies it (`offsite`), so both copies are proven;
 * - `remove` removes both (`backup.delete`, and a failed or retried backup).
 */
import { pipeline } from 'node:stream/promises';
import type { BackupStorage } from './backup-storage.ts';
import type { S3Storage } from './s3-storage.ts';

export function withOffsiteCopy(local: BackupStorage, offsite: S3Storage): BackupStorage {
  return {
    // The tag names the local dir: scratch databases and restore logins are this agent's.
    tag: local.tag,
    pathOf: local.pathOf,
    create: local.create,
    sweepPartials: local.sweepPartials,
    offsite,
    async exists(ref) {
      return (await local.exists(ref)) || (await offsite.exists(ref));
    },
    async open(ref) {
      if (await local.exists(ref)) return local.open(ref);
      return offsite.open(ref);
    },
    async remove(ref) {
      // Both are attempted whatever the other does (the local file goes even if S3 is down).
      const [a, b] = await Promise.allSettled([local.remove(ref), offsite.remove(ref)]);
      if (a.status === 'rejected') throw a.reason;
      if (b.status === 'rejected') throw b.reason;
      return a.value || b.value;
    },
    async copyOffsite(ref) {
      const src = await local.open(ref);
      try {
        // A copy of an earlier attempt of this backup id (never reported) goes first.
        await offsite.remove(ref);
        const pending = await offsite.create(ref, src.size);
        try {
          await pipeline(src.stream(), pending.stream);
        } catch (err) {
          await pending.abort();
          throw err;
        }
        const { sizeBytes } = await pending.commit();
        if (sizeBytes !== src.size) {
          await offsite.remove(ref).catch(() => {});
          throw new Error('the off-site copy does not have the archive size');
        }
        return { key: offsite.keyOf(ref), sizeBytes };
      } finally {
        await src.close().catch(() => {});
      }
    },
  };
}
