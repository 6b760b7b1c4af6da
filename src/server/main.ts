import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { generateToken } from '../shared/api-key.ts';
import { createLogger } from '../shared/logger.ts';
import { VERSION } from '../shared/version.ts';
import { buildApp } from './app.ts';
import type { ServerConfig } from './config.ts';
import { migrate } from './db/migrate.ts';
import { createPool, type Db } from './db/pool.ts';
import { createJobNotifier, type JobNotifier } from './modules/jobs/job-notifier.ts';
import { createNodesService } from './modules/nodes/nodes.service.ts';

export type RunningServer = {
  app: FastifyInstance;
  db: Db;
  url: string;
  close(): Promise<void>;
};

/** The one wiring point of the server process: config in, listening server out. */
export async function startServer(
  config: ServerConfig,
  opts: { log?: Logger; poolerPort?: number | null; migrate?: boolean } = {},
): Promise<RunningServer> {
  const log = opts.log ?? createLogger('bulwark-server', config.logLevel);
  const db = createPool(config.databaseUrl, config.dbPoolMax, log);
  const stopping = new AbortController();
  let notifier: JobNotifier | undefined;
  try {
    if (opts.migrate !== false) {
      const applied = await migrate(db);
      if (applied.length) log.info({ applied }, 'migrations applied');
    }
    notifier = createJobNotifier(config.databaseUrl, log);
    const nodes = createNodesService({
      db,
      notifier,
      log,
      leaseMs: config.jobLeaseMs,
      generateToken,
      shutdown: stopping.signal,
    });
    const app = await buildApp({
      config,
      db,
      log,
      version: VERSION,
      poolerPort: opts.poolerPort ?? null,
      nodes,
    });
    const address = await app.listen({ host: config.host, port: config.port });
    const n = notifier;
    return {
      app,
      db,
      url: address,
      async close() {
        stopping.abort();
        await n.close();
        await app.close();
        await db.end();
      },
    };
  } catch (err) {
    await notifier?.close();
    await db.end().catch(() => {});
    throw err;
  }
}
