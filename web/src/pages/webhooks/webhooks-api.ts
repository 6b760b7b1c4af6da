/**
 * The webhooks API as the dashboard uses it (docs/api.md, "Webhooks"), typed from the server's
 * OpenAPI document like every other call: a changed route breaks the dashboard's type check.
 */
import { api, call } from '../../api/client.ts';
import type { paths } from '../../api/schema';

type Json<P extends keyof paths, M extends 'get' | 'post' | 'patch', S extends number> = paths[P][M] extends {
  responses: { [K in S]: { content: { 'application/json': infer T } } };
}
  ? T
  : never;

export type Webhook = Json<'/v1/webhooks/{id}', 'get', 200>;
export type EventType = Json<'/v1/webhooks/event-types', 'get', 200>['items'][number];
export type Delivery = Json<'/v1/webhooks/{id}/deliveries', 'get', 200>['items'][number];
export type DeliveryStatus = Delivery['status'];
/** An event type, "area.*" or "*" (the picker offers only what GET /v1/webhooks/event-types lists). */
type Subscription = NonNullable<
  paths['/v1/webhooks']['post']['requestBody']
>['content']['application/json']['events'][number];
const subscriptions = (events: string[]) => events as Subscription[];

const byId = (id: string) => ({ params: { path: { id } } });

export const webhooksApi = {
  list: () => call(api.GET('/v1/webhooks')),
  eventTypes: () => call(api.GET('/v1/webhooks/event-types')),
  get: (id: string) => call(api.GET('/v1/webhooks/{id}', byId(id))),
  create: (body: { url: string; events: string[]; description?: string }) =>
    call(api.POST('/v1/webhooks', { body: { ...body, events: subscriptions(body.events) } })),
  patch: (id: string, body: { url?: string; description?: string; enabled?: boolean }) =>
    call(api.PATCH('/v1/webhooks/{id}', { ...byId(id), body })),
  remove: (id: string) => call(api.DELETE('/v1/webhooks/{id}', byId(id))),
  rotate: (id: string) => call(api.POST('/v1/webhooks/{id}/rotate-secret', { ...byId(id), body: {} })),
  test: (id: string) => call(api.POST('/v1/webhooks/{id}/test', byId(id))),
  deliveries: (id: string, q: { status?: DeliveryStatus; cursor?: string; limit: number }) =>
    call(api.GET('/v1/webhooks/{id}/deliveries', { params: { path: { id }, query: q } })),
  redeliver: (id: string, deliveryId: string) =>
    call(
      api.POST('/v1/webhooks/{id}/deliveries/{deliveryId}/redeliver', {
        params: { path: { id, deliveryId } },
      }),
    ),
};
