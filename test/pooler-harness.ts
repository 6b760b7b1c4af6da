import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import pg from 'pg';
import type { DatabaseJobDeps } from '../src/agent/jobs/database-common.ts';
import type { JobContext } from '../src/agent/jobs/job-context.ts';
import { renderAuthFile, renderHba, renderIni } from '../src/agent/pgbouncer/pgbouncer.config.ts';
import {
  createPoolerManager,
  type PoolerManager,
  type PoolerManagerOptions,
  poolerPaths,
} from '../src/agent/pgbouncer/pooler-manager.ts';
import { createWarmPool, type WarmPool, type WarmPoolOptions } from '../src/agent/pool/warm-pool.ts';
import { ensureTenantTemplate } from '../src/agent/postgres/catalog-visibility.ts';
import { terminatePoolerSessions } from '../src/agent/postgres/tenant-sql.ts';
import { POOLER_ADMIN } from '../src/embedded/layout.ts';
import { type RunningPgbouncer, startPgbouncer } from '../src/embedded/pgbouncer-process.ts';
import { chownToService, resolveServiceUser } from '../src/embedded/service-user.ts';
import { createLogger } from '../src/shared/logger.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import { testEnv } from './helpers/env.ts';
import { freePort } from './helpers/ports.ts';

/**
 * A private PgBouncer (own temp dir, own free port) in front of the run's shared PostgreSQL,
 * so a test can reload and rewrite it without disturbing other test files.
 */
export type PrivatePooler = {
  dir: string;
  stateDir: string;
  port: number;
  adminPassword: string;
  pgbouncer: RunningPgbouncer;
  /** A PoolerManager on this PgBouncer (a new one = an agent restart on the same state dir). */
  manager(overrides?: {
    now?: () => number;
    sweepMs?: number;
    settings?: Partial<PoolerManagerOptions['settings']>;
    clientSsl?: PoolerManagerOptions['clientSsl'];
  }): PoolerManager;
  stop(): Promise<void>;
};

export async function startPrivatePooler(): Promise<PrivatePooler> {
  const env = testEnv();
  const user = resolveServiceUser();
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-pooler-'));
  const dir = path.join(root, 'pgbouncer');
  const stateDir = path.join(root, 'agent');
  await fs.mkdir(dir, { mode: 0o700 });
  await fs.mkdir(stateDir, { mode: 0o700 });
  await fs.chmod(root, 0o711);
  await chownToService(dir, user);
  const port = await freePort();
  const adminPassword = randomBytes(24).toString('base64url');
  const files = poolerPaths(dir);
  const settings = {
    listenAddr: '127.0.0.1',
    listenPort: port,
    pgHost: '127.0.0.1',
    pgPort: env.pgPort,
    adminUser: POOLER_ADMIN,
    poolMode: 'session' as const,
    maxClientConn: 500,
    defaultPoolSize: 20,
    tls: null,
  };
  const write = async (file: string, text: string) => {
    await fs.writeFile(file, text, { mode: 0o600 });
    await chownToService(file, user);
  };
  await write(
    files.ini,
    renderIni({ ...settings, authFile: files.auth, hbaFile: files.hba, pidFile: files.pid }),
  );
  await write(files.auth, renderAuthFile([{ user: POOLER_ADMIN, verifier: scramVerifier(adminPassword) }]));
  await write(files.hba, renderHba(POOLER_ADMIN, []));
  const pgbouncer = await startPgbouncer({
    iniFile: files.ini,
    logFile: path.join(root, 'pgbouncer.log'),
    user,
    port,
    adminUser: POOLER_ADMIN,
    adminPassword,
    binary: testEnv().pgbouncerBin,
  });
  const managers: PoolerManager[] = [];
  /** The cluster admin, for the cuts' ending of server sessions (as the agent's wiring does). */
  let admin: pg.Pool | null = null;
  const adminPool = () => {
    if (!admin) {
      admin = new pg.Pool({ connectionString: env.adminUrl, max: 2 });
      admin.on('error', () => {});
    }
    return admin;
  };
  return {
    dir,
    stateDir,
    port,
    adminPassword,
    pgbouncer,
    manager({ settings: s, ...overrides } = {}) {
      const m = createPoolerManager({
        dir,
        stateFile: path.join(stateDir, 'pooler-state.json'),
        settings: { ...settings, ...s },
        adminPassword,
        log: createLogger('pooler', 'silent'),
        endServerSessions: (database, users) => terminatePoolerSessions(adminPool(), database, users),
        ...overrides,
      });
      managers.push(m);
      return m;
    },
    async stop() {
      for (const m of managers) m.stop();
      await (admin as pg.Pool | null)?.end().catch(() => {});
      await pgbouncer.stop();
      await fs.rm(root, { recursive: true, force: true });
    },
  };
}

/** A client whose socket is bound to a local source address (e.g. 127.0.0.2). */
export function clientFrom(
  localAddress: string,
  cfg: { port: number; user: string; password: string; database: string },
): pg.Client {
  const client = new pg.Client({
    host: '127.0.0.1',
    ...cfg,
    connectionTimeoutMillis: 5_000,
    stream: () => {
      const socket = new net.Socket();
      const connect = socket.connect.bind(socket);
      // pg calls stream.connect(port, host); bind the local address on the way.
      (socket as unknown as { connect: (port: number, host: string) => net.Socket }).connect = (
        port: number,
        host: string,
      ) => connect({ port, host, localAddress });
      return socket;
    },
  });
  client.on('error', () => {});
  return client;
}

/** Tries a login + `SELECT 1`; resolves to null on success or the error message. */
export async function tryLogin(client: pg.Client): Promise<string | null> {
  try {
    await client.connect();
    await client.query('SELECT 1');
    return null;
  } catch (err) {
    return (err as Error).message;
  } finally {
    await client.end().catch(() => {});
  }
}

/** Handler deps and a job context on a private pooler, as the agent's wiring builds them. */
export function databaseJobKit(p: PrivatePooler, pooler: PoolerManager) {
  const env = testEnv();
  const admin = new pg.Pool({ connectionString: env.adminUrl, max: 4 });
  admin.on('error', () => {});
  const deps: DatabaseJobDeps = {
    pooler,
    poolerHost: '127.0.0.1',
    poolerPort: p.port,
    cluster: { pgHost: '127.0.0.1', pgPort: env.pgPort, key: randomBytes(32) },
  };
  /** The test's own look inside a database, as the cluster admin (never the agent's way in). */
  const connectAdmin = async (database: string) => {
    const u = new URL(env.adminUrl);
    u.pathname = `/${database}`;
    const c = new pg.Client({ connectionString: u.toString() });
    c.on('error', () => {});
    await c.connect();
    return c;
  };
  const ctx = (password?: string): JobContext => ({
    admin,
    log: createLogger('job', 'silent'),
    signal: new AbortController().signal,
    ...(password ? { secret: async () => password } : {}),
  });
  return { admin, deps, ctx, connectAdmin, close: () => admin.end() };
}

/**
 * A node's database side as the agent has it: a private PgBouncer with its manager (started), the
 * job kit on it, and the tenant template that spares and tenant databases are made from.
 */
export async function startNodeKit() {
  const p = await startPrivatePooler();
  const pooler = p.manager();
  await pooler.start();
  const kit = databaseJobKit(p, pooler);
  await ensureTenantTemplate(kit.admin, kit.connectAdmin);
  return { p, pooler, kit };
}

/** A warm pool on that kit (`size` spares, silent, no periodic audit), started and full. */
export async function startWarmPool(
  kit: ReturnType<typeof databaseJobKit>,
  pooler: PoolerManager,
  opts: Partial<WarmPoolOptions> & { size: number },
): Promise<WarmPool> {
  const pool = createWarmPool({
    admin: kit.admin,
    cluster: kit.deps.cluster,
    pooler,
    log: createLogger('warm-pool', 'silent'),
    auditMs: 0,
    ...opts,
  });
  pool.start();
  await pool.settled();
  return pool;
}

export function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(5).toString('hex')}`;
}

export function newPassword(): string {
  return randomBytes(32).toString('base64url');
}
