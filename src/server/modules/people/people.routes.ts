import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AppError } from '../../../shared/errors.ts';
import { requireUser } from '../../http/caller.ts';
import { errorResponsesWith } from '../../http/errors.ts';
import type { BrowserSessions } from '../../http/session-cookies.ts';
import { cookieSessionSchema } from '../sessions/sessions.schemas.ts';
import { tokensBody } from '../sessions/sessions.service.ts';
import {
  loginBody,
  loginResponse,
  totpConfirmBody,
  totpConfirmResponse,
  totpEnrolmentResponse,
} from './people.schemas.ts';
import type { UsersService } from './users.service.ts';

const userSession = [{ userSession: [] }];

/**
 * Sign-in with a username and password (and a TOTP or recovery code when the user has one), and
 * the signed-in user's TOTP enrolment.
 */
export function peopleRoutes(deps: { users: UsersService; browser: BrowserSessions }): FastifyPluginAsyncZod {
  const { users, browser } = deps;
  return async (app) => {
    app.post(
      '/v1/auth/login',
      {
        config: { public: true },
        bodyLimit: 8 * 1024,
        schema: {
          tags: ['sessions'],
          summary: 'Sign in with a username and password: an access and a refresh token',
          description:
            'An unknown username, a wrong password or code and a suspended user all get the same 401 ' +
            '`invalid_credentials`. `totp_required` comes only after a right password, for a user with TOTP. ' +
            'Repeated failures (per username, per address) are answered 429 with Retry-After. ' +
            'With `session: "cookie"` (the dashboard) the session is set as HttpOnly cookies and the body ' +
            'carries only `csrf_token`; a request from another site is 403 `csrf_failed`.',
          security: [],
          body: loginBody,
          response: {
            200: z.union([loginResponse, cookieSessionSchema]),
            ...errorResponsesWith('invalid_credentials', 'totp_required', 'csrf_failed'),
          },
        },
      },
      async (req, reply) => {
        const cookieMode = req.body.session === 'cookie';
        // Before the password is looked at: a cookie session only where the browser keeps it, from our page.
        if (cookieMode) browser.precheck(req);
        const result = await users.login({
          username: req.body.username,
          password: req.body.password,
          totpCode: req.body.totp_code,
          sourceIp: req.ip,
          userAgent: req.headers['user-agent']?.slice(0, 500) ?? null,
          requestId: String(req.id),
        });
        if (!result.ok) {
          reply.header('retry-after', result.retryAfterS);
          throw new AppError('rate_limited', 'Too many failed sign-ins; retry later', {
            retry_after_s: result.retryAfterS,
          });
        }
        return cookieMode ? browser.signIn(req, reply, result.tokens) : tokensBody(result.tokens);
      },
    );
    app.post(
      '/v1/me/totp',
      {
        config: { action: 'me.write' },
        schema: {
          tags: ['sessions'],
          summary: 'Start TOTP enrolment: a new secret, shown this once (confirm it to turn TOTP on)',
          description:
            'Needs a recent re-authentication of the session (`POST /v1/auth/reauth`, 5 minutes; a user ' +
            'without a local password: a sign-in within 10 minutes), else 403 `reauth_required`.',
          security: userSession,
          response: { 200: totpEnrolmentResponse, ...errorResponsesWith('reauth_required') },
        },
      },
      async (req) => {
        const user = requireUser(req);
        return users.enrolTotp(user.userId, {
          sessionId: user.sessionId,
          sourceIp: req.ip,
          requestId: String(req.id),
        });
      },
    );

    app.post(
      '/v1/me/totp/confirm',
      {
        config: { action: 'me.write' },
        bodyLimit: 1024,
        schema: {
          tags: ['sessions'],
          summary:
            'Confirm TOTP enrolment with a current code: TOTP is on; ten recovery codes, shown this once',
          security: userSession,
          body: totpConfirmBody,
          response: { 200: totpConfirmResponse, ...errorResponsesWith('invalid_credentials') },
        },
      },
      async (req) => {
        const user = requireUser(req);
        return users.confirmTotp(user.userId, req.body.code, { sourceIp: req.ip, requestId: String(req.id) });
      },
    );
  };
}
