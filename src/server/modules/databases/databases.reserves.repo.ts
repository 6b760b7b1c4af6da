/**
 * The SQL of reserved databases (ADR 0037): rows of `databases` with no account, made and kept
 * ready per node by the reserve keeper and taken by a create in its own transaction.
 */
import type { Queryable } from '../../db/pool.ts';
import type { StoredAllowlistEntry, StoredLimits } from './databases.repo.ts';

/** The nodes that may hold reserves now: active, not cordoned, healthy, their warm pool on. */
const ELIGIBLE_NODE = `n.status = 'active' AND n.cordoned_at IS NULL AND n.unhealthy_since IS NULL
  AND jsonb_typeof(n.capabilities->'warm_pool'->'size') = 'number'
  AND (n.capabilities->'warm_pool'->>'size')::numeric >= 1`;

/** How many reserves a node keeps: the setting, at most its warm pool's size (agent-reported, clamped). */
const TARGET = `LEAST($1::int, GREATEST(LEAST((n.capabilities->'warm_pool'->>'size')::numeric, 1000), 0))::int`;

const LIVE_RESERVE = `d.account_id IS NULL AND d.deleted_at IS NULL`;

/**
 * Each eligible node short of reserves, with how many it lacks. Every live reserve counts — made,
 * being made, failed or being given back — so that a node whose reserve creates fail makes no
 * more until the failed ones are gone (at most its target per minute; they hold budget meanwhile).
 */
export async function reserveShortfall(
  db: Queryable,
  target: number,
  /** Only this node. */
  nodeId: string | null = null,
): Promise<{ node_id: string; node_name: string; missing: number }[]> {
  const r = await db.query<{ node_id: string; node_name: string; missing: number }>(
    `SELECT node_id, node_name, missing FROM (
       SELECT n.id AS node_id, n.name AS node_name,
              ${TARGET} - (SELECT count(*)::int FROM databases d
                            WHERE d.node_id = n.id AND ${LIVE_RESERVE}) AS missing
         FROM nodes n WHERE ${ELIGIBLE_NODE} AND ($2::uuid IS NULL OR n.id = $2)) s
      WHERE missing > 0 ORDER BY node_name`,
    [target, nodeId],
  );
  return r.rows;
}

/**
 * Reserves to give back, locked (SKIP LOCKED): failed ones (retried at most once a minute), and
 * ready ones on a node that may not hold them any more (cordoned, disabled, its warm pool off),
 * beyond its target (newest first), or made with settings no create asks for any more (the
 * server's default allowlist or limits changed since).
 */
export async function lockRetirable(
  db: Queryable,
  target: number,
  limit: number,
  current: { allowlist: StoredAllowlistEntry[]; limits: StoredLimits },
): Promise<{ id: string; node_id: string; name: string }[]> {
  const r = await db.query<{ id: string; node_id: string; name: string }>(
    `WITH ranked AS (
       SELECT d.id, row_number() OVER (PARTITION BY d.node_id ORDER BY d.ready_at, d.id) AS rank,
              CASE WHEN ${ELIGIBLE_NODE} THEN ${TARGET} ELSE 0 END AS target
         FROM databases d JOIN nodes n ON n.id = d.node_id
        WHERE ${LIVE_RESERVE} AND d.status = 'ready')
     SELECT d.id, d.node_id, d.name FROM databases d
      WHERE ${LIVE_RESERVE}
        AND ((d.status = 'failed' AND d.updated_at < now() - interval '60 seconds')
             OR d.id IN (SELECT id FROM ranked WHERE rank > target)
             OR (d.status = 'ready' AND (d.allowlist <> $3::jsonb OR d.limits <> $4::jsonb)))
      ORDER BY d.id LIMIT $2
      FOR UPDATE OF d SKIP LOCKED`,
    [target, limit, JSON.stringify(current.allowlist), JSON.stringify(current.limits)],
  );
  return r.rows;
}

/**
 * The ready reserve a create with these settings takes (oldest first), locked (SKIP LOCKED: two
 * creates never take the same one): on an eligible node (`nodeRef`: that one, by name or id), with
 * exactly these allowlist and limits, no rotation pending. Its name on the node stays (opaque), so
 * the label needs no room there (labels are unique per account only: migration 0038). Null: none.
 */
export async function lockReserveFor(
  db: Queryable,
  input: {
    nodeRef: string | null;
    allowlist: StoredAllowlistEntry[];
    limits: StoredLimits;
  },
): Promise<{ id: string; node_id: string } | null> {
  const r = await db.query<{ id: string; node_id: string }>(
    `SELECT d.id, d.node_id FROM databases d JOIN nodes n ON n.id = d.node_id
      WHERE ${LIVE_RESERVE} AND d.status = 'ready' AND d.kind = 'hosted'
        AND d.pending_password_sealed IS NULL
        AND d.allowlist = $1::jsonb AND d.limits = $2::jsonb
        AND n.status = 'active' AND n.cordoned_at IS NULL AND n.unhealthy_since IS NULL
        AND ($3::text IS NULL OR n.name = $3 OR n.id::text = $3)
      ORDER BY d.ready_at, d.id LIMIT 1
      FOR UPDATE OF d SKIP LOCKED`,
    [JSON.stringify(input.allowlist), JSON.stringify(input.limits), input.nodeRef],
  );
  return r.rows[0] ?? null;
}

/**
 * Hands a locked reserve to an account: its label, its account, new timestamps; its name on the
 * node (`pg_name`) is kept whatever the label becomes, and samples taken while it was a reserve go.
 * False: it is no longer a ready reserve (nothing changed).
 */
export async function handOver(
  db: Queryable,
  id: string,
  to: { accountId: string; label: string },
): Promise<boolean> {
  const r = await db.query(
    `UPDATE databases SET account_id = $2, name = $3, pg_name = coalesce(pg_name, name),
            created_at = now(), ready_at = now(), updated_at = now()
      WHERE id = $1 AND account_id IS NULL AND status = 'ready' AND deleted_at IS NULL`,
    [id, to.accountId, to.label],
  );
  if (r.rowCount !== 1) return false;
  await db.query('DELETE FROM database_samples WHERE database_id = $1', [id]);
  return true;
}

/** Ready reserves per node (the metric). */
export async function readyReserves(db: Queryable): Promise<{ name: string; ready: number }[]> {
  const r = await db.query<{ name: string; ready: number }>(
    `SELECT n.name, count(d.id)::int AS ready FROM nodes n
       LEFT JOIN databases d ON d.node_id = n.id AND ${LIVE_RESERVE} AND d.status = 'ready'
      WHERE n.status = 'active' GROUP BY n.name ORDER BY n.name`,
  );
  return r.rows;
}
