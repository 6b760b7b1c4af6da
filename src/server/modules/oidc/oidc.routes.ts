import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errorResponses } from '../../http/errors.ts';
import { callbackQuery, flowCookie, flowCookieHeader, signedInSchema, startQuery } from './oidc.schemas.ts';
import { OIDC_FLOW_TTL_MS, type OidcService } from './oidc.service.ts';

const USER_AGENT_MAX = 500;

/** OIDC sign-in: start (302 to the IdP) and the IdP's redirect back (tokens as JSON). */
export function oidcRoutes(deps: { oidc: OidcService }): FastifyPluginAsyncZod {
  const { oidc } = deps;
  return async (app) => {
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
        const started = await oidc.start({ redirect: req.query.redirect, invite: req.query.invite });
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
          security: [],
          querystring: callbackQuery,
          response: { 200: signedInSchema, ...errorResponses },
        },
      },
      async (req, reply) => {
        const q = req.query;
        // The flow cookie has done its work, whatever the outcome.
        reply.header('set-cookie', flowCookieHeader('', { secure: oidc.secureCookie, maxAgeSeconds: 0 }));
        reply.header('cache-control', 'no-store');
        const ua = req.headers['user-agent'];
        return oidc.callback(
          {
            code: q.code,
            state: q.state,
            iss: q.iss,
            error: q.error,
            binding: flowCookie(req.headers.cookie),
          },
          {
            sourceIp: req.ip,
            userAgent: typeof ua === 'string' ? ua.slice(0, USER_AGENT_MAX) : null,
            requestId: String(req.id),
          },
        );
      },
    );
  };
}
