import type { Logger } from 'pino';
import { hashToken, keyHashesEqual } from '../../../shared/api-key.ts';
import { checkJobResult, JOB_KINDS } from '../../../shared/contracts/jobs.ts';
import { invalidJobResult, notFound, unauthorized } from '../../../shared/errors.ts';
import { type Db, type Queryable, withTx } from '../../db/pool.ts';
import { storableJson, storableText } from '../../db/storable.ts';
import { type AuditEventDraft, type AuditService, recordAudit } from '../audit/audit.service.ts';
import type { JobHooks } from '../jobs/job-hooks.ts';
import type { JobNotifier } from '../jobs/job-notifier.ts';
import {
  claimJob,
  completeJob,
  deadLetterExpiredLeases,
  failJob,
  type JobRow,
  lockRunningJob,
  nextWakeAt,
  releaseJob,
} from '../jobs/jobs.repo.ts';
import type { ServerMetrics } from '../metrics/server-metrics.ts';
import * as repo from './nodes.repo.ts';

export const AGENT_TOKEN_PATTERN = /^bwa_[A-Za-z0-9_-]{43}$/;
export const ENROLLMENT_TOKEN_PATTERN = /^bwe_[A-Za-z0-9_-]{43}$/;

export type AgentIdentity = { nodeId: string; nodeName: string };

/** Where an agent request came from, for its audit events. */
export type AgentRequestContext = {
  sourceIp: string | null;
  requestId: string | null;
  /** The caller's address is past its failure budget: a refusal is neither audited nor counted here (the caller counts it). */
  quiet?: boolean;
};

export type NodesServiceDeps = {
  db: Db;
  notifier: JobNotifier;
  log: Logger;
  /** Enrollments and agent refusals are audit events. */
  audit: Pick<AuditService, 'record' | 'recordNow'>;
  leaseMs: number;
  generateToken: (prefix: string) => string;
  /** Aborted when the server shuts down: open long-polls return at once. */
  shutdown: AbortSignal;
  /** Called in the transaction that finishes a job (done or dead-lettered). */
  hooks?: JobHooks;
  /** Called after a node's token was replaced (re-enrollment): its open channels must close. */
  onTokenReplaced?: (nodeId: string) => void;
  /** Counts refused agent tokens (auth failures by kind/reason). */
  metrics?: Pick<ServerMetrics, 'authFailures'>;
};

export function createNodesService(deps: NodesServiceDeps) {
  const { db, notifier, leaseMs, hooks, audit } = deps;

  /** Dead-letters expired last attempts with their hooks, before claimJob would do it without. */
  const expireLeases = async (nodeId: string) => {
    if (!hooks) return;
    await withTx(db, async (tx) => {
      const dead = await deadLetterExpiredLeases(tx, nodeId);
      for (const job of dead) await hooks.onJobFinished(tx, job);
      return dead;
    }).then((dead) => {
      for (const job of dead) hooks.committed(job);
    });
  };

  const event = (ctx: AgentRequestContext | undefined, e: AuditEventDraft): AuditEventDraft => ({
    actorType: 'agent',
    sourceIp: ctx?.sourceIp ?? null,
    requestId: ctx?.requestId ?? null,
    ...e,
  });
  /** A refusal is recorded in its own transaction; failing to record it must not turn it into a 500. */
  const refused = async (ctx: AgentRequestContext | undefined, e: AuditEventDraft, kind: string) => {
    if (ctx?.quiet) return;
    deps.metrics?.authFailures.inc({ kind, reason: String(e.details?.reason ?? 'invalid') });
    await audit
      .recordNow(event(ctx, e))
      .catch((err: Error) =>
        deps.log.error(
          { err: { message: err.message } },
          'could not record an agent refusal in the audit log',
        ),
      );
  };

  return {
    /** Exchanges a one-time enrollment token for a long-lived agent token (shown once). */
    async enroll(
      enrollmentToken: string,
      presentedVersion: string,
      ctx?: AgentRequestContext,
      pooler: repo.PoolerAddress | null = null,
    ): Promise<{ node: repo.NodeRow; agentToken: string }> {
      // Stored and audited whatever the caller sent (a NUL cannot be stored: see storable.ts).
      const agentVersion = storableText(presentedVersion);
      const failed = async (reason: string) => {
        await refused(
          ctx,
          { action: 'agent.enroll', outcome: 'failure', details: { reason, agent_version: agentVersion } },
          'enrollment_token',
        );
        return unauthorized('Invalid enrollment token');
      };
      if (!ENROLLMENT_TOKEN_PATTERN.test(enrollmentToken)) throw await failed('malformed_token');
      const agentToken = deps.generateToken('bwa_');
      const out = await withTx(db, async (tx) => {
        const name = await repo.redeemEnrollment(tx, hashToken(enrollmentToken));
        if (!name) return null;
        const replaced = await repo.nodeHasToken(tx, name);
        const node = await repo.upsertEnrolledNode(tx, name, hashToken(agentToken), agentVersion, pooler);
        const base = { actorId: node.id, targetType: 'node', targetId: node.id };
        await audit.record(
          tx,
          event(ctx, {
            ...base,
            action: 'agent.enroll',
            details: { node_name: name, agent_version: agentVersion },
          }),
        );
        if (replaced) {
          await audit.record(
            tx,
            event(ctx, { ...base, action: 'node.token_replaced', details: { node_name: name } }),
          );
        }
        return { node, agentToken };
      });
      if (!out) throw await failed('unknown_or_expired_token');
      deps.onTokenReplaced?.(out.node.id);
      return out;
    },

    /** Bearer agent token → node. Format checked before any lookup; hash compared in constant time. */
    async authenticateAgent(token: string | undefined, ctx?: AgentRequestContext): Promise<AgentIdentity> {
      const refuse = async (reason: string, nodeId: string | null = null) => {
        await refused(
          ctx,
          {
            action: 'agent.auth',
            outcome: 'denied',
            actorId: nodeId,
            targetType: nodeId ? 'node' : null,
            targetId: nodeId,
            details: { reason },
          },
          'agent_token',
        );
        return unauthorized('Invalid agent token');
      };
      if (!token) throw await refuse('missing_token');
      if (!AGENT_TOKEN_PATTERN.test(token)) throw await refuse('malformed_token');
      const hash = hashToken(token);
      const node = await repo.findNodeByTokenHash(db, hash);
      if (!node || !keyHashesEqual(node.token_hash, hash)) throw await refuse('unknown_token');
      if (node.status !== 'active') throw await refuse('node_disabled', node.id);
      return { nodeId: node.id, nodeName: node.name };
    },

    /** Whether a token an agent authenticated with earlier (its SHA-256) still opens this active node. */
    async tokenCurrent(nodeId: string, tokenHash: Buffer): Promise<boolean> {
      const node = await repo.findNodeByTokenHash(db, tokenHash);
      return node !== null && node.id === nodeId && node.status === 'active';
    },

    /**
     * Long-poll: returns the next job for the node as soon as there is one, or null when
     * waitMs passes. Wakes on NOTIFY (not a sleep loop), and at the moment a retry or an
     * expired lease becomes due.
     */
    async poll(agent: AgentIdentity, waitMs: number, requestSignal?: AbortSignal): Promise<JobRow | null> {
      const signal = requestSignal ? AbortSignal.any([requestSignal, deps.shutdown]) : deps.shutdown;
      const deadline = Date.now() + waitMs;
      await repo.recordHeartbeat(db, agent.nodeId, {});
      for (let round = 0; round < 10_000; round++) {
        const sub = notifier.subscribe(agent.nodeId);
        await expireLeases(agent.nodeId);
        const job = await claimJob(db, agent.nodeId, leaseMs);
        if (job) {
          sub.cancel();
          // The agent went away while we claimed: give the job back instead of letting it
          // wait for its lease to expire.
          if (requestSignal?.aborted) {
            await releaseJob(db, job.id, agent.nodeId, job.attempts);
            return null;
          }
          return job;
        }
        const now = Date.now();
        if (now >= deadline || signal.aborted) {
          sub.cancel();
          return null;
        }
        const due = await nextWakeAt(db, agent.nodeId);
        const until = Math.min(deadline, due ? due.getTime() + 5 : deadline);
        const outcome = await sub.wait(until - Date.now(), signal);
        if (outcome === 'aborted') return null;
      }
      return null;
    },

    /**
     * Records a job's result after checking it against its kind's schema (the job contract). A
     * result that does not match is never stored: the job is failed for good (a malformed result
     * will not become well-formed on retry) with the reason in `last_error`, then refused (422).
     */
    async complete(agent: AgentIdentity, jobId: number, attempt: number, result: Record<string, unknown>) {
      const outcome = await withTx(db, async (tx) => {
        const running = await lockRunningJob(tx, jobId, agent.nodeId, attempt);
        if (running === null) throw notFound('Job lease');
        // A create's outcome is derived again by its rerun (the same spare, found by its marker,
        // and the same derived password; the cold path's steps are idempotent): its commit need
        // not wait for the WAL flush, which a waiting `POST /v1/databases` would otherwise wait
        // for. Lost in a crash, the job's lease expires and the rerun records the same (ADR 0034).
        if (running.kind === JOB_KINDS.create) await tx.query('SET LOCAL synchronous_commit = off');
        const schema = checkJobResult(running.kind, result);
        // The job's own rules (e.g. a database name already taken on the node), and what of the
        // result is never stored (a password the agent set, sealed by the hook instead).
        const vetted = schema.ok && hooks ? await hooks.checkResult(tx, running, schema.result) : null;
        const checked = !schema.ok
          ? schema
          : vetted && !vetted.ok
            ? { ok: false as const, reason: vetted.reason, issues: [] }
            : schema;
        const stored = vetted?.ok ? vetted.stored : schema.ok ? schema.result : {};
        const job = checked.ok
          ? await completeJob(tx, jobId, agent.nodeId, attempt, stored)
          : await failJob(tx, jobId, agent.nodeId, attempt, `result refused: ${checked.reason}`, false);
        if (!job) throw notFound('Job lease');
        await hooks?.onJobFinished(tx, job, vetted?.ok ? vetted.withheld : {});
        return { job, checked };
      });
      hooks?.committed(outcome.job);
      if (!outcome.checked.ok) {
        deps.log.warn(
          { job: jobId, kind: outcome.job.kind, node: agent.nodeId },
          'job result refused; job failed',
        );
        throw invalidJobResult(`Job result refused, the job is failed: ${outcome.checked.reason}`, {
          issues: outcome.checked.issues,
        });
      }
      return outcome.job;
    },

    async fail(agent: AgentIdentity, jobId: number, attempt: number, error: string, retryable: boolean) {
      const job = await withTx(db, async (tx) => {
        // Kept (and audited by the job's hook) whatever the agent sent: a NUL cannot be stored.
        const job = await failJob(tx, jobId, agent.nodeId, attempt, storableText(error), retryable);
        if (!job) throw notFound('Job lease');
        await hooks?.onJobFinished(tx, job);
        return job;
      });
      hooks?.committed(job);
      return job;
    },

    async heartbeat(
      agent: AgentIdentity,
      info: {
        agentVersion?: string;
        pgVersion?: string;
        capabilities?: Record<string, unknown>;
        connections?: repo.NodeConnections;
        pooler?: repo.PoolerAddress;
      },
    ) {
      // Facts an agent reports are stored whatever they hold (a NUL cannot be: see storable.ts).
      await repo.recordHeartbeat(db, agent.nodeId, {
        ...info,
        ...(info.agentVersion === undefined ? {} : { agentVersion: storableText(info.agentVersion) }),
        ...(info.pgVersion === undefined ? {} : { pgVersion: storableText(info.pgVersion) }),
        ...(info.capabilities === undefined
          ? {}
          : { capabilities: storableJson(info.capabilities) as Record<string, unknown> }),
      });
    },

    /** Issues an enrollment token for a node name (operator action on the server host). */
    async createEnrollment(
      nodeName: string,
      ttlMinutes: number,
    ): Promise<{ token: string; expiresAt: Date }> {
      const token = deps.generateToken('bwe_');
      const expiresAt = new Date(Date.now() + ttlMinutes * 60_000);
      await withTx(db, (tx) =>
        storeEnrollment(tx, { nodeName, token, expiresAt, actorType: 'operator' }, audit.record),
      );
      return { token, expiresAt };
    },
  };
}

export type NodesService = ReturnType<typeof createNodesService>;

/**
 * Stores a one-time enrollment token (only its SHA-256) and records `node.enrollment_created`, in
 * the caller's transaction: an operator's command, or `bulwark up` enrolling its own agent. `record`
 * is the server's audit writer when there is one (`bulwark up` runs none: the plain writer).
 */
export async function storeEnrollment(
  tx: Queryable,
  e: {
    nodeName: string;
    token: string;
    expiresAt: Date;
    actorType: 'operator' | 'system' | 'user';
    /** A platform admin's enrollment (POST /v1/nodes/enrollments): who, from where. */
    actorId?: string;
    sourceIp?: string | null;
    requestId?: string | null;
  },
  record: AuditService['record'] = recordAudit,
): Promise<void> {
  await repo.insertEnrollment(tx, e.nodeName, hashToken(e.token), e.expiresAt);
  await record(tx, {
    action: 'node.enrollment_created',
    actorType: e.actorType,
    ...(e.actorId ? { actorId: e.actorId } : {}),
    ...(e.sourceIp ? { sourceIp: e.sourceIp } : {}),
    ...(e.requestId ? { requestId: e.requestId } : {}),
    targetType: 'node',
    targetId: e.nodeName,
    details: { node_name: e.nodeName, expires_at: e.expiresAt.toISOString() },
  });
}
