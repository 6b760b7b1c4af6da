import type { FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AppError } from '../../../shared/errors.ts';
import { requireCaller } from '../../http/caller.ts';
import { errorResponses, errorResponsesWith } from '../../http/errors.ts';
import { decodeCursor, pageQuery, pageSchema, toPage } from '../../http/pagination.ts';
import {
  createdInvitesSchema,
  createInvitesBody,
  inviteSchema,
  presentInvite,
  redeemedSchema,
  redeemInviteBody,
} from './invites.schemas.ts';
import {
  type Inviter,
  type InvitesService,
  inviterOfCaller,
  inviterOfPlatformAdmin,
} from './invites.service.ts';

const security: Record<string, string[]>[] = [{ apiKey: [] }, { userSession: [] }];
const idParams = z.object({ id: z.uuid() });

/** The caller as an inviter; a signed-in platform admin may act outside any account. */
function inviterOf(req: FastifyRequest): Inviter {
  const user = req.user;
  if (!req.caller && user?.platformAdmin) return inviterOfPlatformAdmin(user, String(req.id));
  return inviterOfCaller(requireCaller(req), String(req.id));
}

/** Invites: create a batch (codes shown once), list the pending ones, revoke; redeem (public). */
export function invitesRoutes(deps: { invites: InvitesService }): FastifyPluginAsyncZod {
  const { invites } = deps;
  return async (app) => {
    app.post(
      '/v1/invites',
      {
        config: { action: 'invites.create' },
        bodyLimit: 16 * 1024,
        schema: {
          tags: ['invites'],
          summary: 'Create single-use invite codes (admin). The codes are in this response only.',
          security,
          body: createInvitesBody,
          response: { 201: createdInvitesSchema, ...errorResponses },
        },
      },
      async (req, reply) => {
        const b = req.body;
        const issued = await invites.create(inviterOf(req), {
          count: b.count,
          role: b.role,
          account: b.account,
          platformAdmin: b.platform_admin,
          expiresInHours: b.expires_in_hours,
        });
        reply.header('cache-control', 'no-store');
        reply.status(201);
        return {
          invites: issued.map((i) => ({ id: i.id, code: i.code, expires_at: i.expiresAt.toISOString() })),
        };
      },
    );

    app.get(
      '/v1/invites',
      {
        config: { action: 'invites.read' },
        schema: {
          tags: ['invites'],
          summary: 'List the pending invites, newest first (admin); never their codes',
          security,
          querystring: pageQuery,
          response: { 200: pageSchema(inviteSchema), ...errorResponses },
        },
      },
      async (req) => {
        const inviter = inviterOf(req);
        const after = decodeCursor(req.query.cursor);
        const rows = await invites.list(inviter, { limit: req.query.limit, after });
        return toPage(rows, req.query.limit, (r) => ({ ts: r.created_us, id: r.id }), presentInvite);
      },
    );

    app.delete(
      '/v1/invites/:id',
      {
        config: { action: 'invites.revoke' },
        schema: {
          tags: ['invites'],
          summary: 'Revoke an invite: its code stops working at once (admin)',
          security,
          params: idParams,
          response: { 200: inviteSchema, ...errorResponses },
        },
      },
      async (req) => presentInvite(await invites.revoke(inviterOf(req), req.params.id)),
    );

    app.post(
      '/v1/auth/invites/redeem',
      {
        config: { public: true },
        bodyLimit: 16 * 1024,
        schema: {
          tags: ['invites'],
          summary:
            'Sign up with an invite code: creates the local user and deletes the code. A used, expired or ' +
            'unknown code (or a taken username) is the same 400 invalid_invite',
          body: redeemInviteBody,
          response: { 201: redeemedSchema, ...errorResponsesWith('invalid_invite', 'weak_password') },
        },
      },
      async (req, reply) => {
        const out = await invites.redeem(req.body, { sourceIp: req.ip, requestId: String(req.id) });
        if (!out.ok) {
          reply.header('retry-after', String(out.retryAfterS));
          throw new AppError('rate_limited', 'Too many sign-ups at once; retry later');
        }
        reply.status(201);
        return out.redeemed;
      },
    );
  };
}
