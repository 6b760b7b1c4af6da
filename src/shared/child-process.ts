import { spawn } from 'node:child_process';

/**
 * Who a child process runs as: the embedded stack's service user (`src/embedded/service-user.ts`)
 * when Bulwark runs as root; null runs it as ourselves.
 */
export type RunAs = { uid: number; gid: number; home: string };

/** Environment for a service process: no inherited secrets, a sane PATH and HOME. */
export function serviceEnv(user: RunAs | null): NodeJS.ProcessEnv {
  return {
    PATH: process.env.PATH ?? '/usr/bin:/bin',
    HOME: user?.home ?? process.env.HOME ?? '/',
    LANG: 'C.UTF-8',
    LC_ALL: 'C.UTF-8',
  };
}

/** Runs a program to completion (argv, never a shell); rejects with its output on failure. */
export function runChecked(cmd: string, args: string[], user: RunAs | null): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: serviceEnv(user),
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(user ? { uid: user.uid, gid: user.gid } : {}),
    });
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(out);
      else reject(new Error(`${cmd} exited with code ${code}: ${out.slice(-2000)}`));
    });
  });
}
