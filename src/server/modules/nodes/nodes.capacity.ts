/**
 * Node connection capacity: the connections a node's cluster can give its tenants, and the
 * reservation every database create and limit raise makes against it.
 *
 *   budget    = max_connections − (superuser_reserved_connections + reserved_connections) − reserve
 *   committed = Σ over the node's databases that still have roles (not deleted) of
 *               owner_connection_limit + reader_connection_limit, or what the database still
 *               holds from before a cut of its limits (connections_held), whichever is more
 *
 * A cut holds the old total because PostgreSQL checks CONNECTION LIMIT at login only: sessions
 * opened under the old limit survive it. A rotation queued after the cut terminates the owner's
 * sessions and releases the hold (databases.jobs.ts); deletion ends them too.
 *
 * A change is refused (`409 capacity_exceeded`) when it would make committed exceed budget, so
 * the tenant login roles of a node can never hold every slot together: the platform's own
 * sessions (agent admin pool, stewards, explorer pools, the control database's pools, PgBouncer
 * probes) always find room in the reserve. The owner and the reader are counted because both are
 * LOGIN roles whose CONNECTION LIMIT the tenant chooses; the migrator (fixed limit, no password:
 * it cannot authenticate), the explorer and the steward are the platform's and live in the reserve.
 * PgBouncer logs in to PostgreSQL as the client's role, so pooled sessions count against the same
 * role limits. Reservations on one node are serialised by a lock on the node's row.
 */
import type { Logger } from 'pino';
import { AppError } from '../../../shared/errors.ts';
import type { ServerConfig } from '../../config.ts';
import type { Tx } from '../../db/pool.ts';
import { lockNodeConnections } from './nodes.repo.ts';

export type CapacityConfig = Pick<ServerConfig, 'nodeConnectionReserve' | 'nodeAssumedMaxConnections'>;

/** PostgreSQL's own default superuser_reserved_connections: assumed until the agent reports. */
export const ASSUMED_RESERVED_SLOTS = 3;

/** The tenant connections one database's limits commit on its node. */
export const tenantConnections = (limits: {
  owner_connection_limit: number;
  reader_connection_limit: number;
}): number => limits.owner_connection_limit + limits.reader_connection_limit;

/** A node's tenant connection budget (never negative). */
export function connectionBudget(
  node: { max_connections: number | null; reserved_connections: number | null },
  config: CapacityConfig,
): number {
  const max = node.max_connections ?? config.nodeAssumedMaxConnections;
  const reserved = node.reserved_connections ?? ASSUMED_RESERVED_SLOTS;
  return Math.max(0, max - reserved - config.nodeConnectionReserve);
}

/**
 * What a tenant learns: this node cannot take that many more connections. Not the budget nor
 * what other accounts committed (those go to the server log).
 */
export const capacityExceeded = (node: string, requested: number) =>
  new AppError(
    'capacity_exceeded',
    `Node ${node} has no room for ${requested} more connections: lower owner_connection_limit / reader_connection_limit, or ask the operator for capacity`,
    { node, requested },
  );

type RoomInput = {
  nodeId: string;
  requested: number;
  committed: (tx: Tx, nodeId: string) => Promise<number>;
  config: CapacityConfig;
};

/**
 * Whether a node has room for `requested` more tenant connections, under its row's lock (taken
 * here, held by the caller's transaction: two reservations on one node never both see the same
 * free room); `committed` is read after the lock. Null: no such node.
 */
export async function roomFor(tx: Tx, input: RoomInput) {
  const node = await lockNodeConnections(tx, input.nodeId);
  if (!node) return null;
  const budget = connectionBudget(node, input.config);
  const committed = input.requested <= 0 ? 0 : await input.committed(tx, input.nodeId);
  return { node, budget, committed, fits: input.requested <= 0 || committed + input.requested <= budget };
}

/**
 * Reserves `requested` more tenant connections on a node, in the caller's transaction (which
 * must then write the rows that commit them before it commits): `roomFor`, and a refusal (logged
 * for the operator, `capacity_exceeded` for the caller) when there is none.
 */
export async function reserveConnections(
  tx: Tx,
  input: RoomInput & { log: Logger; accountId: string },
): Promise<void> {
  const room = await roomFor(tx, input);
  if (!room) throw new AppError('not_found', 'Node not found');
  if (!room.fits) {
    input.log.warn(
      {
        event: 'node.capacity_exceeded',
        node: room.node.name,
        account_id: input.accountId,
        budget: room.budget,
        committed: room.committed,
        requested: input.requested,
        reported: room.node.max_connections !== null,
      },
      'refused: the node has no tenant connection capacity left',
    );
    throw capacityExceeded(room.node.name, input.requested);
  }
}
