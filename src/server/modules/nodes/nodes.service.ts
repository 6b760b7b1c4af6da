import type { Logger } from 'pino';
import { hashToken, keyHashesEqual } from '../../../shared/api-key.ts';
import { notFound, unauthorized } from '../../../shared/errors.ts';
import { type Db, withTx } from '../../db/pool.ts';
import type { JobNotifier } from '../jobs/job-notifier.ts';
import { claimJob, completeJob, failJob, type JobRow, nextWakeAt } from '../jobs/jobs.repo.ts';
import * as repo from './nodes.repo.ts';

export const AGENT_TOKEN_PATTERN = /^bwa_[A-Za-z0-9_-]{43}$/;
export const ENROLLMENT_TOKEN_PATTERN = /^bwe_[A-Za-z0-9_-]{43}$/;

export type AgentIdentity = { nodeId: string; nodeName: string };

export type NodesServiceDeps = {
  db: Db;
  notifier: JobNotifier;
  log: Logger;
  leaseMs: number;
  generateToken: (prefix: string) => string;
  /** Aborted when the server shuts down: open long-polls return at once. */
  shutdown: AbortSignal;
};

export function createNodesService(deps: NodesServiceDeps) {
  const { db, notifier, leaseMs } = deps;

  return {
    /** Exchanges a one-time enrollment token for a long-lived agent token (shown once). */
    async enroll(
      enrollmentToken: string,
      agentVersion: string,
    ): Promise<{ node: repo.NodeRow; agentToken: string }> {
      if (!ENROLLMENT_TOKEN_PATTERN.test(enrollmentToken)) throw unauthorized('Invalid enrollment token');
      const agentToken = deps.generateToken('bwa_');
      return withTx(db, async (tx) => {
        const name = await repo.redeemEnrollment(tx, hashToken(enrollmentToken));
        if (!name) throw unauthorized('Invalid enrollment token');
        const node = await repo.upsertEnrolledNode(tx, name, hashToken(agentToken), agentVersion);
        return { node, agentToken };
      });
    },

    /** Bearer agent token → node. Format checked before any lookup; hash compared in constant time. */
    async authenticateAgent(token: string | undefined): Promise<AgentIdentity> {
      if (!token || !AGENT_TOKEN_PATTERN.test(token)) throw unauthorized('Invalid agent token');
      const hash = hashToken(token);
      const node = await repo.findNodeByTokenHash(db, hash);
      if (!node || !keyHashesEqual(node.token_hash, hash) || node.status !== 'active') {
        throw unauthorized('Invalid agent token');
      }
      return { nodeId: node.id, nodeName: node.name };
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
        const job = await claimJob(db, agent.nodeId, leaseMs);
        if (job) {
          sub.cancel();
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

    async complete(agent: AgentIdentity, jobId: number, attempt: number, result: Record<string, unknown>) {
      const job = await completeJob(db, jobId, agent.nodeId, attempt, result);
      if (!job) throw notFound('Job lease');
      return job;
    },

    async fail(agent: AgentIdentity, jobId: number, attempt: number, error: string, retryable: boolean) {
      const job = await failJob(db, jobId, agent.nodeId, attempt, error, retryable);
      if (!job) throw notFound('Job lease');
      return job;
    },

    async heartbeat(
      agent: AgentIdentity,
      info: { agentVersion?: string; pgVersion?: string; capabilities?: Record<string, unknown> },
    ) {
      await repo.recordHeartbeat(db, agent.nodeId, info);
    },

    /** Issues an enrollment token for a node name (operator action on the server host). */
    async createEnrollment(
      nodeName: string,
      ttlMinutes: number,
    ): Promise<{ token: string; expiresAt: Date }> {
      const token = deps.generateToken('bwe_');
      const expiresAt = new Date(Date.now() + ttlMinutes * 60_000);
      await repo.insertEnrollment(db, nodeName, hashToken(token), expiresAt);
      return { token, expiresAt };
    },
  };
}

export type NodesService = ReturnType<typeof createNodesService>;
