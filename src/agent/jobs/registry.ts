import type { ExecutionExecutor } from '../execution/executor.ts';
import type { ExplorerExecutor } from '../explorer/explorer-executor.ts';
import type { DatabaseJobDeps } from './database-common.ts';
import { databaseHandlers } from './database-handlers.ts';
import { explorerHandlers } from './explorer-query.ts';
import type { JobHandler } from './job-context.ts';
import { nodePing } from './node-ping.ts';
import { requestExecuteHandlers } from './request-execute.ts';

/**
 * Job kinds this agent can run. The agent refuses any kind not listed here. The database
 * jobs are offered only by an agent that manages a pooler; the explorer jobs by one given an
 * explorer executor.
 */
export function defaultHandlers(
  deps: { database?: DatabaseJobDeps; explorer?: ExplorerExecutor; execution?: ExecutionExecutor } = {},
): Map<string, JobHandler> {
  return new Map<string, JobHandler>([
    ['node.ping', nodePing],
    ...(deps.database ? databaseHandlers(deps.database) : []),
    ...(deps.explorer ? explorerHandlers({ executor: deps.explorer }) : []),
    ...(deps.execution ? requestExecuteHandlers({ executor: deps.execution }) : []),
  ]);
}
