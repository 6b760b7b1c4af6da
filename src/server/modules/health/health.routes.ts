import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';

export function healthRoutes(deps: {
  version: string;
  /** Whether the control DB answers with every migration applied (throws when unreachable). */
  migrationsAtHead: () => Promise<boolean>;
}): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      '/health',
      {
        schema: {
          tags: ['health'],
          summary: 'Liveness: the process is up',
          response: { 200: z.object({ status: z.literal('ok'), version: z.string().max(64) }) },
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
            503: z.object({ status: z.literal('unavailable'), reason: z.string().max(200) }),
          },
        },
      },
      async (_req, reply) => {
        try {
          if (!(await deps.migrationsAtHead())) {
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
