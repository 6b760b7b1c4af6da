/**
 * The audit API every module calls to record a security-relevant event.
 *
 *   await recordAudit(tx, auditFromRequest(req, { action: 'key.created', targetType: 'key', targetId: id }));
 *
 * Fail closed: call it with the SAME transaction (`tx`) as the change it records. The row is part
 * of that transaction, so the action and its event commit together; if the insert fails (invalid
 * event, database error) it throws and the surrounding change rolls back. A failed or refused
 * action has nothing to roll back: record it with `recordAuditNow(db, …)` (its own transaction).
 *
 * The row is chained (seq, hash) a few milliseconds after commit by the chainer (audit.chainer.ts);
 * an event counts as durable when its transaction commits.
 *
 * Details: plain JSON only (no Date/Buffer: convert to strings). Never put a secret in details.
 * Any `sql` string in details is redacted (literals → `?`) here, so raw SQL never reaches the log.
 */
import type { FastifyRequest } from 'fastify';
import { redactSql } from '../../../shared/sql/explorer-validator.ts';
import type { Db, Queryable } from '../../db/pool.ts';
import type { Caller } from '../../http/caller.ts';
import {
  type AuditActorType,
  type AuditEventInput,
  type AuditOutcome,
  canonicalEncode,
} from './audit-chain.ts';

/**
 * NOTIFY channel that wakes the chainer. Writers do NOT notify inside their transaction: a
 * notifying transaction takes a cluster-wide lock held across its commit, which serialised
 * writers to ~460 events/s here (vs ~1,800/s without). Instead recordAudit signals this process
 * (onAuditRecorded); the local chainer polls briefly, and a replica that is not the chainer sends
 * one debounced NOTIFY outside any transaction.
 */
export const AUDIT_CHANNEL = 'bulwark_audit';

/**
 * `committed`: false after recordAudit (the caller's transaction commits later, so the chainer
 * polls briefly); true after a group-committed batch of recordAuditNow (already durable: one
 * chaining pass a little later finds it, no polling needed).
 */
type RecordedListener = (committed: boolean) => void;
const recordedListeners = new Set<RecordedListener>();

/** Called after every recordAudit (before its commit) and every group commit. Returns an unsubscribe function. */
export function onAuditRecorded(fn: RecordedListener): () => void {
  recordedListeners.add(fn);
  return () => recordedListeners.delete(fn);
}

/** Action names: dotted lower-case words, e.g. `key.created`, `database.credentials_revealed`. */
export const AUDIT_ACTION_PATTERN = /^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*){0,5}$/;

/**
 * What a caller passes. Only `action` is required; `outcome` defaults to 'success', `actorType` to
 * 'system', `occurredAt` to now, every other field to null and `details` to {}.
 * (An AuditEventInput from audit-chain.ts is accepted as is.)
 */
export type AuditEventDraft = {
  action: string;
  outcome?: AuditOutcome;
  actorType?: AuditActorType;
  actorId?: string | null;
  targetType?: string | null;
  targetId?: string | null;
  accountId?: string | null;
  sourceIp?: string | null;
  requestId?: string | null;
  details?: Record<string, unknown>;
  occurredAt?: string;
};

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function redactDetails(details: Record<string, unknown>): Record<string, unknown> {
  if (typeof details.sql !== 'string') return details;
  return { ...details, sql: redactSql(details.sql) };
}

/** Fills defaults and validates an event exactly as the chainer will encode it (throws TypeError). */
export function normalizeAuditEvent(e: AuditEventDraft): AuditEventInput {
  const occurredAt = e.occurredAt === undefined ? new Date() : new Date(e.occurredAt);
  if (Number.isNaN(occurredAt.getTime())) throw new TypeError('audit event: occurredAt is not a valid time');
  const event: AuditEventInput = {
    actorType: e.actorType ?? 'system',
    actorId: e.actorId ?? null,
    action: e.action,
    targetType: e.targetType ?? null,
    targetId: e.targetId ?? null,
    accountId: e.accountId ?? null,
    sourceIp: e.sourceIp ?? null,
    outcome: e.outcome ?? 'success',
    requestId: e.requestId ?? null,
    details: redactDetails(e.details ?? {}),
    // Millisecond UTC: what a timestamptz round-trips to, so the chainer re-encodes the same text.
    occurredAt: occurredAt.toISOString(),
  };
  if (!AUDIT_ACTION_PATTERN.test(event.action) || event.action.length > 100) {
    throw new TypeError(`audit event: invalid action ${JSON.stringify(event.action.slice(0, 100))}`);
  }
  if (event.accountId !== null && !UUID.test(event.accountId)) {
    throw new TypeError('audit event: accountId must be a uuid');
  }
  // Refuses what the canonical encoding cannot represent (non-plain details, bad enums…).
  // jsonb cannot hold \u0000; a text column cannot either. Refuse here, with a clear message.
  // (The canonical text escapes every string of the event, so one search covers them all.)
  if (canonicalEncode(1, event).includes('\\u0000')) throw new TypeError('audit event: NUL characters');
  return event;
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

/**
 * Records one event inside the caller's transaction. Throws (and so fails the action) if the
 * event is invalid or cannot be written. Cheap: one INSERT (no lock on a shared row).
 */
export async function recordAudit(tx: Queryable, event: AuditEventDraft): Promise<void> {
  const e = normalizeAuditEvent(event);
  await tx.query(
    `INSERT INTO audit_events (${AUDIT_INSERT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
    auditInsertParams(e),
  );
  for (const fn of recordedListeners) fn(false);
}

/** Many events in one statement (column arrays through unnest). */
/** Many events in one statement: the batch travels as one JSON array, parsed once by PostgreSQL. */
async function insertMany(tx: Queryable, events: AuditEventInput[]): Promise<void> {
  await tx.query(
    `INSERT INTO audit_events (${AUDIT_INSERT_COLUMNS})
     SELECT "occurredAt", "actorType", "actorId", action, "targetType", "targetId",
            "accountId", "sourceIp", outcome, "requestId", details
       FROM jsonb_to_recordset($1::jsonb) AS e(
              "occurredAt" timestamptz, "actorType" text, "actorId" text, action text, "targetType" text,
              "targetId" text, "accountId" uuid, "sourceIp" text, outcome text, "requestId" text, details jsonb)`,
    [JSON.stringify(events)],
  );
}

type Pending = { event: AuditEventInput; resolve: () => void; reject: (err: unknown) => void };

/**
 * Group commit for events that stand alone (refusals, reads such as explorer queries, reveals
 * recorded before the answer): concurrent calls on one pool share a transaction, so one WAL
 * flush makes many events durable. Each caller still resumes only once its own event has
 * committed; a failed batch fails every caller in it (fail closed).
 */
function createGroupAppender(db: Db) {
  const queue: Pending[] = [];
  let inFlight = 0;
  const MAX_IN_FLIGHT = 2;
  const MAX_BATCH = 500;
  /** Flushes events nobody waits for (recordAuditSoon) when no awaited event took them along. */
  let lazyTimer: NodeJS.Timeout | undefined;

  const pump = () => {
    if (lazyTimer) {
      clearTimeout(lazyTimer);
      lazyTimer = undefined;
    }
    while (inFlight < MAX_IN_FLIGHT && queue.length > 0) {
      const batch = queue.splice(0, MAX_BATCH);
      inFlight++;
      // One statement is its own transaction: a single round trip makes the whole batch durable.
      insertMany(
        db,
        batch.map((p) => p.event),
      )
        .then(() => {
          for (const fn of recordedListeners) fn(true);
          for (const p of batch) p.resolve();
        })
        .catch((err: unknown) => {
          for (const p of batch) p.reject(err);
        })
        .finally(() => {
          inFlight--;
          pump();
        });
    }
  };

  return (event: AuditEventInput, soon?: number) =>
    new Promise<void>((resolve, reject) => {
      queue.push({ event, resolve, reject });
      if (soon === undefined) pump();
      else if (!lazyTimer) {
        lazyTimer = setTimeout(pump, soon);
        lazyTimer.unref();
      }
    });
}

const appenders = new WeakMap<Db, (e: AuditEventInput, soon?: number) => Promise<void>>();

function appenderOf(db: Db) {
  let append = appenders.get(db);
  if (!append) {
    append = createGroupAppender(db);
    appenders.set(db, append);
  }
  return append;
}

/**
 * Records an event in its own transaction (refusals and failures, where nothing else commits),
 * group-committed with other such events of this process. Resolves once the event is durable.
 */
export async function recordAuditNow(db: Db, event: AuditEventDraft): Promise<void> {
  const e = normalizeAuditEvent(event);
  await appenderOf(db)(e);
}

/**
 * Like recordAuditNow for an event nobody waits on before answering (e.g. the outcome of an
 * explorer query whose first event is already durable): it joins the next group commit of this
 * process, or is written on its own within `withinMs`. Saves an INSERT and a WAL flush per such
 * event under load. Resolves once durable; rejects (the caller logs) if it cannot be written.
 */
export async function recordAuditSoon(db: Db, event: AuditEventDraft, withinMs = 20): Promise<void> {
  const e = normalizeAuditEvent(event);
  await appenderOf(db)(e, withinMs);
}

/**
 * The request's part of an event: actor from `req.caller` (an API key: actorType 'key', actorId
 * the key id, accountId its account), source IP and request id. Without a caller (e.g. a refused
 * sign-in) the actor is 'system'/null unless `partial` says otherwise. Fields in `partial` win.
 */
export function auditFromRequest(
  req: Pick<FastifyRequest, 'caller' | 'ip' | 'id'>,
  partial: AuditEventDraft,
): AuditEventDraft {
  const c = req.caller;
  const base: AuditEventDraft = {
    action: partial.action,
    actorType: c ? 'key' : 'system',
    actorId: c ? c.keyId : null,
    accountId: c ? c.accountId : null,
    sourceIp: c?.sourceIp ?? req.ip ?? null,
    requestId: String(req.id),
  };
  const out: AuditEventDraft = { ...base };
  for (const [k, v] of Object.entries(partial)) {
    if (v !== undefined) (out as Record<string, unknown>)[k] = v;
  }
  return out;
}

/**
 * The same as auditFromRequest for a service that holds the Caller but not the request: actor
 * 'key' (the key id), its account and source IP; pass the request id when you have it.
 */
export function auditFromCaller(
  caller: Pick<Caller, 'keyId' | 'accountId' | 'sourceIp'>,
  partial: AuditEventDraft,
  requestId: string | null = null,
): AuditEventDraft {
  return auditFromRequest(
    { caller: caller as Caller, ip: caller.sourceIp, id: requestId ?? '' },
    {
      ...(requestId === null ? { requestId: null } : {}),
      ...partial,
    },
  );
}
