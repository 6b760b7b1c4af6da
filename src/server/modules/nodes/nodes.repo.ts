import type { Queryable } from '../../db/pool.ts';

export type NodeRow = {
  id: string;
  name: string;
  status: 'active' | 'disabled';
  agent_version: string | null;
  pg_version: string | null;
  capabilities: Record<string, unknown>;
  last_heartbeat_at: Date | null;
  enrolled_at: Date | null;
  created_at: Date;
};

const NODE_COLUMNS =
  'id, name, status, agent_version, pg_version, capabilities, last_heartbeat_at, enrolled_at, created_at';

export async function insertEnrollment(
  db: Queryable,
  nodeName: string,
  tokenHash: Buffer,
  expiresAt: Date,
): Promise<void> {
  await db.query('INSERT INTO node_enrollments (token_hash, node_name, expires_at) VALUES ($1, $2, $3)', [
    tokenHash,
    nodeName,
    expiresAt,
  ]);
}

/** Single use: the row is deleted as it is redeemed (the DELETE's row lock settles races). */
export async function redeemEnrollment(db: Queryable, tokenHash: Buffer): Promise<string | null> {
  const r = await db.query<{ node_name: string }>(
    'DELETE FROM node_enrollments WHERE token_hash = $1 AND expires_at > now() RETURNING node_name',
    [tokenHash],
  );
  return r.rows[0]?.node_name ?? null;
}

export async function deleteExpiredEnrollments(db: Queryable): Promise<number> {
  const r = await db.query('DELETE FROM node_enrollments WHERE expires_at <= now()');
  return r.rowCount ?? 0;
}

/** Whether a node of that name exists with a token (enrolling it again replaces the token). */
export async function nodeHasToken(db: Queryable, name: string): Promise<boolean> {
  const r = await db.query('SELECT 1 FROM nodes WHERE name = $1 AND token_hash IS NOT NULL FOR UPDATE', [
    name,
  ]);
  return (r.rowCount ?? 0) > 0;
}

/** Enrolling a name again replaces that node's token: the old one stops working at once. */
export async function upsertEnrolledNode(
  db: Queryable,
  name: string,
  tokenHash: Buffer,
  agentVersion: string,
): Promise<NodeRow> {
  const r = await db.query<NodeRow>(
    `INSERT INTO nodes (name, token_hash, agent_version, enrolled_at, last_heartbeat_at)
     VALUES ($1, $2, $3, now(), now())
     ON CONFLICT (name) DO UPDATE
       SET token_hash = EXCLUDED.token_hash, agent_version = EXCLUDED.agent_version,
           enrolled_at = now(), last_heartbeat_at = now()
     RETURNING ${NODE_COLUMNS}`,
    [name, tokenHash, agentVersion],
  );
  return r.rows[0]!;
}

export async function findNodeByTokenHash(
  db: Queryable,
  tokenHash: Buffer,
): Promise<(NodeRow & { token_hash: Buffer }) | null> {
  const r = await db.query<NodeRow & { token_hash: Buffer }>(
    `SELECT ${NODE_COLUMNS}, token_hash FROM nodes WHERE token_hash = $1`,
    [tokenHash],
  );
  return r.rows[0] ?? null;
}

/** What an agent reports about its cluster's connection slots (see nodes.capacity.ts). */
export type NodeConnections = {
  maxConnections: number;
  /** superuser_reserved_connections + reserved_connections. */
  reservedConnections: number;
};

export async function recordHeartbeat(
  db: Queryable,
  nodeId: string,
  info: {
    agentVersion?: string | undefined;
    pgVersion?: string | undefined;
    capabilities?: Record<string, unknown> | undefined;
    connections?: NodeConnections | undefined;
  },
): Promise<void> {
  await db.query(
    `UPDATE nodes SET last_heartbeat_at = now(),
            agent_version = coalesce($2, agent_version),
            pg_version = coalesce($3, pg_version),
            capabilities = coalesce($4, capabilities),
            max_connections = coalesce($5, max_connections),
            reserved_connections = coalesce($6, reserved_connections)
      WHERE id = $1`,
    [
      nodeId,
      info.agentVersion ?? null,
      info.pgVersion ?? null,
      info.capabilities ?? null,
      info.connections?.maxConnections ?? null,
      info.connections?.reservedConnections ?? null,
    ],
  );
}

/**
 * Locks one node's row against every other capacity reservation on it (database creates and
 * limit raises queue here) and returns what its agent reported; null when there is no such node.
 * FOR NO KEY UPDATE: foreign-key checks of rows that refer to the node (jobs, databases) do not wait.
 */
export async function lockNodeConnections(
  tx: Queryable,
  nodeId: string,
): Promise<{ name: string; max_connections: number | null; reserved_connections: number | null } | null> {
  const r = await tx.query<{
    name: string;
    max_connections: number | null;
    reserved_connections: number | null;
  }>('SELECT name, max_connections, reserved_connections FROM nodes WHERE id = $1 FOR NO KEY UPDATE', [
    nodeId,
  ]);
  return r.rows[0] ?? null;
}

export async function listNodes(db: Queryable): Promise<NodeRow[]> {
  const r = await db.query<NodeRow>(`SELECT ${NODE_COLUMNS} FROM nodes ORDER BY name`);
  return r.rows;
}

/** A node as platform admins see it: health and how many live databases it holds. */
export type NodeHealthRow = {
  id: string;
  name: string;
  status: 'active' | 'disabled';
  agent_version: string | null;
  last_heartbeat_at: Date | null;
  heartbeat_age_seconds: number | null;
  database_count: number;
};

/** Every node by name (at most `limit`), with its heartbeat age by the control DB's clock. */
export async function listNodeHealth(db: Queryable, limit: number): Promise<NodeHealthRow[]> {
  const r = await db.query<NodeHealthRow>(
    `SELECT n.id, n.name, n.status, n.agent_version, n.last_heartbeat_at,
            floor(extract(epoch FROM now() - n.last_heartbeat_at))::int AS heartbeat_age_seconds,
            (SELECT count(*)::int FROM databases d WHERE d.node_id = n.id AND d.deleted_at IS NULL)
              AS database_count
       FROM nodes n ORDER BY n.name LIMIT $1`,
    [limit],
  );
  return r.rows;
}
