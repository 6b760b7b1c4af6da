import type { Queryable } from '../../db/pool.ts';

export async function jobQueueStats(
  db: Queryable,
): Promise<{ status: string; count: number; oldest_age_s: number | null }[]> {
  const r = await db.query<{ status: string; count: number; oldest_age_s: number | null }>(
    `SELECT status, count(*)::int AS count,
            extract(epoch FROM now() - min(created_at))::float8 AS oldest_age_s
       FROM jobs WHERE status IN ('queued', 'running') GROUP BY status`,
  );
  return r.rows;
}

export async function heartbeatAges(db: Queryable): Promise<{ name: string; age_s: number }[]> {
  const r = await db.query<{ name: string; age_s: number }>(
    `SELECT name, extract(epoch FROM now() - last_heartbeat_at)::float8 AS age_s
       FROM nodes WHERE last_heartbeat_at IS NOT NULL AND status = 'active' ORDER BY name LIMIT 1000`,
  );
  return r.rows;
}

/**
 * Each active node's warm pool as its agent last reported it in the heartbeat's capabilities
 * (`warm_pool: {size, ready}`, ADR 0028). Agent-supplied numbers: only numbers, clamped.
 */
export async function warmPools(db: Queryable): Promise<{ name: string; size: number; ready: number }[]> {
  const num = (k: string) =>
    `LEAST(GREATEST((capabilities->'warm_pool'->>'${k}')::numeric, 0), 1000000)::float8`;
  const r = await db.query<{ name: string; size: number; ready: number }>(
    `SELECT name, ${num('size')} AS size, ${num('ready')} AS ready
       FROM nodes
      WHERE status = 'active'
        AND jsonb_typeof(capabilities->'warm_pool'->'size') = 'number'
        AND jsonb_typeof(capabilities->'warm_pool'->'ready') = 'number'
      ORDER BY name LIMIT 1000`,
  );
  return r.rows;
}

export async function auditChainStats(
  db: Queryable,
): Promise<{ head_seq: number; pending: number; oldest_pending_age_s: number | null }> {
  const r = await db.query<{ head_seq: number; pending: number; oldest_pending_age_s: number | null }>(
    `SELECT (SELECT seq FROM audit_head WHERE id = 1) AS head_seq,
            count(*)::int AS pending,
            extract(epoch FROM now() - min(occurred_at))::float8 AS oldest_pending_age_s
       FROM audit_events WHERE seq IS NULL`,
  );
  const row = r.rows[0];
  return {
    head_seq: row?.head_seq ?? 0,
    pending: row?.pending ?? 0,
    oldest_pending_age_s: row?.oldest_pending_age_s ?? null,
  };
}
