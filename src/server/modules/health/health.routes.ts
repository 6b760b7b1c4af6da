import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { migrationsAtHead } from '../../db/migrate.ts';
import type { Db } from '../../db/pool.ts';

export function healthRoutes(deps: { db: Db; version: string }): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      '/health',
      {
        schema: {
          tags: ['health'],
          summary: 'Liveness: the process is up',
          response: { 200: z.object({ status: z.literal('ok'), version: z.string() }) },
        },
      },
      async () => ({ status: 'ok' as const, version: deps.version }),
    );

    app.get(
      '/ready',
      {
        schema: {
          tags: ['health'],
          summary: 'Readiness: control DB reachable and migrations at head',
          response: {
            200: z.object({ status: z.literal('ready') }),
            503: z.object({ status: z.literal('unavailable'), reason: z.string() }),
          },
        },
      },
      async (_req, reply) => {
        try {
          if (!(await migrationsAtHead(deps.db))) {
            return reply.status(503).send({ status: 'unavailable' as const, reason: 'migrations pending' });
          }
          return { status: 'ready' as const };
        } catch {
          return reply
            .status(503)
            .send({ status: 'unavailable' as const, reason: 'control database unreachable' });
        }
      },
    );
  };
}
