/**
 * Two data-plane nodes on one machine, with real processes, for moves (ADR 0031): the test
 * server; node `move-a` (the run's PostgreSQL with a private PgBouncer and its agent) and node
 * `move-b` (a second PostgreSQL cluster and PgBouncer started here on other ports, with its own
 * agent). Each agent reports its PgBouncer address, so connection info names the node's own.
 * `backup` gives each agent its backup settings (a shared directory, or an S3 bucket).
 * `warmPoolSize` (default 0: every create makes its database under its API name) sizes both
 * agents' warm pools; with spares, a database keeps the spare's generated name (ADR 0034) and
 * `physicalOf` gives it.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { LightMyRequestResponse } from 'fastify';
import pg from 'pg';
import { agentConfigSchema } from '../../src/agent/config.ts';
import { type RunningAgent, startAgent } from '../../src/agent/main.ts';
import { type DataPlane, startDataPlane } from '../../src/embedded/data-plane.ts';
import { dataLayout } from '../../src/embedded/layout.ts';
import { resolveServiceUser } from '../../src/embedded/service-user.ts';
import { createLogger } from '../../src/shared/logger.ts';
import { type PrivatePooler, startPrivatePooler } from '../pooler-harness.ts';
import { testEnv } from './env.ts';
import { createTestKey, type TestKey } from './keys.ts';
import { freePort } from './ports.ts';
import { createTestServer, type TestServer } from './server.ts';
import { waitUntil } from './wait.ts';

export type TwoNodes = {
  s: TestServer;
  key: TestKey;
  poolerA: PrivatePooler;
  planeB: DataPlane;
  rootB: string;
  portB: number;
  api(
    method: 'GET' | 'POST',
    url: string,
    payload?: Record<string, unknown>,
  ): Promise<LightMyRequestResponse>;
  stop(): Promise<void>;
};

export async function startTwoNodes(opts: {
  account: string;
  backup: (node: 'move-a' | 'move-b') => Record<string, unknown>;
  warmPoolSize?: number;
}): Promise<TwoNodes> {
  const env = testEnv();
  const agents: RunningAgent[] = [];
  const poolerA = await startPrivatePooler();
  const rootB = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-node-b-'));
  await fs.chmod(rootB, 0o711);
  const layout = dataLayout(path.join(rootB, 'data'));
  const portB = await freePort();
  const planeB = await startDataPlane({
    layout,
    ports: { postgres: await freePort(), pooler: portB },
    user: resolveServiceUser(),
    unsafeFast: true,
    binaries: { pgBin: env.pgBin, pgbouncerBin: env.pgbouncerBin },
    log: () => {},
  });
  const s = await createTestServer({ poolerPort: poolerA.port, poolerSslmode: 'disable' });
  const url = (await s.app.listen({ host: '127.0.0.1', port: 0 })).replace('localhost', '127.0.0.1');
  const agent = async (
    name: 'move-a' | 'move-b',
    node: {
      stateDir: string;
      adminUrl: string;
      poolerDir: string;
      poolerPort: number;
      poolerAdminPassword: string;
    },
  ) => {
    const { token } = await s.nodes.createEnrollment(name, 10);
    const config = agentConfigSchema.parse({
      serverUrl: url,
      stateDir: node.stateDir,
      enrollmentToken: token,
      adminDatabaseUrl: node.adminUrl,
      poolerDir: node.poolerDir,
      poolerPort: node.poolerPort,
      poolerAdminPassword: node.poolerAdminPassword,
      poolerPublicHost: '127.0.0.1',
      logLevel: 'silent',
      pollWaitMs: 20_000,
      explorerChannel: false,
      warmPoolSize: opts.warmPoolSize ?? 0,
      ...opts.backup(name),
    });
    agents.push(await startAgent(config, { log: createLogger('agent', 'silent') }));
  };
  await agent('move-a', {
    stateDir: poolerA.stateDir,
    adminUrl: env.adminUrl,
    poolerDir: poolerA.dir,
    poolerPort: poolerA.port,
    poolerAdminPassword: poolerA.adminPassword,
  });
  const stateB = path.join(rootB, 'agent');
  await fs.mkdir(stateB, { mode: 0o700 });
  await agent('move-b', {
    stateDir: stateB,
    adminUrl: planeB.adminUrl,
    poolerDir: layout.pooler,
    poolerPort: portB,
    poolerAdminPassword: planeB.poolerAdminPassword,
  });
  const key = await createTestKey(s, { account: opts.account });
  return {
    s,
    key,
    poolerA,
    planeB,
    rootB,
    portB,
    api: (method, u, payload) =>
      s.app.inject({ method, url: u, headers: key.headers, ...(payload ? { payload } : {}) }),
    async stop() {
      for (const a of agents) await a.stop().catch(() => {});
      s.app.server.closeAllConnections();
      await s.stop();
      await poolerA.stop();
      await planeB.stop();
      await fs.rm(rootB, { recursive: true, force: true });
    },
  };
}

/** The owner of a tenant database logging in through the PgBouncer on `port` (the caller ends it). */
export async function ownerLogin(port: number, db: { name: string; password: string }): Promise<pg.Client> {
  const c = new pg.Client({
    host: '127.0.0.1',
    port,
    user: `${db.name}_owner`,
    database: db.name,
    password: db.password,
    connectionTimeoutMillis: 5_000,
  });
  c.on('error', () => {});
  await c.connect();
  return c;
}

/**
 * Ends the owner's sessions of a database on a node's cluster (its pooled server connections
 * too), as an application that has gone: their counts are flushed, so a move's pre-copy
 * fingerprint is final at once whatever the load on the host (else a write made just before the
 * move may be counted only after it, and cost a second copy).
 */
export async function endOwnerSessions(adminUrl: string, name: string): Promise<void> {
  const admin = new pg.Client({ connectionString: adminUrl });
  await admin.connect();
  try {
    await admin.query(
      'SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = $1 AND usename = $2',
      [name, `${name}_owner`],
    );
  } finally {
    await admin.end();
  }
}

/** A database made on `node` through the API, waited for until `ready`, with the owner's password. */
export async function createReadyOn(
  nodes: TwoNodes,
  node: string,
  prefix: string,
): Promise<{ name: string; password: string }> {
  const name = `${prefix}_${randomBytes(4).toString('hex')}`;
  const r = await nodes.api('POST', '/v1/databases', { name, node });
  assert.equal(r.statusCode, 202, r.body);
  await waitUntil(`${name} ready`, async () => {
    const d = (await nodes.api('GET', `/v1/databases/${name}`)).json();
    assert.notEqual(d.status, 'failed', d.failure_reason);
    return d.status === 'ready' ? d : undefined;
  });
  const { password } = (await nodes.api('POST', `/v1/databases/${name}/credentials/reveal`)).json();
  return { name, password };
}

/** The latest move of `name` once it ended (`switched` or `failed`), as the API shows it. */
export function moveEnded(nodes: TwoNodes, name: string, timeoutMs?: number) {
  return waitUntil(
    `move of ${name}`,
    async () => {
      const m = (await nodes.api('GET', `/v1/databases/${name}/move`)).json();
      return m.status === 'switched' || m.status === 'failed' ? m : undefined;
    },
    timeoutMs,
  );
}

/**
 * Until the pre-copy of move `moveId` of `name` is made (the target restores it: `restoring`),
 * failing if the source froze first — the moment a test writes "after the snapshot, before the
 * freeze". Read as any key that may read the database does (GET …/move).
 */
export function precopyMade(nodes: TwoNodes, name: string, moveId: string) {
  return waitUntil(
    'pre-copy made',
    async () => {
      const m = (await nodes.api('GET', `/v1/databases/${name}/move`)).json();
      assert.equal(m.id, moveId);
      assert.notEqual(m.status, 'freezing', 'the freeze came before the write could commit');
      return m.status === 'restoring' ? true : undefined;
    },
    60_000,
    5,
  );
}
