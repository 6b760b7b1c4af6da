/**
 * Reading the audit log over the API: account-scoped listing and export, global verification
 * (ok/broken + seq only: the chain is global, details go to operators via `bulwark audit verify`),
 * checkpoints on demand and the public keys that verify them.
 */
import type { Logger } from 'pino';
import { AppError, badRequest } from '../../../shared/errors.ts';
import type { Db } from '../../db/pool.ts';
import type { Caller } from '../../http/caller.ts';
import type { AuditChainer } from './audit.chainer.ts';
import { type Checkpointer, keyMap } from './audit.checkpoints.ts';
import { exportLines, verifyDatabase } from './audit.export.ts';
import * as repo from './audit.repo.ts';
import { type AuditService, auditFromCaller } from './audit.service.ts';
import type { VerifyReport } from './audit.verify.ts';
import type { AuditOutcome } from './audit-chain.ts';

/** The filters of the listing and the export, as the routes take them. */
export type EventFilterQuery = {
  action?: string | undefined;
  actor?: string | undefined;
  target?: string | undefined;
  outcome?: AuditOutcome | undefined;
  since?: string | undefined;
  until?: string | undefined;
};

export type EventQuery = EventFilterQuery & { limit: number; cursor?: string | undefined };

/** An inverted range (since after until) matches nothing: an empty answer, as for any other filter. */
function eventMatch(q: EventFilterQuery): repo.EventMatch {
  const since = q.since === undefined ? undefined : new Date(q.since);
  const until = q.until === undefined ? undefined : new Date(q.until);
  return { action: q.action, actorId: q.actor, targetId: q.target, outcome: q.outcome, since, until };
}

function encodeCursor(id: number): string {
  return Buffer.from(`a:${id}`, 'utf8').toString('base64url');
}

function decodeCursor(raw: string | undefined): number | undefined {
  if (raw === undefined) return undefined;
  const m = /^a:([1-9][0-9]{0,15})$/.exec(Buffer.from(raw, 'base64url').toString('utf8'));
  const id = m ? Number(m[1]) : Number.NaN;
  if (!Number.isSafeInteger(id)) throw badRequest('Invalid cursor');
  return id;
}

function presentEvent(r: repo.AuditEventRow) {
  return {
    id: String(r.id),
    seq: r.seq === null ? null : String(r.seq),
    chained: r.seq !== null,
    occurred_at: r.occurred_at.toISOString(),
    actor_type: r.actor_type,
    actor_id: r.actor_id,
    action: r.action,
    target_type: r.target_type,
    target_id: r.target_id,
    account_id: r.account_id,
    source_ip: r.source_ip,
    outcome: r.outcome,
    request_id: r.request_id,
    details: r.details,
  };
}

const VERIFY_REUSE_MS = 30_000;

/** The audit record of an on-demand checkpoint (it does not itself make the head "move"). */
const CHECKPOINT_CREATED = 'audit.checkpoint_created';
/** One new on-demand checkpoint per account per minute (per replica); the same head is free. */
const CHECKPOINT_INTERVAL_MS = 60_000;
const CHECKPOINT_ACCOUNTS_TRACKED = 10_000;

export function createAuditAdminService(deps: {
  db: Db;
  log: Logger;
  audit: Pick<AuditService, 'record' | 'recordNow'>;
  chainer: Pick<AuditChainer, 'chainPending'>;
  checkpointer: Pick<Checkpointer, 'publicKeys' | 'onDemand'>;
  now?: () => number;
}) {
  const now = deps.now ?? Date.now;
  /** accountId → when it last created an on-demand checkpoint (bounded; oldest dropped first). */
  const lastCreated = new Map<string, number>();
  let inFlight: Promise<VerifyReport> | null = null;
  let lastVerify: { at: number; report: VerifyReport } | null = null;

  return {
    async listEvents(caller: Caller, q: EventQuery) {
      const rows = await repo.listEvents(
        deps.db,
        { accountId: caller.accountId, ...eventMatch(q), beforeId: decodeCursor(q.cursor) },
        q.limit + 1,
      );
      const page = rows.slice(0, q.limit);
      const last = page.at(-1);
      return {
        items: page.map(presentEvent),
        next_cursor: rows.length > q.limit && last ? encodeCursor(last.id) : null,
      };
    },

    /**
     * The caller's account's chained events as export lines. Taking a copy of the log is itself
     * an event, durable before the first line (fail closed: no record, no export).
     */
    async exportAccount(
      caller: Caller,
      requestId: string,
      filter: EventFilterQuery = {},
    ): Promise<AsyncGenerator<string>> {
      const match = eventMatch(filter);
      const given = Object.fromEntries(Object.entries(filter).filter(([, v]) => v !== undefined));
      await deps.audit.recordNow(
        auditFromCaller(
          caller,
          {
            action: 'audit.exported',
            targetType: 'account',
            targetId: caller.accountId,
            ...(Object.keys(given).length ? { details: { filter: given } } : {}),
          },
          requestId,
        ),
      );
      return exportLines(deps.db, {
        accountId: caller.accountId,
        publicKeys: deps.checkpointer.publicKeys(),
        match,
      });
    },

    /**
     * Whole-chain verification through the API: concurrent calls share one run, and a result is
     * reused for 30 s, so tenants cannot keep the server verifying the global chain back to
     * back (operators get a fresh run from `bulwark audit verify`).
     */
    verify(): Promise<VerifyReport> {
      if (lastVerify && Date.now() - lastVerify.at < VERIFY_REUSE_MS)
        return Promise.resolve(lastVerify.report);
      inFlight ??= verifyDatabase(deps.db, keyMap(deps.checkpointer.publicKeys()))
        .then((report) => {
          lastVerify = { at: Date.now(), report };
          return report;
        })
        .finally(() => {
          inFlight = null;
        });
      return inFlight;
    },

    /**
     * A signed checkpoint of the current (global) chain head, for a tenant admin anchoring an
     * export. Idempotent per head: when nothing but on-demand checkpoint records was chained
     * since the newest checkpoint, that one is returned (`created: false`) and nothing is written.
     * A new one is limited per account (429 with `retry_after_s`) and audited in its transaction.
     */
    async checkpoint(caller: Caller, requestId: string) {
      await deps.chainer.chainPending();
      return deps.checkpointer.onDemand(CHECKPOINT_CREATED, async (tx, cp) => {
        const t = now();
        const last = lastCreated.get(caller.accountId);
        if (last !== undefined && t - last < CHECKPOINT_INTERVAL_MS) {
          const retryAfterS = Math.max(1, Math.ceil((last + CHECKPOINT_INTERVAL_MS - t) / 1000));
          throw new AppError('rate_limited', 'A new checkpoint was created recently; retry later', {
            retry_after_s: retryAfterS,
          });
        }
        await deps.audit.record(
          tx,
          auditFromCaller(
            caller,
            {
              action: CHECKPOINT_CREATED,
              targetType: 'audit_checkpoint',
              targetId: cp.seq,
              details: { seq: cp.seq, hash: cp.hash, key_id: cp.keyId },
            },
            requestId,
          ),
        );
        lastCreated.delete(caller.accountId);
        if (lastCreated.size >= CHECKPOINT_ACCOUNTS_TRACKED) {
          const oldest = lastCreated.keys().next();
          if (!oldest.done) lastCreated.delete(oldest.value);
        }
        lastCreated.set(caller.accountId, t);
      });
    },

    publicKeys: () => deps.checkpointer.publicKeys(),
  };
}

export type AuditAdminService = ReturnType<typeof createAuditAdminService>;
