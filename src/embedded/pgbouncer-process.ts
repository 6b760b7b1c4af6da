import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { waitForLogin } from './postgres-cluster.ts';
import { spawnAs, stopChild, tailFile } from './process.ts';
import type { ServiceUser } from './service-user.ts';

/**
 * The pgbouncer binary: the configured one (`up`'s `pgbouncerBin`, BULWARK_PGBOUNCER_BIN, parsed
 * by up-config.ts and passed in), else the first found in the usual places.
 */
export function pgbouncerBinary(configured?: string): string {
  if (configured) return configured;
  for (const p of ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer', '/usr/local/bin/pgbouncer']) {
    if (existsSync(p)) return p;
  }
  throw new Error('pgbouncer not found (run: npm start, which installs it)');
}

export type RunningPgbouncer = { child: ChildProcess; stop(): Promise<void> };

/** The soft and hard open-file limits of a process, from /proc (null where unreadable). */
export function openFileLimits(pid: number | 'self'): { soft: number; hard: number } | null {
  try {
    const line = readFileSync(`/proc/${pid}/limits`, 'utf8')
      .split('\n')
      .find((l) => l.startsWith('Max open files'));
    const m = line ? /^Max open files\s+(\S+)\s+(\S+)/.exec(line) : null;
    if (!m) return null;
    const n = (v: string | undefined) => (v === 'unlimited' ? Number.MAX_SAFE_INTEGER : Number(v));
    return { soft: n(m[1]), hard: n(m[2]) };
  } catch {
    return null;
  }
}

/** Above this PgBouncer gains nothing (max_client_conn is far below) and the kernel may refuse. */
const NOFILE_CEILING = 1_048_576;

/**
 * Every client socket, accepted or not yet authenticated, costs PgBouncer a file descriptor:
 * its soft limit is raised to the hard limit (what an unprivileged process may do) by a fixed
 * `sh` script; the number and the program travel as arguments, never as shell text.
 */
export function withRaisedNofile(
  cmd: string,
  args: string[],
  limits = openFileLimits('self'),
): { cmd: string; args: string[] } {
  if (!limits) return { cmd, args };
  const target = Math.min(limits.hard, NOFILE_CEILING);
  if (!(target > limits.soft)) return { cmd, args };
  return {
    cmd: '/bin/sh',
    args: ['-c', 'ulimit -S -n "$1" 2>/dev/null; shift; exec "$@"', 'sh', String(target), cmd, ...args],
  };
}

/** File descriptors PgBouncer needs beyond max_client_conn (server connections, listeners, logs). */
const FD_MARGIN = 400;

function maxClientConn(iniFile: string): number | null {
  try {
    const m = /^max_client_conn\s*=\s*(\d+)\s*$/m.exec(readFileSync(iniFile, 'utf8'));
    return m ? Number(m[1]) : null;
  } catch {
    return null;
  }
}

/**
 * Runs PgBouncer in the foreground as a direct child (never as root) and waits until its
 * admin console accepts the admin login.
 */
export async function startPgbouncer(opts: {
  iniFile: string;
  logFile: string;
  user: ServiceUser | null;
  port: number;
  adminUser: string;
  adminPassword: string;
  /** The pgbouncer binary (`up`'s setting); default: found by `pgbouncerBinary()`. */
  binary?: string | undefined;
  /** Called as soon as PgBouncer is spawned (before it is ready). */
  onSpawn?: (child: ChildProcess) => void;
  log?: (msg: string) => void;
}): Promise<RunningPgbouncer> {
  const { cmd, args } = withRaisedNofile(pgbouncerBinary(opts.binary), [opts.iniFile]);
  const child = await spawnAs(cmd, args, opts.user, opts.logFile);
  opts.onSpawn?.(child);
  const running: RunningPgbouncer = { child, stop: () => stopChild(child, 'SIGTERM', 10_000) };
  try {
    await waitForLogin(
      {
        host: '127.0.0.1',
        port: opts.port,
        user: opts.adminUser,
        password: opts.adminPassword,
        database: 'pgbouncer',
      },
      child,
      20_000,
      'SHOW VERSION',
    );
  } catch (err) {
    await running.stop();
    throw new Error(
      `PgBouncer did not start: ${(err as Error).message}\n${await tailFile(opts.logFile, 20)}`,
    );
  }
  const limits = child.pid ? openFileLimits(child.pid) : null;
  const wanted = maxClientConn(opts.iniFile);
  if (limits && wanted !== null && limits.soft < wanted + FD_MARGIN) {
    opts.log?.(
      `PgBouncer may open only ${limits.soft} files but max_client_conn is ${wanted}: raise the ` +
        `open-file limit (e.g. LimitNOFILE=${wanted + FD_MARGIN} in the service unit) or idle ` +
        'connections can lock tenants out before max_client_conn is reached',
    );
  }
  return running;
}
