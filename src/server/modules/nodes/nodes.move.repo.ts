/** Moves and drains (migration 0029): the rows and their transitions. */
import type { Queryable } from '../../db/pool.ts';
import type { NodeState } from './nodes.placement.ts';

export type MoveStatus = 'copying' | 'restoring' | 'freezing' | 'switched' | 'failed';
/** A move still under way (migration 0035): one per database at a time. */
export const ACTIVE_MOVE_STATUSES = `('copying', 'restoring', 'freezing')`;

export type MoveRow = {
  id: string;
  account_id: string;
  database_id: string;
  database_name: string;
  /** Its name on the node (a warm-pool spare's, migration 0036; else `database_name`). */
  database_physical: string;
  source_node_id: string;
  source_node: string;
  target_node_id: string;
  target_node: string;
  drain_id: string | null;
  status: MoveStatus;
  wrapped_key: string;
  manifest: Record<string, unknown> | null;
  size_bytes: string | null;
  error: string | null;
  frozen_at: Date | null;
  /** The source's change fingerprint before a pre-copy's dump (null: the copy was made frozen). */
  precopy_fingerprint: string | null;
  /** How many times the data was copied: 2 when the database changed during the pre-copy. */
  copies: number;
  freeze_ms: string | null;
  duration_ms: string | null;
  created_at: Date;
  finished_at: Date | null;
};

const MOVE_COLUMNS = `m.id, m.account_id, m.database_id, d.name AS database_name,
  coalesce(d.pg_name, d.name) AS database_physical, m.source_node_id,
  s.name AS source_node, m.target_node_id, t.name AS target_node, m.drain_id, m.status, m.wrapped_key,
  m.manifest, m.size_bytes, m.error, m.frozen_at, m.precopy_fingerprint, m.copies, m.freeze_ms, m.duration_ms, m.created_at, m.finished_at`;
const MOVE_FROM = `database_moves m JOIN databases d ON d.id = m.database_id
  JOIN nodes s ON s.id = m.source_node_id JOIN nodes t ON t.id = m.target_node_id`;

export async function insertMove(
  db: Queryable,
  m: {
    id: string;
    accountId: string;
    databaseId: string;
    sourceNodeId: string;
    targetNodeId: string;
    drainId: string | null;
    wrappedKey: string;
  },
): Promise<void> {
  await db.query(
    `INSERT INTO database_moves (id, account_id, database_id, source_node_id, target_node_id, drain_id, wrapped_key)
     VALUES ($1, $2, $3, $4, $5, $6, $7)`,
    [m.id, m.accountId, m.databaseId, m.sourceNodeId, m.targetNodeId, m.drainId, m.wrappedKey],
  );
}

export async function findMove(db: Queryable, id: string, opts: { forUpdate?: boolean } = {}) {
  const r = await db.query<MoveRow>(
    `SELECT ${MOVE_COLUMNS} FROM ${MOVE_FROM} WHERE m.id = $1 ${opts.forUpdate ? 'FOR UPDATE OF m' : ''}`,
    [id],
  );
  return r.rows[0] ?? null;
}

/** The latest move of a database (the one a caller follows). */
export async function latestMove(db: Queryable, databaseId: string): Promise<MoveRow | null> {
  const r = await db.query<MoveRow>(
    `SELECT ${MOVE_COLUMNS} FROM ${MOVE_FROM} WHERE m.database_id = $1 ORDER BY m.created_at DESC LIMIT 1`,
    [databaseId],
  );
  return r.rows[0] ?? null;
}

export async function movesOfDrain(db: Queryable, drainId: string): Promise<MoveRow[]> {
  const r = await db.query<MoveRow>(
    `SELECT ${MOVE_COLUMNS} FROM ${MOVE_FROM} WHERE m.drain_id = $1 ORDER BY m.created_at LIMIT 10000`,
    [drainId],
  );
  return r.rows;
}

/**
 * The source's copy is made: the target restores it next. A frozen copy sets `frozen_at` unless
 * the move froze earlier (a second copy keeps the first freeze's start); a pre-copy keeps its
 * fingerprint for the freeze to compare.
 */
export async function markRestoring(
  db: Queryable,
  id: string,
  r: {
    manifest: Record<string, unknown>;
    sizeBytes: number;
    frozenAt: string | null;
    fingerprint: string | null;
  },
): Promise<void> {
  await db.query(
    `UPDATE database_moves SET status = 'restoring', manifest = $2, size_bytes = $3,
            frozen_at = coalesce(frozen_at, $4), precopy_fingerprint = $5
      WHERE id = $1 AND status = 'copying'`,
    [id, JSON.stringify(r.manifest), r.sizeBytes, r.frozenAt, r.fingerprint],
  );
}

/** The target restored a pre-copy: the source freezes and is fingerprinted again. */
export async function markFreezing(db: Queryable, id: string): Promise<void> {
  await db.query(`UPDATE database_moves SET status = 'freezing' WHERE id = $1 AND status = 'restoring'`, [
    id,
  ]);
}

/** The source froze after a pre-copy and is unchanged: the freeze began at `frozenAt`. */
export async function markFrozen(db: Queryable, id: string, frozenAt: string): Promise<void> {
  await db.query(
    `UPDATE database_moves SET frozen_at = coalesce(frozen_at, $2) WHERE id = $1 AND status = 'freezing'`,
    [id, frozenAt],
  );
}

/** The source changed during the pre-copy: it is frozen (since `frozenAt`) and copied again. */
export async function markSecondCopy(db: Queryable, id: string, frozenAt: string): Promise<void> {
  await db.query(
    `UPDATE database_moves SET status = 'copying', copies = 2, frozen_at = $2, precopy_fingerprint = NULL
      WHERE id = $1 AND status = 'freezing'`,
    [id, frozenAt],
  );
}

/** Does the node's agent offer this job kind (its last heartbeat's capabilities)? */
export async function nodeOffers(db: Queryable, nodeId: string, kind: string): Promise<boolean> {
  const r = await db.query<{ offers: boolean }>(
    `SELECT coalesce(capabilities->'jobs' ? $2, false) AS offers FROM nodes WHERE id = $1`,
    [nodeId, kind],
  );
  return r.rows[0]?.offers ?? false;
}

/** The move ends: switched or failed; the freeze's length and the whole duration by the server's clock. */
export async function finishMove(
  db: Queryable,
  id: string,
  status: 'switched' | 'failed',
  error: string | null,
): Promise<void> {
  await db.query(
    `UPDATE database_moves
        SET status = $2, error = $3, finished_at = now(),
            freeze_ms = CASE WHEN frozen_at IS NULL THEN NULL
                             ELSE greatest(0, (extract(epoch FROM now() - frozen_at) * 1000)::bigint) END,
            duration_ms = greatest(0, (extract(epoch FROM now() - created_at) * 1000)::bigint)
      WHERE id = $1 AND status IN ${ACTIVE_MOVE_STATUSES}`,
    [id, status, error === null ? null : error.slice(0, 1000)],
  );
}

export type DrainRow = {
  id: string;
  node_id: string;
  status: 'running' | 'completed' | 'failed';
  error: string | null;
  created_at: Date;
  finished_at: Date | null;
};

export async function insertDrain(db: Queryable, id: string, nodeId: string): Promise<void> {
  await db.query('INSERT INTO node_drains (id, node_id) VALUES ($1, $2)', [id, nodeId]);
}

export async function latestDrain(db: Queryable, nodeId: string): Promise<DrainRow | null> {
  const r = await db.query<DrainRow>(
    'SELECT * FROM node_drains WHERE node_id = $1 ORDER BY created_at DESC LIMIT 1',
    [nodeId],
  );
  return r.rows[0] ?? null;
}

export async function lockDrain(db: Queryable, id: string): Promise<DrainRow | null> {
  const r = await db.query<DrainRow>('SELECT * FROM node_drains WHERE id = $1 FOR UPDATE', [id]);
  return r.rows[0] ?? null;
}

export async function finishDrain(
  db: Queryable,
  id: string,
  status: 'completed' | 'failed',
  error: string | null,
): Promise<void> {
  await db.query(
    `UPDATE node_drains SET status = $2, error = $3, finished_at = now() WHERE id = $1 AND status = 'running'`,
    [id, status, error === null ? null : error.slice(0, 1000)],
  );
}

/** The next database a drain moves: a ready one still on the node, oldest first. */
export async function nextDrainDatabase(
  db: Queryable,
  nodeId: string,
): Promise<{ id: string; account_id: string; name: string } | null> {
  const r = await db.query<{ id: string; account_id: string; name: string }>(
    `SELECT id, account_id, name FROM databases
      WHERE node_id = $1 AND status = 'ready' AND kind = 'hosted' AND deleted_at IS NULL
        AND account_id IS NOT NULL -- a reserve is given back, never moved (ADR 0037)
      ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED`,
    [nodeId],
  );
  return r.rows[0] ?? null;
}

/** Databases left on a node that a drain does not move (not ready: provisioning, failed …; attached ones). */
export async function countUnmovable(db: Queryable, nodeId: string): Promise<number> {
  const r = await db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM databases
      WHERE node_id = $1 AND deleted_at IS NULL AND (status NOT IN ('ready', 'moving') OR kind = 'attached')`,
    [nodeId],
  );
  return r.rows[0]?.n ?? 0;
}

/** A node by id or name, with what placement checks (nodes.placement.ts `refusal`). */
export async function findNode(db: Queryable, by: { id?: string; name?: string }) {
  const r = await db.query<NodeState>(
    `SELECT id, name, status, cordoned_at, unhealthy_since FROM nodes
      WHERE ($1::uuid IS NULL OR id = $1) AND ($2::text IS NULL OR name = $2) LIMIT 1`,
    [by.id ?? null, by.name ?? null],
  );
  return r.rows[0] ?? null;
}

/** The switch: the database is on the target from this commit on. */
export async function switchNode(db: Queryable, databaseId: string, targetNodeId: string): Promise<void> {
  await db.query(
    `UPDATE databases SET node_id = $2, status = 'ready', updated_at = now()
      WHERE id = $1 AND status = 'moving'`,
    [databaseId, targetNodeId],
  );
}

export async function setMoving(db: Queryable, databaseId: string, moving: boolean): Promise<void> {
  await db.query(
    moving
      ? `UPDATE databases SET status = 'moving', updated_at = now() WHERE id = $1 AND status = 'ready'`
      : `UPDATE databases SET status = 'ready', updated_at = now() WHERE id = $1 AND status = 'moving'`,
    [databaseId],
  );
}

export async function sealedPassword(db: Queryable, databaseId: string): Promise<string | null> {
  const r = await db.query<{ password_sealed: string | null }>(
    'SELECT password_sealed FROM databases WHERE id = $1 AND deleted_at IS NULL',
    [databaseId],
  );
  return r.rows[0]?.password_sealed ?? null;
}

export async function databaseById(db: Queryable, databaseId: string) {
  const r = await db.query<{
    id: string;
    name: string;
    allowlist: { cidr: string; expires_at: string | null; note: string | null }[];
    limits: Record<string, number>;
  }>('SELECT id, name, allowlist, limits FROM databases WHERE id = $1', [databaseId]);
  return r.rows[0] ?? null;
}
