/** A throwaway PostgreSQL cluster with a migrated control DB, for the key benchmarks. */
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { startDataPlane } from '../src/embedded/data-plane.ts';
import { dataLayout } from '../src/embedded/layout.ts';
import { resolveServiceUser } from '../src/embedded/service-user.ts';
import { migrate } from '../src/server/db/migrate.ts';
import { createPool, type Db } from '../src/server/db/pool.ts';
import type { Caller } from '../src/server/http/caller.ts';
import type { createServerContext } from '../src/server/main.ts';
import { databaseSchema, presentDatabase } from '../src/server/modules/databases/databases.schemas.ts';
import { createOperatorKey } from '../src/server/modules/keys/keys.service.ts';
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

/**
 * The benches' subject: an admin key of account `bench` (already authenticated: its caller), a
 * ready database `bench_db` of it (inserted directly: no agent here), and `GET
 * /bench/databases/:name` — the same handler and schema as `GET /v1/databases/:name`, outside /v1
 * so the auth hook leaves it alone (the unauthenticated baseline).
 */
export async function benchDatabaseRoute(
  ctx: Awaited<ReturnType<typeof createServerContext>>,
  db: Db,
): Promise<{ key: string; caller: Caller }> {
  const { key } = await createOperatorKey(db, { accountName: 'bench', level: 'admin' });
  await ctx.keyAuth.listenerReady();
  const auth = await ctx.keyAuth.authenticate(key, '127.0.0.1');
  if (!auth.ok) throw new Error(auth.reason);
  const caller = auth.caller;
  const node = await db.query<{ id: string }>("INSERT INTO nodes (name) VALUES ('bench') RETURNING id");
  await db.query(
    `INSERT INTO databases (id, account_id, node_id, name, password_sealed, allowlist, limits, status)
     VALUES (gen_random_uuid(), $1, $2, 'bench_db', 'v1.x.x.x.x', '[]', '{}', 'ready')`,
    [caller.accountId, node.rows[0]!.id],
  );
  const svc = ctx.databases;
  ctx.app.get(
    '/bench/databases/:name',
    { schema: { hide: true, response: { 200: databaseSchema } } },
    async (req) => presentDatabase(await svc.get(caller, (req.params as { name: string }).name)),
  );
  return { key, caller };
}
