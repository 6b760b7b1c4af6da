import type { FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AppError, unavailable } from '../../../shared/errors.ts';
import { requireCaller } from '../../http/caller.ts';
import { errorResponses, errorResponsesWith } from '../../http/errors.ts';
import { decodeCursor, pageQuery, pageSchema, toPage } from '../../http/pagination.ts';
import type { BrowserSessions } from '../../http/session-cookies.ts';
import { cookieSessionSchema } from '../sessions/sessions.schemas.ts';
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
export function invitesRoutes(deps: {
  invites: InvitesService;
  browser: BrowserSessions;
}): FastifyPluginAsyncZod {
  const { invites, browser } = deps;
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
          description:
            'With `session: "cookie"` (the dashboard) the new user is also signed in: the session is set as ' +
            'HttpOnly cookies and the body adds `session` and `csrf_token` (never a token).',
          body: redeemInviteBody,
          response: {
            201: z.union([redeemedSchema.extend(cookieSessionSchema.shape), redeemedSchema]),
            ...errorResponsesWith('invalid_invite', 'weak_password', 'csrf_failed'),
          },
        },
      },
      async (req, reply) => {
        const { session, ...input } = req.body;
        if (session === 'cookie') browser.precheck(req);
        const ua = req.headers['user-agent'];
        const out = await invites.redeem(
          input,
          { sourceIp: req.ip, requestId: String(req.id) },
          session === 'cookie' ? { userAgent: typeof ua === 'string' ? ua.slice(0, 500) : null } : undefined,
        );
        if (!out.ok) {
          reply.header('retry-after', String(out.retryAfterS));
          throw new AppError('rate_limited', 'Too many sign-ups at once; retry later');
        }
        reply.status(201);
        if (session !== 'cookie') return out.redeemed;
        if (!out.session) throw unavailable('Sign-in is unavailable');
        return { ...out.redeemed, ...(await browser.signIn(req, reply, out.session)) };
      },
    );
  };
}
