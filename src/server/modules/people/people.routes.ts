import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { AppError } from '../../../shared/errors.ts';
import { errorResponsesWith } from '../../http/errors.ts';
import { loginBody, loginResponse } from './people.schemas.ts';
import type { UsersService } from './users.service.ts';

/** Sign-in with a username and password (and a TOTP or recovery code when the user has one). */
export function peopleRoutes(deps: { users: UsersService }): FastifyPluginAsyncZod {
  const { users } = deps;
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
            'Repeated failures (per username, per address) are answered 429 with Retry-After.',
          security: [],
          body: loginBody,
          response: { 200: loginResponse, ...errorResponsesWith('invalid_credentials', 'totp_required') },
        },
      },
      async (req, reply) => {
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
        return result.tokens;
      },
    );
  };
}
