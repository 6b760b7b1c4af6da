/**
 * The server's OpenAPI document without a database: the real app (buildApp with every real route
 * module) over inert dependencies that are never called, since nothing is served. Used to generate
 * the dashboard's typed client (scripts/openapi-types.ts).
 */
import type { FastifyInstance } from 'fastify';
import { type AppDeps, buildApp } from '../src/server/app.ts';
import { createLogger } from '../src/shared/logger.ts';

/** Any property, any depth, any call: a function that refuses to run (nothing here serves requests). */
function inert(name: string): unknown {
  const fn = () => {
    throw new Error(`inert dependency called: ${name}`);
  };
  return new Proxy(fn, {
    get: (_t, key) => (key === 'then' ? undefined : inert(`${name}.${String(key)}`)),
  });
}

export async function openApiDocument(): Promise<unknown> {
  const real = {
    config: {
      bodyLimitBytes: 1024 * 1024,
      trustProxy: false,
      agentPollMaxMs: 1000,
      publicUrl: undefined,
      rateLimitKeyPerMinute: 1200,
      rateLimitIpPerMinute: 300,
      rateLimitAuthFailuresPerMinute: 20,
    },
    log: createLogger('openapi', 'silent'),
    version: 'dev',
    poolerPort: null,
    metricsToken: null,
    operatorToken: null,
    // No dashboard: the document does not describe it (and building it would need web/dist).
    dashboardDir: null,
  } as Record<string, unknown>;
  const deps = new Proxy(real, {
    get: (t, key) => (typeof key === 'string' && key in t ? t[key] : inert(String(key))),
    has: () => true,
  }) as unknown as AppDeps;
  const app: FastifyInstance = await buildApp(deps);
  await app.ready();
  const doc = app.swagger();
  await app.close();
  return doc;
}
