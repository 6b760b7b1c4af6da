import { BACKUP_JOB_KINDS, backupDeletePayloadSchema } from '../../shared/contracts/backups.ts';
import { parsePayload } from '../jobs/database-common.ts';
import type { JobHandler } from '../jobs/job-context.ts';
import { backupCreate } from './backup-create.ts';
import type { BackupJobDeps } from './backup-deps.ts';
import { backupDownload } from './backup-download.ts';
import { withProgress } from './backup-progress.ts';
import { backupDrill, backupRestore } from './backup-restore.ts';

/** `backup.delete`: removes the archive (and any `.partial` of it); idempotent. */
export function backupDelete(deps: Pick<BackupJobDeps, 'storage'>): JobHandler {
  return async (payload) => {
    const p = parsePayload(backupDeletePayloadSchema, payload);
    const deleted = await deps.storage.remove({ databaseId: p.database_id, backupId: p.backup_id });
    return { deleted };
  };
}

/** The backup job kinds (issue 15), offered by an agent that manages a pooler and has pg_dump. */
export function backupHandlers(deps: BackupJobDeps): [string, JobHandler][] {
  return [
    // Long work reports its phase and bytes while it runs (backup-progress.ts).
    [BACKUP_JOB_KINDS.create, withProgress(deps, backupCreate)],
    [BACKUP_JOB_KINDS.restore, withProgress(deps, backupRestore)],
    [BACKUP_JOB_KINDS.drill, withProgress(deps, backupDrill)],
    [BACKUP_JOB_KINDS.delete, backupDelete(deps)],
    [BACKUP_JOB_KINDS.download, backupDownload(deps)],
  ];
}
