import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type ServerConfig, serverConfigSchema } from '../../src/server/config.ts';
import { createKeyringFile } from '../../src/server/crypto/secret-box.ts';
import { createServerContext, type ServerContext } from '../../src/server/main.ts';
import type { Resolver } from '../../src/server/modules/webhooks/ssrf.ts';
import { createLogger } from '../../src/shared/logger.ts';
import { createTestDb, type TestDb } from './db.ts';

export type TestServer = ServerContext & { db: TestDb; config: ServerConfig; stop(): Promise<void> };

/**
 * A fully wired server on its own fresh control database (call `listen` yourself if needed).
 * `opts.db`: share another server's control DB (a second replica); `stop()` then leaves it alone.
 */
export async function createTestServer(
  overrides: Partial<ServerConfig> = {},
  opts: { db?: TestDb; webhookResolver?: Resolver } = {},
): Promise<TestServer> {
  const db = opts.db ?? (await createTestDb());
  // A fresh master keyring per server (tenant database passwords are sealed with it).
  const keyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bulwark-keyring-'));
  const masterKeyFile = path.join(keyDir, 'master-keyring.json');
  createKeyringFile(masterKeyFile);
  const config = serverConfigSchema.parse({
    databaseUrl: db.url,
    // Its own data dir (the execution-token key is made there at its first use).
    dataDir: path.join(keyDir, 'data'),
    port: 0,
    logLevel: 'silent',
    masterKeyFile,
    // Tests make many requests from one address: rate limits only where a test asks for them.
    rateLimitKeyPerMinute: 1_000_000,
    rateLimitIpPerMinute: 1_000_000,
    rateLimitAuthFailuresPerMinute: 1_000_000,
    // Nodes driven by hand heartbeat only when a test polls: none is marked unhealthy unless a test asks.
    nodeUnhealthyAfterSeconds: 86_400,
    // No dashboard build unless a test brings one (the plain page answers /).
    dashboardDir: path.join(keyDir, 'no-dashboard'),
    // Never Slack itself: a test that posts to Slack brings its own receiver (test/slack-helpers.ts).
    slackApiUrl: 'http://127.0.0.1:9/api',
    // No reserved databases unless a test asks (they are made in the background on warm-pool nodes).
    reservedDatabases: 0,
    ...overrides,
  });
  const ctx = await createServerContext({
    config,
    db: db.pool,
    log: createLogger('test', config.logLevel),
    ...(opts.webhookResolver ? { webhookResolver: opts.webhookResolver } : {}),
  });
  return {
    ...ctx,
    db,
    config,
    async stop() {
      await ctx.close();
      if (!opts.db) await db.drop();
      fs.rmSync(keyDir, { recursive: true, force: true });
    },
  };
}
