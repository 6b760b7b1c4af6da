import {
  EXPLORER_JOB_KINDS,
  queryPayloadSchema,
  schemaPayloadSchema,
} from '../../shared/contracts/explorer-channel.ts';
import type { ExplorerExecutor } from '../explorer/explorer-executor.ts';
import { parsePayload } from './database-common.ts';
import { JOB_REPORTED, type JobContext, type JobHandler, PermanentJobError } from './job-context.ts';

/** How often a running query asks whether its job still stands (client gone → cancel). */
const LEASE_CHECK_MS = 200;

/** Polls the lease while `work` runs; aborts `controller` as soon as the server ended the job. */
async function whileLeased<T>(ctx: JobContext, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  // Never rejects (it runs from a timer: a rejection there would be unhandled and end the agent).
  const check = async () => {
    if (stopped) return;
    let active: boolean | undefined = true;
    try {
      active = await ctx.leaseActive?.();
    } catch {}
    if (active === false) controller.abort();
    else if (!stopped) timer = setTimeout(() => void check().catch(() => {}), LEASE_CHECK_MS);
  };
  if (ctx.leaseActive) timer = setTimeout(() => void check().catch(() => {}), LEASE_CHECK_MS);
  try {
    const out = await work(AbortSignal.any([ctx.signal, controller.signal]));
    if (controller.signal.aborted) throw new PermanentJobError('cancelled: the server ended this job');
    return out;
  } finally {
    stopped = true;
    clearTimeout(timer);
  }
}

const requireSender = (ctx: JobContext) => {
  if (!ctx.sendResult) throw new PermanentJobError('this agent cannot hand explorer results to the server');
  return ctx.sendResult;
};

/** `explorer.query` and `explorer.schema` (issue 6). Never retried: a query runs at most once. */
export function explorerHandlers(deps: { executor: ExplorerExecutor }): [string, JobHandler][] {
  const query: JobHandler = async (payload, ctx) => {
    const p = parsePayload(queryPayloadSchema, payload);
    const send = requireSender(ctx);
    const outcome = await whileLeased(ctx, (signal) => deps.executor.runQuery(p, signal));
    // The server completes the job when it receives the result (metadata only in the job row).
    await send(outcome);
    return JOB_REPORTED;
  };

  const schema: JobHandler = async (payload, ctx) => {
    const p = parsePayload(schemaPayloadSchema, payload);
    const send = requireSender(ctx);
    await send({ kind: 'schema', output: await deps.executor.readSchema(p) });
    return JOB_REPORTED;
  };

  return [
    [EXPLORER_JOB_KINDS.query, query],
    [EXPLORER_JOB_KINDS.schema, schema],
  ];
}
