import type { Queryable } from '../../db/pool.ts';

export type DriftNode = { id: string; name: string; status: string };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Every node, by name (the CLI checks them all). */
export async function listNodes(db: Queryable): Promise<DriftNode[]> {
  const r = await db.query<DriftNode>('SELECT id, name, status FROM nodes ORDER BY name');
  return r.rows;
}

/** One node by id (uuid) or by name. */
export async function findNode(db: Queryable, ref: string): Promise<DriftNode | null> {
  const r = UUID.test(ref)
    ? await db.query<DriftNode>('SELECT id, name, status FROM nodes WHERE id = $1', [ref])
    : await db.query<DriftNode>('SELECT id, name, status FROM nodes WHERE name = $1', [ref]);
  return r.rows[0] ?? null;
}

/** The tenant databases the control plane places on a node (every one not deleted). */
export type KnownDatabase = { id: string; name: string; limits: unknown };

/** The same databases with their ids and limits (the drift payload's `databases`). */
export async function knownDatabaseDetails(db: Queryable, nodeId: string): Promise<KnownDatabase[]> {
  const r = await db.query<KnownDatabase>(
    // The name on the node: a warm-pool spare keeps its own (pg_name, migration 0036).
    `SELECT id, coalesce(pg_name, name) AS name, limits FROM databases
      WHERE node_id = $1 AND deleted_at IS NULL AND kind = 'hosted' ORDER BY 2`,
    [nodeId],
  );
  return r.rows;
}

/** Ends a drift job nobody waits for any more, if no agent has claimed it yet. */
export async function abandonQueuedJob(db: Queryable, jobId: number): Promise<void> {
  await db.query(
    `UPDATE jobs SET status = 'dead', finished_at = now(), updated_at = now(),
            last_error = 'abandoned: no agent took it in time'
      WHERE id = $1 AND status = 'queued'`,
    [jobId],
  );
}
