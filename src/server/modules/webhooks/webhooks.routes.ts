import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { requireCaller } from '../../http/caller.ts';
import { errorResponses } from '../../http/errors.ts';
import { decodeCursor, pageQuery, pageSchema, toPage } from '../../http/pagination.ts';
import {
  createWebhookBody,
  DEFAULT_OVERLAP_S,
  deliverySchema,
  deliveryStatus,
  deliveryWithPayloadSchema,
  eventTypesSchema,
  patchWebhookBody,
  presentDelivery,
  presentWebhook,
  rotateBody,
  webhookSchema,
  webhookWithSecretSchema,
} from './webhooks.schemas.ts';
import type { WebhooksService } from './webhooks.service.ts';

const tags = ['webhooks'];
const idParams = z.object({ id: z.uuid() });
const deliveryParams = z.object({ id: z.uuid(), deliveryId: z.uuid() });
const accepted = z.object({ delivery_id: z.uuid() });

/** Signed webhooks of the account (issue 18): thin handlers over webhooks.service.ts. */
export function webhooksRoutes(deps: { webhooks: WebhooksService }): FastifyPluginAsyncZod {
  const { webhooks } = deps;
  return async (app) => {
    app.get(
      '/v1/webhooks/event-types',
      {
        config: { action: 'webhooks.read' },
        schema: {
          tags,
          summary: 'The event types webhooks deliver (subscribe to a type, "<area>.*" or "*")',
          response: { 200: eventTypesSchema, ...errorResponses },
        },
      },
      async () => ({ items: webhooks.eventTypes() }),
    );

    app.post(
      '/v1/webhooks',
      {
        config: { action: 'webhooks.manage' },
        bodyLimit: 16 * 1024,
        schema: {
          tags,
          summary: 'Create a webhook. The signing secret is in this response only.',
          body: createWebhookBody,
          response: { 201: webhookWithSecretSchema, ...errorResponses },
        },
      },
      async (req, reply) => {
        const { row, secret } = await webhooks.create(requireCaller(req), req.body);
        return reply.code(201).send({ ...presentWebhook(row), secret });
      },
    );

    app.get(
      '/v1/webhooks',
      {
        config: { action: 'webhooks.read' },
        schema: {
          tags,
          summary: 'List the account’s webhooks',
          response: { 200: z.object({ items: z.array(webhookSchema).max(1000) }), ...errorResponses },
        },
      },
      async (req) => ({ items: (await webhooks.list(requireCaller(req))).map((w) => presentWebhook(w)) }),
    );

    app.get(
      '/v1/webhooks/:id',
      {
        config: { action: 'webhooks.read' },
        schema: {
          tags,
          summary: 'Show a webhook',
          params: idParams,
          response: { 200: webhookSchema, ...errorResponses },
        },
      },
      async (req) => presentWebhook(await webhooks.get(requireCaller(req), req.params.id)),
    );

    app.patch(
      '/v1/webhooks/:id',
      {
        config: { action: 'webhooks.manage' },
        bodyLimit: 16 * 1024,
        schema: {
          tags,
          summary: 'Change a webhook (enabled: true re-enables it and clears its failure streak)',
          params: idParams,
          body: patchWebhookBody,
          response: { 200: webhookSchema, ...errorResponses },
        },
      },
      async (req) => presentWebhook(await webhooks.update(requireCaller(req), req.params.id, req.body)),
    );

    app.delete(
      '/v1/webhooks/:id',
      {
        config: { action: 'webhooks.manage' },
        schema: {
          tags,
          summary: 'Delete a webhook and its delivery log',
          params: idParams,
          response: { 204: z.null().describe('Deleted'), ...errorResponses },
        },
      },
      async (req, reply) => {
        await webhooks.remove(requireCaller(req), req.params.id);
        return reply.code(204).send(null);
      },
    );

    app.post(
      '/v1/webhooks/:id/rotate-secret',
      {
        config: { action: 'webhooks.manage' },
        bodyLimit: 1024,
        schema: {
          tags,
          summary:
            'Rotate the signing secret (the new one is in this response only); the previous one keeps signing for overlap_s',
          params: idParams,
          body: rotateBody.optional(),
          response: { 200: webhookWithSecretSchema, ...errorResponses },
        },
      },
      async (req) => {
        const { row, secret } = await webhooks.rotateSecret(
          requireCaller(req),
          req.params.id,
          req.body?.overlap_s ?? DEFAULT_OVERLAP_S,
        );
        return { ...presentWebhook(row), secret };
      },
    );

    app.post(
      '/v1/webhooks/:id/test',
      {
        config: { action: 'webhooks.manage' },
        schema: {
          tags,
          summary: 'Queue a `webhook.test` delivery',
          params: idParams,
          response: { 202: accepted, ...errorResponses },
        },
      },
      async (req, reply) =>
        reply.code(202).send({ delivery_id: await webhooks.sendTest(requireCaller(req), req.params.id) }),
    );

    app.get(
      '/v1/webhooks/:id/deliveries',
      {
        config: { action: 'webhooks.read' },
        schema: {
          tags,
          summary: 'The webhook’s delivery log, newest first',
          params: idParams,
          querystring: pageQuery.extend({ status: deliveryStatus.optional() }),
          response: { 200: pageSchema(deliverySchema), ...errorResponses },
        },
      },
      async (req) => {
        const rows = await webhooks.deliveries(requireCaller(req), req.params.id, {
          limit: req.query.limit,
          after: decodeCursor(req.query.cursor),
          ...(req.query.status ? { status: req.query.status } : {}),
        });
        return toPage(
          rows,
          req.query.limit,
          (r) => ({ ts: Number(r.created_us), id: r.id }),
          presentDelivery,
        );
      },
    );

    app.get(
      '/v1/webhooks/:id/deliveries/:deliveryId',
      {
        config: { action: 'webhooks.read' },
        schema: {
          tags,
          summary: 'One delivery, with the body sent (to owners, admins and admin keys)',
          params: deliveryParams,
          response: { 200: deliveryWithPayloadSchema, ...errorResponses },
        },
      },
      async (req) => {
        const caller = requireCaller(req);
        const d = await webhooks.delivery(caller, req.params.id, req.params.deliveryId);
        // The body is an audit event's details: only for callers at the level that reads the audit log.
        return caller.level === 'admin' ? { ...presentDelivery(d), payload: d.payload } : presentDelivery(d);
      },
    );

    app.post(
      '/v1/webhooks/:id/deliveries/:deliveryId/redeliver',
      {
        config: { action: 'webhooks.manage' },
        schema: {
          tags,
          summary: 'Send a delivery’s event again (a new delivery, signed afresh)',
          params: deliveryParams,
          response: { 202: accepted, ...errorResponses },
        },
      },
      async (req, reply) =>
        reply.code(202).send({
          delivery_id: await webhooks.redeliver(requireCaller(req), req.params.id, req.params.deliveryId),
        }),
    );
  };
}
