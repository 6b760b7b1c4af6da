import { EXECUTION_JOB_KINDS, executePayloadSchema } from '../../shared/contracts/execution.ts';
import type { ExecutionExecutor } from '../execution/executor.ts';
import { parsePayload } from './database-common.ts';
import type { JobHandler } from './job-context.ts';

/**
 * `request.execute`: the fallback delivery of a governed execution when the server holds no
 * channel of this node (contracts/execution.ts). The same executor as the channel's `execute`
 * frame; the job completes with the ExecutionOutcome. The executor never throws, so the job is
 * never retried by failing; and a job re-leased after a crash mid-run meets its token's jti in
 * the durable replay cache (`replayed`): an execution runs at most once.
 */
export function requestExecuteHandlers(deps: { executor: ExecutionExecutor }): [string, JobHandler][] {
  const execute: JobHandler = async (payload, ctx) => {
    const p = parsePayload(executePayloadSchema, payload);
    return (await deps.executor.execute(p, ctx.signal)) as Record<string, unknown>;
  };
  return [[EXECUTION_JOB_KINDS.execute, execute]];
}
