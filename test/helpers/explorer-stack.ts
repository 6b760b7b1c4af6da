import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { DEFAULT_LIMITS } from '../../src/agent/jobs/contract.ts';
import type { RunningAgent } from '../../src/agent/main.ts';
import * as databasesRepo from '../../src/server/modules/databases/databases.repo.ts';
import { startTestAgent } from './agent.ts';
import { adminPool, createTenant, setupCanary, type Tenant } from './explorer.ts';
import { createTestKey, type TestKey } from './keys.ts';
import { createTestServer, type TestServer } from './server.ts';

/**
 * The explorer end to end: a listening test server, a real agent enrolled as `node` (with or
 * without its explorer channel), an admin key of `account`, and a ready tenant database with the
 * canary fixture registered in the control DB.
 */
export type ExplorerStack = {
  s: TestServer;
  url: string;
  admin: pg.Pool;
  t: Tenant;
  key: TestKey;
  stateDir: string;
  nodeId: string;
  agent: RunningAgent;
  /** Stops the agent and starts it again (same node, same state dir) with or without its channel. */
  restartAgent(opts: { explorerChannel: boolean }): Promise<void>;
  stop(): Promise<void>;
};

export async function startExplorerStack(opts: {
  node: string;
  account: string;
  explorerChannel: boolean;
  tenantPrefix?: string;
}): Promise<ExplorerStack> {
  const admin = adminPool();
  const s = await createTestServer();
  const url = await s.app.listen({ host: '127.0.0.1', port: 0 });
  const stateDir = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-explorer-agent-'));
  const start = (explorerChannel: boolean) =>
    startTestAgent(s, url, { name: opts.node, stateDir, explorerChannel });
  const agent = await start(opts.explorerChannel);
  if (opts.explorerChannel) await agent.explorerChannelOpen();
  const key = await createTestKey(s, { account: opts.account });
  const t = await createTenant(admin, opts.tenantPrefix);
  await setupCanary(t);
  const node = await s.db.pool.query<{ id: string }>('SELECT id FROM nodes WHERE name = $1', [opts.node]);
  const nodeId = node.rows[0]!.id;
  await databasesRepo.insertDatabase(s.db.pool, {
    id: t.id,
    accountId: key.accountId,
    nodeId,
    name: t.name,
    passwordSealed: 'unused-in-this-test',
    allowlist: [],
    limits: { ...DEFAULT_LIMITS },
  });
  await databasesRepo.markReady(s.db.pool, t.id);
  const stack: ExplorerStack = {
    s,
    url,
    admin,
    t,
    key,
    stateDir,
    nodeId,
    agent,
    async restartAgent(o) {
      await stack.agent.stop();
      stack.agent = await start(o.explorerChannel);
    },
    async stop() {
      await stack.agent.stop();
      await s.stop();
      await t.drop();
      await admin.end();
      await fs.rm(stateDir, { recursive: true, force: true });
    },
  };
  return stack;
}
