import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { requireUser } from '../../http/caller.ts';
import { errorResponses } from '../../http/errors.ts';
import type { UserRow } from './sessions.repo.ts';
import {
  issuedTokensSchema,
  loggedOutSchema,
  meSchema,
  refreshBody,
  userIdParams,
  userSchema,
} from './sessions.schemas.ts';
import type { SessionsService } from './sessions.service.ts';

// A signed-in user's routes. An API key is authenticated too, then refused (403): the fuzz of the
// API document reaches these routes' validation with one.
const security: Record<string, string[]>[] = [{ userSession: [] }, { apiKey: [] }];

const presentUser = (u: UserRow) => ({
  id: u.id,
  username: u.username,
  platform_admin: u.platform_admin,
  status: u.status,
  totp_enabled: u.totp_enabled,
});

/** Sessions of signed-in users: refresh, logout, who am I, suspension. */
export function sessionsRoutes(deps: { sessions: SessionsService }): FastifyPluginAsyncZod {
  const { sessions } = deps;
  return async (app) => {
    app.post(
      '/v1/auth/refresh',
      {
        config: { public: true },
        bodyLimit: 4 * 1024,
        schema: {
          tags: ['sessions'],
          summary: 'A refresh token for a new access and refresh token (each refresh token works once)',
          description:
            'Presenting a refresh token that was already used ends its whole session (someone else has it).',
          security: [],
          body: refreshBody,
          response: { 200: issuedTokensSchema, ...errorResponses },
        },
      },
      async (req) =>
        sessions.refresh(req.body.refresh_token, {
          sourceIp: req.ip,
          userAgent: req.headers['user-agent'] ?? null,
          requestId: String(req.id),
        }),
    );

    app.post(
      '/v1/auth/logout',
      {
        config: { action: 'me.logout' },
        schema: {
          tags: ['sessions'],
          summary: 'End this session: its access and refresh tokens stop working at once, on every server',
          security,
          response: { 200: loggedOutSchema, ...errorResponses },
        },
      },
      async (req) => {
        await sessions.logout(requireUser(req), String(req.id));
        return { logged_out: true as const };
      },
    );

    app.get(
      '/v1/me',
      {
        config: { action: 'me.read' },
        schema: {
          tags: ['sessions'],
          summary: 'The signed-in user, their memberships and roles',
          security,
          response: { 200: meSchema, ...errorResponses },
        },
      },
      async (req) => {
        const me = await sessions.me(requireUser(req));
        return {
          user: presentUser(me.user),
          memberships: me.memberships.map((m) => ({
            account: m.account_name,
            role: m.role,
            databases: m.databases,
          })),
        };
      },
    );

    for (const action of ['suspend', 'reactivate'] as const) {
      app.post(
        `/v1/users/:id/${action}`,
        {
          config: { action: 'users.suspend' },
          schema: {
            tags: ['users'],
            summary:
              action === 'suspend'
                ? 'Suspend a user (platform admin, or an owner of their account): their sessions and keys stop at once'
                : 'Reactivate a suspended user (platform admin, or an owner of their account)',
            security,
            params: userIdParams,
            response: { 200: userSchema, ...errorResponses },
          },
        },
        async (req) =>
          presentUser(
            await sessions.setSuspended(
              requireUser(req),
              req.params.id,
              action === 'suspend',
              String(req.id),
            ),
          ),
      );
    }
  };
}
