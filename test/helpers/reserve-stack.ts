import assert from 'node:assert/strict';
import pg from 'pg';
import { loadExplorerKey } from '../../src/agent/explorer/explorer-role.ts';
import type { RunningAgent } from '../../src/agent/main.ts';
import { createWarmPool } from '../../src/agent/pool/warm-pool.ts';
import { createLogger } from '../../src/shared/logger.ts';
import { type PrivatePooler, startPrivatePooler } from '../pooler-harness.ts';
import { startTestAgent } from './agent.ts';
import { dropKnownDatabases } from './db.ts';
import { testEnv } from './env.ts';
import { createTestServer, type TestServer } from './server.ts';
import { waitUntil } from './wait.ts';

/**
 * Removes the spares an agent made with this pooler's state dir (its key, its tag) from the shared
 * cluster: a warm pool that was never started (its state is empty, so no pooler entry is touched)
 * drains what carries that tag.
 */
export async function drainSpares(pooler: PrivatePooler, admin: pg.Pool): Promise<void> {
  const key = await loadExplorerKey(pooler.stateDir).catch(() => null);
  if (!key) return;
  await createWarmPool({
    admin,
    cluster: { pgHost: '127.0.0.1', pgPort: testEnv().pgPort, key },
    pooler: pooler.manager(),
    size: 0,
    log: createLogger('warm-pool', 'silent'),
  })
    .drain()
    .catch(() => {});
}

export type Reserve = {
  id: string;
  name: string;
  pg_name: string | null;
  status: string;
  account_id: string | null;
  node_id: string;
};

export type ReserveStack = {
  pooler: PrivatePooler;
  s: TestServer;
  agent: RunningAgent;
  /** The cluster's admin (superuser) pool. */
  admin: pg.Pool;
  /** Reserved databases in that status (default: ready), by id. */
  reserves(status?: string): Promise<Reserve[]>;
  /** Runs keeper passes until `n` reserves are ready (the agent reports its warm pool first). */
  reservesReady(n: number): Promise<Reserve[]>;
  /** Stops everything and removes every database and role the stack made from the shared cluster. */
  stop(): Promise<void>;
};

/**
 * Reserved databases (ADR 0037) on the whole path: a server with `reservedDatabases: 2`, a real
 * agent `node` with a warm pool of 2 owning a private PgBouncer, PostgreSQL.
 */
export async function startReserveStack(node: string): Promise<ReserveStack> {
  const pooler = await startPrivatePooler();
  const s = await createTestServer({
    poolerPort: pooler.port,
    poolerSslmode: 'disable',
    reservedDatabases: 2,
  });
  const url = await s.app.listen({ host: '127.0.0.1', port: 0 });
  const agent = await startTestAgent(s, url, { name: node, pooler, warmPoolSize: 2, explorerChannel: false });
  const admin = new pg.Pool({ connectionString: testEnv().adminUrl, max: 2 });
  admin.on('error', () => {});
  const reserves = async (status = 'ready') =>
    (
      await s.db.pool.query<Reserve>(
        `SELECT id, name, pg_name, status, account_id, node_id FROM databases
          WHERE account_id IS NULL AND deleted_at IS NULL AND status = $1 ORDER BY id`,
        [status],
      )
    ).rows;
  return {
    pooler,
    s,
    agent,
    admin,
    reserves,
    reservesReady: (n) =>
      waitUntil(
        `${n} reserved databases ready`,
        async () => {
          await s.reserveKeeper.runOnce();
          const ready = await reserves();
          assert.equal((await reserves('failed')).length, 0, 'a reserve failed');
          return ready.length === n ? ready : undefined;
        },
        60_000,
        200,
      ),
    async stop() {
      await s.reserveKeeper.stop();
      await agent.stop();
      await drainSpares(pooler, admin);
      // Every database the stack made (reserves and tenants') leaves the shared cluster.
      await dropKnownDatabases(s.db.pool);
      await admin.end();
      s.app.server.closeAllConnections();
      await s.stop();
      await pooler.stop();
    },
  };
}
