/** A throwaway PostgreSQL cluster with a migrated control DB, for the key benchmarks. */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startDataPlane } from '../src/embedded/data-plane.ts';
import { dataLayout } from '../src/embedded/layout.ts';
import { resolveServiceUser } from '../src/embedded/service-user.ts';
import { migrate } from '../src/server/db/migrate.ts';
import { createPool, type Db } from '../src/server/db/pool.ts';
import { createLogger } from '../src/shared/logger.ts';
import { freePort } from '../test/helpers/ports.ts';

export async function startKeysBenchCluster(): Promise<{
  controlUrl: string;
  db: Db;
  dir: string;
  stop(): Promise<void>;
}> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'bench-keys-'));
  const layout = dataLayout(dir);
  const dp = await startDataPlane({
    layout,
    ports: { postgres: await freePort(), pooler: await freePort() },
    user: resolveServiceUser(),
    unsafeFast: true,
    log: () => {},
  });
  const db = createPool(dp.controlUrl, 20, createLogger('bench', 'silent'));
  await migrate(db);
  return {
    controlUrl: dp.controlUrl,
    db,
    dir,
    async stop() {
      await db.end().catch(() => {});
      await dp.stop();
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}
