/**
 * `backup.download` (ADR 0023): sends the archive of a backup, as stored (encrypted, compressed),
 * to the download waiting for it on the server, which decrypts and checks it as it forwards it.
 * This agent needs no key for it, and the server never reads this node's files. The archive is
 * read from the local backup dir (or, when only the off-site copy is left, from there).
 */
import { backupDownloadPayloadSchema } from '../../shared/contracts/backups.ts';
import { parsePayload } from '../jobs/database-common.ts';
import { JOB_REPORTED, type JobHandler, PermanentJobError } from '../jobs/job-context.ts';
import type { BackupJobDeps } from './backup-deps.ts';

export function backupDownload(deps: Pick<BackupJobDeps, 'storage'>): JobHandler {
  return async (payload, ctx) => {
    const p = parsePayload(backupDownloadPayloadSchema, payload);
    if (!ctx.streamArchive) throw new PermanentJobError('this agent cannot stream archives');
    const ref = { databaseId: p.database_id, backupId: p.backup_id };
    let store = deps.storage;
    if (!(await store.exists(ref))) {
      if (deps.storage.offsite && (await deps.storage.offsite.exists(ref))) store = deps.storage.offsite;
      // Said without a path: the reason reaches the client.
      else throw new PermanentJobError('the archive of this backup is not on its node');
    }
    const opened = await store.open(ref);
    try {
      const relayed = await ctx.streamArchive(p.stream_token, opened.stream());
      ctx.log.info({ backup_id: p.backup_id, bytes: relayed }, 'archive sent to its download');
    } catch (err) {
      // The download ended (client gone, archive refused, server gone): never retried.
      throw new PermanentJobError(`the archive was not delivered: ${(err as Error).message}`.slice(0, 500));
    } finally {
      await opened.close().catch(() => {});
    }
    // The server completed the job when the download ended whole.
    return JOB_REPORTED;
  };
}
