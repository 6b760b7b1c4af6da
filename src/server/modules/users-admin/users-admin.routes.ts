import type { FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { requireUser } from '../../http/caller.ts';
import { errorResponses } from '../../http/errors.ts';
import { decodeCursor, pageQuery, pageSchema, toPage } from '../../http/pagination.ts';
import {
  adminSessionSchema,
  adminUserSchema,
  presentAdminSession,
  presentAdminUser,
} from './users-admin.schemas.ts';
import type { UsersAdminService, Viewer } from './users-admin.service.ts';

const tags = ['users'];
const idParams = z.object({ id: z.uuid() });

const viewerOf = (req: FastifyRequest): Viewer => ({ user: requireUser(req), caller: req.caller ?? null });

/** The admin API over people: users, their sessions, ending one session. */
export function usersAdminRoutes(deps: { usersAdmin: UsersAdminService }): FastifyPluginAsyncZod {
  const svc = deps.usersAdmin;
  return async (app) => {
    app.get(
      '/v1/users',
      {
        config: { action: 'users.read' },
        schema: {
          tags,
          summary:
            "List users, newest first: every user (platform admin) or the account's members (owner, admin)",
          querystring: pageQuery,
          response: { 200: pageSchema(adminUserSchema), ...errorResponses },
        },
      },
      async (req) => {
        const rows = await svc.listUsers(viewerOf(req), {
          limit: req.query.limit,
          after: decodeCursor(req.query.cursor),
        });
        return toPage(
          rows,
          req.query.limit,
          (r) => ({ ts: Number(r.created_us), id: r.id }),
          presentAdminUser,
        );
      },
    );

    app.get(
      '/v1/users/:id/sessions',
      {
        config: { action: 'sessions.read' },
        schema: {
          tags,
          summary:
            "A user's sessions, newest first, live and ended (platform admin, or an owner/admin of their account)",
          params: idParams,
          querystring: pageQuery,
          response: { 200: pageSchema(adminSessionSchema), ...errorResponses },
        },
      },
      async (req) => {
        const rows = await svc.listSessions(viewerOf(req), req.params.id, {
          limit: req.query.limit,
          after: decodeCursor(req.query.cursor),
        });
        return toPage(
          rows,
          req.query.limit,
          (r) => ({ ts: Number(r.created_us), id: r.id }),
          (r) => presentAdminSession(r),
        );
      },
    );

    app.delete(
      '/v1/sessions/:id',
      {
        config: { action: 'sessions.revoke' },
        schema: {
          tags,
          summary: 'End one session on every server at once (audited); an ended session is returned as it is',
          params: idParams,
          response: { 200: adminSessionSchema, ...errorResponses },
        },
      },
      async (req) =>
        presentAdminSession(await svc.revokeSession(viewerOf(req), req.params.id, String(req.id))),
    );
  };
}
