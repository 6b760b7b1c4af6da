import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import type { Logger } from 'pino';
import { createLogger } from '../shared/logger.ts';
import { CONTROL_DB, CONTROL_ROLE, POOLER_ADMIN } from '../shared/platform-names.ts';
import { createExplorerValidator, loadExplorerParser } from '../shared/sql/explorer-validator.ts';
import { VERSION } from '../shared/version.ts';
import { type AttachedRegistry, createAttachedRegistry } from './attached/attached-registry.ts';
import { reportAttached } from './attached/attached-report.ts';
import { startAttached } from './attached/attached-startup.ts';
import { startBackups } from './backups/backup-startup.ts';
import { type AgentConfig, backupS3Options } from './config.ts';
import { createAccessExpiry } from './execution/access-expiry.ts';
import { saveNodeId, startExecution } from './execution/execution-setup.ts';
import { startExplorerChannel } from './explorer/explorer-channel.ts';
import { createExplorerExecutor, type ExplorerExecutor } from './explorer/explorer-executor.ts';
import { loadExplorerKey } from './explorer/explorer-role.ts';
import { createHeartbeat } from './heartbeat.ts';
import { type DatabaseJobDeps, proveLogin } from './jobs/database-common.ts';
import type { JobHandler } from './jobs/job-context.ts';
import { createJobRunner } from './jobs/job-runner.ts';
import { defaultHandlers } from './jobs/registry.ts';
import { POOLER_LIMITS } from './pgbouncer/pgbouncer.config.ts';
import { createPoolerManager, type PoolerManager } from './pgbouncer/pooler-manager.ts';
import { ensurePoolerTls, listensOnLoopbackOnly } from './pgbouncer/pooler-tls.ts';
import { createWarmPool, type WarmPool } from './pool/warm-pool.ts';
import { ensureTenantTemplate, refuseMaintenanceLogins } from './postgres/catalog-visibility.ts';
import { type ClusterAccess, pinnedOptions } from './postgres/steward.ts';
import { terminatePoolerSessions } from './postgres/tenant-sql.ts';
import { createDatabaseSampler } from './samples/database-sampler.ts';
import { createSampleSchedule, sampleAfterCreate } from './samples/sample-schedule.ts';
import { createServerClient } from './server-client.ts';
import { sleep } from './sleep.ts';

export type RunningAgent = {
  nodeId: string;
  /** Resolves once the explorer channel is open (rejects when it is off or refused). */
  explorerChannelOpen(): Promise<void>;
  /** Resolves when the agent has stopped. */
  done: Promise<void>;
  stop(): Promise<void>;
};

/** Where tenants reach this node's PgBouncer: reported only when the operator named a public host. */
const poolerAddress = (c: AgentConfig) =>
  c.poolerPublicHost ? { host: c.poolerPublicHost, port: c.poolerPublicPort ?? c.poolerPort } : undefined;

async function writeFileAtomic(file: string, data: string, mode: number): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(tmp, data, { mode });
  await fs.rename(tmp, file);
}

/**
 * The data-plane agent's one wiring point: enrolls once, builds the admin pool, the pooler, the
 * explorer and the job handlers, and hands them to the heartbeat and the job runner
 * (`jobs/job-runner.ts`: long-poll, run, report), which hold no state of their own. Liveness and
 * readiness are files in its state dir (`alive` is touched on every heartbeat, `ready` exists
 * while it serves). `stop()` ends the runner and closes everything it built.
 */
export async function startAgent(
  config: AgentConfig,
  opts: { log?: Logger; handlers?: Map<string, JobHandler> } = {},
): Promise<RunningAgent> {
  const log = opts.log ?? createLogger('bulwark-agent', config.logLevel);
  await fs.mkdir(config.stateDir, { recursive: true, mode: 0o700 });
  const tokenFile = path.join(config.stateDir, 'agent-token');
  const aliveFile = path.join(config.stateDir, 'alive');
  const readyFile = path.join(config.stateDir, 'ready');
  await fs.rm(readyFile, { force: true });

  let token: string | null = existsSync(tokenFile) ? (await fs.readFile(tokenFile, 'utf8')).trim() : null;
  const client = createServerClient(config.serverUrl, () => token);
  let nodeId = '';
  if (!token) {
    if (!config.enrollmentToken) throw new Error('agent is not enrolled: set BULWARK_ENROLLMENT_TOKEN');
    const enrolled = await client.enroll(config.enrollmentToken, VERSION, poolerAddress(config));
    token = enrolled.agent_token;
    nodeId = enrolled.node_id;
    await writeFileAtomic(tokenFile, `${token}\n`, 0o600);
    await saveNodeId(config.stateDir, nodeId);
    log.info({ node: enrolled.node_name }, 'agent enrolled');
  }

  // The admin (a superuser) works on the maintenance database only, never inside a tenant
  // database (postgres/steward.ts); its session settings are pinned at login all the same.
  const admin = new pg.Pool({
    connectionString: config.adminDatabaseUrl,
    max: 4,
    // Kept open (ADR 0028): a job's statements never wait for a new SCRAM login.
    min: 2,
    idleTimeoutMillis: 60_000,
    application_name: 'bulwark-agent',
    options: pinnedOptions(),
    // No admin statement may hang a job forever (a lock wait, a wedged server): the job fails
    // and is retried instead. CREATE DATABASE on a loaded disk takes well under this.
    statement_timeout: 120_000,
    query_timeout: 130_000,
    connectionTimeoutMillis: 10_000,
  });
  admin.on('error', (err) => log.warn({ err: { message: err.message } }, 'idle admin connection lost'));
  admin.on('connect', (client) => {
    client.on('error', (err) => log.warn({ err: { message: err.message } }, 'admin connection lost'));
  });
  await refuseMaintenanceLogins(admin).catch((err: Error) => {
    log.warn({ err: { message: err.message } }, 'could not revoke CONNECT on the maintenance databases');
  });
  await ensureTenantTemplate(admin, (database) => connectAdminTo(config, database)).catch((err: Error) => {
    // Tenant databases are then made from template0 (drift reports their catalog visibility).
    log.warn({ err: { message: err.message } }, 'the tenant template could not be made');
  });
  const pgUrl = new URL(config.adminDatabaseUrl);
  const cluster: ClusterAccess = {
    pgHost: pgUrl.hostname || '127.0.0.1',
    pgPort: Number(pgUrl.port || 5432),
    key: await loadExplorerKey(config.stateDir),
  };
  const managed = await startPooler(config, log, admin);
  const pooler = managed?.pooler;
  // Attached databases the server registered (filled by the report below): explorer and execution.
  const attached = createAttachedRegistry();
  const explorer = await startExplorer(cluster, admin, log, attached);
  // Governed SQL (ADR 0021): pinned keys, the replay cache, the executor (channel and job).
  const execution = await startExecution({
    stateDir: config.stateDir,
    serverUrl: config.serverUrl,
    token: () => token,
    nodeId,
    capabilities: config.executionCapabilities,
    admin,
    cluster,
    log,
    attached,
  });
  nodeId = execution.nodeId;
  // Just-in-time logins end at their VALID UNTIL on the agent's own clock, server or no server.
  const accessExpiry = pooler
    ? createAccessExpiry({ pooler, admin, log: log.child({ component: 'access-expiry' }) })
    : null;
  // Size and connections of each tenant database, for the dashboard (samples/database-sampler.ts):
  // every interval, and soon after a database is made here.
  const samples = createSampleSchedule({
    sample: createDatabaseSampler({ admin, client, log }),
    intervalMs: config.sampleIntervalMs,
  });
  // Spare databases made ahead of time (ADR 0028); refilled in the background.
  const warmPool = managed
    ? createWarmPool({
        admin,
        cluster,
        pooler: managed.pooler,
        // The create's own proving login, through this node's PgBouncer (database deps below).
        warmUp: (login) => proveLogin(database!, login),
        size: config.warmPoolSize,
        log: log.child({ component: 'warm-pool' }),
      })
    : null;
  const database: DatabaseJobDeps | null = managed ? databaseDeps(config, cluster, managed, warmPool) : null;
  // Attached databases (ADR 0031): loaded and their roles checked at start, in the background (an
  // unreachable host costs up to its timeouts per role and must not hold up the node's heartbeat
  // and jobs); what is refused is logged. Then every loaded entry is reported to the server
  // (retried until it answers); the ids it gives make them reachable by explorer and execution.
  // The file is read and the roles checked again every attachedRecheckSeconds, and reported again:
  // a privilege granted to the reader later, or a changed file, takes effect then (the registry is
  // replaced by each answer: an entry that fails its checks stops being served).
  const attachedReporting = new AbortController();
  const attachedFile = config.attachedConfig;
  if (attachedFile)
    void (async () => {
      const signal = attachedReporting.signal;
      while (!signal.aborted) {
        try {
          const start = await startAttached(attachedFile, log);
          if (signal.aborted) break;
          // A refused file says nothing about its entries: the last report (and what is served) stands.
          if (!start.fileRefused)
            await reportAttached(start, {
              send: (report, s) => client.attached(report, s),
              registry: attached,
              log: log.child({ component: 'attached' }),
              signal,
            });
        } catch (err) {
          log.error({ err: { message: (err as Error).message } }, 'attached databases not checked');
        }
        await new Promise<void>((resolve) => {
          const timer = setTimeout(done, config.attachedRecheckSeconds * 1000);
          function done() {
            clearTimeout(timer);
            signal.removeEventListener('abort', done);
            resolve();
          }
          signal.addEventListener('abort', done, { once: true });
        });
      }
    })();
  // Backups (issue 15): the backup dir, pg_dump/pg_restore, and the sweep of an interrupted run.
  const backup = database
    ? await startBackups({
        database,
        admin,
        stateDir: config.stateDir,
        backupDir: config.backupDir,
        pgBinDir: config.pgBinDir,
        offsite: backupS3Options(config),
        log,
      })
    : null;
  const handlers = sampleAfterCreate(
    opts.handlers ??
      defaultHandlers({
        ...(database ? { database } : {}),
        ...(backup ? { backup } : {}),
        explorer,
        execution: execution.executor,
        ...(pooler && accessExpiry
          ? {
              access: {
                pooler,
                verify: (token, expect) => execution.verifier.verify(token, expect),
                onGranted: () => accessExpiry.poke(),
              },
            }
          : {}),
      }),
    samples.soon,
  );
  const stopping = new AbortController();

  const heartbeat = createHeartbeat({
    admin,
    client,
    jobKinds: [...handlers.keys()],
    aliveFile,
    log,
    ...(warmPool ? { capabilities: () => ({ warm_pool: warmPool.stats() }) } : {}),
    pooler: poolerAddress(config),
  });
  await heartbeat();
  await accessExpiry?.start();
  warmPool?.start();
  const hbTimer = setInterval(() => void heartbeat(), config.heartbeatMs);
  samples.start();
  // The explorer's fast path (ADR 0009); explorer jobs from the queue still run without it.
  const channel = config.explorerChannel
    ? startExplorerChannel({
        serverUrl: config.serverUrl,
        token: () => token,
        executor: explorer,
        execution: execution.executor,
        log: log.child({ component: 'explorer-channel' }),
      })
    : null;
  await fs.writeFile(readyFile, `${new Date().toISOString()}\n`);

  const runner = createJobRunner({
    client,
    handlers,
    admin,
    log,
    pollWaitMs: config.pollWaitMs,
    sleep,
    downloadLaneMax: config.downloadLaneMax,
  });
  const done = runner.run(stopping.signal).finally(async () => {
    attachedReporting.abort();
    clearInterval(hbTimer);
    samples.stop();
    await warmPool?.stop();
    await accessExpiry?.stop();
    pooler?.stop();
    await channel?.stop();
    await explorer.close();
    await execution.close();
    await fs.rm(readyFile, { force: true });
    await admin.end().catch(() => {});
  });

  return {
    nodeId,
    explorerChannelOpen: () => channel?.opened() ?? Promise.reject(new Error('the explorer channel is off')),
    done,
    async stop() {
      stopping.abort();
      await done;
    },
  };
}

/**
 * The pooler this agent owns, when it has one (pooler dir + console password): the saved
 * desired state is made live at start-up (a failure is logged; every later change re-applies).
 */
async function startPooler(
  config: AgentConfig,
  log: Logger,
  admin: pg.Pool,
): Promise<{ pooler: PoolerManager; clientSsl: pg.ClientConfig['ssl'] } | null> {
  if (!config.poolerDir || !config.poolerAdminPassword) return null;
  const pgUrl = new URL(config.adminDatabaseUrl);
  const tls = await ensurePoolerTls({
    dir: config.poolerDir,
    listenAddr: config.poolerListenAddr,
    certFile: config.poolerTlsCertFile,
    keyFile: config.poolerTlsKeyFile,
  }).catch((err: Error) => {
    // Beyond loopback TLS is required: fail closed. On loopback only, run without it.
    if (!listensOnLoopbackOnly(config.poolerListenAddr)) throw err;
    log.error(
      { err: { message: err.message } },
      'no TLS certificate for PgBouncer; serving loopback without TLS',
    );
    return null;
  });
  const pooler = createPoolerManager({
    dir: config.poolerDir,
    stateFile: path.join(config.stateDir, 'pooler-state.json'),
    settings: {
      listenAddr: config.poolerListenAddr,
      listenPort: config.poolerPort,
      pgHost: pgUrl.hostname || '127.0.0.1',
      pgPort: Number(pgUrl.port || 5432),
      adminUser: POOLER_ADMIN,
      poolMode: 'session',
      maxClientConn: POOLER_LIMITS.maxClientConn,
      defaultPoolSize: 20,
      tls: tls ? { certFile: tls.certFile, keyFile: tls.keyFile, sslmode: tls.sslmode } : null,
    },
    adminPassword: config.poolerAdminPassword,
    ...(tls ? { clientSsl: tls.clientSsl } : {}),
    log: log.child({ component: 'pooler' }),
    endServerSessions: (database, users) => terminatePoolerSessions(admin, database, users),
  });
  await pooler.start().catch((err: Error) => {
    log.error({ err: { message: err.message } }, 'the pooler config could not be made live at start-up');
  });
  return { pooler, clientSsl: tls?.clientSsl };
}

function databaseDeps(
  config: AgentConfig,
  cluster: ClusterAccess,
  { pooler, clientSsl }: { pooler: PoolerManager; clientSsl: pg.ClientConfig['ssl'] },
  warmPool: WarmPool | null,
): DatabaseJobDeps {
  return {
    pooler,
    poolerHost: '127.0.0.1',
    poolerPort: config.poolerPort,
    poolerSsl: clientSsl,
    platform: { databases: [CONTROL_DB], roles: [CONTROL_ROLE] },
    cluster,
    ...(warmPool ? { warmPool } : {}),
  };
}

/**
 * An admin connection into one of the platform's own databases (the tenant template), never a
 * tenant's; settings pinned at login.
 */
async function connectAdminTo(config: AgentConfig, database: string): Promise<pg.Client> {
  const u = new URL(config.adminDatabaseUrl);
  u.pathname = `/${database}`;
  const client = new pg.Client({
    connectionString: u.toString(),
    application_name: 'bulwark-agent',
    options: pinnedOptions(),
  });
  client.on('error', () => {});
  await client.connect();
  return client;
}

/** The SQL explorer's executor: the validator (WASM), the agent's key, loopback PostgreSQL. */
async function startExplorer(
  cluster: ClusterAccess,
  admin: pg.Pool,
  log: Logger,
  attached: AttachedRegistry,
): Promise<ExplorerExecutor> {
  await loadExplorerParser();
  return createExplorerExecutor({
    admin,
    // Nothing of the explorer connects into a tenant database as the admin any more: its role
    // preparation logs in as the steward and its schema read as the explorer (cluster access).
    connectAdmin: async (database) => {
      throw new Error(`no admin connection into tenant database ${database}`);
    },
    ...cluster,
    log: log.child({ component: 'explorer' }),
    // This process's validator (its own verdict cache): the agent re-validates every query.
    validate: createExplorerValidator().validate,
    attached,
  });
}
