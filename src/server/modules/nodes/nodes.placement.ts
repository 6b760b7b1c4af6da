/**
 * Where a new database goes (issue 17).
 *
 * - An explicit node (by name or id): it must exist (404), be active, not cordoned and healthy
 *   (409 saying which). Another account's database of the same label there is no reason: labels
 *   are unique per account only (migration 0038), and every new database gets a generated name
 *   on the node (ADR 0039).
 * - Otherwise: among the active, uncordoned, healthy nodes, the one with the most free tenant
 *   connections (its budget as nodes.capacity.ts `connectionBudget` counts it, minus what is
 *   committed), then the fewest databases, then the name. The choice is only an ordering: the
 *   create still reserves its room under the node's lock (reserveConnections).
 *
 * The chosen node's row is locked (FOR NO KEY UPDATE) and checked again, so a cordon or a
 * decommission committed meanwhile (they lock it FOR UPDATE) is seen: never a database on a node
 * that was decommissioned while it was being placed.
 *
 * Node data is platform-admin only: a caller who is not a platform admin and names a node gets one
 * answer for every reason the node cannot take the database (unknown, disabled, cordoned,
 * unhealthy, no room): `nodeUnavailable()`, the same status and message, no
 * node name — so node names cannot be enumerated. Platform admins get the detailed answer.
 * Moves (nodes.move.ts) and restores into a new database use the same checks (`refusal`).
 */
import { AppError, notFound, unavailable } from '../../../shared/errors.ts';
import type { Queryable } from '../../db/pool.ts';
import type { Caller } from '../../http/caller.ts';

type Capacity = { reserve: number; assumedMaxConnections: number; assumedReservedSlots: number };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

export type NodeState = {
  id: string;
  name: string;
  status: 'active' | 'disabled';
  cordoned_at: Date | null;
  unhealthy_since: Date | null;
};

const COLS = 'n.id, n.name, n.status, n.cordoned_at, n.unhealthy_since';

const ORDER_BY_FREE_ROOM = `coalesce(n.max_connections, $3) - coalesce(n.reserved_connections, $4) - $2
    - (SELECT coalesce(sum(greatest((d.limits->>'owner_connection_limit')::bigint
                                    + (d.limits->>'reader_connection_limit')::bigint,
                                    coalesce(d.connections_held, 0))), 0)
         FROM databases d WHERE d.node_id = n.id AND d.deleted_at IS NULL) DESC,
    (SELECT count(*) FROM databases d WHERE d.node_id = n.id AND d.deleted_at IS NULL), n.name`;

/** The one answer to a caller who is not a platform admin: no node name, no reason. */
export const nodeUnavailable = () =>
  new AppError('conflict', 'The node named is unknown or cannot take this database now');

/** Whether a caller may learn why a named node was refused (platform admins only). */
export const seesNodeDetail = (caller: Caller) => caller.kind === 'user' && caller.platformAdmin;

/** For a caller without node detail, any refusal about the named node becomes `nodeUnavailable()`. */
export function hideNodeRefusal(err: unknown, detailed: boolean): unknown {
  if (detailed || !(err instanceof AppError)) return err;
  return ['not_found', 'conflict', 'capacity_exceeded'].includes(err.code) ? nodeUnavailable() : err;
}

/** Why a node cannot take a new database (a create, a restore, a move's target), or null when it can. */
export function refusal(n: NodeState): string | null {
  if (n.status !== 'active') return `Node ${n.name} is ${n.status}`;
  if (n.cordoned_at) return `Node ${n.name} is cordoned: no new databases are placed on it`;
  if (n.unhealthy_since) return `Node ${n.name} is unhealthy (no recent heartbeat)`;
  return null;
}

/** A node's placement state, locked FOR NO KEY UPDATE (cordon and decommission lock FOR UPDATE). */
export async function lockNodeState(tx: Queryable, nodeId: string): Promise<NodeState | null> {
  const r = await tx.query<NodeState>(`SELECT ${COLS} FROM nodes n WHERE n.id = $1 FOR NO KEY UPDATE`, [
    nodeId,
  ]);
  return r.rows[0] ?? null;
}

/**
 * The active, uncordoned, healthy node with the most free room — with `physical`, one where no
 * live database is called that (so never a database's own node, for a move) — unlocked: lock it
 * with `lockNodeState` and check again.
 */
export async function bestNode(
  tx: Queryable,
  physical: string | null,
  capacity: Capacity,
): Promise<NodeState | null> {
  const r = await tx.query<NodeState>(
    `SELECT ${COLS} FROM nodes n
      WHERE n.status = 'active' AND n.cordoned_at IS NULL AND n.unhealthy_since IS NULL
        AND ($1::text IS NULL OR NOT EXISTS (SELECT 1 FROM databases d
                         WHERE d.node_id = n.id AND coalesce(d.pg_name, d.name) = $1 AND d.deleted_at IS NULL))
      ORDER BY ${ORDER_BY_FREE_ROOM}
      LIMIT 1`,
    [physical, capacity.reserve, capacity.assumedMaxConnections, capacity.assumedReservedSlots],
  );
  return r.rows[0] ?? null;
}

/**
 * Whether a live database is called `physical` on the node (its name in PostgreSQL and PgBouncer:
 * `pg_name`, or the label when it has none). Labels are unique per account only (migration 0038):
 * two accounts' databases may share one on a node, never a physical name.
 */
export async function nameTaken(tx: Queryable, nodeId: string, physical: string): Promise<boolean> {
  const r = await tx.query(
    `SELECT 1 FROM databases
      WHERE node_id = $1 AND coalesce(pg_name, name) = $2 AND deleted_at IS NULL`,
    [nodeId, physical],
  );
  return (r.rowCount ?? 0) > 0;
}

/**
 * The node a new database goes on, locked; errors as described above (`detailed`: the caller is a
 * platform admin and learns why a named node was refused). Call inside the create's transaction.
 */
export async function placeDatabase(
  tx: Queryable,
  nodeRef: string | null,
  capacity: Capacity,
  opts: { detailed: boolean } = { detailed: false },
): Promise<{ id: string; name: string }> {
  const hide = (err: AppError) => (nodeRef === null || opts.detailed ? err : nodeUnavailable());
  let chosen: NodeState | null;
  if (nodeRef !== null) {
    const r = await tx.query<NodeState>(
      `SELECT ${COLS} FROM nodes n WHERE ${UUID.test(nodeRef) ? 'n.id = $1::uuid' : 'n.name = $1'}`,
      [nodeRef],
    );
    chosen = r.rows[0] ?? null;
    if (!chosen) throw hide(notFound('Node'));
  } else {
    chosen = await bestNode(tx, null, capacity);
    if (!chosen) throw unavailable('No healthy, uncordoned node to place the database on');
  }
  // Locked, then checked again: a cordon or decommission committed meanwhile is seen.
  const node = await lockNodeState(tx, chosen.id);
  if (!node) throw hide(notFound('Node'));
  const why = refusal(node);
  if (why) throw hide(new AppError('conflict', why, { node: node.name }));
  return { id: node.id, name: node.name };
}
