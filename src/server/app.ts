import { randomUUID } from 'node:crypto';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import {
  jsonSchemaTransform,
  serializerCompiler,
  validatorCompiler,
  type ZodTypeProvider,
} from 'fastify-type-provider-zod';
import type { Logger } from 'pino';
import type { ServerConfig } from './config.ts';
import type { Db } from './db/pool.ts';
import { registerErrorHandling } from './http/errors.ts';
import { registerSecurityHeaders } from './http/security-headers.ts';
import { healthRoutes } from './modules/health/health.routes.ts';
import { homePage } from './modules/health/home.page.ts';
import { agentRoutes } from './modules/nodes/agent.routes.ts';
import type { NodesService } from './modules/nodes/nodes.service.ts';

export type AppDeps = {
  config: Pick<ServerConfig, 'bodyLimitBytes' | 'trustProxy' | 'agentPollMaxMs' | 'publicUrl'>;
  db: Db;
  log: Logger;
  version: string;
  poolerPort: number | null;
  nodes: NodesService;
};

const REQUEST_ID = /^[A-Za-z0-9._-]{8,64}$/;

export type RouteInfo = { method: string; url: string; hidden: boolean };
/** Every route each app registered (tests check each one against the OpenAPI document). */
export const registeredRoutes = new WeakMap<FastifyInstance, RouteInfo[]>();

/** Builds the fully wired server without listening (tests call `inject()` on it). */
export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.log as FastifyBaseLogger,
    bodyLimit: deps.config.bodyLimitBytes,
    trustProxy: deps.config.trustProxy,
    requestIdHeader: false,
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID();
    },
    routerOptions: { maxParamLength: 200 },
  }).withTypeProvider<ZodTypeProvider>();

  const routes: RouteInfo[] = [];
  registeredRoutes.set(app, routes);
  app.addHook('onRoute', (r) => {
    const methods = Array.isArray(r.method) ? r.method : [r.method];
    const hidden = Boolean((r.schema as { hide?: boolean } | undefined)?.hide) || r.url.startsWith('/docs');
    for (const m of methods) if (m !== 'HEAD') routes.push({ method: m, url: r.url, hidden });
  });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.addHook('onRequest', async (req, reply) => {
    reply.header('x-request-id', req.id);
  });
  registerSecurityHeaders(app);
  registerErrorHandling(app);

  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: {
        title: 'Bulwark API',
        version: deps.version,
        description: 'Self-hosted, security-first PostgreSQL',
      },
      ...(deps.config.publicUrl ? { servers: [{ url: deps.config.publicUrl }] } : {}),
      components: { securitySchemes: { apiKey: { type: 'http', scheme: 'bearer', bearerFormat: 'bwk_…' } } },
    },
    transform: jsonSchemaTransform,
  });
  await app.register(swaggerUi, { routePrefix: '/docs', staticCSP: false });
  app.get('/v1/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  app.get('/', { schema: { hide: true } }, async (_req, reply) =>
    reply
      .type('text/html; charset=utf-8')
      .send(homePage({ version: deps.version, poolerPort: deps.poolerPort })),
  );
  await app.register(healthRoutes({ db: deps.db, version: deps.version }));
  await app.register(agentRoutes({ nodes: deps.nodes, pollMaxMs: deps.config.agentPollMaxMs }));
  return app;
}
