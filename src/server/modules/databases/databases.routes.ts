import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { AppError } from '../../../shared/errors.ts';
import { requireCaller } from '../../http/caller.ts';
import { errorResponses, errorResponsesWith } from '../../http/errors.ts';
import { idempotencyHeaders as headers } from '../../http/idempotency.schemas.ts';
import type { WithIdempotency } from '../../http/idempotency.ts';
import { decodeCursor, pageSchema } from '../../http/pagination.ts';
import {
  allowlistBody,
  allowlistEntryBody,
  allowlistEntryParams,
  allowlistResponse,
  connectionSchema,
  createBody,
  createdDatabaseSchema,
  databaseDetailSchema,
  databaseItemSchema,
  databaseSchema,
  deleteBody,
  limitsBody,
  listQuery,
  nameParams,
  passwordSchema,
  presentAllowlist,
  presentDatabase,
  presentDatabaseDetail,
  presentDatabaseItem,
  revealBody,
} from './databases.schemas.ts';
import type { DatabasesService } from './databases.service.ts';

const tags = ['databases'];
const security = [{ apiKey: [] }];

/** Tenant databases: lifecycle, allowlist, limits, connection info and credentials. */
export function databaseRoutes(deps: {
  databases: DatabasesService;
  withIdempotency: WithIdempotency;
}): FastifyPluginAsyncZod {
  const svc = deps.databases;
  return async (app) => {
    app.post(
      '/v1/databases',
      {
        config: { action: 'databases.create' },
        schema: {
          tags,
          security,
          summary: 'Create a database (provisioned by the agent of its node)',
          description:
            'Answers at once (202, status `provisioning`, or `ready` when it took a reserved database of its ' +
            'node), or with `wait_ms` once the database is ready or ' +
            'failed or the wait ran out (201, the database as it is then). With `reveal` as well, a ready ' +
            "database's answer carries `credentials` (the owner's password and where to connect), refused up " +
            'front (nothing created) when the caller may not reveal.',
          headers,
          body: createBody,
          response: {
            201: createdDatabaseSchema,
            202: databaseSchema,
            ...errorResponsesWith('capacity_exceeded', 'reauth_required'),
          },
        },
      },
      async (req, reply) => {
        const caller = requireCaller(req);
        const { wait_ms: waitMs, reveal, ...input } = req.body;
        if (reveal) reply.header('cache-control', 'no-store');
        // The client closing the connection ends the wait.
        const gone = new AbortController();
        reply.raw.once('close', () => {
          if (!reply.raw.writableEnded) gone.abort();
        });
        return deps.withIdempotency(
          req,
          reply,
          async () => {
            const made = await svc.createDatabase(caller, input, {
              waitMs,
              reveal,
              requestId: String(req.id),
              signal: gone.signal,
            });
            return {
              ...presentDatabase(made.row),
              ...(made.credentials ? { credentials: made.credentials } : {}),
            };
          },
          // A replay never carries the password (it is shown once).
          { status: waitMs > 0 ? 201 : 202, stored: ({ credentials: _, ...rest }) => rest },
        );
      },
    );

    app.get(
      '/v1/databases',
      {
        config: { action: 'databases.list' },
        schema: {
          tags,
          security,
          summary: 'List databases, newest first (search by name, filter by status)',
          description:
            'Each item carries its latest size/connection sample (null until sampled) and its allowlist size. ' +
            'Pass `next_cursor` with the same `q` and `status` for the next page.',
          querystring: listQuery,
          response: { 200: pageSchema(databaseItemSchema), ...errorResponses },
        },
      },
      async (req) => {
        const page = await svc.list(requireCaller(req), {
          after: decodeCursor(req.query.cursor),
          limit: req.query.limit,
          ...(req.query.status ? { status: req.query.status } : {}),
          ...(req.query.q ? { q: req.query.q } : {}),
        });
        return { items: page.items.map(presentDatabaseItem), next_cursor: page.next_cursor };
      },
    );

    app.get(
      '/v1/databases/:name',
      {
        config: { action: 'databases.read' },
        schema: {
          tags,
          security,
          summary: 'Show a database (with its latest sample and its last good backup)',
          params: nameParams,
          response: { 200: databaseDetailSchema, ...errorResponses },
        },
      },
      async (req) => presentDatabaseDetail(await svc.detail(requireCaller(req), req.params.name)),
    );

    app.delete(
      '/v1/databases/:name',
      {
        config: { action: 'databases.delete' },
        schema: {
          tags,
          security,
          summary: 'Delete a database (repeat its name in `confirm`)',
          params: nameParams,
          body: deleteBody,
          response: { 202: databaseSchema, ...errorResponses },
        },
      },
      async (req, reply) => {
        const row = await svc.remove(requireCaller(req), req.params.name, req.body.confirm);
        return reply.status(202).send(presentDatabase(row));
      },
    );

    app.get(
      '/v1/databases/:name/allowlist',
      {
        config: { action: 'databases.read' },
        schema: {
          tags,
          security,
          summary: 'The CIDRs a database accepts connections from (expired entries left out)',
          params: nameParams,
          response: { 200: allowlistResponse, ...errorResponses },
        },
      },
      async (req) => presentAllowlist(await svc.getAllowlist(requireCaller(req), req.params.name)),
    );

    app.put(
      '/v1/databases/:name/allowlist',
      {
        config: { action: 'allowlist.write' },
        schema: {
          tags,
          security,
          summary: 'Replace the allowlist (at most 100 entries; optional expiry)',
          params: nameParams,
          body: allowlistBody,
          response: { 200: allowlistResponse, ...errorResponses },
        },
      },
      async (req) =>
        presentAllowlist(await svc.putAllowlist(requireCaller(req), req.params.name, req.body.entries)),
    );

    app.post(
      '/v1/databases/:name/allowlist',
      {
        config: { action: 'allowlist.write' },
        schema: {
          tags,
          security,
          summary:
            'Add one allowlist entry, or replace the entry of the same CIDR (atomic: concurrent edits are all kept)',
          headers,
          params: nameParams,
          body: allowlistEntryBody,
          response: { 200: allowlistResponse, ...errorResponses },
        },
      },
      async (req, reply) => {
        const caller = requireCaller(req);
        return deps.withIdempotency(req, reply, async () =>
          presentAllowlist(await svc.addAllowlistEntry(caller, req.params.name, req.body)),
        );
      },
    );

    app.delete(
      '/v1/databases/:name/allowlist/:cidr',
      {
        config: { action: 'allowlist.write' },
        schema: {
          tags,
          security,
          summary: 'Remove the allowlist entry of one CIDR (URL-encoded, e.g. 203.0.113.7%2F32; atomic)',
          params: allowlistEntryParams,
          response: { 200: allowlistResponse, ...errorResponses },
        },
      },
      async (req) =>
        presentAllowlist(
          await svc.removeAllowlistEntry(requireCaller(req), req.params.name, req.params.cidr),
        ),
    );

    app.get(
      '/v1/databases/:name/limits',
      {
        config: { action: 'databases.read' },
        schema: {
          tags,
          security,
          summary: 'Connection limits and timeouts of the database roles',
          params: nameParams,
          response: { 200: limitsBody, ...errorResponses },
        },
      },
      async (req) => svc.getLimits(requireCaller(req), req.params.name),
    );

    app.put(
      '/v1/databases/:name/limits',
      {
        config: { action: 'databases.limits' },
        schema: {
          tags,
          security,
          summary: 'Replace the connection limits and timeouts',
          params: nameParams,
          body: limitsBody,
          response: { 200: limitsBody, ...errorResponsesWith('capacity_exceeded') },
        },
      },
      async (req) => svc.putLimits(requireCaller(req), req.params.name, req.body),
    );

    app.get(
      '/v1/databases/:name/connection',
      {
        config: { action: 'databases.read' },
        schema: {
          tags,
          security,
          summary: 'How to connect through the pooler (without the password)',
          params: nameParams,
          response: { 200: connectionSchema, ...errorResponses },
        },
      },
      async (req) => svc.connection(requireCaller(req), req.params.name),
    );

    app.post(
      '/v1/databases/:name/credentials/reveal',
      {
        config: { action: 'databases.reveal' },
        schema: {
          tags,
          security,
          summary: "Reveal the owner's password (write permission; audited)",
          description:
            'A signed-in user re-authenticates: a local user sends `password` (or `totp_code` when TOTP is on), ' +
            'or sends `{}` within 5 minutes of `POST /v1/auth/reauth`; otherwise 403 `reauth_required` ' +
            '(`details.methods`); a wrong one is 403 `reauth_failed` (audited), repeated failures 429 with ' +
            'Retry-After. A user signed in through OIDC may within 10 minutes of signing in. API keys send no body.',
          params: nameParams,
          body: revealBody,
          response: { 200: passwordSchema, ...errorResponsesWith('reauth_required', 'reauth_failed') },
        },
      },
      async (req, reply) => {
        reply.header('cache-control', 'no-store');
        try {
          return await svc.reveal(requireCaller(req), req.params.name, req.body ?? {}, String(req.id));
        } catch (err) {
          const retry = err instanceof AppError ? err.details?.retry_after_s : undefined;
          if (typeof retry === 'number') reply.header('retry-after', retry);
          throw err;
        }
      },
    );

    app.post(
      '/v1/databases/:name/credentials/rotate',
      {
        config: { action: 'databases.rotate' },
        schema: {
          tags,
          security,
          summary: "Rotate the owner's password; old sessions are cut when it goes live",
          headers,
          params: nameParams,
          response: { 202: databaseSchema, ...errorResponses },
        },
      },
      async (req, reply) => {
        const caller = requireCaller(req);
        return deps.withIdempotency(
          req,
          reply,
          async () => presentDatabase(await svc.rotate(caller, req.params.name)),
          { status: 202 },
        );
      },
    );
  };
}
