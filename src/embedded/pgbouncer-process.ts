import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { waitForLogin } from './postgres-cluster.ts';
import { spawnAs, stopChild, tailFile } from './process.ts';
import type { ServiceUser } from './service-user.ts';

export function pgbouncerBinary(): string {
  if (process.env.BULWARK_PGBOUNCER_BIN) return process.env.BULWARK_PGBOUNCER_BIN;
  for (const p of ['/usr/sbin/pgbouncer', '/usr/bin/pgbouncer', '/usr/local/bin/pgbouncer']) {
    if (existsSync(p)) return p;
  }
  throw new Error('pgbouncer not found (run: npm start, which installs it)');
}

export type RunningPgbouncer = { child: ChildProcess; stop(): Promise<void> };

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
}): Promise<RunningPgbouncer> {
  const child = await spawnAs(pgbouncerBinary(), [opts.iniFile], opts.user, opts.logFile);
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
  return running;
}
