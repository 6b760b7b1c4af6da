/** SQL of webhooks and their deliveries (migration 0030). */
import type { Queryable } from '../../db/pool.ts';
import type { PageCursor } from '../../http/pagination.ts';
import type { AuditEventRow, OutboxRow } from './webhooks.events.ts';

export type WebhookRow = {
  id: string;
  account_id: string;
  url: string;
  events: string[];
  description: string | null;
  enabled: boolean;
  disabled_reason: string | null;
  secret_sealed: string;
  secret_hint: string;
  secret_rotated_at: Date | null;
  previous_secret_sealed: string | null;
  previous_secret_expires_at: Date | null;
  consecutive_failures: number;
  failing_since: Date | null;
  created_at: Date;
  updated_at: Date;
  last_status: string | null;
  last_status_code: number | null;
  last_at: Date | null;
};

const WEBHOOK_COLUMNS = `w.id, w.account_id, w.url, w.events, w.description, w.enabled, w.disabled_reason,
  w.secret_sealed, w.secret_hint, w.secret_rotated_at, w.previous_secret_sealed, w.previous_secret_expires_at,
  w.consecutive_failures, w.failing_since, w.created_at, w.updated_at,
  l.status AS last_status, l.last_status_code, l.at AS last_at`;

// The latest delivery that was tried (not one still waiting for its first attempt).
const LAST_DELIVERY = `LEFT JOIN LATERAL (
    SELECT d.status, d.last_status_code, COALESCE(d.delivered_at, d.created_at) AS at
      FROM webhook_deliveries d
     WHERE d.webhook_id = w.id AND d.attempts > 0
     ORDER BY d.created_at DESC, d.id DESC LIMIT 1) l ON true`;

export async function countWebhooks(db: Queryable, accountId: string): Promise<number> {
  const r = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM webhooks WHERE account_id = $1', [
    accountId,
  ]);
  return r.rows[0]?.n ?? 0;
}

export async function insertWebhook(
  db: Queryable,
  w: {
    id: string;
    accountId: string;
    url: string;
    events: string[];
    description: string | null;
    secretSealed: string;
    secretHint: string;
  },
): Promise<void> {
  await db.query(
    `INSERT INTO webhooks (id, account_id, url, events, description, secret_sealed, secret_hint)
     VALUES ($1, $2, $3, $4, $5, $6, $7)`,
    [w.id, w.accountId, w.url, w.events, w.description, w.secretSealed, w.secretHint],
  );
}

export async function listWebhooks(db: Queryable, accountId: string): Promise<WebhookRow[]> {
  const r = await db.query<WebhookRow>(
    `SELECT ${WEBHOOK_COLUMNS} FROM webhooks w ${LAST_DELIVERY}
      WHERE w.account_id = $1 ORDER BY w.created_at, w.id`,
    [accountId],
  );
  return r.rows;
}

export async function findWebhook(
  db: Queryable,
  accountId: string,
  id: string,
  opts: { lock?: boolean } = {},
): Promise<WebhookRow | null> {
  const r = await db.query<WebhookRow>(
    opts.lock
      ? `SELECT w.*, NULL AS last_status, NULL::int AS last_status_code, NULL::timestamptz AS last_at
           FROM webhooks w WHERE w.account_id = $1 AND w.id = $2 FOR UPDATE`
      : `SELECT ${WEBHOOK_COLUMNS} FROM webhooks w ${LAST_DELIVERY} WHERE w.account_id = $1 AND w.id = $2`,
    [accountId, id],
  );
  return r.rows[0] ?? null;
}

export type WebhookPatch = {
  url?: string;
  events?: string[];
  description?: string | null;
  enabled?: boolean;
};

export async function patchWebhook(db: Queryable, id: string, p: WebhookPatch): Promise<void> {
  const sets: string[] = [];
  const values: unknown[] = [id];
  const set = (col: string, v: unknown) => {
    values.push(v);
    sets.push(`${col} = $${values.length}`);
  };
  if (p.url !== undefined) set('url', p.url);
  if (p.events !== undefined) set('events', p.events);
  if (p.description !== undefined) set('description', p.description);
  if (p.enabled !== undefined) {
    set('enabled', p.enabled);
    // Re-enabling starts afresh: the reason and the failure streak are cleared.
    if (p.enabled) sets.push('disabled_reason = NULL', 'consecutive_failures = 0', 'failing_since = NULL');
  }
  sets.push('updated_at = now()');
  await db.query(`UPDATE webhooks SET ${sets.join(', ')} WHERE id = $1`, values);
}

export async function rotateSecret(
  db: Queryable,
  id: string,
  r: { secretSealed: string; secretHint: string; previousSealed: string | null; overlapS: number },
): Promise<void> {
  await db.query(
    `UPDATE webhooks SET secret_sealed = $2, secret_hint = $3, secret_rotated_at = now(),
            previous_secret_sealed = $4,
            previous_secret_expires_at = CASE WHEN $4::text IS NULL THEN NULL
                                              ELSE now() + $5::int * interval '1 second' END,
            updated_at = now()
      WHERE id = $1`,
    [id, r.secretSealed, r.secretHint, r.previousSealed, r.overlapS],
  );
}

export async function deleteWebhook(db: Queryable, accountId: string, id: string): Promise<boolean> {
  const r = await db.query('DELETE FROM webhooks WHERE account_id = $1 AND id = $2', [accountId, id]);
  return r.rowCount === 1;
}

// --- Deliveries ----------------------------------------------------------------------------------

export type DeliveryRow = {
  id: string;
  webhook_id: string;
  account_id: string;
  event_id: string;
  event_type: string;
  payload: string;
  status: 'pending' | 'succeeded' | 'failed' | 'dead';
  attempts: number;
  max_attempts: number;
  next_attempt_at: Date | null;
  last_status_code: number | null;
  last_error: string | null;
  duration_ms: number | null;
  response_body: string | null;
  created_at: Date;
  delivered_at: Date | null;
  created_us: string;
};

const DELIVERY_COLUMNS = `id, webhook_id, account_id, event_id, event_type, payload, status, attempts, max_attempts,
  next_attempt_at, last_status_code, last_error, duration_ms, response_body, created_at, delivered_at,
  (extract(epoch FROM created_at) * 1000000)::bigint AS created_us`;

export type NewDelivery = {
  id: string;
  webhookId: string;
  accountId: string;
  eventId: string;
  eventType: string;
  payload: string;
  maxAttempts: number;
  redeliveryOf?: string | null;
};

/** Inserts deliveries due now; a (webhook, event) pair already queued is skipped. Returns how many. */
export async function insertDeliveries(db: Queryable, rows: readonly NewDelivery[]): Promise<number> {
  if (rows.length === 0) return 0;
  const r = await db.query(
    `INSERT INTO webhook_deliveries
       (id, webhook_id, account_id, event_id, event_type, payload, max_attempts, redelivery_of, next_attempt_at)
     SELECT u.id, u.webhook_id, u.account_id, u.event_id, u.event_type, u.payload, u.max_attempts, u.redelivery_of,
            now()
       FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::int[], $8::uuid[])
            AS u(id, webhook_id, account_id, event_id, event_type, payload, max_attempts, redelivery_of)
     ON CONFLICT (webhook_id, event_id) WHERE redelivery_of IS NULL DO NOTHING`,
    [
      rows.map((d) => d.id),
      rows.map((d) => d.webhookId),
      rows.map((d) => d.accountId),
      rows.map((d) => d.eventId),
      rows.map((d) => d.eventType),
      rows.map((d) => d.payload),
      rows.map((d) => d.maxAttempts),
      rows.map((d) => d.redeliveryOf ?? null),
    ],
  );
  return r.rowCount ?? 0;
}

/** Deliveries of a webhook waiting to be sent (pending, or failed and to be retried). */
export async function countWaiting(db: Queryable, webhookId: string): Promise<number> {
  const r = await db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM webhook_deliveries
      WHERE webhook_id = $1 AND status IN ('pending', 'failed')`,
    [webhookId],
  );
  return r.rows[0]?.n ?? 0;
}

export async function listDeliveries(
  db: Queryable,
  q: { webhookId: string; status?: string; limit: number; after: PageCursor | null },
): Promise<DeliveryRow[]> {
  const values: unknown[] = [q.webhookId, q.limit + 1];
  let where = 'webhook_id = $1';
  if (q.status) {
    values.push(q.status);
    where += ` AND status = $${values.length}`;
  }
  if (q.after) {
    values.push(q.after.ts, q.after.id);
    where += ` AND (created_at, id) < (timestamptz 'epoch' + $${values.length - 1}::bigint * interval '1 microsecond', $${values.length}::uuid)`;
  }
  const r = await db.query<DeliveryRow>(
    `SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries WHERE ${where} ORDER BY created_at DESC, id DESC LIMIT $2`,
    values,
  );
  return r.rows;
}

export async function findDelivery(
  db: Queryable,
  webhookId: string,
  id: string,
): Promise<DeliveryRow | null> {
  const r = await db.query<DeliveryRow>(
    `SELECT ${DELIVERY_COLUMNS} FROM webhook_deliveries WHERE webhook_id = $1 AND id = $2`,
    [webhookId, id],
  );
  return r.rows[0] ?? null;
}

export async function disableWebhook(db: Queryable, id: string, reason: string): Promise<void> {
  await db.query(
    'UPDATE webhooks SET enabled = false, disabled_reason = $2, updated_at = now() WHERE id = $1',
    [id, reason],
  );
}

// --- Dispatch ------------------------------------------------------------------------------------

export async function lockCursor(db: Queryable): Promise<number> {
  const r = await db.query<{ audit_seq: string }>(
    'SELECT audit_seq FROM webhook_dispatch WHERE id = 1 FOR UPDATE',
  );
  return Number(r.rows[0]?.audit_seq ?? 0);
}

export async function advanceCursor(db: Queryable, seq: number): Promise<void> {
  await db.query('UPDATE webhook_dispatch SET audit_seq = $1, updated_at = now() WHERE id = 1', [seq]);
}

export async function chainedAfter(db: Queryable, seq: number, limit: number) {
  const r = await db.query<AuditEventRow & { seq: string }>(
    `SELECT id, seq, action, outcome, actor_type, actor_id, target_type, target_id, account_id, request_id,
            details, occurred_at
       FROM audit_events WHERE seq > $1 ORDER BY seq LIMIT $2`,
    [seq, limit],
  );
  return r.rows;
}

/** The event lists of the enabled webhooks of these accounts, by account. */
export async function subscriptionsOf(db: Queryable, accountIds: readonly string[]) {
  const out = new Map<string, string[][]>();
  if (accountIds.length === 0) return out;
  const r = await db.query<{ account_id: string; events: string[] }>(
    'SELECT account_id, events FROM webhooks WHERE enabled AND account_id = ANY($1::uuid[])',
    [accountIds],
  );
  for (const w of r.rows) out.set(w.account_id, [...(out.get(w.account_id) ?? []), w.events]);
  return out;
}

export async function lockOutbox(db: Queryable, limit: number) {
  const r = await db.query<OutboxRow>(
    `SELECT id, account_id, kind, payload, created_at FROM event_outbox
      WHERE delivered_at IS NULL ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED`,
    [limit],
  );
  return r.rows;
}

export async function markOutboxTaken(db: Queryable, ids: readonly string[]): Promise<void> {
  if (ids.length)
    await db.query('UPDATE event_outbox SET delivered_at = now() WHERE id = ANY($1::bigint[])', [ids]);
}
