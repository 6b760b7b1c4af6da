import { BACKUP_JOB_KINDS, backupDeletePayloadSchema } from '../../shared/contracts/backups.ts';
import { parsePayload } from '../jobs/database-common.ts';
import type { JobHandler } from '../jobs/job-context.ts';
import { backupCreate } from './backup-create.ts';
import type { BackupJobDeps } from './backup-deps.ts';
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
    [BACKUP_JOB_KINDS.create, backupCreate(deps)],
    [BACKUP_JOB_KINDS.restore, backupRestore(deps)],
    [BACKUP_JOB_KINDS.drill, backupDrill(deps)],
    [BACKUP_JOB_KINDS.delete, backupDelete(deps)],
  ];
}
