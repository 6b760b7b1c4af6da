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

const viewerOf = (req: FastifyRequest): Viewer => {
  const named = req.headers['bulwark-account'];
  return {
    user: requireUser(req),
    caller: req.caller ?? null,
    accountName: typeof named === 'string' ? named : null,
  };
};

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

    app.put(
      '/v1/users/:id/role',
      {
        config: { action: 'members.manage' },
        schema: {
          tags,
          summary:
            "Change a member's role in the account (audited); their sessions and keys act with it from the next request on",
          params: idParams,
          body: z.object({ role: z.enum(['owner', 'admin', 'member', 'viewer']) }).strict(),
          response: { 200: adminUserSchema, ...errorResponses },
        },
      },
      async (req) =>
        presentAdminUser(await svc.setRole(viewerOf(req), req.params.id, req.body.role, String(req.id))),
    );

    app.delete(
      '/v1/users/:id/membership',
      {
        config: { action: 'members.manage' },
        schema: {
          tags,
          summary:
            'Remove a member from the account (audited); their access to it ends from the next request on',
          params: idParams,
          response: { 200: z.object({ removed: z.literal(true) }), ...errorResponses },
        },
      },
      async (req) => {
        await svc.removeMember(viewerOf(req), req.params.id, String(req.id));
        return { removed: true as const };
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
