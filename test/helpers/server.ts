import { type ServerConfig, serverConfigSchema } from '../../src/server/config.ts';
import { createServerContext, type ServerContext } from '../../src/server/main.ts';
import { createLogger } from '../../src/shared/logger.ts';
import { createTestDb, type TestDb } from './db.ts';

export type TestServer = ServerContext & { db: TestDb; config: ServerConfig; stop(): Promise<void> };

/** A fully wired server on its own fresh control database (call `listen` yourself if needed). */
export async function createTestServer(overrides: Partial<ServerConfig> = {}): Promise<TestServer> {
  const db = await createTestDb();
  const config = serverConfigSchema.parse({
    databaseUrl: db.url,
    dataDir: '/nonexistent',
    port: 0,
    logLevel: 'silent',
    ...overrides,
  });
  const ctx = await createServerContext({ config, db: db.pool, log: createLogger('test', config.logLevel) });
  return {
    ...ctx,
    db,
    config,
    async stop() {
      await ctx.close();
      await db.drop();
    },
  };
}
