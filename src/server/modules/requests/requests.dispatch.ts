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
import type { ExplorerChannel, ExplorerChannels } from '../explorer/explorer.channel.ts';
import type { JobNotifier } from '../jobs/job-notifier.ts';
import { enqueueJob, JOBS_CHANNEL, type JobRow } from '../jobs/jobs.repo.ts';
import * as deliveries from './requests.deliveries.repo.ts';
import type { OutcomeApplier, Settlement } from './requests.outcome.ts';
import type * as repo from './requests.repo.ts';

export type ExecutionSigner = { sign(claims: ExecutionClaims): string };

export type Delivery = {
  executionId: string;
  jti: string;
  mode: 'execute' | 'dry_run';
  row: repo.RequestRow;
};

/** The key a settled delivery's waiters are woken with (NOTIFY on the jobs channel). */
const settledKey = (executionId: string) => `request-exec:${executionId}`;
/** The key a finished preflight job's waiter is woken with. */
const jobKey = (jobId: number) => `request-job:${jobId}`;

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

  /** What is signed and sent: the token binds the exact SQL, the mode and (writes) the approved count. */
  type Target = {
    requestId: string;
    databaseId: string;
    database: string;
    nodeId: string;
    capability: 'reader' | 'migrator';
    sql: string;
    mode: 'execute' | 'dry_run';
    jti: string;
    approvedRows: number | null;
  };
  const sign = (t: Target, timeoutMs: number): ExecutePayload => {
    const now = Math.floor(Date.now() / 1000);
    const token = deps.signer.sign({
      request_id: t.requestId,
      database: t.database,
      node: t.nodeId,
      capability: t.capability,
      mode: t.mode,
      sql_sha256: sqlSha256(t.sql),
      approved_rows: t.approvedRows,
      jti: t.jti,
      iat: now,
      exp: now + EXECUTION_TOKEN_TTL_SECONDS,
    });
    return {
      database_id: t.databaseId,
      name: t.database,
      request_id: t.requestId,
      token,
      sql: t.sql,
      mode: t.mode,
      capability: t.capability,
      statement_timeout_ms: timeoutMs,
      lock_timeout_ms: EXECUTION_LIMITS.defaultLockTimeoutMs,
      row_limit: EXECUTION_LIMITS.defaultRows,
      byte_limit: EXECUTION_LIMITS.defaultBytes,
      explain: t.mode === 'dry_run',
    };
  };

  const payloadOf = (d: Delivery, timeoutMs: number): ExecutePayload => {
    const dml = d.row.class === 'write' || d.row.class === 'destructive';
    return sign(
      {
        requestId: d.row.id,
        databaseId: d.row.database_id,
        // The agent runs it on the database's name on the node (a warm-pool spare's, ADR 0034).
        database: d.row.database_physical,
        nodeId: d.row.node_id,
        capability: d.row.capability,
        sql: d.row.sql ?? '',
        mode: d.mode,
        jti: d.jti,
        approvedRows:
          d.mode === 'execute' && dml && d.row.approved_rows !== null ? Number(d.row.approved_rows) : null,
      },
      timeoutMs,
    );
  };

  /** A channel answer as a settlement (no answer after sending: unknown; a dry run: nothing ran). */
  const fromChannel = (
    outcome: Exclude<Awaited<ReturnType<ExplorerChannel['execute']>>, 'unsent'>,
    mode: 'execute' | 'dry_run',
  ): Settlement => {
    const s: Settlement =
      typeof outcome === 'object'
        ? 'died' in outcome
          ? { kind: 'unknown', why: outcome.died }
          : outcome
        : outcome === 'timeout'
          ? { kind: 'unknown', why: 'no answer in time' }
          : { kind: 'unknown', why: 'the server is shutting down' };
    return mode === 'dry_run' && s.kind === 'unknown' ? { kind: 'not_taken', why: s.why } : s;
  };

  const settle = (executionId: string, s: Settlement) =>
    withTx(db, (tx) => deps.applier.apply(tx, { id: executionId }, s));

  /** Waits until the delivery row is settled (by the job hook), bounded. */
  const waitSettled = async (executionId: string, deadline: number): Promise<boolean> => {
    for (let round = 0; round < 100_000; round++) {
      const sub = deps.notifier.subscribe(settledKey(executionId));
      const status = await deliveries.executionStatus(db, executionId);
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
      await deliveries.setDelivery(tx, d.executionId, 'queue', j.id);
      return j;
    });
    if (await waitSettled(d.executionId, Date.now() + waitMs)) return;
    // Not settled in time: a job nobody claimed is ended (nothing ran); a claimed one is left to
    // finish (its hook settles the request whenever the agent answers).
    const ended = await withTx(db, (tx) =>
      deliveries.endQueuedJob(tx, job.id, 'no node took the request in time'),
    );
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
        await deliveries.setDelivery(db, d.executionId, 'channel', null);
        const outcome = await channel.execute(payload, waitMs, deps.stopping);
        if (outcome !== 'unsent') {
          await settle(d.executionId, fromChannel(outcome, d.mode));
          return;
        }
        log.info({ request: d.row.id }, 'execution channel closed before sending; using the job queue');
      }
      await viaQueue(d, payload, waitMs);
    },

    /**
     * A preflight's dry run (no request: nothing is stored but a job's counts): the channel when
     * this server holds one, else a job whose outcome is read back here and then scrubbed.
     */
    async preflightDryRun(
      target: { databaseId: string; database: string; nodeId: string; accountId: string },
      sql: string,
      capability: 'reader' | 'migrator',
      opts: { statementTimeoutMs: number; waitMs: number },
    ): Promise<Settlement> {
      const payload = sign(
        {
          ...target,
          requestId: randomUUID(),
          capability,
          sql,
          mode: 'dry_run',
          jti: randomUUID(),
          approvedRows: null,
        },
        opts.statementTimeoutMs,
      );
      const channel = deps.channels?.pick(target.nodeId);
      if (channel) {
        const outcome = await channel.execute(payload, opts.waitMs, deps.stopping);
        if (outcome !== 'unsent') return fromChannel(outcome, 'dry_run');
      }
      const job = await enqueueJob(db, {
        nodeId: target.nodeId,
        accountId: target.accountId,
        kind: EXECUTION_JOB_KINDS.execute,
        payload,
        maxAttempts: 1,
      });
      const deadline = Date.now() + opts.waitMs;
      for (let round = 0; round < 100_000; round++) {
        const sub = deps.notifier.subscribe(jobKey(job.id));
        const state = await deliveries.preflightJob(db, job.id);
        if (state && state.status !== 'queued' && state.status !== 'running') {
          sub.cancel();
          await deliveries.scrubJob(db, job.id, null);
          const parsed = executionOutcomeSchema.safeParse(state.result);
          if (state.status === 'succeeded' && parsed.success) return parsed.data;
          return { kind: 'not_taken', why: state.last_error ?? 'the node failed the dry run' };
        }
        const left = deadline - Date.now();
        if (left <= 0 || deps.stopping.aborted) {
          sub.cancel();
          break;
        }
        await sub.wait(Math.min(left, 1_000), deps.stopping);
      }
      await withTx(db, (tx) => deliveries.endQueuedJob(tx, job.id, 'no node took the dry run in time'));
      return { kind: 'not_taken', why: 'no node took the dry run in time' };
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
      if (!exec) {
        // A preflight's dry run (no delivery row): its waiter reads the counts and plans, then
        // scrubs them; rows never stay.
        await deliveries.scrubJob(
          tx,
          Number(job.id),
          job.status === 'succeeded' && s.kind === 'executed' ? { ...s, result: null } : null,
        );
        await tx.query('SELECT pg_notify($1, $2)', [JOBS_CHANNEL, jobKey(Number(job.id))]);
        return;
      }
      // Counts only in the job row: no SQL, no token, no rows.
      await deliveries.scrubJob(
        tx,
        Number(job.id),
        job.status === 'succeeded'
          ? { kind: s.kind, ...('affected_rows' in s ? { affected_rows: s.affected_rows } : {}) }
          : null,
      );
      await tx.query('SELECT pg_notify($1, $2)', [JOBS_CHANNEL, settledKey(exec.id)]);
    },

    /** A fresh delivery id pair. */
    newJti: () => randomUUID(),
    sqlSha256,
  };
}

export type Dispatch = ReturnType<typeof createDispatch>;
