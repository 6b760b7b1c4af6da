import type { ChildProcess } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, readlinkSync, realpathSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import { runChecked, spawnAs, stopChild, tailFile } from './process.ts';
import { chownToService, type ServiceUser } from './service-user.ts';

/**
 * Where the PostgreSQL server binaries are (Debian keeps them off PATH): the configured directory
 * (`up`'s `pgBin`, BULWARK_PG_BIN, parsed by up-config.ts and passed in), else the newest
 * installed `/usr/lib/postgresql/N/bin`.
 */
export function pgBinDir(configured?: string): string {
  if (configured) return configured;
  const base = '/usr/lib/postgresql';
  const versions = existsSync(base)
    ? readdirSync(base)
        .filter((v) => /^\d+$/.test(v) && existsSync(path.join(base, v, 'bin', 'postgres')))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  const newest = versions[0];
  if (!newest) throw new Error('PostgreSQL server binaries not found (run: npm start, which installs them)');
  return path.join(base, newest, 'bin');
}

export type ClusterOptions = {
  pgData: string;
  port: number;
  logFile: string;
  user: ServiceUser | null;
  adminUser: string;
  /** The PostgreSQL binaries' directory (`up`'s setting); default: found by `pgBinDir()`. */
  binDir?: string | undefined;
  /** Test clusters trade durability for speed; the product never sets this. */
  unsafeFast?: boolean;
  /**
   * Each PostgreSQL process's private memory bound in bytes (RLIMIT_DATA, set on the postmaster and
   * inherited by every backend it forks; shared memory is not counted). One query that builds
   * huge values then fails with "out of memory" (53200) alone, instead of growing until the
   * kernel's OOM killer ends a backend and PostgreSQL restarts every tenant's sessions.
   */
  memoryLimitBytes?: number | undefined;
};

/** Where util-linux's prlimit is (it sets the limit, then execs PostgreSQL in the same process). */
export function prlimitBinary(): string {
  for (const p of ['/usr/bin/prlimit', '/bin/prlimit']) if (existsSync(p)) return p;
  throw new Error('prlimit not found (util-linux): it bounds the memory of each PostgreSQL process');
}

/** The command that starts the postmaster: PostgreSQL itself, or prlimit exec'ing it under the bound. */
export function postmasterCommand(opts: Pick<ClusterOptions, 'binDir' | 'pgData' | 'memoryLimitBytes'>): {
  cmd: string;
  args: string[];
} {
  const postgres = path.join(pgBinDir(opts.binDir), 'postgres');
  const n = opts.memoryLimitBytes;
  if (n === undefined) return { cmd: postgres, args: ['-D', opts.pgData] };
  if (!Number.isSafeInteger(n) || n <= 0) throw new Error(`invalid memory limit: ${n}`);
  return { cmd: prlimitBinary(), args: [`--data=${n}:${n}`, '--', postgres, '-D', opts.pgData] };
}

export function isInitialised(pgData: string): boolean {
  return existsSync(path.join(pgData, 'PG_VERSION'));
}

export function clusterMajorVersion(pgData: string): number {
  return Number(readFileSync(path.join(pgData, 'PG_VERSION'), 'utf8').trim());
}

/**
 * What the cluster logs. Tenants' statements and the messages of their errors stay out of
 * postgres.log: an ERROR message quotes the offending literal (`invalid input syntax for
 * type integer: "…"`, `syntax error at or near "…"`), and `log_min_error_statement` would
 * add the whole statement. `log` keeps LOG, FATAL and PANIC lines (start-up, checkpoints,
 * crashes, authentication failures) and drops WARNING and ERROR, whoever raised them; the
 * server and the agent log their own failures in their own logs. All are superuser-only
 * settings: a tenant cannot change them for its session, role or database.
 */
/**
 * The embedded cluster's max_connections: with 3 superuser slots and the server's default platform
 * reserve of 100 (BULWARK_NODE_CONNECTION_RESERVE) it leaves 897 tenant connections — 40 databases
 * at the default limits (owner 20 + reader 2). Clusters made with less get it at start
 * (data-plane.ts, ALTER SYSTEM; it takes effect at the next restart).
 */
export const EMBEDDED_MAX_CONNECTIONS = 1000;

export const LOG_SETTINGS: Readonly<Record<string, string>> = Object.freeze({
  log_min_messages: 'log',
  log_min_error_statement: 'panic',
  log_statement: "'none'",
  log_min_duration_statement: '-1',
});

/**
 * initdb with an admin role that is not `postgres`, SCRAM for every connection, TCP on
 * 127.0.0.1 only (no Unix socket), and our settings appended to postgresql.conf.
 */
export async function initCluster(opts: ClusterOptions & { adminPassword: string }): Promise<void> {
  const parent = path.dirname(opts.pgData);
  await fs.mkdir(parent, { recursive: true, mode: 0o700 });
  await chownToService(parent, opts.user);
  const pwFile = path.join(parent, `.initdb-pw-${process.pid}`);
  await fs.writeFile(pwFile, `${opts.adminPassword}\n`, { mode: 0o600 });
  await chownToService(pwFile, opts.user);
  try {
    await runChecked(
      path.join(pgBinDir(opts.binDir), 'initdb'),
      [
        '-D',
        opts.pgData,
        '-U',
        opts.adminUser,
        `--pwfile=${pwFile}`,
        '--auth=scram-sha-256',
        '-E',
        'UTF8',
        '--no-locale',
        ...(opts.unsafeFast ? ['--no-sync'] : []),
      ],
      opts.user,
    );
  } finally {
    await fs.rm(pwFile, { force: true });
  }
  const settings = [
    '',
    '# --- managed by Bulwark ---',
    "listen_addresses = '127.0.0.1'",
    `port = ${opts.port}`,
    "unix_socket_directories = ''",
    "password_encryption = 'scram-sha-256'",
    `max_connections = ${EMBEDDED_MAX_CONNECTIONS}`,
    'shared_buffers = 128MB',
    "log_line_prefix = '%m [%p] %q%u@%d '",
    // No tenant SQL text or literal in the server log (see LOG_SETTINGS; re-applied at every start).
    ...Object.entries(LOG_SETTINGS).map(([k, v]) => `${k} = ${v}`),
    ...(opts.unsafeFast ? ['fsync = off', 'synchronous_commit = off', 'full_page_writes = off'] : []),
    '',
  ].join('\n');
  await fs.appendFile(path.join(opts.pgData, 'postgresql.conf'), settings);
  const hba = [
    '# Managed by Bulwark: TCP on loopback only, SCRAM for every connection.',
    '# TYPE  DATABASE  USER  ADDRESS       METHOD',
    'host    all       all   127.0.0.1/32  scram-sha-256',
    '',
  ].join('\n');
  await fs.writeFile(path.join(opts.pgData, 'pg_hba.conf'), hba, { mode: 0o600 });
  await chownToService(path.join(opts.pgData, 'pg_hba.conf'), opts.user);
}

export type RunningPostgres = {
  child: ChildProcess;
  stop(): Promise<void>;
};

/** True when `pid` runs exactly `binary` (by /proc/<pid>/exe, not a command-line substring). */
export function isProcessOf(pid: number, binary: string): boolean {
  try {
    return readlinkSync(`/proc/${pid}/exe`) === realpathSync(binary);
  } catch {
    return false;
  }
}

/** If a postmaster from an earlier, killed run still holds this data dir, stop it. */
export async function stopStalePostmaster(
  pgData: string,
  binDir?: string,
  timeoutMs = 30_000,
): Promise<boolean> {
  const pidFile = path.join(pgData, 'postmaster.pid');
  if (!existsSync(pidFile)) return false;
  const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0) return false;
  // The pidfile is writable by the service user: signal the pid only if it really is a
  // postmaster from our binaries, not whatever process a pidfile names.
  if (!isProcessOf(pid, path.join(pgBinDir(binDir), 'postgres'))) return false;
  try {
    process.kill(pid, 'SIGINT');
  } catch {
    return false;
  }
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    try {
      process.kill(pid, 0);
    } catch {
      return true;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  process.kill(pid, 'SIGKILL');
  return true;
}

/** Starts the postmaster as a direct child (so it is never orphaned) and waits until it accepts logins. */
export async function startPostgres(
  opts: ClusterOptions & {
    adminPassword: string;
    readyTimeoutMs?: number;
    /** Called as soon as the postmaster is spawned (before it is ready). */
    onSpawn?: (child: ChildProcess) => void;
  },
): Promise<RunningPostgres> {
  const { cmd, args } = postmasterCommand(opts);
  const child = await spawnAs(cmd, args, opts.user, opts.logFile);
  opts.onSpawn?.(child);
  const running: RunningPostgres = {
    child,
    // SIGINT is PostgreSQL's "fast" shutdown: roll back open transactions, checkpoint, exit.
    stop: () => stopChild(child, 'SIGINT', 30_000, 'SIGQUIT'),
  };
  try {
    await waitForLogin(
      {
        host: '127.0.0.1',
        port: opts.port,
        user: opts.adminUser,
        password: opts.adminPassword,
        database: 'postgres',
      },
      child,
      opts.readyTimeoutMs ?? 60_000,
    );
  } catch (err) {
    await running.stop();
    const tail = await tailFile(opts.logFile, 20);
    throw new Error(`PostgreSQL did not start: ${(err as Error).message}\n${tail}`);
  }
  return running;
}

/** Polls a login with a short backoff until it works, the child exits, or time runs out. */
export async function waitForLogin(
  cfg: pg.ClientConfig,
  child: ChildProcess | null,
  timeoutMs: number,
  probe = 'SELECT 1',
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let delay = 20;
  let lastError = '';
  while (Date.now() < deadline) {
    if (child && (child.exitCode !== null || child.signalCode !== null))
      throw new Error(`process exited (${child.signalCode ?? `code ${child.exitCode}`})`);
    const client = new pg.Client({ ...cfg, connectionTimeoutMillis: 2_000 });
    client.on('error', () => {});
    try {
      await client.connect();
      await client.query(probe);
      await client.end();
      return;
    } catch (err) {
      lastError = (err as Error).message;
      await client.end().catch(() => {});
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 250);
  }
  throw new Error(`timed out waiting for a login (${lastError})`);
}
