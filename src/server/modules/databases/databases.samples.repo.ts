/**
 * Size and connection samples of tenant databases (migration 0015): stored as the node's agent
 * reports them, read back bucketed for charts, pruned by age.
 */
import type { Queryable } from '../../db/pool.ts';

export type ReportedSample = { databaseId: string; sizeBytes: number; connections: number };

/**
 * Stores one report of a node's agent, stamped with the control DB's clock. Only databases placed
 * on that node and not deleted are taken: an agent can speak for its own node's databases only.
 * Returns how many rows were stored.
 */
export async function insertSamples(
  db: Queryable,
  nodeId: string,
  samples: readonly ReportedSample[],
): Promise<number> {
  const r = await db.query(
    `INSERT INTO database_samples (database_id, at, size_bytes, connections)
     SELECT s.id, now(), s.size_bytes, s.connections
       FROM unnest($2::uuid[], $3::bigint[], $4::int[]) AS s (id, size_bytes, connections)
       JOIN databases d ON d.id = s.id AND d.node_id = $1 AND d.deleted_at IS NULL
     ON CONFLICT (database_id, at) DO NOTHING`,
    [
      nodeId,
      samples.map((s) => s.databaseId),
      samples.map((s) => String(s.sizeBytes)),
      samples.map((s) => s.connections),
    ],
  );
  return r.rowCount ?? 0;
}

/** Deletes at most `limit` samples taken before `before` (the oldest first); returns how many. */
export async function pruneSamples(db: Queryable, before: Date, limit: number): Promise<number> {
  const r = await db.query(
    `DELETE FROM database_samples
      WHERE (database_id, at) IN (SELECT database_id, at FROM database_samples
                                   WHERE at < $1 ORDER BY at LIMIT $2)`,
    [before, limit],
  );
  return r.rowCount ?? 0;
}

export type SamplePoint = { at: Date; size_bytes: string; connections: number };

/**
 * One database's samples since `since`, in `buckets` buckets of `bucketSeconds` (the last one
 * also takes a sample stamped at the very end): per bucket its start and the largest size and
 * connection count seen in it. Empty buckets are left out.
 */
export async function bucketedSamples(
  db: Queryable,
  databaseId: string,
  since: Date,
  bucketSeconds: number,
  buckets: number,
): Promise<SamplePoint[]> {
  const r = await db.query<SamplePoint>(
    `SELECT $2::timestamptz + b * $3::int * interval '1 second' AS at,
            max(size_bytes)::text AS size_bytes, max(connections) AS connections
       FROM (SELECT least(floor(extract(epoch FROM at - $2::timestamptz) / $3::int), $4::int - 1)::int AS b,
                    size_bytes, connections
               FROM database_samples WHERE database_id = $1 AND at >= $2) s
      GROUP BY b ORDER BY b`,
    [databaseId, since, bucketSeconds, buckets],
  );
  return r.rows;
}
