/**
 * Nodes for signed-in platform admins (the dashboard's admin page): their health, and a drift
 * check on demand — the operator's drift service, the same findings, audited with who asked.
 */
import type { Db } from '../../db/pool.ts';
import type { UserPrincipal } from '../../http/caller.ts';
import type { AuditService } from '../audit/audit.service.ts';
import type { DriftService } from '../drift/drift.service.ts';
import { listNodeHealth } from './nodes.repo.ts';

/** Nodes listed at most (an install has a handful; the bound keeps the answer finite). */
export const MAX_NODES_LISTED = 1_000;
/** How long a drift check waits for the node's findings before answering 503. */
const DRIFT_TIMEOUT_MS = 15_000;

export function createNodesAdmin(deps: {
  db: Db;
  drift: Pick<DriftService, 'check' | 'findNode'>;
  audit: Pick<AuditService, 'recordNow'>;
  driftTimeoutMs?: number;
}) {
  return {
    list: () => listNodeHealth(deps.db, MAX_NODES_LISTED),

    /** Queues a drift job on the node and returns its findings; audited either way (after the answer). */
    async driftCheck(user: UserPrincipal, nodeId: string, requestId: string) {
      const node = await deps.drift.findNode(nodeId);
      const base = {
        action: 'node.drift_checked',
        actorType: 'user' as const,
        actorId: user.userId,
        targetType: 'node',
        targetId: nodeId,
        sourceIp: user.sourceIp,
        requestId,
      };
      let r: Awaited<ReturnType<typeof deps.drift.check>>;
      try {
        r = await deps.drift.check(nodeId, {
          fix: false,
          timeoutMs: deps.driftTimeoutMs ?? DRIFT_TIMEOUT_MS,
        });
      } catch (err) {
        if (node)
          await deps.audit.recordNow({
            ...base,
            outcome: 'failure',
            details: { node_name: node.name, error: (err as Error).message.slice(0, 300) },
          });
        throw err;
      }
      // Audited once the check answered (a failing audit write is not a failed check).
      await deps.audit.recordNow({
        ...base,
        details: { node_name: r.node.name, clean: r.findings.length === 0, findings: r.findings.length },
      });
      return { node: r.node, clean: r.findings.length === 0, findings: r.findings };
    },
  };
}

export type NodesAdmin = ReturnType<typeof createNodesAdmin>;
