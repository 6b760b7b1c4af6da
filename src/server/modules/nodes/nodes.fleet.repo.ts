/**
 * The fleet's state changes (issue 17): cordons, decommission, health marks, the enrollment sweep.
 * Each runs in the caller's transaction; the caller records the audit events.
 */
import type { Queryable } from '../../db/pool.ts';
import { ACTIVE_MOVE_STATUSES } from './nodes.move.repo.ts';

export type NodeRef = { id: string; name: string; status: 'active' | 'disabled'; cordoned_at: Date | null };

/** Locks one node by id (FOR UPDATE: placements, which lock it FOR NO KEY UPDATE, wait). */
export async function lockNode(tx: Queryable, id: string): Promise<NodeRef | null> {
  const r = await tx.query<NodeRef>(
    'SELECT id, name, status, cordoned_at FROM nodes WHERE id = $1 FOR UPDATE',
    [id],
  );
  return r.rows[0] ?? null;
}

/** Sets or clears the cordon; returns whether it changed. */
export async function setCordon(tx: Queryable, id: string, cordoned: boolean): Promise<boolean> {
  const r = await tx.query(
    cordoned
      ? 'UPDATE nodes SET cordoned_at = now() WHERE id = $1 AND cordoned_at IS NULL'
      : 'UPDATE nodes SET cordoned_at = NULL WHERE id = $1 AND cordoned_at IS NOT NULL',
    [id],
  );
  return (r.rowCount ?? 0) > 0;
}

/**
 * Live (not deleted) hosted databases of accounts on a node, whatever their status (attached ones
 * and reserved ones go with the node).
 */
export async function liveDatabaseCount(tx: Queryable, nodeId: string): Promise<number> {
  const r = await tx.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM databases
      WHERE node_id = $1 AND deleted_at IS NULL AND kind = 'hosted' AND account_id IS NOT NULL`,
    [nodeId],
  );
  return r.rows[0]?.n ?? 0;
}

/** Detaches a node's attached databases (it is decommissioned): deleted, returned for the audit. */
export async function detachAll(
  tx: Queryable,
  nodeId: string,
): Promise<{ id: string; account_id: string; name: string }[]> {
  const r = await tx.query<{ id: string; account_id: string; name: string }>(
    `UPDATE databases SET status = 'deleted', deleted_at = now(), updated_at = now()
      WHERE node_id = $1 AND kind = 'attached' AND deleted_at IS NULL
      RETURNING id, account_id, name`,
    [nodeId],
  );
  return r.rows;
}

/**
 * Ends a decommissioned node's reserved databases (ADR 0037): nobody's, never to be handed out; what
 * is left of them on the node goes with it. Returned for the audit.
 */
export async function dropReserves(tx: Queryable, nodeId: string): Promise<{ id: string; name: string }[]> {
  const r = await tx.query<{ id: string; name: string }>(
    `UPDATE databases SET status = 'deleted', deleted_at = now(), updated_at = now()
      WHERE node_id = $1 AND account_id IS NULL AND deleted_at IS NULL
      RETURNING id, name`,
    [nodeId],
  );
  return r.rows;
}

/** Moves still copying or restoring from or to a node (ADR 0031): its jobs must not be ended under them. */
export async function movesInFlight(tx: Queryable, nodeId: string): Promise<number> {
  const r = await tx.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM database_moves
      WHERE (source_node_id = $1 OR target_node_id = $1) AND status IN ${ACTIVE_MOVE_STATUSES}`,
    [nodeId],
  );
  return r.rows[0]?.n ?? 0;
}

/**
 * Disables a node for good: its token is gone (the agent is refused from now on), it is cordoned,
 * its pending enrollments are deleted, and the jobs still waiting for it are dead-lettered.
 * Returns how many jobs were ended.
 */
export async function decommissionNode(tx: Queryable, node: { id: string; name: string }): Promise<number> {
  await tx.query(
    `UPDATE nodes SET status = 'disabled', token_hash = NULL, decommissioned_at = now(),
            cordoned_at = coalesce(cordoned_at, now()), unhealthy_since = NULL
      WHERE id = $1`,
    [node.id],
  );
  await tx.query('DELETE FROM node_enrollments WHERE node_name = $1', [node.name]);
  const jobs = await tx.query(
    `UPDATE jobs SET status = 'dead', last_error = 'node decommissioned', lease_expires_at = NULL,
            finished_at = now(), updated_at = now()
      WHERE node_id = $1 AND status IN ('queued', 'running')`,
    [node.id],
  );
  return jobs.rowCount ?? 0;
}

/** Deletes at most `limit` expired enrollments and returns them (only names and expiry). */
export async function sweepExpiredEnrollments(
  tx: Queryable,
  limit: number,
): Promise<{ id: string; node_name: string; expires_at: Date }[]> {
  const r = await tx.query<{ id: string; node_name: string; expires_at: Date }>(
    `DELETE FROM node_enrollments WHERE id IN (
       SELECT id FROM node_enrollments WHERE expires_at <= now() ORDER BY expires_at LIMIT $1
       FOR UPDATE SKIP LOCKED)
     RETURNING id, node_name, expires_at`,
    [limit],
  );
  return r.rows;
}

export type HealthChange = { id: string; name: string; last_heartbeat_at: Date | null };

/**
 * Marks at most `limit` active nodes whose heartbeat is older than `afterSeconds` unhealthy (those
 * not marked yet; the next pass takes the rest).
 */
export async function markUnhealthy(
  tx: Queryable,
  afterSeconds: number,
  limit: number,
): Promise<HealthChange[]> {
  const r = await tx.query<HealthChange>(
    `UPDATE nodes SET unhealthy_since = now()
      WHERE id IN (SELECT id FROM nodes
                    WHERE status = 'active' AND unhealthy_since IS NULL
                      AND (last_heartbeat_at IS NULL OR last_heartbeat_at < now() - make_interval(secs => $1))
                    ORDER BY name LIMIT $2 FOR UPDATE SKIP LOCKED)
      RETURNING id, name, last_heartbeat_at`,
    [afterSeconds, limit],
  );
  return r.rows;
}

/** Clears the mark of at most `limit` active nodes that reported again within `afterSeconds`. */
export async function markRecovered(
  tx: Queryable,
  afterSeconds: number,
  limit: number,
): Promise<HealthChange[]> {
  const r = await tx.query<HealthChange>(
    `UPDATE nodes SET unhealthy_since = NULL
      WHERE id IN (SELECT id FROM nodes
                    WHERE status = 'active' AND unhealthy_since IS NOT NULL
                      AND last_heartbeat_at >= now() - make_interval(secs => $1)
                    ORDER BY name LIMIT $2 FOR UPDATE SKIP LOCKED)
      RETURNING id, name, last_heartbeat_at`,
    [afterSeconds, limit],
  );
  return r.rows;
}

/** The accounts with live databases on a node, with those databases' names (bounded). */
export async function accountsOnNode(
  tx: Queryable,
  nodeId: string,
): Promise<{ account_id: string; databases: string[] }[]> {
  const r = await tx.query<{ account_id: string; databases: string[] }>(
    `SELECT account_id, (array_agg(name ORDER BY name))[1:200] AS databases
       FROM databases WHERE node_id = $1 AND deleted_at IS NULL AND account_id IS NOT NULL
      GROUP BY account_id ORDER BY account_id LIMIT 10000`,
    [nodeId],
  );
  return r.rows;
}

/** An event for notifications (event_outbox, migration 0019); NOTIFY names its row. */
export async function insertNodeEvent(
  tx: Queryable,
  e: { accountId: string | null; kind: string; payload: Record<string, unknown> },
): Promise<void> {
  await tx.query(
    `WITH e AS (INSERT INTO event_outbox (account_id, kind, payload) VALUES ($1, $2, $3) RETURNING id)
     SELECT pg_notify('bulwark_events', e.id::text) FROM e`,
    [e.accountId, e.kind, JSON.stringify(e.payload)],
  );
}
