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
  /** Where tenants reach the node's PgBouncer, as its agent reports it (null: not reported yet). */
  pooler_host: string | null;
  pooler_port: number | null;
  cordoned_at: Date | null;
  unhealthy_since: Date | null;
  decommissioned_at: Date | null;
};

const NODE_COLUMNS = `id, name, status, agent_version, pg_version, capabilities, last_heartbeat_at, enrolled_at,
  created_at, pooler_host, pooler_port, cordoned_at, unhealthy_since, decommissioned_at`;

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

/**
 * Enrolling a name again replaces that node's token: the old one stops working at once. A
 * decommissioned node of that name comes back (a platform admin issued the enrollment for it); a
 * node disabled otherwise stays disabled. The pooler address is what the agent said, if anything.
 */
export async function upsertEnrolledNode(
  db: Queryable,
  name: string,
  tokenHash: Buffer,
  agentVersion: string,
  pooler: PoolerAddress | null = null,
): Promise<NodeRow> {
  const r = await db.query<NodeRow>(
    `INSERT INTO nodes (name, token_hash, agent_version, enrolled_at, last_heartbeat_at, pooler_host, pooler_port)
     VALUES ($1, $2, $3, now(), now(), $4, $5)
     ON CONFLICT (name) DO UPDATE
       SET token_hash = EXCLUDED.token_hash, agent_version = EXCLUDED.agent_version,
           enrolled_at = now(), last_heartbeat_at = now(),
           pooler_host = coalesce(EXCLUDED.pooler_host, nodes.pooler_host),
           pooler_port = coalesce(EXCLUDED.pooler_port, nodes.pooler_port),
           status = CASE WHEN nodes.decommissioned_at IS NOT NULL THEN 'active' ELSE nodes.status END,
           decommissioned_at = NULL
     RETURNING ${NODE_COLUMNS}`,
    [name, tokenHash, agentVersion, pooler?.host ?? null, pooler?.port ?? null],
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

/** Where tenants reach a node's PgBouncer (host name or address, and port), as its agent reports it. */
export type PoolerAddress = { host: string; port: number };

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
    pooler?: PoolerAddress | undefined;
  },
): Promise<void> {
  await db.query(
    `UPDATE nodes SET last_heartbeat_at = now(),
            agent_version = coalesce($2, agent_version),
            pg_version = coalesce($3, pg_version),
            capabilities = coalesce($4, capabilities),
            max_connections = coalesce($5, max_connections),
            reserved_connections = coalesce($6, reserved_connections),
            pooler_host = coalesce($7, pooler_host),
            pooler_port = coalesce($8, pooler_port)
      WHERE id = $1`,
    [
      nodeId,
      info.agentVersion ?? null,
      info.pgVersion ?? null,
      info.capabilities ?? null,
      info.connections?.maxConnections ?? null,
      info.connections?.reservedConnections ?? null,
      info.pooler?.host ?? null,
      info.pooler?.port ?? null,
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

/** A node as platform admins see it: health, capacity facts, and how many live databases it holds. */
export type NodeHealthRow = {
  id: string;
  name: string;
  status: 'active' | 'disabled';
  agent_version: string | null;
  pg_version: string | null;
  last_heartbeat_at: Date | null;
  heartbeat_age_seconds: number | null;
  database_count: number;
  pooler_host: string | null;
  pooler_port: number | null;
  cordoned_at: Date | null;
  unhealthy_since: Date | null;
  decommissioned_at: Date | null;
  max_connections: number | null;
  reserved_connections: number | null;
  /** Tenant connections committed on the node (as nodes.capacity.ts counts them). */
  committed_connections: number;
  /** The latest drift check that answered: when, and how many findings. */
  drift_checked_at: Date | null;
  drift_findings: number | null;
  /** Ready reserved databases on the node (ADR 0037; not in database_count). */
  reserved_databases: number;
};

/**
 * The drift checks in one pass joined by node, never a scan of the jobs per node: they are
 * platform jobs (account_id NULL), which jobs_account_idx finds among every account's jobs. The
 * database counts are per node through databases_node_idx.
 */
const HEALTH_SELECT = `SELECT n.id, n.name, n.status, n.agent_version, n.pg_version, n.last_heartbeat_at,
    floor(extract(epoch FROM now() - n.last_heartbeat_at))::int AS heartbeat_age_seconds,
    (SELECT count(*)::int FROM databases d
      WHERE d.node_id = n.id AND d.deleted_at IS NULL AND d.account_id IS NOT NULL) AS database_count,
    (SELECT count(*)::int FROM databases d
      WHERE d.node_id = n.id AND d.deleted_at IS NULL AND d.account_id IS NULL AND d.status = 'ready')
      AS reserved_databases,
    n.pooler_host, n.pooler_port, n.cordoned_at, n.unhealthy_since, n.decommissioned_at,
    n.max_connections, n.reserved_connections,
    (SELECT coalesce(sum(greatest((d.limits->>'owner_connection_limit')::bigint
                                  + (d.limits->>'reader_connection_limit')::bigint,
                                  coalesce(d.connections_held, 0))), 0)::int
       FROM databases d WHERE d.node_id = n.id AND d.deleted_at IS NULL) AS committed_connections,
    dj.finished_at AS drift_checked_at,
    CASE WHEN jsonb_typeof(dj.result->'findings') = 'array'
         THEN jsonb_array_length(dj.result->'findings') END AS drift_findings
  FROM nodes n
  LEFT JOIN (SELECT DISTINCT ON (j.node_id) j.node_id, j.finished_at, j.result FROM jobs j
              WHERE j.account_id IS NULL AND j.kind = 'node.drift' AND j.status = 'succeeded'
              ORDER BY j.node_id, j.id DESC) dj ON dj.node_id = n.id`;

/** Every node by name (at most `limit`), with its heartbeat age by the control DB's clock. */
export async function listNodeHealth(db: Queryable, limit: number): Promise<NodeHealthRow[]> {
  const r = await db.query<NodeHealthRow>(`${HEALTH_SELECT} ORDER BY n.name LIMIT $1`, [limit]);
  return r.rows;
}

/** One node by id or name, as listNodeHealth shows it; null when there is none. */
export async function findNodeHealth(db: Queryable, ref: string): Promise<NodeHealthRow | null> {
  const isUuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(ref);
  const r = await db.query<NodeHealthRow>(
    `${HEALTH_SELECT} WHERE ${isUuid ? 'n.id = $1::uuid' : 'n.name = $1'}`,
    [ref],
  );
  return r.rows[0] ?? null;
}
