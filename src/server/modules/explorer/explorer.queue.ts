/**
 * The explorer's fallback path (ADR 0008): a request becomes an `explorer.query` / `explorer.schema`
 * job (one attempt) for the node's job loop; the agent posts the outcome to
 * `POST /v1/agent/jobs/:id/explorer-result`, which completes the job (metadata only) and hands the
 * outcome to the waiting request through the UNLOGGED `explorer_results` table (NOTIFY wakes the
 * replica that waits). Used when this replica holds no explorer channel for the node (ADR 0009).
 */
import type { Logger } from 'pino';
import {
  type ExplorerOutcome,
  explorerResultBodySchema,
  jobResultOf,
} from '../../../shared/contracts/explorer-channel.ts';
import { notFound } from '../../../shared/errors.ts';
import { type Db, type Tx, withTx } from '../../db/pool.ts';
import type * as databasesRepo from '../databases/databases.repo.ts';
import type { JobNotifier } from '../jobs/job-notifier.ts';
import { enqueueJob, findLeasedJob, type JobRow } from '../jobs/jobs.repo.ts';
import type { AgentIdentity } from '../nodes/nodes.service.ts';
import type { RequestOutcome as Outcome } from './explorer.channel.ts';
import * as repo from './explorer.repo.ts';

export function createExplorerQueue(deps: {
  db: Db;
  notifier: Pick<JobNotifier, 'subscribe' | 'wake'>;
  log: Logger;
  /** Aborted when the server shuts down (the signal given to run() includes it). */
  stopping: AbortSignal;
  /** Sweep interval of uncollected results and left-over SQL (default 30 s). */
  sweepMs?: number | undefined;
}) {
  const { db, notifier, log } = deps;

  /** Waits for the agent's hand-over; stops early when the job died without one. */
  const waitForOutcome = async (jobId: number, deadline: number, signal: AbortSignal): Promise<Outcome> => {
    const key = repo.resultKey(jobId);
    for (let round = 0; round < 100_000; round++) {
      const sub = notifier.subscribe(key);
      const body = await repo.takeResult(db, jobId);
      if (body) {
        sub.cancel();
        return explorerResultBodySchema.shape.outcome.parse(JSON.parse(body.toString('utf8')));
      }
      if (round > 0) {
        const state = await repo.jobState(db, jobId);
        if (state && state.status !== 'queued' && state.status !== 'running') {
          sub.cancel();
          if ((await repo.takeResult(db, jobId)) === null) return { died: state.last_error ?? 'unknown' };
        }
      }
      const left = deadline - Date.now();
      if (signal.aborted || left <= 0) {
        sub.cancel();
        return signal.aborted ? 'aborted' : 'timeout';
      }
      // Re-check at least every second: a lost NOTIFY costs a second, never the request.
      if ((await sub.wait(Math.min(left, 1_000), signal)) === 'aborted') return 'aborted';
    }
    return 'timeout';
  };

  /** Queues the job, waits, and ends the job if the request gives up (client gone or too slow). */
  const run = async (
    row: databasesRepo.DatabaseRow,
    kind: string,
    payload: Record<string, unknown>,
    waitMs: number,
    signal: AbortSignal,
  ) => {
    // An explorer job lost in a crash only fails its request: no need to wait for the WAL flush.
    const job = await withTx(db, async (tx) => {
      await tx.query("SET LOCAL synchronous_commit = 'off'");
      return enqueueJob(tx, {
        nodeId: row.node_id,
        accountId: row.account_id,
        kind,
        payload,
        maxAttempts: 1,
      });
    });
    const outcome = await waitForOutcome(job.id, Date.now() + waitMs, signal);
    if (outcome === 'aborted' || outcome === 'timeout') {
      const why =
        outcome === 'timeout'
          ? 'no result in time'
          : deps.stopping.aborted
            ? 'cancelled: the server is shutting down'
            : 'cancelled: the client went away';
      await withTx(db, async (tx) => {
        const ended = await repo.endJob(tx, job.id, why);
        if (ended) await repo.scrubJob(tx, ended.id);
      });
      await repo.takeResult(db, job.id); // a result that raced in is dropped, not kept
    }
    return outcome;
  };

  const sweep = async () => {
    try {
      const dropped = await repo.sweepResults(db);
      const scrubbed = await repo.scrubFinished(db);
      if (dropped || scrubbed) log.info({ dropped, scrubbed }, 'explorer sweep');
    } catch (err) {
      log.warn({ err: { message: (err as Error).message } }, 'explorer sweep failed');
    }
  };
  const sweeper = setInterval(() => void sweep(), deps.sweepMs ?? 30_000);
  sweeper.unref();

  return {
    /** Queues the request as a job and waits for its outcome (bounded by `waitMs` and `signal`). */
    run,

    /** Agent → server: the rows of a job this agent holds the lease of. */
    async receiveResult(agent: AgentIdentity, jobId: number, attempt: number, outcome: ExplorerOutcome) {
      // Result and completion in one statement: the job row gets metadata only, its SQL goes.
      // Not waiting for the WAL flush is safe here: a crash loses the waiting request anyway.
      const body = Buffer.from(JSON.stringify(outcome), 'utf8');
      const stored = await withTx(db, async (tx) => {
        await tx.query("SET LOCAL synchronous_commit = 'off'");
        return repo.completeWithResult(
          tx,
          { id: jobId, nodeId: agent.nodeId, attempt },
          jobResultOf(outcome),
          body,
        );
      });
      if (!stored) throw notFound('Job lease');
      notifier.wake(repo.resultKey(jobId)); // same replica: no need to wait for the NOTIFY
      return { accepted: true };
    },

    /** Agent → server: does this agent still hold the job (false once the request gave up)? */
    async leaseActive(agent: AgentIdentity, jobId: number, attempt: number) {
      return { active: (await findLeasedJob(db, jobId, agent.nodeId, attempt)) !== null };
    },

    /** Registered for `explorer.` jobs: the SQL leaves the job row when the job finishes. */
    async onJobFinished(tx: Tx, job: JobRow): Promise<void> {
      await repo.scrubJob(tx, job.id);
    },

    /** Drops uncollected results and SQL left in finished jobs (also runs every `sweepMs`). */
    sweep,

    close() {
      clearInterval(sweeper);
    },
  };
}
