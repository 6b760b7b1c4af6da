/**
 * pg_dump and pg_restore as child processes: always an argument list (never a shell), the
 * password in the child's environment only (never in its arguments, which `ps` shows), the
 * platform's pinned settings in PGOPTIONS (outranking anything the tenant set on its database or
 * roles), a bounded tail of stderr for the failure reason, and a kill when the job is aborted.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import path from 'node:path';
import { pinnedOptions } from '../postgres/steward.ts';

/**
 * The directory holding pg_dump/pg_restore: the configured one, else the newest
 * `/usr/lib/postgresql/N/bin` that has them (Debian keeps them off PATH), else PATH.
 */
export function findPgBin(configured?: string): string | null {
  if (configured) return configured;
  const base = '/usr/lib/postgresql';
  if (!existsSync(base)) return null;
  const newest = readdirSync(base)
    .filter((v) => /^\d+$/.test(v) && existsSync(path.join(base, v, 'bin', 'pg_dump')))
    .sort((a, b) => Number(b) - Number(a))[0];
  return newest ? path.join(base, newest, 'bin') : null;
}

export type PgLogin = { host: string; port: number; database: string; user: string; password: string };

/**
 * The settings a dump or restore session pins at login: the platform's (steward.ts), with no
 * statement timeout (a dump of a large table runs long; pg_dump and pg_restore set their own),
 * and row security off so a policy can never silently hide rows from a dump or a count (a table
 * whose policy would apply makes the dump fail instead).
 */
export const TOOL_SETTINGS: Readonly<Record<string, string>> = {
  statement_timeout: '0',
  lock_timeout: '0',
  row_security: 'off',
};

/** How many bytes of a tool's stderr are kept for its failure reason. */
const STDERR_TAIL = 4096;

export type RunningTool = {
  child: ChildProcess;
  /** Resolves when the process has exited: code 0 → ok, anything else → an Error with the reason. */
  exited: Promise<void>;
  /** The last bytes of stderr (for diagnostics; no password ever reaches it). */
  stderr(): string;
};

/** Starts a PostgreSQL client tool with `args` (an array, never a shell string). */
export function startTool(
  binDir: string,
  tool: 'pg_dump' | 'pg_restore',
  args: readonly string[],
  login: PgLogin,
  opts: { signal?: AbortSignal; stdin?: 'pipe' | 'ignore'; settings?: Readonly<Record<string, string>> } = {},
): RunningTool {
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    LANG: 'C.UTF-8',
    PGHOST: login.host,
    PGPORT: String(login.port),
    PGDATABASE: login.database,
    PGUSER: login.user,
    PGPASSWORD: login.password,
    PGOPTIONS: pinnedOptions({ ...TOOL_SETTINGS, ...opts.settings }),
    PGAPPNAME: `bulwark-${tool.replace('_', '-')}`,
    PGSSLMODE: 'disable',
    PGCONNECT_TIMEOUT: '10',
    // Nothing from a service file or a password file of the agent's user.
    PGSERVICEFILE: '/dev/null',
    PGPASSFILE: '/dev/null',
  };
  const child = spawn(path.join(binDir, tool), [...args], {
    env,
    stdio: [opts.stdin ?? 'ignore', 'pipe', 'pipe'],
    shell: false,
    detached: false,
  });
  let tail = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (d: string) => {
    tail = (tail + d).slice(-STDERR_TAIL);
  });
  const onAbort = () => child.kill('SIGKILL');
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  const exited = new Promise<void>((resolve, reject) => {
    child.once('error', (err) => reject(new Error(`${tool} could not be started: ${err.message}`)));
    child.once('close', (code, signal) => {
      opts.signal?.removeEventListener('abort', onAbort);
      if (code === 0) return resolve();
      const why = signal ? `was killed (${signal})` : `exited with code ${code}`;
      const detail = tail.trim().split('\n').slice(-5).join(' | ').slice(0, 1500);
      reject(new Error(`${tool} ${why}${detail ? `: ${detail}` : ''}`));
    });
  });
  exited.catch(() => {});
  return { child, exited, stderr: () => tail };
}
