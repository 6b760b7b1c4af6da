import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AppError, unauthorized } from '../../../shared/errors.ts';
import { requireUser } from '../../http/caller.ts';
import { errorResponses, errorResponsesWith } from '../../http/errors.ts';
import { type BrowserSessions, REFRESH_COOKIE, readCookie } from '../../http/session-cookies.ts';
import type { UserRow } from './sessions.repo.ts';
import {
  cookieSessionSchema,
  issuedTokensSchema,
  loggedOutSchema,
  meSchema,
  reauthBody,
  reauthenticatedSchema,
  refreshBody,
  userIdParams,
  userSchema,
} from './sessions.schemas.ts';
import { REFRESH_FAILED_MESSAGE, type SessionsService, tokensBody } from './sessions.service.ts';
import type { StepUp } from './step-up.ts';

// A signed-in user's routes. An API key is authenticated too, then refused (403): the fuzz of the
// API document reaches these routes' validation with one.
const security: Record<string, string[]>[] = [{ userSession: [] }, { apiKey: [] }];

/** An IPv4 client on a dual-stack socket is shown as IPv4 (what an allowlist entry needs). */
const clientAddress = (ip: string) => (ip.startsWith('::ffff:') && ip.includes('.') ? ip.slice(7) : ip);

const presentUser = (u: UserRow) => ({
  id: u.id,
  username: u.username,
  platform_admin: u.platform_admin,
  status: u.status,
  totp_enabled: u.totp_enabled,
});

/** Sessions of signed-in users: refresh, logout, step-up re-authentication, who am I, suspension. */
export function sessionsRoutes(deps: {
  sessions: SessionsService;
  browser: BrowserSessions;
  stepUp: Pick<StepUp, 'open'>;
}): FastifyPluginAsyncZod {
  const { sessions, browser, stepUp } = deps;
  return async (app) => {
    app.post(
      '/v1/auth/reauth',
      {
        config: { action: 'me.write' },
        bodyLimit: 4 * 1024,
        schema: {
          tags: ['sessions'],
          summary: "Confirm it's you: re-enter the password (or a TOTP code) to open a 5-minute window",
          description:
            'For the session of a signed-in user (by cookie: needs X-CSRF-Token). Within the window, ' +
            'creating an API key or invites, starting TOTP enrolment and revealing a password go through; ' +
            'without it they answer 403 `reauth_required` (`details.methods`). Nothing sent: 403 ' +
            '`reauth_required` with the methods; a user without a local password (OIDC): 403 ' +
            '`reauth_required` with `methods: ["sign_in"]` (a sign-in within 10 minutes counts); a wrong ' +
            'answer: 403 `reauth_failed` (audited); repeated failures (shared with sign-in): 429 with Retry-After.',
          security,
          body: reauthBody,
          response: {
            200: reauthenticatedSchema,
            ...errorResponsesWith('reauth_required', 'reauth_failed', 'csrf_failed'),
          },
        },
      },
      async (req, reply) => {
        const user = requireUser(req);
        try {
          return await stepUp.open(
            { ...user, accountId: req.caller?.accountId ?? null },
            req.body,
            String(req.id),
          );
        } catch (err) {
          const retry = err instanceof AppError ? err.details?.retry_after_s : undefined;
          if (typeof retry === 'number') reply.header('retry-after', retry);
          throw err;
        }
      },
    );

    app.post(
      '/v1/auth/refresh',
      {
        config: { public: true },
        bodyLimit: 4 * 1024,
        schema: {
          tags: ['sessions'],
          summary: 'A refresh token for a new access and refresh token (each refresh token works once)',
          description:
            'Presenting a refresh token that was already used ends its whole session (someone else has it). ' +
            'Without `refresh_token`, the dashboard session’s refresh cookie is used: both cookies are ' +
            'rotated and the body carries only `csrf_token` (a failure clears them).',
          security: [],
          body: refreshBody.nullish(),
          response: { 200: z.union([issuedTokensSchema, cookieSessionSchema]), ...errorResponses },
        },
      },
      async (req, reply) => {
        const client = {
          sourceIp: req.ip,
          userAgent: req.headers['user-agent'] ?? null,
          requestId: String(req.id),
        };
        const given = req.body?.refresh_token;
        if (given !== undefined) return tokensBody(await sessions.refresh(given, client));
        browser.precheck(req);
        try {
          const cookie = readCookie(req.headers.cookie, REFRESH_COOKIE);
          if (cookie === undefined) throw unauthorized(REFRESH_FAILED_MESSAGE);
          return await browser.answer(reply, await sessions.refresh(cookie, client));
        } catch (err) {
          // A refused refresh ends the browser's session: nothing left in it works.
          if (err instanceof AppError && err.code === 'unauthorized') browser.clear(reply);
          throw err;
        }
      },
    );

    app.post(
      '/v1/auth/logout',
      {
        config: { action: 'me.logout' },
        schema: {
          tags: ['sessions'],
          summary: 'End this session: its access and refresh tokens stop working at once, on every server',
          description: 'By the dashboard’s session cookie: needs X-CSRF-Token, and clears both cookies.',
          security,
          response: { 200: loggedOutSchema, ...errorResponses },
        },
      },
      async (req, reply) => {
        await sessions.logout(requireUser(req), String(req.id));
        if (req.viaCookie) browser.clear(reply);
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
        const user = requireUser(req);
        const me = await sessions.me(user);
        return {
          user: presentUser(me.user),
          client_ip: clientAddress(req.ip),
          // A reloaded dashboard page gets its CSRF token back here (the cookie is not readable).
          ...(req.viaCookie ? { csrf_token: await browser.csrfToken(user.sessionId) } : {}),
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
