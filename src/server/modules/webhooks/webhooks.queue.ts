/**
 * SQL of the delivery queue (migration 0030), written for batches: one statement queues every
 * delivery of a dispatcher pass, one claims a batch, and one transaction records a batch of
 * outcomes (ADR 0032, "Cost per event").
 */
import type { Queryable } from '../../db/pool.ts';
import type { DeliveryRow } from './webhooks.repo.ts';

/**
 * The queue's own transactions commit without waiting for the WAL flush (as the audit chainer's
 * do): a crash can lose only their last few commits, and each loss is undone safely — a lost
 * dispatcher pass leaves its cursor and outbox rows where they were (the pass is redone, the
 * unique index makes it harmless), a lost claim or outcome leaves the delivery due again (sent
 * again: delivery is at least once, and `bulwark-delivery` lets a receiver drop a repeat).
 */
export async function asyncCommit(tx: Queryable): Promise<void> {
  await tx.query("SET LOCAL synchronous_commit = 'off'");
}

export type QueuedEvent = { accountId: string; eventId: string; type: string; payload: string };

/**
 * Queues one delivery per (enabled webhook of the event's account subscribed to its type, event):
 * a single INSERT…SELECT for the whole pass, each payload sent once whatever the number of
 * webhooks. The subscription test is `subscribed()` of webhooks.events.ts: `*`, the type, or its
 * area's `<area>.*`. A (webhook, event) pair already queued is skipped. Returns how many.
 */
export async function queueEvents(
  db: Queryable,
  events: readonly QueuedEvent[],
  maxAttempts: number,
): Promise<number> {
  if (events.length === 0) return 0;
  const r = await db.query(
    `INSERT INTO webhook_deliveries
       (id, webhook_id, account_id, event_id, event_type, payload, max_attempts, next_attempt_at)
     SELECT gen_random_uuid(), w.id, e.account_id, e.event_id, e.type, e.payload, $5, now()
       FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[])
            WITH ORDINALITY AS e(account_id, event_id, type, payload, ord)
       JOIN webhooks w ON w.account_id = e.account_id AND w.enabled
                      AND w.events && ARRAY['*', e.type, split_part(e.type, '.', 1) || '.*']
      ORDER BY e.ord, w.id
     ON CONFLICT (webhook_id, event_id) WHERE redelivery_of IS NULL DO NOTHING`,
    [
      events.map((e) => e.accountId),
      events.map((e) => e.eventId),
      events.map((e) => e.type),
      events.map((e) => e.payload),
      maxAttempts,
    ],
  );
  return r.rowCount ?? 0;
}

/** A claimed delivery with what sending it needs. */
export type ClaimedDelivery = DeliveryRow & {
  url: string;
  secret_sealed: string;
  previous_secret_sealed: string | null;
  previous_secret_expires_at: Date | null;
};

/** What a claim may take per account: `cap` in flight each, `busy` already in flight here. */
export type AccountShare = { cap: number; busy: ReadonlyMap<string, number> };

/**
 * Claims up to `limit` due deliveries of enabled webhooks: counts the attempt and pushes the next
 * attempt `leaseMs` away (the lease: a worker that dies mid-attempt leaves the row to be claimed
 * again after it). One statement; the HTTP requests happen after its commit. Its commit does not
 * wait for the WAL flush (ASYNC_COMMIT).
 *
 * Fair between accounts: due rows are ranked within their account (oldest first) and an account
 * gets at most `share.cap` minus what it already has in flight in this worker, so one account's
 * backlog (to a receiver that never answers, say) cannot take every slot (ADR 0032).
 *
 * A due row whose attempts are already spent (its last attempt's outcome was never recorded: the
 * lease lapsed) is not sent again: the same statement marks it dead and returns it with status
 * `dead` (the caller launches nothing for it).
 */
export async function claimDue(
  db: Queryable,
  limit: number,
  leaseMs: number,
  share: AccountShare,
): Promise<ClaimedDelivery[]> {
  const r = await db.query<ClaimedDelivery>(
    `WITH async AS (SELECT set_config('synchronous_commit', 'off', true)),
          busy AS (SELECT * FROM unnest($3::uuid[], $4::int[]) AS b(account_id, n)),
          ranked AS (
       SELECT d.id, d.next_attempt_at,
              row_number() OVER (PARTITION BY d.account_id ORDER BY d.next_attempt_at, d.id)
                + COALESCE(b.n, 0) AS place
         FROM async, webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
         LEFT JOIN busy b ON b.account_id = d.account_id
        WHERE d.status IN ('pending', 'failed') AND d.next_attempt_at <= now() AND w.enabled),
          due AS (
       SELECT d.id FROM ranked r JOIN webhook_deliveries d ON d.id = r.id
        WHERE r.place <= $5 AND d.status IN ('pending', 'failed') AND d.next_attempt_at <= now()
        ORDER BY r.next_attempt_at LIMIT $1
        FOR UPDATE OF d SKIP LOCKED)
     UPDATE webhook_deliveries d
        SET attempts = CASE WHEN d.attempts >= d.max_attempts THEN d.attempts ELSE d.attempts + 1 END,
            status = CASE WHEN d.attempts >= d.max_attempts THEN 'dead' ELSE d.status END,
            next_attempt_at = CASE WHEN d.attempts >= d.max_attempts THEN NULL
                                   ELSE now() + $2::int * interval '1 millisecond' END,
            last_error = CASE WHEN d.attempts >= d.max_attempts
                              THEN 'no outcome was recorded for the last attempt (its lease ended)'
                              ELSE d.last_error END
       FROM due, webhooks w
      WHERE d.id = due.id AND w.id = d.webhook_id
      RETURNING d.id, d.webhook_id, d.account_id, d.event_id, d.event_type, d.payload, d.status, d.attempts,
                d.max_attempts, d.next_attempt_at, d.last_status_code, d.last_error, d.duration_ms,
                d.response_body, d.created_at, d.delivered_at, '0' AS created_us,
                w.url, w.secret_sealed, w.previous_secret_sealed, w.previous_secret_expires_at`,
    [limit, leaseMs, [...share.busy.keys()], [...share.busy.values()], share.cap],
  );
  return r.rows;
}

/** When the next due delivery is (for the worker's sleep), or null when none waits. */
export async function nextDueAt(db: Queryable): Promise<Date | null> {
  const r = await db.query<{ at: Date | null }>(
    `SELECT min(d.next_attempt_at) AS at FROM webhook_deliveries d JOIN webhooks w ON w.id = d.webhook_id
      WHERE d.status IN ('pending', 'failed') AND w.enabled`,
  );
  return r.rows[0]?.at ?? null;
}

export type Outcome = {
  deliveryId: string;
  webhookId: string;
  ok: boolean;
  status: 'succeeded' | 'failed' | 'dead';
  nextAttemptInMs: number | null;
  statusCode: number | null;
  error: string | null;
  durationMs: number;
  responseBody: string | null;
};

export type Streak = {
  id: string;
  account_id: string;
  enabled: boolean;
  consecutive_failures: number;
  failing_since: Date | null;
};

/**
 * The webhooks' failure streaks after a batch of outcomes (in the order they happened): a success
 * ends a streak, the failures after the last success extend or begin one. Rows whose streak does
 * not change (a success with no streak: the common case) are neither written nor locked; the rest
 * are locked in id order (two workers never deadlock), at the strength an UPDATE takes (a delivery
 * being queued for the webhook, its foreign key check, is not held up). Returns the failing
 * webhooks as updated.
 */
export async function noteStreaks(db: Queryable, outcomes: readonly Outcome[]): Promise<Streak[]> {
  const by = new Map<string, { reset: boolean; add: number }>();
  for (const o of outcomes) {
    const s = by.get(o.webhookId) ?? { reset: false, add: 0 };
    if (o.ok) by.set(o.webhookId, { reset: true, add: 0 });
    else by.set(o.webhookId, { reset: s.reset, add: s.add + 1 });
  }
  const ids = [...by.keys()].sort();
  const r = await db.query<Streak>(
    `WITH u AS (SELECT * FROM unnest($1::uuid[], $2::bool[], $3::int[]) AS u(id, reset, add)),
          locked AS (
       SELECT w.id FROM webhooks w JOIN u ON u.id = w.id
        WHERE u.add > 0 OR w.consecutive_failures <> 0 OR w.failing_since IS NOT NULL
        ORDER BY w.id FOR NO KEY UPDATE OF w)
     UPDATE webhooks w
        SET consecutive_failures = CASE WHEN u.reset THEN u.add ELSE w.consecutive_failures + u.add END,
            failing_since = CASE WHEN u.add = 0 THEN NULL
                                 WHEN u.reset THEN now()
                                 ELSE COALESCE(w.failing_since, now()) END
       FROM locked, u
      WHERE w.id = locked.id AND u.id = w.id
      RETURNING w.id, w.account_id, w.enabled, w.consecutive_failures, w.failing_since`,
    [ids, ids.map((id) => by.get(id)?.reset ?? false), ids.map((id) => by.get(id)?.add ?? 0)],
  );
  return r.rows.filter((w) => w.consecutive_failures > 0);
}

/** PostgreSQL text cannot hold U+0000: a receiver's answer (or an error quoting it) may. */
export const pgText = (v: string | null): string | null =>
  v === null ? null : v.replaceAll('\u0000', '\uFFFD');

/** Records a batch of attempts' outcomes: one statement. */
export async function recordOutcomes(db: Queryable, outcomes: readonly Outcome[]): Promise<void> {
  if (outcomes.length === 0) return;
  await db.query(
    `UPDATE webhook_deliveries d
        SET status = u.status,
            next_attempt_at = CASE WHEN u.next_ms IS NULL THEN NULL
                                   ELSE now() + u.next_ms * interval '1 millisecond' END,
            last_status_code = u.code, last_error = u.error, duration_ms = u.duration,
            response_body = u.body,
            delivered_at = CASE WHEN u.status = 'succeeded' THEN now() ELSE d.delivered_at END
       FROM unnest($1::uuid[], $2::text[], $3::int[], $4::int[], $5::text[], $6::int[], $7::text[])
            AS u(id, status, next_ms, code, error, duration, body)
      WHERE d.id = u.id`,
    [
      outcomes.map((o) => o.deliveryId),
      outcomes.map((o) => o.status),
      outcomes.map((o) => o.nextAttemptInMs),
      outcomes.map((o) => o.statusCode),
      outcomes.map((o) => pgText(o.error)),
      outcomes.map((o) => o.durationMs),
      outcomes.map((o) => pgText(o.responseBody)),
    ],
  );
}

/**
 * Deletes up to `limit` finished deliveries (succeeded or dead) created more than `days` days
 * ago, oldest first per webhook (the log index); returns how many. A delivery another one is a
 * redelivery of is kept until that one goes: deleting it would clear the redelivery's
 * `redelivery_of`, and two cleared redeliveries of one event would collide in the unique index.
 */
export async function pruneFinished(db: Queryable, days: number, limit: number): Promise<number> {
  const r = await db.query(
    `DELETE FROM webhook_deliveries x
      WHERE x.id IN (
        SELECT d.id FROM webhooks w
         CROSS JOIN LATERAL (
           SELECT d.id FROM webhook_deliveries d
            WHERE d.webhook_id = w.id AND d.created_at < now() - $1::int * interval '1 day'
              AND d.status IN ('succeeded', 'dead')
              AND NOT EXISTS (SELECT 1 FROM webhook_deliveries r WHERE r.redelivery_of = d.id)
            ORDER BY d.created_at, d.id LIMIT $2) d
         LIMIT $2)`,
    [days, limit],
  );
  return r.rowCount ?? 0;
}
