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

/**
 * Merges at most `limit` rows taken before `before` and narrower than `spanSeconds` into one row per
 * database and `spanSeconds`-aligned slot: its largest size and connection count, stamped at the
 * slot's start. A slot cut by the limit is finished by the next pass (the merge keeps the larger
 * values), and concurrent passes cannot count a row twice (each row is deleted once). Returns how
 * many rows were merged.
 */
export async function rollUpSamples(
  db: Queryable,
  before: Date,
  spanSeconds: number,
  limit: number,
): Promise<number> {
  const r = await db.query<{ merged: number }>(
    `WITH gone AS (
       DELETE FROM database_samples
        WHERE (database_id, at) IN (SELECT database_id, at FROM database_samples
                                     WHERE at < $1 AND span_s < $2 ORDER BY at LIMIT $3)
       RETURNING database_id, at, size_bytes, connections),
     merged AS (
       INSERT INTO database_samples AS d (database_id, at, size_bytes, connections, span_s)
       SELECT database_id, to_timestamp(floor(extract(epoch FROM at) / $2) * $2),
              max(size_bytes), max(connections), $2
         FROM gone GROUP BY 1, 2
       ON CONFLICT (database_id, at) DO UPDATE
         SET size_bytes = greatest(d.size_bytes, excluded.size_bytes),
             connections = greatest(d.connections, excluded.connections),
             span_s = greatest(d.span_s, excluded.span_s))
     SELECT count(*)::int AS merged FROM gone`,
    [before, spanSeconds, limit],
  );
  return r.rows[0]?.merged ?? 0;
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
