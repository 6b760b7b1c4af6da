/**
 * Delivery of a governed execution (or dry run) to the database's node (issue 14, "Signed
 * execution"): a 5-minute Ed25519 token binding the request, database, node, mode, capability,
 * the SQL's SHA-256 and the approved row count, sent down the node's channel when this process
 * holds one (`execute` frame: no poll interval anywhere), else queued as a `request.execute` job
 * (the agent completes it with the same outcome; the job hook settles the request).
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import {
  EXECUTION_JOB_KINDS,
  EXECUTION_LIMITS,
  type ExecutePayload,
  executionOutcomeSchema,
} from '../../../shared/contracts/execution.ts';
import {
  EXECUTION_TOKEN_TTL_SECONDS,
  type ExecutionClaims,
  sqlSha256,
} from '../../../shared/execution-token.ts';
import { type Db, type Tx, withTx } from '../../db/pool.ts';
import type { ExplorerChannels } from '../explorer/explorer.channel.ts';
import type { JobNotifier } from '../jobs/job-notifier.ts';
import { enqueueJob, JOBS_CHANNEL, type JobRow } from '../jobs/jobs.repo.ts';
import type { OutcomeApplier, Settlement } from './requests.outcome.ts';
import * as repo from './requests.repo.ts';

export type ExecutionSigner = { sign(claims: ExecutionClaims): string };

export type Delivery = {
  executionId: string;
  jti: string;
  mode: 'execute' | 'dry_run';
  row: repo.RequestRow;
};

/** The key a settled delivery's waiters are woken with (NOTIFY on the jobs channel). */
const settledKey = (executionId: string) => `request-exec:${executionId}`;

export function createDispatch(deps: {
  db: Db;
  notifier: Pick<JobNotifier, 'subscribe' | 'wake'>;
  log: Logger;
  signer: ExecutionSigner;
  channels?: Pick<ExplorerChannels, 'pick'> | undefined;
  applier: OutcomeApplier;
  stopping: AbortSignal;
  statementTimeoutMs?: number;
  /** How long a delivery waits beyond the statement timeout (queue pick-up and round trip). */
  marginMs?: number;
}) {
  const { db, log } = deps;
  const statementTimeoutMs = deps.statementTimeoutMs ?? EXECUTION_LIMITS.defaultStatementTimeoutMs;
  const marginMs = deps.marginMs ?? 10_000;

  const payloadOf = (d: Delivery, timeoutMs: number): ExecutePayload => {
    const sql = d.row.sql ?? '';
    const now = Math.floor(Date.now() / 1000);
    const dml = d.row.class === 'write' || d.row.class === 'destructive';
    const token = deps.signer.sign({
      request_id: d.row.id,
      database: d.row.database,
      node: d.row.node_id,
      capability: d.row.capability,
      mode: d.mode,
      sql_sha256: sqlSha256(sql),
      approved_rows:
        d.mode === 'execute' && dml && d.row.approved_rows !== null ? Number(d.row.approved_rows) : null,
      jti: d.jti,
      iat: now,
      exp: now + EXECUTION_TOKEN_TTL_SECONDS,
    });
    return {
      database_id: d.row.database_id,
      name: d.row.database,
      request_id: d.row.id,
      token,
      sql,
      mode: d.mode,
      capability: d.row.capability,
      statement_timeout_ms: timeoutMs,
      lock_timeout_ms: EXECUTION_LIMITS.defaultLockTimeoutMs,
      row_limit: EXECUTION_LIMITS.defaultRows,
      byte_limit: EXECUTION_LIMITS.defaultBytes,
      explain: d.mode === 'dry_run',
    };
  };

  const settle = (executionId: string, s: Settlement) =>
    withTx(db, (tx) => deps.applier.apply(tx, { id: executionId }, s));

  /** Waits until the delivery row is settled (by the job hook), bounded. */
  const waitSettled = async (executionId: string, deadline: number): Promise<boolean> => {
    for (let round = 0; round < 100_000; round++) {
      const sub = deps.notifier.subscribe(settledKey(executionId));
      const status = await repo.executionStatus(db, executionId);
      if (status !== 'running') {
        sub.cancel();
        return true;
      }
      const left = deadline - Date.now();
      if (left <= 0 || deps.stopping.aborted) {
        sub.cancel();
        return false;
      }
      // Re-checked at least every second: a lost NOTIFY costs a second, never the request.
      await sub.wait(Math.min(left, 1_000), deps.stopping);
    }
    return false;
  };

  const viaQueue = async (d: Delivery, payload: ExecutePayload, waitMs: number): Promise<void> => {
    const job = await withTx(db, async (tx) => {
      const j = await enqueueJob(tx, {
        nodeId: d.row.node_id,
        accountId: d.row.account_id,
        kind: EXECUTION_JOB_KINDS.execute,
        payload,
        maxAttempts: 1,
      });
      await repo.setDelivery(tx, d.executionId, 'queue', j.id);
      return j;
    });
    if (await waitSettled(d.executionId, Date.now() + waitMs)) return;
    // Not settled in time: a job nobody claimed is ended (nothing ran); a claimed one is left to
    // finish (its hook settles the request whenever the agent answers).
    const ended = await withTx(db, (tx) => repo.endQueuedJob(tx, job.id, 'no node took the request in time'));
    if (ended) await settle(d.executionId, { kind: 'not_taken', why: 'no node took the request in time' });
  };

  return {
    /**
     * Delivers and waits (bounded) until the delivery is settled on the request — by the channel's
     * answer here, or by the job's hook. Returns when settled or given up (the request then shows
     * `executing` until the node answers, or the no-answer failure).
     */
    async deliver(d: Delivery, opts: { waitMs?: number; statementTimeoutMs?: number } = {}): Promise<void> {
      const timeoutMs = opts.statementTimeoutMs ?? statementTimeoutMs;
      const waitMs = opts.waitMs ?? timeoutMs + marginMs;
      const payload = payloadOf(d, timeoutMs);
      const channel = deps.channels?.pick(d.row.node_id);
      if (channel) {
        await repo.setDelivery(db, d.executionId, 'channel', null);
        const outcome = await channel.execute(payload, waitMs, deps.stopping);
        if (outcome !== 'unsent') {
          const s: Settlement =
            typeof outcome === 'object'
              ? 'died' in outcome
                ? { kind: 'unknown', why: outcome.died }
                : outcome
              : outcome === 'timeout'
                ? { kind: 'unknown', why: 'no answer in time' }
                : { kind: 'unknown', why: 'the server is shutting down' };
          // A dry run that got no answer changed nothing: say so rather than "may have run".
          const settled: Settlement =
            d.mode === 'dry_run' && s.kind === 'unknown' ? { kind: 'not_taken', why: s.why } : s;
          await settle(d.executionId, settled);
          return;
        }
        log.info({ request: d.row.id }, 'execution channel closed before sending; using the job queue');
      }
      await viaQueue(d, payload, waitMs);
    },

    /** Registered for `request.` jobs: settles the request in the job's transaction, scrubs the job. */
    async onJobFinished(tx: Tx, job: JobRow): Promise<void> {
      if (job.kind !== EXECUTION_JOB_KINDS.execute) return;
      let s: Settlement;
      if (job.status === 'succeeded') {
        const parsed = executionOutcomeSchema.safeParse(job.result);
        s = parsed.success
          ? parsed.data
          : { kind: 'unknown', why: 'the node answered with an unreadable outcome' };
      } else {
        s = { kind: 'unknown', why: (job.last_error ?? 'the job failed').slice(0, 500) };
      }
      const exec = await deps.applier.apply(tx, { jobId: Number(job.id) }, s);
      // Counts only in the job row: no SQL, no token, no rows.
      await repo.scrubJob(
        tx,
        Number(job.id),
        job.status === 'succeeded'
          ? { kind: s.kind, ...('affected_rows' in s ? { affected_rows: s.affected_rows } : {}) }
          : null,
      );
      if (exec) await tx.query('SELECT pg_notify($1, $2)', [JOBS_CHANNEL, settledKey(exec.id)]);
    },

    /** A fresh delivery id pair. */
    newJti: () => randomUUID(),
    sqlSha256,
  };
}

export type Dispatch = ReturnType<typeof createDispatch>;
