import type { Queryable } from '../../db/pool.ts';
import type { AuditActorType, AuditEventInput, AuditOutcome } from './audit-chain.ts';

export type AuditEventRow = {
  id: number;
  seq: number | null;
  occurred_at: Date;
  actor_type: AuditActorType;
  actor_id: string | null;
  action: string;
  target_type: string | null;
  target_id: string | null;
  account_id: string | null;
  source_ip: string | null;
  outcome: AuditOutcome;
  request_id: string | null;
  details: Record<string, unknown>;
};

/** A chained row with what verification needs (the stored canonical text and hashes). */
export type ChainedRow = AuditEventRow & {
  seq: number;
  canonical: string;
  prev_hash: Buffer;
  hash: Buffer;
};

export type HeadRow = { seq: number; hash: Buffer };

export type CheckpointRow = {
  id: number;
  kind: 'checkpoint' | 'anchor';
  seq: number;
  hash: Buffer;
  at: string;
  key_id: string;
  signature: string;
};

const EVENT_COLUMNS = `id, seq, occurred_at, actor_type, actor_id, action, target_type, target_id,
  account_id::text AS account_id, source_ip, outcome, request_id, details`;
const CHAINED_COLUMNS = `${EVENT_COLUMNS}, canonical, prev_hash, hash`;

/** The fields as the chainer encodes them (occurred_at as millisecond UTC ISO text). */
export function rowToEvent(r: AuditEventRow): AuditEventInput {
  return {
    actorType: r.actor_type,
    actorId: r.actor_id,
    action: r.action,
    targetType: r.target_type,
    targetId: r.target_id,
    accountId: r.account_id,
    sourceIp: r.source_ip,
    outcome: r.outcome,
    requestId: r.request_id,
    details: r.details,
    occurredAt: r.occurred_at.toISOString(),
  };
}

/** The columns a writer fills (the chainer fills the rest), and their values for one event. */
export const AUDIT_INSERT_COLUMNS = `occurred_at, actor_type, actor_id, action, target_type, target_id,
                        account_id, source_ip, outcome, request_id, details`;

export function auditInsertParams(e: AuditEventInput): unknown[] {
  return [
    e.occurredAt,
    e.actorType,
    e.actorId,
    e.action,
    e.targetType,
    e.targetId,
    e.accountId,
    e.sourceIp,
    e.outcome,
    e.requestId,
    JSON.stringify(e.details),
  ];
}

/** One pending (unchained) event, in the caller's transaction. */
export async function insertEvent(tx: Queryable, e: AuditEventInput): Promise<void> {
  await tx.query(
    `INSERT INTO audit_events (${AUDIT_INSERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
    auditInsertParams(e),
  );
}

/** Many events in one statement: the batch travels as one JSON array, parsed once by PostgreSQL. */
export async function insertEvents(db: Queryable, events: AuditEventInput[]): Promise<void> {
  await db.query(
    `INSERT INTO audit_events (${AUDIT_INSERT_COLUMNS})
     SELECT "occurredAt", "actorType", "actorId", action, "targetType", "targetId",
            "accountId", "sourceIp", outcome, "requestId", details
       FROM jsonb_to_recordset($1::jsonb) AS e(
              "occurredAt" timestamptz, "actorType" text, "actorId" text, action text, "targetType" text,
              "targetId" text, "accountId" uuid, "sourceIp" text, outcome text, "requestId" text, details jsonb)`,
    [JSON.stringify(events)],
  );
}

/** A session advisory lock on the leader's own connection: true when this session now holds it. */
export async function tryLeaderLock(client: Queryable, lock: number): Promise<boolean> {
  const r = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [lock]);
  return r.rows[0]?.ok === true;
}

/** Locks the head for this transaction: the only serialisation point, taken once per batch. */
export async function lockHead(tx: Queryable): Promise<HeadRow> {
  const r = await tx.query<HeadRow>('SELECT seq, hash FROM audit_head WHERE id = 1 FOR UPDATE');
  const head = r.rows[0];
  if (!head) throw new Error('audit_head row is missing (migration 0003 not applied?)');
  return head;
}

export async function readHead(db: Queryable): Promise<HeadRow> {
  const r = await db.query<HeadRow>('SELECT seq, hash FROM audit_head WHERE id = 1');
  return r.rows[0] ?? { seq: 0, hash: Buffer.alloc(32) };
}

/**
 * Committed rows not chained yet, oldest insert first. Call with the head locked: that lock is what
 * serialises chainers (a second one reads pending rows only after the first committed), and
 * nothing else updates a pending row, so the rows need no lock of their own (which would cost a
 * write per event).
 */
export async function lockPending(tx: Queryable, limit: number): Promise<AuditEventRow[]> {
  const r = await tx.query<AuditEventRow>(
    `SELECT ${EVENT_COLUMNS} FROM audit_events WHERE seq IS NULL ORDER BY id LIMIT $1`,
    [limit],
  );
  return r.rows;
}

export async function writeChained(
  tx: Queryable,
  rows: { id: number; seq: number; canonical: string; prev: Buffer; hash: Buffer }[],
): Promise<void> {
  await tx.query(
    `UPDATE audit_events e
        SET seq = u.seq, canonical = u.canonical, prev_hash = decode(u.prev, 'hex'),
            hash = decode(u.hash, 'hex'), chained_at = now()
       FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[])
            AS u(id, seq, canonical, prev, hash)
      WHERE e.id = u.id AND e.seq IS NULL`,
    [
      rows.map((r) => r.id),
      rows.map((r) => r.seq),
      rows.map((r) => r.canonical),
      rows.map((r) => r.prev.toString('hex')),
      rows.map((r) => r.hash.toString('hex')),
    ],
  );
}

export async function advanceHead(tx: Queryable, head: HeadRow): Promise<void> {
  await tx.query('UPDATE audit_head SET seq = $1, hash = $2, updated_at = now() WHERE id = 1', [
    head.seq,
    head.hash,
  ]);
}

export async function pendingStats(db: Queryable): Promise<{ count: number; oldestAgeS: number | null }> {
  const r = await db.query<{ count: number; age: number | null }>(
    `SELECT count(*)::int AS count,
            extract(epoch FROM now() - min(occurred_at))::float8 AS age
       FROM audit_events WHERE seq IS NULL`,
  );
  return { count: r.rows[0]?.count ?? 0, oldestAgeS: r.rows[0]?.age ?? null };
}

/** Chained rows with seq > afterSeq, in seq order (keyset pages for verification and export). */
export async function chainedAfter(db: Queryable, afterSeq: number, limit: number): Promise<ChainedRow[]> {
  const r = await db.query<ChainedRow>(
    `SELECT ${CHAINED_COLUMNS} FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2`,
    [afterSeq, limit],
  );
  return r.rows;
}

/** The filters of an account's listing and export (each one optional; all must hold). */
export type EventMatch = {
  action?: string | undefined;
  actorId?: string | undefined;
  targetId?: string | undefined;
  outcome?: AuditOutcome | undefined;
  since?: Date | undefined;
  until?: Date | undefined;
};

/** SQL conditions for an EventMatch, their values appended to `params` (placeholders numbered after them). */
function matchConditions(f: EventMatch, params: unknown[]): string[] {
  const where: string[] = [];
  const add = (sql: string, v: unknown) => {
    params.push(v);
    where.push(sql.replace('?', `$${params.length}`));
  };
  if (f.action !== undefined) add('action = ?', f.action);
  if (f.actorId !== undefined) add('actor_id = ?', f.actorId);
  if (f.targetId !== undefined) add('target_id = ?', f.targetId);
  if (f.outcome !== undefined) add('outcome = ?', f.outcome);
  if (f.since !== undefined) add('occurred_at >= ?', f.since);
  if (f.until !== undefined) add('occurred_at < ?', f.until);
  return where;
}

export async function chainedAfterForAccount(
  db: Queryable,
  accountId: string,
  afterSeq: number,
  limit: number,
  match: EventMatch = {},
): Promise<ChainedRow[]> {
  const params: unknown[] = [accountId, afterSeq];
  const and = matchConditions(match, params)
    .map((w) => ` AND ${w}`)
    .join('');
  params.push(limit);
  const r = await db.query<ChainedRow>(
    `SELECT ${CHAINED_COLUMNS} FROM audit_events
      WHERE account_id = $1 AND seq > $2${and} ORDER BY seq LIMIT $${params.length}`,
    params,
  );
  return r.rows;
}

export type EventFilter = EventMatch & {
  accountId: string;
  /** Keyset: only rows with id < beforeId (newest first). */
  beforeId?: number | undefined;
};

/**
 * Account-less events a member causes about themselves (their own sign-ins and sessions). What a
 * member does to others outside the account (a platform admin's suspension of another account's
 * user) is not the account's to see; events where the member is the target are.
 */
const SELF_EVENTS = ['auth.login', 'session.issued', 'session.logout', 'session.refresh_reused']
  .map((a) => `'${a}'`)
  .join(', ');

/**
 * One account's events, newest first (pending rows included: they are committed facts), and the
 * events about its members that belong to no account (sign-ins, failed sign-ins, sessions issued
 * and ended, a platform admin's suspension): a person's sign-in concerns every account they are in.
 */
export async function listEvents(db: Queryable, f: EventFilter, limit: number): Promise<AuditEventRow[]> {
  const params: unknown[] = [f.accountId];
  const where = matchConditions(f, params);
  if (f.beforeId !== undefined) {
    params.push(f.beforeId);
    where.push(`id < $${params.length}`);
  }
  params.push(limit);
  const and = where.map((w) => ` AND ${w}`).join('');
  const lim = `$${params.length}`;
  const members = 'SELECT m.user_id::text FROM memberships m WHERE m.account_id = $1';
  const r = await db.query<AuditEventRow>(
    `SELECT * FROM (
       (SELECT ${EVENT_COLUMNS} FROM audit_events WHERE account_id = $1${and} ORDER BY id DESC LIMIT ${lim})
       UNION ALL
       (SELECT ${EVENT_COLUMNS} FROM audit_events
         WHERE account_id IS NULL AND actor_type = 'user' AND actor_id IN (${members})
           AND action IN (${SELF_EVENTS})${and}
         ORDER BY id DESC LIMIT ${lim})
       UNION ALL
       (SELECT ${EVENT_COLUMNS} FROM audit_events
         WHERE account_id IS NULL AND target_type = 'user' AND target_id IN (${members})
           AND NOT (actor_type = 'user' AND actor_id IN (${members}))${and}
         ORDER BY id DESC LIMIT ${lim})
     ) e ORDER BY id DESC LIMIT ${lim}`,
    params,
  );
  return r.rows;
}

export async function insertCheckpoint(db: Queryable, cp: Omit<CheckpointRow, 'id'>): Promise<CheckpointRow> {
  const r = await db.query<CheckpointRow>(
    `INSERT INTO audit_checkpoints (kind, seq, hash, at, key_id, signature)
     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id, kind, seq, hash, at, key_id, signature`,
    [cp.kind, cp.seq, cp.hash, cp.at, cp.key_id, cp.signature],
  );
  return r.rows[0]!;
}

export async function listCheckpoints(db: Queryable): Promise<CheckpointRow[]> {
  const r = await db.query<CheckpointRow>(
    'SELECT id, kind, seq, hash, at, key_id, signature FROM audit_checkpoints ORDER BY seq, id',
  );
  return r.rows;
}

/** The newest checkpoint (not anchor), or null. */
export async function latestCheckpoint(db: Queryable): Promise<CheckpointRow | null> {
  const r = await db.query<CheckpointRow>(
    `SELECT id, kind, seq, hash, at, key_id, signature FROM audit_checkpoints
      WHERE kind = 'checkpoint' ORDER BY seq DESC, id DESC LIMIT 1`,
  );
  return r.rows[0] ?? null;
}

/** Serialises on-demand checkpoints across replicas (one head → one checkpoint), until commit. */
export async function lockOnDemandCheckpoints(tx: Queryable): Promise<void> {
  await tx.query("SELECT pg_advisory_xact_lock(hashtext('bulwark.audit.checkpoint_on_demand'))");
}

/** Are there chained events in (`from`, `to`] other than `ignoredAction` ones? (Walks the seq index.) */
export async function chainMovedBetween(
  db: Queryable,
  from: number,
  to: number,
  ignoredAction: string,
): Promise<boolean> {
  const r = await db.query<{ moved: boolean }>(
    'SELECT EXISTS (SELECT 1 FROM audit_events WHERE seq > $1 AND seq <= $2 AND action <> $3) AS moved',
    [from, to, ignoredAction],
  );
  return r.rows[0]?.moved ?? true;
}

export async function lastCheckpointSeq(db: Queryable): Promise<number> {
  const r = await db.query<{ seq: number | null }>(
    "SELECT max(seq) AS seq FROM audit_checkpoints WHERE kind = 'checkpoint'",
  );
  return r.rows[0]?.seq ?? 0;
}

/**
 * Retention: the highest seq S such that every chained event up to S is older than `cutoff`
 * (a prefix: the chain can only be cut at one point), capped at `maxRows` past the current
 * anchor so one pass stays short. Null when there is nothing to prune.
 */
export async function prunableHead(
  tx: Queryable,
  cutoff: Date,
  maxRows: number,
): Promise<{ seq: number; hash: Buffer } | null> {
  const r = await tx.query<{ seq: number; hash: Buffer }>(
    `WITH lo AS (SELECT min(seq) AS s FROM audit_events WHERE seq IS NOT NULL),
          young AS (SELECT (SELECT seq FROM audit_events WHERE seq IS NOT NULL AND occurred_at >= $1
                             ORDER BY seq LIMIT 1) AS s),
          hi AS (SELECT max(seq) AS s FROM audit_events WHERE seq IS NOT NULL)
     SELECT e.seq, e.hash FROM audit_events e, lo, young, hi
      WHERE e.seq = least(coalesce(young.s - 1, hi.s), lo.s + $2 - 1)`,
    [cutoff, maxRows],
  );
  return r.rows[0] ?? null;
}

export async function deleteThrough(tx: Queryable, seq: number): Promise<number> {
  const r = await tx.query('DELETE FROM audit_events WHERE seq IS NOT NULL AND seq <= $1', [seq]);
  return r.rowCount ?? 0;
}

/** Checkpoints at or below a new anchor can no longer be checked against rows: keep only the anchor. */
export async function deleteCheckpointsThrough(tx: Queryable, seq: number): Promise<void> {
  await tx.query('DELETE FROM audit_checkpoints WHERE seq <= $1 AND NOT (kind = $2 AND seq = $1)', [
    seq,
    'anchor',
  ]);
}
