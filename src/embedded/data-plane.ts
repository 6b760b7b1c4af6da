import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { POOLER_LIMITS, renderAuthFile, renderHba, renderIni } from '../agent/pgbouncer/pgbouncer.config.ts';
import { listensOnLoopbackOnly } from '../agent/pgbouncer/pooler-tls.ts';
import { scramVerifier } from '../shared/scram.ts';
import { ADMIN_ROLE, CONTROL_DB, CONTROL_ROLE, type DataLayout, POOLER_ADMIN } from './layout.ts';
import { type RunningPgbouncer, startPgbouncer } from './pgbouncer-process.ts';
import {
  EMBEDDED_MAX_CONNECTIONS,
  initCluster,
  isInitialised,
  LOG_SETTINGS,
  type RunningPostgres,
  startPostgres,
  stopStalePostmaster,
} from './postgres-cluster.ts';
import { readOrCreateSecret } from './secrets.ts';
import { chownToService, ensureTraversable, type ServiceUser } from './service-user.ts';

export type DataPlaneOptions = {
  layout: DataLayout;
  ports: { postgres: number; pooler: number };
  poolerListenAddr?: string;
  /** Whether this cluster holds the control database (`bulwark up`); `bulwark node up`'s does not. */
  controlDatabase?: boolean;
  user: ServiceUser | null;
  unsafeFast?: boolean;
  /**
   * The PostgreSQL binaries' directory and the pgbouncer binary (`up`'s settings, up-config.ts);
   * each found in the usual places when not given.
   */
  binaries?: { pgBin?: string | undefined; pgbouncerBin?: string | undefined };
  /** Private memory bound of each PostgreSQL process, in bytes (`up`'s pgBackendMemoryMb). */
  pgMemoryLimitBytes?: number | undefined;
  log: (msg: string) => void;
};

export type DataPlane = {
  /** The PostgreSQL running now (replaced by restartPostgres). */
  readonly postgres: RunningPostgres;
  /** The PgBouncer running now (replaced by restartPgbouncer). */
  readonly pgbouncer: RunningPgbouncer;
  /** Starts PostgreSQL again after it died; resolves once it accepts logins. */
  restartPostgres(onSpawn: (child: ChildProcess) => void): Promise<ChildProcess>;
  /** Starts PgBouncer again after it died, on the config files as they are now. */
  restartPgbouncer(onSpawn: (child: ChildProcess) => void): Promise<ChildProcess>;
  adminPassword: string;
  controlPassword: string;
  poolerAdminPassword: string;
  adminUrl: string;
  controlUrl: string;
  poolerFiles: { ini: string; auth: string; hba: string; pid: string };
  stop(): Promise<void>;
};

export function poolerFiles(layout: DataLayout) {
  return {
    ini: path.join(layout.pooler, 'pgbouncer.ini'),
    auth: path.join(layout.pooler, 'auth.txt'),
    hba: path.join(layout.pooler, 'hba.txt'),
    pid: path.join(layout.pooler, 'pgbouncer.pid'),
  };
}

export function pgUrl(user: string, password: string, port: number, database: string): string {
  return `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}/${database}`;
}

async function mkdirs(layout: DataLayout, user: ServiceUser | null): Promise<void> {
  // The root is traversable (not listable) by the service user; secrets stay 0700.
  await fs.mkdir(layout.root, { recursive: true, mode: user ? 0o711 : 0o700 });
  for (const dir of [layout.secrets, layout.server, layout.agent, layout.backups, layout.logs]) {
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  }
  for (const dir of [layout.pgParent, layout.pooler]) {
    await fs.mkdir(dir, { recursive: true, mode: 0o700 });
    await chownToService(dir, user);
  }
}

/**
 * Creates the control database and its least-privilege owner role, and re-applies the
 * cluster-wide hardening; safe to run on every start.
 */
export async function ensureControlDatabase(
  adminUrl: string,
  controlPassword: string,
  withControlDatabase = true,
): Promise<void> {
  const client = new pg.Client({ connectionString: adminUrl });
  await client.connect();
  try {
    // Clusters made before these settings existed get them too (postgresql.auto.conf wins
    // over the managed block of postgresql.conf). Constant names and values, no input.
    for (const [name, value] of Object.entries(LOG_SETTINGS)) {
      await client.query(`ALTER SYSTEM SET ${name} = '${value.replaceAll("'", '')}'`);
    }
    // Raised, never lowered (an operator may have set more, maybe not applied yet: the files'
    // last value counts too); it takes effect at the next restart.
    const max = await client.query<{ n: number }>(
      `SELECT GREATEST(pg_catalog.current_setting('max_connections')::pg_catalog.int4,
                       COALESCE((SELECT f.setting::pg_catalog.int4 FROM pg_catalog.pg_file_settings f
                                  WHERE f.name = 'max_connections' AND f.error IS NULL
                                  ORDER BY f.seqno DESC LIMIT 1), 0)) AS n`,
    );
    if ((max.rows[0]?.n ?? 0) < EMBEDDED_MAX_CONNECTIONS) {
      await client.query(`ALTER SYSTEM SET max_connections = ${Math.trunc(EMBEDDED_MAX_CONNECTIONS)}`);
    }
    await client.query('SELECT pg_catalog.pg_reload_conf()');
    // Only superusers (the agent's admin) need the maintenance databases: a tenant role is
    // refused there (it would see every database's catalog-level names and settings).
    await client.query('REVOKE CONNECT ON DATABASE postgres, template1 FROM PUBLIC');
    // A data-plane node alone (`bulwark node up`): the hardening above, no control database.
    if (!withControlDatabase) return;
    const role = await client.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [CONTROL_ROLE]);
    // A SCRAM verifier, not the clear password, goes into the statement (and so into no log).
    const verifier = scramVerifier(controlPassword).replaceAll("'", "''");
    if (role.rowCount === 0) {
      await client.query(
        `CREATE ROLE ${CONTROL_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD '${verifier}'`,
      );
    } else {
      await client.query(`ALTER ROLE ${CONTROL_ROLE} PASSWORD '${verifier}'`);
    }
    const db = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [CONTROL_DB]);
    if (db.rowCount === 0) {
      await client.query(
        `CREATE DATABASE ${CONTROL_DB} OWNER ${CONTROL_ROLE} TEMPLATE template0 ENCODING 'UTF8'`,
      );
    }
    await client.query(`REVOKE ALL ON DATABASE ${CONTROL_DB} FROM PUBLIC`);
    await client.query(`GRANT CONNECT, TEMPORARY ON DATABASE ${CONTROL_DB} TO ${CONTROL_ROLE}`);
  } finally {
    await client.end();
  }
  if (!withControlDatabase) return;
  const inDb = new pg.Client({ connectionString: adminUrl.replace(/\/[^/]*$/, `/${CONTROL_DB}`) });
  await inDb.connect();
  try {
    await inDb.query(`ALTER SCHEMA public OWNER TO ${CONTROL_ROLE}`);
    await inDb.query('REVOKE ALL ON SCHEMA public FROM PUBLIC');
  } finally {
    await inDb.end();
  }
}

/** Writes the first pooler config; later the agent owns these files and keeps them current. */
async function writeInitialPoolerConfig(opts: DataPlaneOptions, poolerAdminPassword: string): Promise<void> {
  const files = poolerFiles(opts.layout);
  const listenAddr = opts.poolerListenAddr ?? '127.0.0.1';
  // Once the agent has made (or been given) a certificate, PgBouncer starts with TLS at once
  // (required beyond loopback, offered on loopback), not only after the agent's first apply.
  const cert = path.join(opts.layout.pooler, 'server.crt');
  const key = path.join(opts.layout.pooler, 'server.key');
  const haveCert = await Promise.all([fs.access(cert), fs.access(key)]).then(
    () => true,
    () => false,
  );
  const loopback = listensOnLoopbackOnly(listenAddr);
  const ini = renderIni({
    listenAddr,
    listenPort: opts.ports.pooler,
    pgHost: '127.0.0.1',
    pgPort: opts.ports.postgres,
    authFile: files.auth,
    hbaFile: files.hba,
    pidFile: files.pid,
    adminUser: POOLER_ADMIN,
    poolMode: 'session',
    maxClientConn: POOLER_LIMITS.maxClientConn,
    defaultPoolSize: 20,
    tls: haveCert ? { certFile: cert, keyFile: key, sslmode: loopback ? 'prefer' : 'require' } : null,
  });
  const write = async (file: string, text: string, onlyIfMissing: boolean) => {
    if (onlyIfMissing) {
      try {
        await fs.access(file);
        return;
      } catch {}
    }
    await fs.writeFile(file, text, { mode: 0o600 });
    await chownToService(file, opts.user);
  };
  await write(files.ini, ini, false);
  // The admin entry is always present; tenant entries are the agent's to add.
  await write(
    files.auth,
    renderAuthFile([{ user: POOLER_ADMIN, verifier: scramVerifier(poolerAdminPassword) }]),
    true,
  );
  await write(files.hba, renderHba(POOLER_ADMIN, []), true);
}

/** Starts (initialising on first use) the PostgreSQL cluster and PgBouncer under a data dir. */
export async function startDataPlane(opts: DataPlaneOptions): Promise<DataPlane> {
  const { layout, user } = opts;
  await mkdirs(layout, user);
  for (const p of await ensureTraversable(layout.pgParent, user)) {
    opts.log(`granted traverse (o+x) on ${p} so the ${user?.name} service user can reach the data dir`);
  }
  const adminPassword = await readOrCreateSecret(layout.adminPassword);
  const controlPassword = await readOrCreateSecret(layout.controlPassword);
  const poolerAdminPassword = await readOrCreateSecret(layout.poolerAdminPassword);
  const cluster = {
    pgData: layout.pgData,
    port: opts.ports.postgres,
    logFile: path.join(layout.logs, 'postgres.log'),
    user,
    adminUser: ADMIN_ROLE,
    unsafeFast: opts.unsafeFast ?? false,
    binDir: opts.binaries?.pgBin,
    memoryLimitBytes: opts.pgMemoryLimitBytes,
  };
  if (!isInitialised(layout.pgData)) {
    opts.log('initialising the PostgreSQL cluster (first start)');
    await initCluster({ ...cluster, adminPassword });
  } else if (await stopStalePostmaster(layout.pgData, cluster.binDir)) {
    opts.log('stopped a PostgreSQL server left running by an earlier, interrupted run');
  }
  let postgres = await startPostgres({ ...cluster, adminPassword });
  const adminUrl = pgUrl(ADMIN_ROLE, adminPassword, opts.ports.postgres, 'postgres');
  const files = poolerFiles(layout);
  const pgbouncerOptions = {
    iniFile: files.ini,
    logFile: path.join(layout.logs, 'pgbouncer.log'),
    user,
    port: opts.ports.pooler,
    adminUser: POOLER_ADMIN,
    adminPassword: poolerAdminPassword,
    binary: opts.binaries?.pgbouncerBin,
  };
  let pgbouncer: RunningPgbouncer;
  try {
    await ensureControlDatabase(adminUrl, controlPassword, opts.controlDatabase ?? true);
    await writeInitialPoolerConfig(opts, poolerAdminPassword);
    pgbouncer = await startPgbouncer({ ...pgbouncerOptions, log: opts.log });
  } catch (err) {
    await postgres.stop();
    throw err;
  }
  return {
    get postgres() {
      return postgres;
    },
    get pgbouncer() {
      return pgbouncer;
    },
    async restartPostgres(onSpawn) {
      postgres = await startPostgres({ ...cluster, adminPassword, onSpawn });
      return postgres.child;
    },
    async restartPgbouncer(onSpawn) {
      // Our PgBouncer is known to have exited: its pidfile is stale (a reused pid could
      // otherwise make the new one refuse to start). The config files are the agent's, as is.
      await fs.rm(files.pid, { force: true });
      pgbouncer = await startPgbouncer({ ...pgbouncerOptions, onSpawn, log: opts.log });
      return pgbouncer.child;
    },
    adminPassword,
    controlPassword,
    poolerAdminPassword,
    adminUrl,
    controlUrl: pgUrl(CONTROL_ROLE, controlPassword, opts.ports.postgres, CONTROL_DB),
    poolerFiles: files,
    async stop() {
      await pgbouncer.stop();
      await postgres.stop();
    },
  };
}
