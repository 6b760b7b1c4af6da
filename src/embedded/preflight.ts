import { existsSync, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import net from 'node:net';
import { type DataLayout, LAYOUT_VERSION } from './layout.ts';
import { pgbouncerBinary } from './pgbouncer-process.ts';
import { clusterMajorVersion, isInitialised, isProcessOf, pgBinDir } from './postgres-cluster.ts';

/** A refusal with an exit code the CLI documents. */
export class PreflightError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode: number) {
    super(message);
    this.exitCode = exitCode;
  }
}

export const EXIT = { error: 1, usage: 2, incompatible: 3, busy: 4 } as const;

/** The data dir records the layout version; a dir written by an incompatible version is refused. */
export async function checkLayout(layout: DataLayout, pgBin?: string): Promise<void> {
  if (existsSync(layout.versionFile)) {
    const text = readFileSync(layout.versionFile, 'utf8');
    const m = /^bulwark-data-layout (\d+)$/m.exec(text);
    const found = m ? Number(m[1]) : Number.NaN;
    if (found !== LAYOUT_VERSION) {
      throw new PreflightError(
        `${layout.root} was created by an incompatible Bulwark version (data layout ${m ? found : 'unknown'}; this version uses ${LAYOUT_VERSION}). Use another --data-dir or the matching Bulwark version.`,
        EXIT.incompatible,
      );
    }
  }
  if (isInitialised(layout.pgData)) {
    const clusterMajor = clusterMajorVersion(layout.pgData);
    const binMajor = Number(/\/(\d+)\/bin$/.exec(pgBinDir(pgBin))?.[1] ?? clusterMajor);
    if (clusterMajor !== binMajor) {
      throw new PreflightError(
        `the PostgreSQL cluster in ${layout.pgData} is version ${clusterMajor}, but the installed server is ${binMajor}; upgrade it with pg_upgrade first`,
        EXIT.incompatible,
      );
    }
  }
}

export async function writeLayoutVersion(layout: DataLayout): Promise<void> {
  if (!existsSync(layout.versionFile)) {
    await fs.writeFile(layout.versionFile, `bulwark-data-layout ${LAYOUT_VERSION}\n`, { mode: 0o600 });
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Exactly one `bulwark up` per data dir: a pid lock, taken over only when its owner is gone. */
export async function acquireLock(layout: DataLayout): Promise<() => Promise<void>> {
  const body = `${process.pid}\n`;
  for (let i = 0; i < 2; i++) {
    try {
      await fs.writeFile(layout.lockFile, body, { flag: 'wx', mode: 0o600 });
      return async () => {
        const now = await fs.readFile(layout.lockFile, 'utf8').catch(() => '');
        if (now === body) await fs.rm(layout.lockFile, { force: true });
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number((await fs.readFile(layout.lockFile, 'utf8').catch(() => '')).trim());
      if (Number.isInteger(pid) && pid > 0 && pidAlive(pid)) {
        throw new PreflightError(
          `another "bulwark up" (pid ${pid}) is already running on ${layout.root}; stop it first (Ctrl-C in its terminal, or kill -TERM ${pid})`,
          EXIT.busy,
        );
      }
      await fs.rm(layout.lockFile, { force: true });
    }
  }
  throw new PreflightError(`could not take the lock ${layout.lockFile}`, EXIT.busy);
}

/** Refuses a port that something else already listens on, naming the flag that changes it. */
export async function assertPortFree(host: string, port: number, what: string, flag: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', (err: NodeJS.ErrnoException) => {
      reject(
        new PreflightError(
          err.code === 'EADDRINUSE'
            ? `port ${port} (${what}) on ${host} is already in use; stop what uses it or choose another with ${flag}`
            : `cannot listen on ${host}:${port} (${what}): ${err.message}`,
          EXIT.busy,
        ),
      );
    });
    srv.listen({ host, port, exclusive: true }, () => srv.close(() => resolve()));
  });
}

/** Stops a PgBouncer left running by an earlier, killed run (found by its pidfile). */
export async function stopStalePgbouncer(pidFile: string, binary?: string): Promise<boolean> {
  if (!existsSync(pidFile)) return false;
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  if (!Number.isInteger(pid) || pid <= 0 || !pidAlive(pid)) return false;
  if (!isProcessOf(pid, pgbouncerBinary(binary))) return false;
  process.kill(pid, 'SIGTERM');
  for (let i = 0; i < 200 && pidAlive(pid); i++) await new Promise((r) => setTimeout(r, 25));
  if (pidAlive(pid)) process.kill(pid, 'SIGKILL');
  return true;
}
