/**
 * Platform admins' node operations (issue 17): enrollment tokens, cordons, decommission. Each is
 * audited with who asked, in the change's own transaction. Read side: nodes.admin.ts.
 */
import { AppError, conflict, notFound } from '../../../shared/errors.ts';
import { type Db, withTx } from '../../db/pool.ts';
import type { UserPrincipal } from '../../http/caller.ts';
import type { AuditService } from '../audit/audit.service.ts';
import type { CapacityConfig } from './nodes.capacity.ts';
import * as fleet from './nodes.fleet.repo.ts';
import { findNodeHealth } from './nodes.repo.ts';
import { storeEnrollment } from './nodes.service.ts';

export function createNodesFleet(deps: {
  db: Db;
  audit: Pick<AuditService, 'record'>;
  generateToken: (prefix: string) => string;
  /** Lifetime of an enrollment token (server setting enrollmentTtlMinutes). */
  enrollmentTtlMinutes: number;
  /** How a node's tenant connection budget is derived (nodes.capacity.ts). */
  capacity: CapacityConfig;
  /** Called after a node's credentials were revoked: its open channels must close. */
  onRevoked?: (nodeId: string) => void;
}) {
  const { db } = deps;
  const actor = (user: UserPrincipal, requestId: string) => ({
    actorType: 'user' as const,
    actorId: user.userId,
    sourceIp: user.sourceIp,
    requestId,
  });

  /** The node by id or name, 404 otherwise. */
  const find = async (ref: string) => {
    const node = await findNodeHealth(db, ref);
    if (!node) throw notFound('Node');
    return node;
  };

  const setCordon = async (user: UserPrincipal, ref: string, cordoned: boolean, requestId: string) => {
    const node = await find(ref);
    await withTx(db, async (tx) => {
      const locked = await fleet.lockNode(tx, node.id);
      if (!locked) throw notFound('Node');
      if (cordoned && locked.status !== 'active') throw conflict(`Node ${locked.name} is ${locked.status}`);
      // Idempotent: asking again changes nothing and records nothing.
      if (!(await fleet.setCordon(tx, node.id, cordoned))) return;
      await deps.audit.record(tx, {
        ...actor(user, requestId),
        action: cordoned ? 'node.cordoned' : 'node.uncordoned',
        targetType: 'node',
        targetId: node.id,
        details: { node_name: node.name },
      });
    });
    return find(node.id);
  };

  return {
    capacity: deps.capacity,
    find,

    /** A one-time enrollment token for a node name (shown once; only its SHA-256 is stored). */
    async createEnrollment(user: UserPrincipal, nodeName: string, requestId: string) {
      const token = deps.generateToken('bwe_');
      const expiresAt = new Date(Date.now() + deps.enrollmentTtlMinutes * 60_000);
      await withTx(db, (tx) =>
        storeEnrollment(tx, { nodeName, token, expiresAt, ...actor(user, requestId) }, deps.audit.record),
      );
      return { token, expiresAt };
    },

    cordon: (user: UserPrincipal, ref: string, requestId: string) => setCordon(user, ref, true, requestId),
    uncordon: (user: UserPrincipal, ref: string, requestId: string) => setCordon(user, ref, false, requestId),

    /**
     * Disables a node that holds no databases and revokes its credentials (its agent is refused
     * from now on). Refused (409 `conflict`, `details.databases`: the count) while databases remain.
     */
    async decommission(user: UserPrincipal, ref: string, requestId: string, opts: { force?: boolean } = {}) {
      const node = await find(ref);
      const jobs = await withTx(db, async (tx) => {
        const locked = await fleet.lockNode(tx, node.id);
        if (!locked) throw notFound('Node');
        if (locked.status !== 'active') throw conflict(`Node ${locked.name} is already ${locked.status}`);
        const remaining = await fleet.liveDatabaseCount(tx, node.id);
        // Forced: the node is lost or not trusted (it would never run its delete or move jobs), and
        // its token must go now; its hosted databases stay on it, shown on a disabled node.
        if (remaining > 0 && !opts.force)
          throw new AppError(
            'conflict',
            `Node ${locked.name} still holds ${remaining} database(s): move or delete them first`,
            { databases: remaining },
          );
        // A move to or from it in flight would be left waiting on a disabled node (its source frozen).
        const moves = await fleet.movesInFlight(tx, node.id);
        if (moves > 0)
          throw new AppError(
            'conflict',
            `Node ${locked.name} is the source or target of ${moves} move(s) in flight: wait for them to end`,
            { moves },
          );
        const ended = await fleet.decommissionNode(tx, locked);
        // Attached databases are the node's agent's own list: they leave with it (never a reason
        // to keep a node, and so its token, alive).
        const detached = await fleet.detachAll(tx, node.id);
        for (const d of detached)
          await deps.audit.record(tx, {
            ...actor(user, requestId),
            action: 'database.detached',
            accountId: d.account_id,
            targetType: 'database',
            targetId: d.id,
            details: { name: d.name, reason: 'node_decommissioned', node_name: node.name },
          });
        // Its reserved databases (ADR 0037) are nobody's: they end with it.
        for (const d of await fleet.dropReserves(tx, node.id))
          await deps.audit.record(tx, {
            ...actor(user, requestId),
            action: 'database.reserve_retired',
            accountId: null,
            targetType: 'database',
            targetId: d.id,
            details: { name: d.name, reason: 'node_decommissioned', node_name: node.name },
          });
        await deps.audit.record(tx, {
          ...actor(user, requestId),
          action: 'node.decommissioned',
          targetType: 'node',
          targetId: node.id,
          details: {
            node_name: node.name,
            jobs_ended: ended,
            attached_detached: detached.length,
            ...(opts.force ? { forced: true, hosted_databases_left: remaining } : {}),
          },
        });
        return ended;
      });
      deps.onRevoked?.(node.id);
      return { node: await find(node.id), jobsEnded: jobs };
    },
  };
}

export type NodesFleet = ReturnType<typeof createNodesFleet>;
