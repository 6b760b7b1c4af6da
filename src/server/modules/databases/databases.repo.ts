import { randomBytes } from 'node:crypto';
import type { Queryable } from '../../db/pool.ts';

export type DatabaseStatus = 'provisioning' | 'ready' | 'failed' | 'deleting' | 'deleted' | 'moving';

/** The outcome of the latest credentials rotation (migration 0010 says what each one means). */
export type RotationStatus = 'pending' | 'restoring' | 'succeeded' | 'failed_restored' | 'failed';

export type StoredAllowlistEntry = { cidr: string; expires_at: string | null; note: string | null };

export type StoredLimits = {
  owner_connection_limit: number;
  reader_connection_limit: number;
  statement_timeout_ms: number;
  idle_in_transaction_timeout_ms: number;
};

/** A database row as the service sees it: never the sealed passwords (see findSealed). */
export type DatabaseRow = {
  id: string;
  account_id: string;
  node_id: string;
  node_name: string;
  /** The label the account chose: what the API, the audit and the tenant call the database. */
  name: string;
  /**
   * Its name in PostgreSQL and PgBouncer when that is not `name` (made from a warm-pool spare;
   * migration 0036); null: `name`. Use `physicalName(row)`.
   */
  pg_name: string | null;
  status: DatabaseStatus;
  failure_reason: string | null;
  password_version: number;
  rotation_pending: boolean;
  allowlist: StoredAllowlistEntry[];
  limits: StoredLimits;
  created_at: Date;
  ready_at: Date | null;
  rotated_at: Date | null;
  updated_at: Date;
  last_rotation_status: RotationStatus | null;
  last_rotation_reason: string | null;
  last_rotation_requested_at: Date | null;
  last_rotation_at: Date | null;
  /** The node's health (issue 17): unhealthy while it does not report, disabled once decommissioned. */
  node_status: 'healthy' | 'unhealthy' | 'disabled';
  /** Where tenants reach the node's PgBouncer, as its agent reports it (null: the server's setting). */
  node_pooler_host: string | null;
  node_pooler_port: number | null;
  /** Hosted (made and managed by Bulwark) or attached (listed by its agent's config; migration 0033). */
  kind: 'hosted' | 'attached';
  /** An attached database's last role check, as its agent reported it (null when hosted). */
  attached: AttachedState | null;
  /** When an admin of the account accepted the attached database (null: it waits; hosted: null). */
  attached_accepted_at: Date | null;
};

/** What the agent's last check of an attached database found (migration 0033). */
export type AttachedState = {
  /** The agent's checks passed (the status it gets once accepted). */
  ok?: boolean;
  checked_at: string;
  server_version: string | null;
  findings: { role: string; severity: string; kind: string; object: string; detail: string }[];
};

/**
 * The database's name on its node (PostgreSQL database, PgBouncer entry, `roleNames()` base):
 * what every job, channel and connection string uses. The label (`name`) is for people.
 */
export const physicalName = (row: { name: string; pg_name: string | null }): string =>
  row.pg_name ?? row.name;

/**
 * The generated name on the node of every new database (ADR 0039): the `bulwark_db_` prefix no
 * tenant may ask for, then `p_` and 16 hex digits — never a warm-pool spare's
 * (`bulwark_db_<6 hex>_…`, ADR 0034); the agent makes the database under it, or hands out a spare.
 */
export const generatedPhysicalName = (): string => `bulwark_db_p_${randomBytes(8).toString('hex')}`;

const COLUMNS = `d.id, d.account_id, d.node_id, n.name AS node_name, d.name, d.pg_name, d.status, d.failure_reason,
  d.password_version, d.pending_password_sealed IS NOT NULL AS rotation_pending, d.allowlist, d.limits,
  d.created_at, d.ready_at, d.rotated_at, d.updated_at, d.last_rotation_status, d.last_rotation_reason,
  d.last_rotation_requested_at, d.last_rotation_at,
  CASE WHEN n.status <> 'active' THEN 'disabled' WHEN n.unhealthy_since IS NOT NULL THEN 'unhealthy'
       ELSE 'healthy' END AS node_status,
  n.pooler_host AS node_pooler_host, n.pooler_port AS node_pooler_port, d.kind, d.attached,
  d.attached_accepted_at`;

/**
 * The tenant connections committed on a node: the owner and reader connection limits of every
 * database whose roles may still exist there (all but deleted ones; see nodes.capacity.ts), or
 * what a database still holds from before a cut of its limits, whichever is more.
 */
export async function committedConnections(db: Queryable, nodeId: string): Promise<number> {
  const r = await db.query<{ n: string }>(
    `SELECT coalesce(sum(greatest((limits->>'owner_connection_limit')::bigint
                                  + (limits->>'reader_connection_limit')::bigint,
                                  coalesce(connections_held, 0))), 0) AS n
       FROM databases WHERE node_id = $1 AND deleted_at IS NULL AND kind = 'hosted'`,
    [nodeId],
  );
  return Number(r.rows[0]?.n ?? 0);
}

/** A database's label (what its account calls it), deleted or not; null when there is no such row. */
export async function labelOf(db: Queryable, id: string): Promise<string | null> {
  const r = await db.query<{ name: string }>('SELECT name FROM databases WHERE id = $1', [id]);
  return r.rows[0]?.name ?? null;
}

/** Connections a database still holds from before a cut of its limits (null: none). */
export async function connectionsHeld(db: Queryable, id: string): Promise<number | null> {
  const r = await db.query<{ held: number | null }>(
    'SELECT connections_held AS held FROM databases WHERE id = $1',
    [id],
  );
  return r.rows[0]?.held ?? null;
}

/** Keeps `held` connections committed after a cut, until a rotation after `jobId` ends the sessions. */
export async function holdConnections(
  db: Queryable,
  id: string,
  held: number | null,
  jobId: number | null,
): Promise<void> {
  await db.query('UPDATE databases SET connections_held = $2, connections_held_job = $3 WHERE id = $1', [
    id,
    held,
    jobId,
  ]);
}

/**
 * A rotation finished: every session of the owner opened before it was terminated, so what an
 * earlier cut held goes back to the node (only a cut queued before this rotation job).
 */
export async function releaseHeldConnections(
  db: Queryable,
  id: string,
  rotationJobId: number,
): Promise<void> {
  await db.query(
    `UPDATE databases SET connections_held = NULL, connections_held_job = NULL
      WHERE id = $1 AND connections_held_job < $2`,
    [id, rotationJobId],
  );
}

export async function activeNodeExists(db: Queryable, nodeName: string | null): Promise<boolean> {
  const r = await db.query(
    "SELECT 1 FROM nodes WHERE status = 'active' AND ($1::text IS NULL OR name = $1) LIMIT 1",
    [nodeName],
  );
  return (r.rowCount ?? 0) > 0;
}

export async function insertDatabase(
  db: Queryable,
  row: {
    id: string;
    /** null: a reserved database (ADR 0037), owned by no account until a create takes it. */
    accountId: string | null;
    nodeId: string;
    name: string;
    /** Its name on the node (generated, ADR 0039); absent: the label (attached databases). */
    pgName?: string;
    passwordSealed: string;
    allowlist: StoredAllowlistEntry[];
    limits: StoredLimits;
  },
): Promise<void> {
  await db.query(
    `INSERT INTO databases (id, account_id, node_id, name, pg_name, password_sealed, allowlist, limits)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
    [
      row.id,
      row.accountId,
      row.nodeId,
      row.name,
      row.pgName ?? null,
      row.passwordSealed,
      JSON.stringify(row.allowlist),
      JSON.stringify(row.limits),
    ],
  );
}

/** A live (not deleted) database of an account, optionally locked for update. */
export async function findByName(
  db: Queryable,
  accountId: string,
  name: string,
  opts: { forUpdate?: boolean } = {},
): Promise<DatabaseRow | null> {
  const r = await db.query<DatabaseRow>(
    `SELECT ${COLUMNS} FROM databases d JOIN nodes n ON n.id = d.node_id
      WHERE d.account_id = $1 AND d.name = $2 AND d.deleted_at IS NULL
      ${opts.forUpdate ? 'FOR UPDATE OF d' : ''}`,
    [accountId, name],
  );
  return r.rows[0] ?? null;
}

/**
 * Deletes the account's offers of that name: attached databases a node registered that the account
 * never accepted (databases.attached.ts). Returns what was withdrawn.
 */
export async function withdrawOffers(
  db: Queryable,
  accountId: string,
  name: string,
): Promise<{ id: string; node_id: string }[]> {
  const r = await db.query<{ id: string; node_id: string }>(
    `UPDATE databases SET status = 'deleted', deleted_at = now(), updated_at = now()
      WHERE account_id = $1 AND name = $2 AND kind = 'attached' AND deleted_at IS NULL
        AND attached_accepted_at IS NULL
      RETURNING id, node_id`,
    [accountId, name],
  );
  return r.rows;
}

/** The latest size/connection sample of a database (null columns until the agent's first one). */
export type SampleColumns = {
  sample_size_bytes: string | null;
  sample_connections: number | null;
  sampled_at: Date | null;
};

/** A LIKE pattern that matches `text` literally anywhere (backslash, `%` and `_` escaped; ESCAPE '\\'). */
const containsPattern = (text: string) => `%${text.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;

/**
 * Live databases of an account, newest first, after the keyset position `after` (see
 * http/pagination.ts); `names` limits a database-scoped caller to its databases; `status` and
 * `contains` (a literal, lower-cased substring of the name) filter. Read in the order of
 * databases_account_created_idx (migration 0015): a page costs the rows it scans, the filters
 * apply as they are read; each row's latest sample is one backward probe of the samples' key.
 */
export async function listByAccount(
  db: Queryable,
  accountId: string,
  opts: {
    after: { ts: number; id: string } | null;
    limit: number;
    names: readonly string[] | null;
    status?: DatabaseStatus | undefined;
    contains?: string | undefined;
  },
): Promise<(DatabaseRow & SampleColumns & { created_us: number })[]> {
  const r = await db.query<DatabaseRow & SampleColumns & { created_us: number }>(
    `SELECT ${COLUMNS}, (extract(epoch FROM d.created_at) * 1000000)::bigint AS created_us,
            s.size_bytes AS sample_size_bytes, s.connections AS sample_connections, s.at AS sampled_at
       FROM databases d JOIN nodes n ON n.id = d.node_id
       LEFT JOIN LATERAL (SELECT ds.size_bytes, ds.connections, ds.at FROM database_samples ds
                           WHERE ds.database_id = d.id ORDER BY ds.at DESC LIMIT 1) s ON true
      WHERE d.account_id = $1 AND d.deleted_at IS NULL
        AND ($2::bigint IS NULL
             OR (d.created_at, d.id) < (timestamptz 'epoch' + $2::bigint * interval '1 microsecond', $3::uuid))
        AND ($4::text[] IS NULL OR d.name = ANY ($4))
        AND ($6::text IS NULL OR d.status = $6)
        AND ($7::text IS NULL OR d.name LIKE $7 ESCAPE '\\')
      ORDER BY d.created_at DESC, d.id DESC
      LIMIT $5`,
    [
      accountId,
      opts.after?.ts ?? null,
      opts.after?.id ?? null,
      opts.names,
      opts.limit,
      opts.status ?? null,
      opts.contains === undefined ? null : containsPattern(opts.contains),
    ],
  );
  return r.rows;
}

/** The latest sample of one database (the detail view's numbers). */
export async function latestSample(db: Queryable, databaseId: string): Promise<SampleColumns> {
  const r = await db.query<SampleColumns>(
    `SELECT size_bytes AS sample_size_bytes, connections AS sample_connections, at AS sampled_at
       FROM database_samples WHERE database_id = $1 ORDER BY at DESC LIMIT 1`,
    [databaseId],
  );
  return r.rows[0] ?? { sample_size_bytes: null, sample_connections: null, sampled_at: null };
}

export async function findSealed(
  db: Queryable,
  where: { id: string; accountId: string | null; nodeId?: string },
): Promise<{ password_sealed: string | null; pending_password_sealed: string | null } | null> {
  const r = await db.query<{ password_sealed: string | null; pending_password_sealed: string | null }>(
    // accountId null: a reserved database's (ADR 0037), for its own create job's secret only.
    `SELECT password_sealed, pending_password_sealed FROM databases
      WHERE id = $1 AND account_id IS NOT DISTINCT FROM $2::uuid AND ($3::uuid IS NULL OR node_id = $3) AND deleted_at IS NULL`,
    [where.id, where.accountId, where.nodeId ?? null],
  );
  return r.rows[0] ?? null;
}

export async function markDeleting(db: Queryable, id: string): Promise<void> {
  await db.query("UPDATE databases SET status = 'deleting', updated_at = now() WHERE id = $1", [id]);
}

/** A rotation requested: the new password waits for the agent; the outcome starts as pending. */
export async function setPendingPassword(db: Queryable, id: string, sealed: string): Promise<void> {
  await db.query(
    `UPDATE databases SET pending_password_sealed = $2, last_rotation_status = 'pending',
            last_rotation_reason = NULL, last_rotation_requested_at = now(), last_rotation_at = now(),
            updated_at = now()
      WHERE id = $1`,
    [id, sealed],
  );
}

export async function setAllowlist(
  db: Queryable,
  id: string,
  entries: StoredAllowlistEntry[],
): Promise<void> {
  await db.query('UPDATE databases SET allowlist = $2, updated_at = now() WHERE id = $1', [
    id,
    JSON.stringify(entries),
  ]);
}

export async function setLimits(db: Queryable, id: string, limits: StoredLimits): Promise<void> {
  await db.query('UPDATE databases SET limits = $2, updated_at = now() WHERE id = $1', [
    id,
    JSON.stringify(limits),
  ]);
}

// --- job outcomes (called in the transaction that finishes the job) ---------------------------

/**
 * The create finished. `pgName`: the database's name on the node when the agent reported one other
 * than the label (a warm-pool spare's); `passwordSealed`: the owner's password the agent set,
 * sealed (it replaces the one the server generated). Both only while the row is provisioning.
 */
export async function markReady(
  db: Queryable,
  id: string,
  warm: { pgName?: string | null; passwordSealed?: string | null } = {},
): Promise<void> {
  await db.query(
    `UPDATE databases SET status = 'ready', ready_at = now(), failure_reason = NULL, updated_at = now(),
            pg_name = coalesce($2, pg_name), password_sealed = coalesce($3, password_sealed)
      WHERE id = $1 AND status = 'provisioning'`,
    [id, warm.pgName ?? null, warm.passwordSealed ?? null],
  );
}

/** The live database other than `exceptId` that is called `physical` on the node, if any. */
export async function physicalNameTaken(
  db: Queryable,
  nodeId: string,
  physical: string,
  exceptId: string,
): Promise<boolean> {
  const r = await db.query(
    `SELECT 1 FROM databases
      WHERE node_id = $1 AND coalesce(pg_name, name) = $2 AND id <> $3 AND deleted_at IS NULL LIMIT 1`,
    [nodeId, physical, exceptId],
  );
  return (r.rowCount ?? 0) > 0;
}

export async function markFailed(
  db: Queryable,
  id: string,
  from: DatabaseStatus,
  reason: string,
): Promise<void> {
  await db.query(
    `UPDATE databases SET status = 'failed', failure_reason = $3, updated_at = now()
      WHERE id = $1 AND status = $2`,
    [id, from, reason.slice(0, 1000)],
  );
}

/** The database is gone: its sealed passwords go too. */
export async function markDeleted(db: Queryable, id: string): Promise<void> {
  await db.query(
    `UPDATE databases SET status = 'deleted', deleted_at = now(), password_sealed = NULL,
            pending_password_sealed = NULL, updated_at = now()
      WHERE id = $1 AND status = 'deleting'`,
    [id],
  );
}

export async function finishRotation(db: Queryable, id: string): Promise<void> {
  await db.query(
    `UPDATE databases SET password_sealed = pending_password_sealed, pending_password_sealed = NULL,
            password_version = password_version + 1, rotated_at = now(), failure_reason = NULL,
            last_rotation_status = 'succeeded', last_rotation_reason = NULL, last_rotation_at = now(),
            updated_at = now()
      WHERE id = $1 AND pending_password_sealed IS NOT NULL`,
    [id],
  );
}

/**
 * A repair rotation proved the previous password live again: the rotation did not take effect.
 * The password, its version and rotated_at stay as they were; the rotation's failure reason
 * (set by restartRotationWithCurrentPassword) stays on the row.
 */
export async function finishRestore(db: Queryable, id: string): Promise<void> {
  await db.query(
    `UPDATE databases SET pending_password_sealed = NULL,
            failure_reason = left(coalesce(last_rotation_reason, 'credential rotation failed')
                                  || '; the previous password was restored', 1000),
            last_rotation_status = 'failed_restored', last_rotation_at = now(), updated_at = now()
      WHERE id = $1`,
    [id],
  );
}

/** A rotation (or its repair) that failed with nothing more to try: left for an operator. */
export async function abandonRotation(db: Queryable, id: string, reason: string): Promise<void> {
  await db.query(
    `UPDATE databases SET pending_password_sealed = NULL, failure_reason = $2,
            last_rotation_status = 'failed', last_rotation_reason = $2, last_rotation_at = now(),
            updated_at = now()
      WHERE id = $1`,
    [id, reason.slice(0, 1000)],
  );
}

/**
 * A rotation failed (`reason`): the pending password becomes the stored one, to be re-applied on
 * the node by a repair rotation.
 */
export async function restartRotationWithCurrentPassword(
  db: Queryable,
  id: string,
  reason: string,
): Promise<void> {
  await db.query(
    `UPDATE databases SET pending_password_sealed = password_sealed,
            failure_reason = left($2 || '; restoring the previous password', 1000),
            last_rotation_status = 'restoring', last_rotation_reason = $2, last_rotation_at = now(),
            updated_at = now()
      WHERE id = $1`,
    [id, reason.slice(0, 1000)],
  );
}

/** The reason recorded for the latest rotation (the repair keeps it). */
export async function lastRotationReason(db: Queryable, id: string): Promise<string | null> {
  const r = await db.query<{ reason: string | null }>(
    'SELECT last_rotation_reason AS reason FROM databases WHERE id = $1',
    [id],
  );
  return r.rows[0]?.reason ?? null;
}

export async function noteFailure(db: Queryable, id: string, reason: string): Promise<void> {
  await db.query('UPDATE databases SET failure_reason = $2, updated_at = now() WHERE id = $1', [
    id,
    reason.slice(0, 1000),
  ]);
}

// --- master key rotation -----------------------------------------------------------------------

export type SealedRow = {
  id: string;
  password_sealed: string | null;
  pending_password_sealed: string | null;
};

/** A batch of rows holding sealed values, after `afterId`, locked until the transaction ends. */
export async function lockSealedBatch(
  db: Queryable,
  afterId: string | null,
  limit: number,
): Promise<SealedRow[]> {
  const r = await db.query<SealedRow>(
    `SELECT id, password_sealed, pending_password_sealed FROM databases
      WHERE ($1::uuid IS NULL OR id > $1)
        AND (password_sealed IS NOT NULL OR pending_password_sealed IS NOT NULL)
      ORDER BY id LIMIT $2 FOR UPDATE`,
    [afterId, limit],
  );
  return r.rows;
}

export async function updateSealed(db: Queryable, row: SealedRow): Promise<void> {
  await db.query('UPDATE databases SET password_sealed = $2, pending_password_sealed = $3 WHERE id = $1', [
    row.id,
    row.password_sealed,
    row.pending_password_sealed,
  ]);
}

/** Databases whose allowlist holds an entry expired at `now`, locked (other sweepers skip them). */
export async function lockExpiredAllowlists(
  tx: Queryable,
  now: Date,
  limit: number,
): Promise<
  { id: string; account_id: string; node_id: string; name: string; allowlist: StoredAllowlistEntry[] }[]
> {
  const r = await tx.query(
    `SELECT id, account_id, node_id, name, allowlist FROM databases
      WHERE deleted_at IS NULL AND status IN ('provisioning', 'ready')
        AND EXISTS (SELECT 1 FROM jsonb_array_elements(allowlist) e
                     WHERE e->>'expires_at' IS NOT NULL AND (e->>'expires_at')::timestamptz <= $1)
      ORDER BY id LIMIT $2 FOR UPDATE SKIP LOCKED`,
    [now, limit],
  );
  return r.rows;
}

/** The earliest allowlist expiry still ahead of `now`, over every live database. */
export async function nextAllowlistExpiry(db: Queryable, now: Date): Promise<Date | null> {
  const r = await db.query<{ at: Date | null }>(
    `SELECT min((e->>'expires_at')::timestamptz) AS at
       FROM databases d, jsonb_array_elements(d.allowlist) e
      WHERE d.deleted_at IS NULL AND d.status IN ('provisioning', 'ready')
        AND e->>'expires_at' IS NOT NULL AND (e->>'expires_at')::timestamptz > $1`,
    [now],
  );
  return r.rows[0]?.at ?? null;
}
