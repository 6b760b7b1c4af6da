/**
 * Nodes for signed-in platform admins (the dashboard's admin page): their health, and a drift
 * check on demand — the operator's drift service, the same findings, audited with who asked.
 */
import type { Db } from '../../db/pool.ts';
import type { UserPrincipal } from '../../http/caller.ts';
import type { AuditService } from '../audit/audit.service.ts';
import type { DriftService } from '../drift/drift.service.ts';
import { type CapacityConfig, connectionBudget } from './nodes.capacity.ts';
import { listNodeHealth, type NodeHealthRow } from './nodes.repo.ts';

/** Nodes listed at most (an install has a handful; the bound keeps the answer finite). */
export const MAX_NODES_LISTED = 1_000;
/** How long a drift check waits for the node's findings before answering 503. */
const DRIFT_TIMEOUT_MS = 15_000;

/** A node's health as the API says it: disabled, unhealthy (marked by the health sweep), or healthy. */
export const nodeHealth = (
  n: Pick<NodeHealthRow, 'status' | 'unhealthy_since'>,
): 'healthy' | 'unhealthy' | 'disabled' =>
  n.status !== 'active' ? 'disabled' : n.unhealthy_since ? 'unhealthy' : 'healthy';

/** A node as the API shows it (nodes.admin.routes.ts `nodeSchema`). */
export function presentNode(n: NodeHealthRow, capacity: CapacityConfig) {
  const budget = connectionBudget(n, capacity);
  return {
    id: n.id,
    name: n.name,
    status: n.status,
    health: nodeHealth(n),
    cordoned: n.cordoned_at !== null,
    cordoned_at: n.cordoned_at?.toISOString() ?? null,
    unhealthy_since: n.unhealthy_since?.toISOString() ?? null,
    decommissioned_at: n.decommissioned_at?.toISOString() ?? null,
    last_heartbeat_at: n.last_heartbeat_at?.toISOString() ?? null,
    heartbeat_age_seconds: n.heartbeat_age_seconds === null ? null : Math.max(0, n.heartbeat_age_seconds),
    database_count: n.database_count,
    reserved_databases: n.reserved_databases,
    agent_version: n.agent_version === null ? null : n.agent_version.slice(0, 64),
    pg_version: n.pg_version === null ? null : n.pg_version.slice(0, 256),
    pooler:
      n.pooler_host !== null && n.pooler_port !== null ? { host: n.pooler_host, port: n.pooler_port } : null,
    capacity: {
      max_connections: n.max_connections,
      budget,
      committed: n.committed_connections,
      free: Math.max(0, budget - n.committed_connections),
    },
    drift:
      n.drift_checked_at === null
        ? null
        : { checked_at: n.drift_checked_at.toISOString(), findings: n.drift_findings ?? 0 },
  };
}

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
