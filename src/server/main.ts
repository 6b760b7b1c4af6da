import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { generateToken } from '../shared/api-key.ts';
import { createLogger } from '../shared/logger.ts';
import { VERSION } from '../shared/version.ts';
import { buildApp } from './app.ts';
import type { ServerConfig } from './config.ts';
import { migrate } from './db/migrate.ts';
import { createPool, type Db } from './db/pool.ts';
import { createJobNotifier } from './modules/jobs/job-notifier.ts';
import { createNodesService, type NodesService } from './modules/nodes/nodes.service.ts';

export type ServerContext = {
  app: FastifyInstance;
  nodes: NodesService;
  /** Stops background work (listeners, long-polls) and closes the app; the pool is the caller's. */
  close(): Promise<void>;
};

/**
 * The one wiring point of the server: every service is built here from the config and
 * the control DB pool, and handed to the app. Tests use it with a throwaway database.
 */
export async function createServerContext(opts: {
  config: ServerConfig;
  db: Db;
  log: Logger;
  poolerPort?: number | null;
}): Promise<ServerContext> {
  const { config, db, log } = opts;
  const stopping = new AbortController();
  const notifier = createJobNotifier(config.databaseUrl, log);
  const nodes = createNodesService({
    db,
    notifier,
    log,
    leaseMs: config.jobLeaseMs,
    generateToken,
    shutdown: stopping.signal,
  });
  try {
    const app = await buildApp({
      config,
      db,
      log,
      version: VERSION,
      poolerPort: opts.poolerPort ?? null,
      nodes,
    });
    return {
      app,
      nodes,
      async close() {
        stopping.abort();
        await notifier.close();
        await app.close();
      },
    };
  } catch (err) {
    await notifier.close();
    throw err;
  }
}

export type RunningServer = { app: FastifyInstance; db: Db; url: string; close(): Promise<void> };

/** Config in, listening server out: pool, migrations, wiring, listen. */
export async function startServer(
  config: ServerConfig,
  opts: { log?: Logger; poolerPort?: number | null; migrate?: boolean } = {},
): Promise<RunningServer> {
  const log = opts.log ?? createLogger('bulwark-server', config.logLevel);
  const db = createPool(config.databaseUrl, config.dbPoolMax, log);
  try {
    if (opts.migrate !== false) {
      const applied = await migrate(db);
      if (applied.length) log.info({ applied }, 'migrations applied');
    }
    const ctx = await createServerContext({ config, db, log, poolerPort: opts.poolerPort ?? null });
    const url = await ctx.app.listen({ host: config.host, port: config.port });
    return {
      app: ctx.app,
      db,
      url,
      async close() {
        await ctx.close();
        await db.end();
      },
    };
  } catch (err) {
    await db.end().catch(() => {});
    throw err;
  }
}
