import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { requireCaller, requireKeyCaller } from '../../http/caller.ts';
import { errorResponses } from '../../http/errors.ts';
import { idempotencyHeaders } from '../../http/idempotency.schemas.ts';
import type { WithIdempotency } from '../../http/idempotency.ts';
import { decodeCursor, pageQuery, pageSchema, toPage } from '../../http/pagination.ts';
import { createdKeySchema, createKeyBody, keySchema, presentKey, whoamiSchema } from './keys.schemas.ts';
import type { KeysService } from './keys.service.ts';

const security = [{ apiKey: [] }];
const idParams = z.object({ id: z.uuid() });

/** API keys: create (shown once), list, show, revoke; and who the calling key is. */
export function keysRoutes(deps: {
  keys: KeysService;
  withIdempotency: WithIdempotency;
}): FastifyPluginAsyncZod {
  const { keys } = deps;
  return async (app) => {
    app.post(
      '/v1/keys',
      {
        config: { action: 'keys.create' },
        bodyLimit: 16 * 1024,
        schema: {
          tags: ['keys'],
          summary:
            'Create an API key (admin keys; signed-in users up to their role). The key is in this response only.',
          security,
          headers: idempotencyHeaders,
          body: createKeyBody,
          response: { 201: createdKeySchema, ...errorResponses },
        },
      },
      async (req, reply) => {
        const caller = requireCaller(req);
        const b = req.body;
        return deps.withIdempotency(
          req,
          reply,
          async () => {
            const { key, row } = await keys.create(caller, {
              name: b.name,
              level: b.level,
              databases: b.databases,
              expiresAt: b.expires_at ? new Date(b.expires_at) : undefined,
              explorer: b.explorer,
              decoy: b.decoy,
            });
            return { ...presentKey(row), key };
          },
          { status: 201, stored: ({ key: _secret, ...rest }) => rest },
        );
      },
    );

    app.get(
      '/v1/keys',
      {
        config: { action: 'keys.read' },
        schema: {
          tags: ['keys'],
          summary: 'List the account’s API keys, newest first (admin)',
          security,
          querystring: pageQuery,
          response: { 200: pageSchema(keySchema), ...errorResponses },
        },
      },
      async (req) => {
        const caller = requireCaller(req);
        const after = decodeCursor(req.query.cursor);
        const rows = await keys.list(caller, { limit: req.query.limit, after });
        return toPage(
          rows,
          req.query.limit,
          (r) => ({ ts: r.created_us, id: r.id }),
          (r) => presentKey(r),
        );
      },
    );

    app.get(
      '/v1/keys/:id',
      {
        config: { action: 'keys.read' },
        schema: {
          tags: ['keys'],
          summary: 'Show one API key (admin)',
          security,
          params: idParams,
          response: { 200: keySchema, ...errorResponses },
        },
      },
      async (req) => presentKey(await keys.get(requireCaller(req), req.params.id)),
    );

    app.delete(
      '/v1/keys/:id',
      {
        config: { action: 'keys.revoke' },
        schema: {
          tags: ['keys'],
          summary: 'Revoke an API key, and every key it created, on every server at once (admin)',
          security,
          params: idParams,
          response: { 200: keySchema, ...errorResponses },
        },
      },
      async (req) => presentKey(await keys.revoke(requireCaller(req), req.params.id)),
    );

    app.get(
      '/v1/whoami',
      {
        config: { action: 'keys.whoami' },
        schema: {
          tags: ['keys'],
          summary: 'The calling key: account, prefix, level, scope, expiry',
          security,
          response: { 200: whoamiSchema, ...errorResponses },
        },
      },
      async (req) => whoami(requireKeyCaller(req)),
    );
  };
}

/** Built from the authenticated caller alone (no I/O). */
export function whoami(c: ReturnType<typeof requireKeyCaller>): z.infer<typeof whoamiSchema> {
  return {
    account: { id: c.accountId, name: c.accountName },
    key: {
      id: c.keyId,
      name: c.keyName ?? null,
      prefix: c.keyPrefix ?? null,
      level: c.level,
      databases: c.databases === null ? null : [...c.databases],
      explorer: c.explorer,
      expires_at: c.expiresAt?.toISOString() ?? null,
    },
  };
}
