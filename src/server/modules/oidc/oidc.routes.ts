import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { AppError } from '../../../shared/errors.ts';
import { errorResponses } from '../../http/errors.ts';
import { type BrowserSessions, requireCookieCapableOrigin } from '../../http/session-cookies.ts';
import { tokensBody } from '../sessions/sessions.service.ts';
import {
  callbackQuery,
  flowCookie,
  flowCookieHeader,
  providersSchema,
  signedInSchema,
  startQuery,
} from './oidc.schemas.ts';
import { COOKIE_FLOW_PREFIX, OIDC_FLOW_TTL_MS, type OidcService } from './oidc.service.ts';

const USER_AGENT_MAX = 500;

/**
 * OIDC sign-in: start (302 to the IdP) and the IdP's redirect back (tokens as JSON, or for the
 * dashboard the session cookies and a 302 into it); which sign-in methods exist.
 */
export function oidcRoutes(deps: { oidc: OidcService; browser: BrowserSessions }): FastifyPluginAsyncZod {
  const { oidc, browser } = deps;
  return async (app) => {
    app.get(
      '/v1/auth/providers',
      {
        config: { public: true },
        schema: {
          tags: ['auth'],
          summary: 'The sign-in methods this server offers (for the sign-in page)',
          security: [],
          response: { 200: providersSchema, ...errorResponses },
        },
      },
      async () => ({ local: true, oidc: { enabled: oidc.enabled, label: oidc.label } }),
    );

    app.get(
      '/v1/auth/oidc/start',
      {
        config: { public: true },
        schema: {
          tags: ['auth'],
          summary:
            'Start an OIDC sign-in: 302 to the identity provider (authorization code + PKCE S256, state, nonce). ' +
            'Sets the flow cookie; 404 when OIDC is not configured',
          security: [],
          querystring: startQuery,
          response: {
            302: z.null().describe('To the identity provider (Location header); sets the flow cookie'),
            ...errorResponses,
          },
        },
      },
      async (req, reply) => {
        const q = req.query;
        if (q.session === 'cookie') requireCookieCapableOrigin(req);
        const started = await oidc.start({ redirect: q.redirect, invite: q.invite, session: q.session });
        reply.header(
          'set-cookie',
          flowCookieHeader(started.binding, {
            secure: oidc.secureCookie,
            maxAgeSeconds: OIDC_FLOW_TTL_MS / 1000,
          }),
        );
        reply.header('cache-control', 'no-store');
        return reply.redirect(started.url, 302);
      },
    );

    app.get(
      '/v1/auth/oidc/callback',
      {
        config: { public: true },
        schema: {
          tags: ['auth'],
          summary:
            'The identity provider’s redirect back: checks the state (once), exchanges the code, checks the ' +
            'ID token and answers a session. 401 for any failed check, 403 for an identity with no role',
          description:
            'A flow started with `session=cookie` ends in the dashboard: the session cookies are set and the ' +
            'answer is a 302 to the `redirect` given to /start (default `/`); a failure is a 302 to ' +
            '`/#oidc_error=<error code>&request_id=<id>`.',
          security: [],
          querystring: callbackQuery,
          response: {
            200: signedInSchema,
            302: z.null().describe('Dashboard flows: into the dashboard, signed in (or with #oidc_error=…)'),
            ...errorResponses,
          },
        },
      },
      async (req, reply) => {
        const q = req.query;
        // The flow cookie has done its work, whatever the outcome.
        reply.header('set-cookie', flowCookieHeader('', { secure: oidc.secureCookie, maxAgeSeconds: 0 }));
        reply.header('cache-control', 'no-store');
        const ua = req.headers['user-agent'];
        const binding = flowCookie(req.headers.cookie);
        const callback = () =>
          oidc.callback(
            { code: q.code, state: q.state, iss: q.iss, error: q.error, binding },
            {
              sourceIp: req.ip,
              userAgent: typeof ua === 'string' ? ua.slice(0, USER_AGENT_MAX) : null,
              requestId: String(req.id),
            },
          );
        // What the browser's flow cookie says; it is believed only because a successful callback
        // checked the whole value against the flow's binding hash.
        if (!binding?.startsWith(COOKIE_FLOW_PREFIX)) {
          const s = await callback();
          return { ...tokensBody(s), user_id: s.user_id, created: s.created, redirect: s.redirect };
        }
        try {
          requireCookieCapableOrigin(req);
          const signedIn = await callback();
          await browser.signIn(req, reply, signedIn);
          return reply.redirect(signedIn.redirect ?? '/', 302);
        } catch (err) {
          // The person lands in the dashboard either way, which shows what went wrong.
          if (!(err instanceof AppError)) req.log.error({ err }, 'OIDC sign-in failed');
          const code = err instanceof AppError ? err.code : 'internal';
          return reply.redirect(`/#oidc_error=${code}&request_id=${encodeURIComponent(String(req.id))}`, 302);
        }
      },
    );
  };
}
