/**
 * Where a new database goes (issue 17).
 *
 * - An explicit node (by name or id): it must exist (404), be active, not cordoned and healthy
 *   (409 saying which), and not already hold a database of that name.
 * - Otherwise: among the active, uncordoned, healthy nodes, the one with the most free tenant
 *   connections (its budget as nodes.capacity.ts `connectionBudget` counts it, minus what is
 *   committed), then the fewest databases, then the name. The choice is only an ordering: the
 *   create still reserves its room under the node's lock (reserveConnections).
 *
 * The chosen node's row is locked (FOR NO KEY UPDATE) and checked again, so a cordon or a
 * decommission committed meanwhile (they lock it FOR UPDATE) is seen: never a database on a node
 * that was decommissioned while it was being placed.
 */
import { AppError, conflict, notFound, unavailable } from '../../../shared/errors.ts';
import type { Queryable } from '../../db/pool.ts';

type Capacity = { reserve: number; assumedMaxConnections: number; assumedReservedSlots: number };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

type Candidate = {
  id: string;
  name: string;
  status: 'active' | 'disabled';
  cordoned_at: Date | null;
  unhealthy_since: Date | null;
};

const ORDER_BY_FREE_ROOM = `coalesce(n.max_connections, $3) - coalesce(n.reserved_connections, $4) - $2
    - (SELECT coalesce(sum(greatest((d.limits->>'owner_connection_limit')::bigint
                                    + (d.limits->>'reader_connection_limit')::bigint,
                                    coalesce(d.connections_held, 0))), 0)
         FROM databases d WHERE d.node_id = n.id AND d.deleted_at IS NULL) DESC,
    (SELECT count(*) FROM databases d WHERE d.node_id = n.id AND d.deleted_at IS NULL), n.name`;

/** Why a node cannot take a new database, or null when it can. */
function refusal(n: Candidate): string | null {
  if (n.status !== 'active') return `Node ${n.name} is ${n.status}`;
  if (n.cordoned_at) return `Node ${n.name} is cordoned: no new databases are placed on it`;
  if (n.unhealthy_since) return `Node ${n.name} is unhealthy (no recent heartbeat)`;
  return null;
}

async function nameTaken(tx: Queryable, nodeId: string, databaseName: string): Promise<boolean> {
  const r = await tx.query(
    'SELECT 1 FROM databases WHERE node_id = $1 AND name = $2 AND deleted_at IS NULL',
    [nodeId, databaseName],
  );
  return (r.rowCount ?? 0) > 0;
}

/** The node a new database goes on, locked; errors as described above. Call inside the create's transaction. */
export async function placeDatabase(
  tx: Queryable,
  databaseName: string,
  nodeRef: string | null,
  capacity: Capacity,
): Promise<{ id: string; name: string }> {
  const cols = 'n.id, n.name, n.status, n.cordoned_at, n.unhealthy_since';
  let chosen: Candidate | null;
  if (nodeRef !== null) {
    const r = await tx.query<Candidate>(
      `SELECT ${cols} FROM nodes n WHERE ${UUID.test(nodeRef) ? 'n.id = $1::uuid' : 'n.name = $1'}`,
      [nodeRef],
    );
    chosen = r.rows[0] ?? null;
    if (!chosen) throw notFound('Node');
  } else {
    const r = await tx.query<Candidate>(
      `SELECT ${cols} FROM nodes n
        WHERE n.status = 'active' AND n.cordoned_at IS NULL AND n.unhealthy_since IS NULL
          AND NOT EXISTS (SELECT 1 FROM databases d
                           WHERE d.node_id = n.id AND d.name = $1 AND d.deleted_at IS NULL)
        ORDER BY ${ORDER_BY_FREE_ROOM}
        LIMIT 1`,
      [databaseName, capacity.reserve, capacity.assumedMaxConnections, capacity.assumedReservedSlots],
    );
    chosen = r.rows[0] ?? null;
    if (!chosen) {
      const any = await tx.query(
        `SELECT 1 FROM nodes WHERE status = 'active' AND cordoned_at IS NULL AND unhealthy_since IS NULL LIMIT 1`,
      );
      if ((any.rowCount ?? 0) === 0)
        throw unavailable('No healthy, uncordoned node to place the database on');
      throw conflict(`The database name "${databaseName}" is taken; choose another`);
    }
  }
  // Locked, then checked again: a cordon or decommission committed meanwhile is seen.
  const locked = await tx.query<Candidate>(`SELECT ${cols} FROM nodes n WHERE n.id = $1 FOR NO KEY UPDATE`, [
    chosen.id,
  ]);
  const node = locked.rows[0];
  if (!node) throw notFound('Node');
  const why = refusal(node);
  if (why) throw new AppError('conflict', why, { node: node.name });
  if (await nameTaken(tx, node.id, databaseName))
    throw conflict(`The database name "${databaseName}" is taken; choose another`);
  return { id: node.id, name: node.name };
}
