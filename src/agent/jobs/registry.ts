import type { BackupJobDeps } from '../backups/backup-deps.ts';
import { backupHandlers } from '../backups/backup-handlers.ts';
import type { ExecutionExecutor } from '../execution/executor.ts';
import type { ExplorerExecutor } from '../explorer/explorer-executor.ts';
import { type AccessGrantDeps, accessHandlers } from './access-grant.ts';
import type { DatabaseJobDeps } from './database-common.ts';
import { databaseHandlers } from './database-handlers.ts';
import { moveHandlers } from './database-move.ts';
import { explorerHandlers } from './explorer-query.ts';
import type { JobHandler } from './job-context.ts';
import { nodePing } from './node-ping.ts';
import { requestExecuteHandlers } from './request-execute.ts';

/**
 * Job kinds this agent can run. The agent refuses any kind not listed here. The database
 * jobs are offered only by an agent that manages a pooler; the explorer jobs by one given an
 * explorer executor; the just-in-time credential jobs by one that manages a pooler and verifies
 * execution tokens; the backup jobs by one that manages a pooler and has pg_dump/pg_restore.
 */
export function defaultHandlers(
  deps: {
    database?: DatabaseJobDeps;
    explorer?: ExplorerExecutor;
    execution?: ExecutionExecutor;
    access?: AccessGrantDeps;
    backup?: BackupJobDeps;
  } = {},
): Map<string, JobHandler> {
  return new Map<string, JobHandler>([
    ['node.ping', nodePing],
    ...(deps.database ? databaseHandlers(deps.database) : []),
    ...(deps.explorer ? explorerHandlers({ executor: deps.explorer }) : []),
    ...(deps.execution ? requestExecuteHandlers({ executor: deps.execution }) : []),
    ...(deps.access ? accessHandlers(deps.access) : []),
    ...(deps.backup ? backupHandlers(deps.backup) : []),
    // Moves between nodes reuse the backup pipeline (ADR 0031).
    ...(deps.backup ? moveHandlers(deps.backup) : []),
  ]);
}
