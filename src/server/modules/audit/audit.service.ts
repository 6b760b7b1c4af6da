/**
 * The audit API every module uses to record a security-relevant event. The server builds one
 * `AuditService` in its wiring point (main.ts) and passes it to the services that record:
 *
 *   await audit.record(tx, auditFromCaller(caller, { action: 'key.created', targetType: 'key', targetId: id }));
 *
 * Fail closed: call it with the SAME transaction (`tx`) as the change it records. The row is part
 * of that transaction, so the action and its event commit together; if the insert fails (invalid
 * event, database error) it throws and the surrounding change rolls back. A failed or refused
 * action has nothing to roll back: record it with `audit.recordNow(…)` (its own transaction).
 *
 * The row is chained (seq, hash) a few milliseconds after commit by the chainer (audit.chainer.ts);
 * an event counts as durable when its transaction commits.
 *
 * Details: plain JSON only (no Date/Buffer: convert to strings). Never put a secret in details.
 * Any `sql` string in details is redacted (literals → `?`) here, so raw SQL never reaches the log.
 *
 * Whatever bytes a client sent, the event is written: PostgreSQL's text and jsonb cannot hold a
 * NUL character or a lone UTF-16 surrogate, so every string of the event (details' keys and
 * values at any depth included) has each of them replaced by U+FFFD, here, before the event is
 * stored, so the chain is computed over what is stored. (Bytes that are not UTF-8 never get this
 * far: Node decodes them to U+FFFD on the way in.) U+FFFD keeps a string's length, so a field
 * that fitted its bound still does.
 */
import type { FastifyRequest } from 'fastify';
import { redactSql } from '../../../shared/sql/explorer-validator.ts';
import type { Db, Queryable } from '../../db/pool.ts';
import { storableJson, storableText } from '../../db/storable.ts';
import { type Caller, callerActor } from '../../http/caller.ts';
import * as repo from './audit.repo.ts';
import {
  type AuditActorType,
  type AuditEventInput,
  type AuditOutcome,
  canonicalEncode,
} from './audit-chain.ts';

/**
 * NOTIFY channel that wakes the chainer. Writers do NOT notify inside their transaction: a
 * notifying transaction takes a cluster-wide lock held across its commit, which serialised
 * writers to ~460 events/s here (vs ~1,800/s without). Instead `AuditService.record` signals this
 * process (`onRecorded`); the local chainer polls briefly, and a replica that is not the chainer
 * sends one debounced NOTIFY outside any transaction.
 */
export const AUDIT_CHANNEL = 'bulwark_audit';

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

const storableOrNull = (s: string | null | undefined): string | null =>
  s === null || s === undefined ? null : storableText(s);

/** Fills defaults and validates an event exactly as the chainer will encode it (throws TypeError). */
export function normalizeAuditEvent(e: AuditEventDraft): AuditEventInput {
  const occurredAt = e.occurredAt === undefined ? new Date() : new Date(e.occurredAt);
  if (Number.isNaN(occurredAt.getTime())) throw new TypeError('audit event: occurredAt is not a valid time');
  const details = e.details ?? {};
  const event: AuditEventInput = {
    actorType: e.actorType ?? 'system',
    actorId: storableOrNull(e.actorId),
    action: e.action,
    targetType: storableOrNull(e.targetType),
    targetId: storableOrNull(e.targetId),
    accountId: e.accountId ?? null,
    sourceIp: storableOrNull(e.sourceIp),
    outcome: e.outcome ?? 'success',
    requestId: storableOrNull(e.requestId),
    // Made storable before the redaction: the SQL parser reads a C string (a NUL would end it).
    // Non-plain details come back unchanged, for the canonical encoding below to refuse.
    details: redactDetails(storableJson(details) as Record<string, unknown>),
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
  canonicalEncode(1, event);
  return event;
}

/**
 * Writes one event in `tx` and nothing else: for a process that runs no chainer (the CLI's
 * operator commands, `bulwark up`'s supervisor and enrollment). The server's chainer finds the
 * row by its safety poll. Inside the server, use `AuditService.record`, which also wakes the
 * chainer of this process at once. Throws (and so fails the action) if the event is invalid or
 * cannot be written.
 */
export async function recordAudit(tx: Queryable, event: AuditEventDraft): Promise<void> {
  await repo.insertEvent(tx, normalizeAuditEvent(event));
}

/**
 * `committed`: false after `record` (the caller's transaction commits later, so the chainer
 * polls briefly); true after a group-committed batch of `recordNow`/`recordSoon` (already
 * durable: one chaining pass a little later finds it, no polling needed).
 */
type RecordedListener = (committed: boolean) => void;

type Pending = { event: AuditEventInput; resolve: () => void; reject: (err: unknown) => void };

/**
 * Group commit for events that stand alone (refusals, reads such as explorer queries, reveals
 * recorded before the answer): concurrent calls on one pool share a transaction, so one WAL
 * flush makes many events durable. Each caller still resumes only once its own event has
 * committed; a failed batch fails every caller in it (fail closed).
 */
function createGroupAppender(db: Db, onCommitted: () => void) {
  const queue: Pending[] = [];
  let inFlight = 0;
  const MAX_IN_FLIGHT = 2;
  const MAX_BATCH = 500;
  /** Flushes events nobody waits for (recordSoon) when no awaited event took them along. */
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
      repo
        .insertEvents(
          db,
          batch.map((p) => p.event),
        )
        .then(() => {
          onCommitted();
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

/** The audit writer of one server process (built once in main.ts, passed to every module). */
export type AuditService = {
  /**
   * Records one event inside the caller's transaction (it commits with the change it records).
   * Cheap: one INSERT (no lock on a shared row). Wakes this process's chainer.
   */
  record(tx: Queryable, event: AuditEventDraft): Promise<void>;
  /**
   * Records an event in its own transaction (refusals and failures, where nothing else commits),
   * group-committed with other such events of this process. Resolves once the event is durable.
   */
  recordNow(event: AuditEventDraft): Promise<void>;
  /**
   * Like recordNow for an event nobody waits on before answering (e.g. the outcome of an explorer
   * query whose first event is already durable): it joins the next group commit of this process,
   * or is written on its own within `withinMs`. Saves an INSERT and a WAL flush per such event
   * under load. Resolves once durable; rejects (the caller logs) if it cannot be written.
   */
  recordSoon(event: AuditEventDraft, withinMs?: number): Promise<void>;
  /** Called after every `record` (before its commit) and every group commit. Returns an unsubscribe function. */
  onRecorded(fn: RecordedListener): () => void;
};

export function createAuditService(deps: { db: Db }): AuditService {
  const listeners = new Set<RecordedListener>();
  const emit = (committed: boolean) => {
    for (const fn of listeners) fn(committed);
  };
  const append = createGroupAppender(deps.db, () => emit(true));
  return {
    async record(tx, event) {
      await recordAudit(tx, event);
      emit(false);
    },
    // async: an invalid event is a rejected promise, like a failed write (never a throw).
    recordNow: async (event) => append(normalizeAuditEvent(event)),
    recordSoon: async (event, withinMs = 20) => append(normalizeAuditEvent(event), withinMs),
    onRecorded(fn) {
      listeners.add(fn);
      return () => listeners.delete(fn);
    },
  };
}

/**
 * The request's part of an event: actor from `req.caller` (an API key: actorType 'key', actorId
 * the key id; a signed-in user: 'user', the user id; accountId the account acted in), source IP and request id. Without a caller (e.g. a refused
 * sign-in) the actor is 'system'/null unless `partial` says otherwise. Fields in `partial` win.
 */
export function auditFromRequest(
  req: Pick<FastifyRequest, 'caller' | 'ip' | 'id'>,
  partial: AuditEventDraft,
): AuditEventDraft {
  const c = req.caller;
  const base: AuditEventDraft = {
    action: partial.action,
    actorType: c ? callerActor(c).type : 'system',
    actorId: c ? callerActor(c).id : null,
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
 * 'key' (the key id) or 'user' (the user id), its account and source IP; pass the request id when you have it.
 */
export function auditFromCaller(
  caller: Caller,
  partial: AuditEventDraft,
  requestId: string | null = null,
): AuditEventDraft {
  return auditFromRequest(
    { caller, ip: caller.sourceIp, id: requestId ?? '' },
    {
      ...(requestId === null ? { requestId: null } : {}),
      ...partial,
    },
  );
}
