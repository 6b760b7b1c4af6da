import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { errorResponses } from '../../http/errors.ts';
import type { ServerMetrics } from './server-metrics.ts';

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/**
 * GET /metrics (Prometheus text format) behind its own bearer token, compared in constant time on
 * SHA-256 digests. No token configured: the endpoint is disabled and answers 404.
 */
export function metricsRoutes(deps: { metrics: ServerMetrics; token: string | null }): FastifyPluginAsyncZod {
  const expected = deps.token === null ? null : digest(deps.token);
  return async (app) => {
    app.get(
      '/metrics',
      {
        config: { public: true },
        schema: {
          hide: true,
          response: { 200: z.string().max(64 * 1024 * 1024), ...errorResponses },
        },
      },
      async (req, reply) => {
        const error = (status: 401 | 404, code: string, message: string) =>
          reply.status(status).send({ error: { code, message, request_id: String(req.id) } });
        if (expected === null) return error(404, 'not_found', 'Route not found');
        const h = req.headers.authorization;
        const given = typeof h === 'string' && h.startsWith('Bearer ') ? h.slice(7).trim() : '';
        if (!timingSafeEqual(digest(given), expected)) {
          deps.metrics.authFailures.inc({ kind: 'metrics_token', reason: given ? 'wrong' : 'missing' });
          reply.header('www-authenticate', 'Bearer realm="metrics"');
          return error(401, 'unauthorized', 'Authentication required');
        }
        const body = await deps.metrics.registry.render((err) =>
          req.log.error({ err: { message: (err as Error).message } }, 'metrics collector failed'),
        );
        return reply.type('text/plain; version=0.0.4; charset=utf-8').send(body);
      },
    );
  };
}
