/**
 * Shared set-up of the pooler benchmarks: a throwaway PostgreSQL cluster + PgBouncer (temp dir,
 * free loopback ports), a PoolerManager on it as the agent builds one, and the database job
 * handlers with a fake secret source.
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { DatabaseJobDeps } from '../src/agent/jobs/database-common.ts';
import { databaseHandlers } from '../src/agent/jobs/database-handlers.ts';
import type { JobContext, JobHandler } from '../src/agent/jobs/job-context.ts';
import { createPoolerManager, type PoolerManager } from '../src/agent/pgbouncer/pooler-manager.ts';
import { terminatePoolerSessions } from '../src/agent/postgres/tenant-sql.ts';
import { startDataPlane } from '../src/embedded/data-plane.ts';
import { dataLayout, POOLER_ADMIN } from '../src/embedded/layout.ts';
import { resolveServiceUser } from '../src/embedded/service-user.ts';
import { createLogger } from '../src/shared/logger.ts';
import { freePort } from '../test/helpers/ports.ts';

export type PoolerBenchKit = {
  ports: { postgres: number; pooler: number };
  adminUrl: string;
  poolerDir: string;
  poolerAdminPassword: string;
  pooler: PoolerManager;
  admin: pg.Pool;
  jobs: Map<string, JobHandler>;
  ctx(password?: string): JobContext;
  stop(): Promise<void>;
};

export async function startPoolerBenchKit(): Promise<PoolerBenchKit> {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-bench-'));
  const layout = dataLayout(tmp);
  const ports = { postgres: await freePort(), pooler: await freePort() };
  const dp = await startDataPlane({
    layout,
    ports,
    user: resolveServiceUser(),
    unsafeFast: true,
    log: () => {},
  });
  const pooler = createPoolerManager({
    dir: layout.pooler,
    stateFile: path.join(layout.agent, 'pooler-state.json'),
    settings: {
      listenAddr: '127.0.0.1',
      listenPort: ports.pooler,
      pgHost: '127.0.0.1',
      pgPort: ports.postgres,
      adminUser: POOLER_ADMIN,
      poolMode: 'session',
      maxClientConn: 2000,
      defaultPoolSize: 20,
      tls: null,
    },
    adminPassword: dp.poolerAdminPassword,
    log: createLogger('pooler', 'silent'),
    sweepMs: 600_000,
    endServerSessions: (database, users) => terminatePoolerSessions(admin, database, users),
  });
  const admin = new pg.Pool({ connectionString: dp.adminUrl, max: 4 });
  admin.on('error', () => {});
  await pooler.start();
  const deps: DatabaseJobDeps = {
    pooler,
    poolerHost: '127.0.0.1',
    poolerPort: ports.pooler,
    cluster: { pgHost: '127.0.0.1', pgPort: ports.postgres, key: randomBytes(32) },
  };
  return {
    ports,
    adminUrl: dp.adminUrl,
    poolerDir: layout.pooler,
    poolerAdminPassword: dp.poolerAdminPassword,
    pooler,
    admin,
    jobs: new Map(databaseHandlers(deps)),
    ctx: (password) => ({
      admin,
      log: createLogger('job', 'silent'),
      signal: new AbortController().signal,
      ...(password ? { secret: async () => password } : {}),
    }),
    async stop() {
      pooler.stop();
      await admin.end();
      await dp.stop();
      await fs.rm(tmp, { recursive: true, force: true });
    },
  };
}

export const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)] ?? Number.NaN;
};

export const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;
