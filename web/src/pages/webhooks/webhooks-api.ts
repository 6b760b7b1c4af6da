/**
 * The webhooks API as the dashboard uses it, typed from the contract (docs/api.md, "Webhooks").
 * The calls go through the same client (session, CSRF, account) as every other page.
 */
import { api, call } from '../../api/client.ts';

export type LastDelivery = { status: string; status_code: number | null; at: string };

export type Webhook = {
  id: string;
  url: string;
  events: string[];
  description: string | null;
  enabled: boolean;
  disabled_reason: string | null;
  created_at: string;
  updated_at: string;
  secret_hint: string;
  secret_rotated_at: string | null;
  previous_secret_expires_at: string | null;
  consecutive_failures: number;
  last_delivery: LastDelivery | null;
};

export type EventType = { type: string; area: string; description: string };

export type DeliveryStatus = 'pending' | 'succeeded' | 'failed' | 'dead';

export type Delivery = {
  id: string;
  webhook_id: string;
  event_id: string;
  event_type: string;
  status: DeliveryStatus;
  attempts: number;
  max_attempts: number;
  next_attempt_at: string | null;
  last_status_code: number | null;
  last_error: string | null;
  duration_ms: number | null;
  response_body: string | null;
  created_at: string;
  delivered_at: string | null;
};

type Init = { params?: { path?: Record<string, string>; query?: Record<string, unknown> }; body?: unknown };
type Result = Promise<{ data?: unknown; error?: unknown; response: Response }>;
/** The client without its path types (the webhooks routes are typed here, from the contract). */
const raw = api as unknown as Record<
  'GET' | 'POST' | 'PATCH' | 'DELETE',
  (path: string, init?: Init) => Result
>;

const byId = (id: string) => ({ params: { path: { id } } });

export const webhooksApi = {
  list: () => call(raw.GET('/v1/webhooks')) as Promise<{ items: Webhook[] }>,
  eventTypes: () => call(raw.GET('/v1/webhooks/event-types')) as Promise<{ items: EventType[] }>,
  get: (id: string) => call(raw.GET('/v1/webhooks/{id}', byId(id))) as Promise<Webhook>,
  create: (body: { url: string; events: string[]; description?: string }) =>
    call(raw.POST('/v1/webhooks', { body })) as Promise<Webhook & { secret: string }>,
  patch: (id: string, body: { url?: string; events?: string[]; description?: string; enabled?: boolean }) =>
    call(raw.PATCH('/v1/webhooks/{id}', { ...byId(id), body })) as Promise<Webhook>,
  remove: (id: string) => call(raw.DELETE('/v1/webhooks/{id}', byId(id))),
  rotate: (id: string) =>
    call(raw.POST('/v1/webhooks/{id}/rotate-secret', { ...byId(id), body: {} })) as Promise<
      Webhook & { secret: string }
    >,
  test: (id: string) =>
    call(raw.POST('/v1/webhooks/{id}/test', { ...byId(id), body: {} })) as Promise<{ delivery_id: string }>,
  deliveries: (id: string, q: { status?: DeliveryStatus; cursor?: string; limit: number }) =>
    call(raw.GET('/v1/webhooks/{id}/deliveries', { params: { path: { id }, query: q } })) as Promise<{
      items: Delivery[];
      next_cursor: string | null;
    }>,
  redeliver: (id: string, deliveryId: string) =>
    call(
      raw.POST('/v1/webhooks/{id}/deliveries/{delivery_id}/redeliver', {
        params: { path: { id, delivery_id: deliveryId } },
        body: {},
      }),
    ) as Promise<{ delivery_id: string }>,
};
