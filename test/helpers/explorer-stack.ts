import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import type { RunningAgent } from '../../src/agent/main.ts';
import * as databasesRepo from '../../src/server/modules/databases/databases.repo.ts';
import { DEFAULT_LIMITS } from '../../src/shared/contracts/jobs.ts';
import { startTestAgent } from './agent.ts';
import { waitForNoRunningStatement, waitForRunningStatement } from './db.ts';
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
  server?: Parameters<typeof createTestServer>[0];
}): Promise<ExplorerStack> {
  const admin = adminPool();
  const s = await createTestServer(opts.server);
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
  if (opts.explorerChannel)
    await until('the channel on the server', () => s.explorerChannels.pick(nodeId) !== null);
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

/** Polls `fn` every 20 ms until it is true; fails the test after `ms`. */
export async function until(what: string, fn: () => Promise<boolean> | boolean, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await fn()) return;
    await new Promise((res) => setTimeout(res, 20));
  }
  assert.fail(`timed out waiting for ${what}`);
}

/**
 * Starts a 30 s query over real HTTP, drops the client once the explorer backend runs, and
 * asserts the backend is cancelled within 3 s. Returns when that statement is gone.
 */
export async function assertDisconnectCancels(stack: ExplorerStack): Promise<void> {
  const { t } = stack;
  // A unique alias names this statement in pg_stat_activity: another one still ending (an earlier
  // test's, the session check after a query) is not taken for it.
  const mark = { user: t.roles.explorer, text: `dropped_client_${randomBytes(4).toString('hex')}` };
  const controller = new AbortController();
  const pending = fetch(`${stack.url}/v1/databases/${t.name}/explorer/query`, {
    method: 'POST',
    headers: { ...stack.key.headers, 'content-type': 'application/json' },
    body: JSON.stringify({
      sql: `select count(*) from generate_series(1, 1e10) as ${mark.text}`,
      timeout_ms: 30_000,
    }),
    signal: controller.signal,
  }).catch(() => null);
  await waitForRunningStatement(t.name, { ...mark, timeoutMs: 5_000 });
  const t0 = Date.now();
  controller.abort();
  await pending;
  await waitForNoRunningStatement(t.name, { ...mark, timeoutMs: 3_000 });
  assert.ok(Date.now() - t0 < 3_000);
}
