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
