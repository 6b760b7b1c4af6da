/**
 * The fleet's periodic sweep (issue 17), on an interval:
 *
 * - Expired enrollment tokens are deleted and each is audited `node.enrollment_expired` (its
 *   node name and expiry; a token is never stored, only its hash, and the hash is not recorded).
 * - A node whose heartbeat (every agent beat and long-poll refreshes it) is older than the
 *   threshold is marked unhealthy: `unhealthy_since` set, audited `node.unhealthy`, and an alert in
 *   the event outbox (`node.unhealthy`): one for the platform (no account) and one for each
 *   account with databases on the node, naming them. Its databases show `node_status: unhealthy`
 *   and placement avoids it. A node that reports again is cleared the same way (`node.recovered`).
 *
 * - A move whose step is past its deadline (its node never took it, or its lease lapsed, for
 *   `moveDeadlines.startMinutes`; or not finished `stepMinutes` after it was queued) fails, and
 *   its source is thawed (nodes.move.fail.ts, ADR 0031).
 *
 * Each change is written with its audit event and its outbox rows in one transaction. Several
 * servers may sweep at once: the UPDATE … RETURNING settles who reports a change (once).
 */
import type { Logger } from 'pino';
import { type Db, type Tx, withTx } from '../../db/pool.ts';
import type { AuditService } from '../audit/audit.service.ts';
import * as fleet from './nodes.fleet.repo.ts';
import { DEFAULT_MOVE_DEADLINES, failOverdueMoves, type MoveDeadlines } from './nodes.move.fail.ts';

/** Enrollments swept per pass. */
const BATCH = 500;
/**
 * Nodes marked (or cleared) per pass: each alerts every account on it in the same transaction,
 * so a mass outage is announced over a few passes, never in one unbounded transaction.
 */
const NODE_BATCH = 20;

export function createNodesHealth(deps: {
  db: Db;
  log: Logger;
  audit: Pick<AuditService, 'record'>;
  /** A heartbeat older than this marks the node unhealthy. */
  unhealthyAfterSeconds: number;
  /** Default: a third of the threshold, at most 15 s. */
  intervalMs?: number;
  /** The deadlines of a move's steps (default DEFAULT_MOVE_DEADLINES). */
  moveDeadlines?: MoveDeadlines;
}) {
  const { db, log } = deps;
  const intervalMs =
    deps.intervalMs ?? Math.min(15_000, Math.max(1_000, (deps.unhealthyAfterSeconds * 1000) / 3));
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<unknown> | null = null;

  const announce = async (tx: Tx, kind: 'node.unhealthy' | 'node.recovered', n: fleet.HealthChange) => {
    const accounts = await fleet.accountsOnNode(tx, n.id);
    const base = {
      node_id: n.id,
      node_name: n.name,
      last_heartbeat_at: n.last_heartbeat_at?.toISOString() ?? null,
      threshold_seconds: deps.unhealthyAfterSeconds,
    };
    await deps.audit.record(tx, {
      action: kind,
      actorType: 'system',
      targetType: 'node',
      targetId: n.id,
      details: { ...base, accounts: accounts.length },
    });
    await fleet.insertNodeEvent(tx, {
      accountId: null,
      kind,
      payload: { ...base, accounts: accounts.length },
    });
    for (const a of accounts)
      await fleet.insertNodeEvent(tx, {
        accountId: a.account_id,
        kind,
        payload: { ...base, databases: a.databases },
      });
  };

  /** One pass; returns what it changed. */
  const sweep = async () => {
    const expired = await withTx(db, async (tx) => {
      const rows = await fleet.sweepExpiredEnrollments(tx, BATCH);
      for (const e of rows)
        await deps.audit.record(tx, {
          action: 'node.enrollment_expired',
          actorType: 'system',
          targetType: 'node',
          targetId: e.node_name,
          details: { node_name: e.node_name, expires_at: e.expires_at.toISOString() },
        });
      return rows.length;
    });
    const unhealthy = await withTx(db, async (tx) => {
      const rows = await fleet.markUnhealthy(tx, deps.unhealthyAfterSeconds, NODE_BATCH);
      for (const n of rows) await announce(tx, 'node.unhealthy', n);
      return rows;
    });
    const recovered = await withTx(db, async (tx) => {
      const rows = await fleet.markRecovered(tx, deps.unhealthyAfterSeconds, NODE_BATCH);
      for (const n of rows) await announce(tx, 'node.recovered', n);
      return rows;
    });
    const movesFailed = await failOverdueMoves(db, deps, deps.moveDeadlines ?? DEFAULT_MOVE_DEADLINES);
    if (expired) log.info({ expired }, 'expired node enrollments swept');
    for (const n of unhealthy)
      log.warn({ event: 'node.unhealthy', node: n.name }, 'node stopped reporting: marked unhealthy');
    for (const n of recovered) log.info({ event: 'node.recovered', node: n.name }, 'node reports again');
    return {
      expired,
      unhealthy: unhealthy.map((n) => n.name),
      recovered: recovered.map((n) => n.name),
      movesFailed,
    };
  };

  const tick = () => {
    if (running) return;
    running = sweep()
      .catch((err: Error) => log.warn({ err: { message: err.message } }, 'node health sweep failed'))
      .finally(() => {
        running = null;
      });
  };

  return {
    sweep,
    start() {
      if (timer) return;
      timer = setInterval(tick, intervalMs);
      timer.unref();
    },
    async stop() {
      if (timer) clearInterval(timer);
      timer = undefined;
      await running;
    },
  };
}

export type NodesHealth = ReturnType<typeof createNodesHealth>;
