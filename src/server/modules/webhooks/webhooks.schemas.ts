import { z } from 'zod';
import { EVENT_AREAS, EVENT_TYPE_NAMES } from './webhooks.events.ts';
import type { DeliveryRow, WebhookRow } from './webhooks.repo.ts';

export const MAX_EVENTS = 64;
/** The overlap window of a rotation: the old secret keeps signing this long (default 24 h, at most 7 days). */
export const MAX_OVERLAP_S = 7 * 86_400;
export const DEFAULT_OVERLAP_S = 86_400;

const url = z
  .string()
  .min(1)
  .max(2048)
  .regex(/^https?:\/\/[^\s]+$/i, 'must be an http(s) URL')
  .describe(
    'http(s) URL; checked against the SSRF rules at every save and delivery (refused: 400 destination_refused)',
  );
/** Every subscription entry: an event type, `<area>.*` or `*` (GET /v1/webhooks/event-types). */
const SUBSCRIPTIONS: [string, ...string[]] = [
  '*',
  ...EVENT_TYPE_NAMES,
  ...[...EVENT_AREAS].map((a) => `${a}.*`),
];
const events = z.array(z.enum(SUBSCRIPTIONS)).min(1).max(MAX_EVENTS);
const description = z
  .string()
  .max(500)
  .regex(/^[^\p{Cc}]*$/u, 'must not contain control characters');

export const createWebhookBody = z.object({ url, events, description: description.optional() }).strict();

export const patchWebhookBody = z
  .object({
    url: url.optional(),
    events: events.optional(),
    description: description.nullable().optional(),
    enabled: z
      .boolean()
      .optional()
      .describe('true re-enables a disabled webhook and clears its failure streak'),
  })
  .strict();

export const rotateBody = z
  .object({
    overlap_s: z
      .number()
      .int()
      .min(0)
      .max(MAX_OVERLAP_S)
      .optional()
      .describe(
        `Seconds the previous secret keeps signing beside the new one (default ${DEFAULT_OVERLAP_S})`,
      ),
  })
  .strict();

const ts = z.string().max(40);

export const webhookSchema = z.object({
  id: z.uuid(),
  url: z.string().max(2048),
  events: z.array(z.string().max(100)).max(MAX_EVENTS),
  description: z.string().max(500).nullable(),
  enabled: z.boolean(),
  disabled_reason: z.string().max(500).nullable(),
  created_at: ts,
  updated_at: ts,
  secret_hint: z.string().max(8).describe('The last 4 characters of the current secret'),
  secret_rotated_at: ts.nullable(),
  previous_secret_expires_at: ts.nullable().describe('Until then, deliveries carry a second v1 signature'),
  consecutive_failures: z.number().int(),
  last_delivery: z
    .object({
      status: z.enum(['pending', 'succeeded', 'failed', 'dead']),
      status_code: z.number().int().nullable(),
      at: ts,
    })
    .nullable(),
});

export const webhookWithSecretSchema = webhookSchema.extend({
  secret: z.string().max(64).describe('The signing secret (`whsec_…`): shown in this response only'),
});

export const deliveryStatus = z.enum(['pending', 'succeeded', 'failed', 'dead']);

export const deliverySchema = z.object({
  id: z.uuid(),
  webhook_id: z.uuid(),
  event_id: z.string().max(100),
  event_type: z.string().max(100),
  status: deliveryStatus,
  attempts: z.number().int(),
  max_attempts: z.number().int(),
  next_attempt_at: ts.nullable(),
  last_status_code: z.number().int().nullable(),
  last_error: z.string().max(500).nullable(),
  duration_ms: z.number().int().nullable(),
  response_body: z.string().max(1024).nullable().describe('The first 1 KB of the last answer'),
  created_at: ts,
  delivered_at: ts.nullable(),
});

export const deliveryWithPayloadSchema = deliverySchema.extend({
  payload: z
    .string()
    .max(65_536)
    .optional()
    .describe('The JSON body sent (an audit event): only to owners, admins and admin API keys'),
});

export const eventTypesSchema = z.object({
  items: z
    .array(
      z.object({ type: z.string().max(100), area: z.string().max(50), description: z.string().max(200) }),
    )
    .max(200),
});

const iso = (d: Date | null) => d?.toISOString() ?? null;

export function presentWebhook(w: WebhookRow, now = Date.now()): z.infer<typeof webhookSchema> {
  const overlap = w.previous_secret_expires_at && w.previous_secret_expires_at.getTime() > now;
  return {
    id: w.id,
    url: w.url,
    events: w.events,
    description: w.description,
    enabled: w.enabled,
    disabled_reason: w.disabled_reason,
    created_at: w.created_at.toISOString(),
    updated_at: w.updated_at.toISOString(),
    secret_hint: w.secret_hint,
    secret_rotated_at: iso(w.secret_rotated_at),
    previous_secret_expires_at: overlap ? iso(w.previous_secret_expires_at) : null,
    consecutive_failures: w.consecutive_failures,
    last_delivery:
      w.last_status && w.last_at
        ? {
            status: w.last_status as 'pending',
            status_code: w.last_status_code,
            at: w.last_at.toISOString(),
          }
        : null,
  };
}

export function presentDelivery(d: DeliveryRow): z.infer<typeof deliverySchema> {
  return {
    id: d.id,
    webhook_id: d.webhook_id,
    event_id: d.event_id,
    event_type: d.event_type,
    status: d.status,
    attempts: d.attempts,
    max_attempts: d.max_attempts,
    next_attempt_at: d.status === 'pending' || d.status === 'failed' ? iso(d.next_attempt_at) : null,
    last_status_code: d.last_status_code,
    last_error: d.last_error,
    duration_ms: d.duration_ms,
    response_body: d.response_body,
    created_at: d.created_at.toISOString(),
    delivered_at: iso(d.delivered_at),
  };
}
