import { type ChildProcess, spawn } from 'node:child_process';
import { createWriteStream, existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { DataPlane } from './data-plane.ts';
import type { DataLayout } from './layout.ts';
import { stopChild } from './process.ts';
import { RESTART_POLICY, type Supervised, type SupervisorEvent, supervise } from './supervisor.ts';

const CLI = fileURLToPath(new URL('../cli/index.ts', import.meta.url));

/** Starts `bulwark <args>` with only the environment given (and PATH, HOME, LANG); output to `logFile`. */
export async function spawnNode(
  args: string[],
  env: NodeJS.ProcessEnv,
  logFile: string,
): Promise<ChildProcess> {
  const log = createWriteStream(logFile, { flags: 'a', mode: 0o600 });
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, LANG: process.env.LANG, ...env },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  child.stdout?.pipe(log, { end: false });
  child.stderr?.pipe(log, { end: false });
  child.once('close', () => log.end());
  await new Promise<void>((resolve, reject) => {
    child.once('spawn', () => resolve());
    child.once('error', reject);
  });
  return child;
}

/** Waits until `check` holds; fails when the child exits first or at the timeout. */
export async function waitFor(
  what: string,
  check: () => Promise<boolean>,
  child: ChildProcess,
  timeoutMs: number,
) {
  const deadline = Date.now() + timeoutMs;
  let delay = 20;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null)
      throw new Error(`${what} exited (${child.signalCode ?? `code ${child.exitCode}`})`);
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 200);
  }
  throw new Error(`${what} did not become ready within ${timeoutMs / 1000} s`);
}

/** A Node child (server, agent) to supervise: the one running now and how to start another. */
export type NodeChild = {
  name: string;
  first: ChildProcess;
  start: (track: (c: ChildProcess) => void) => Promise<ChildProcess>;
};

/**
 * How the stack starts its agent (the first time and on each restart): counted as running once it
 * wrote its ready file. Enrolled once (its token file exists), a restart reuses the stored agent
 * token, never the enrollment token again. `beforeStart` runs before each start.
 */
export function agentStarter(opts: {
  layout: Pick<DataLayout, 'agent' | 'logs'>;
  args: string[];
  env: NodeJS.ProcessEnv;
  beforeStart?: () => void;
}): NodeChild['start'] {
  const readyFile = path.join(opts.layout.agent, 'ready');
  return async (track) => {
    const env = { ...opts.env };
    if (existsSync(path.join(opts.layout.agent, 'agent-token'))) delete env.BULWARK_ENROLLMENT_TOKEN;
    opts.beforeStart?.();
    // A killed agent leaves its ready file behind: only the new one's counts.
    await fs.rm(readyFile, { force: true });
    const child = await spawnNode(opts.args, env, path.join(opts.layout.logs, 'agent.log'));
    track(child);
    try {
      await waitFor('the agent', async () => existsSync(readyFile), child, 60_000);
    } catch (err) {
      await stopChild(child, 'SIGTERM', 15_000);
      throw err;
    }
    return child;
  };
}

/**
 * Puts a started stack under supervision (supervisor.ts), in start order: PostgreSQL, PgBouncer,
 * then the Node children given. Every event is written to `out`, then handed to `onEvent`; when
 * PostgreSQL or PgBouncer is given up on, no tenant can be served: `out` says so and `shutdown`
 * is called. Used by `bulwark up` and `bulwark node up`; returns the supervisors (start order).
 */
export function superviseStack(opts: {
  dataPlane: DataPlane;
  children: NodeChild[];
  logs: string;
  /** What stops: "Bulwark", "the node". */
  what: string;
  out: (line: string) => void;
  shutdown: () => void;
  onEvent?: (e: SupervisorEvent) => void;
}): { name: string; s: Supervised }[] {
  const dp = opts.dataPlane;
  const onEvent = (e: SupervisorEvent) => {
    opts.out(`supervisor: ${describe(e, opts.logs)}`);
    opts.onEvent?.(e);
    if (e.kind === 'gave_up' && (e.name === 'postgres' || e.name === 'pgbouncer')) {
      opts.out(`supervisor: without ${e.name} no tenant can be served; stopping ${opts.what}`);
      opts.shutdown();
    }
  };
  const watch = (
    name: string,
    first: ChildProcess,
    start: (track: (c: ChildProcess) => void) => Promise<ChildProcess>,
    stop: (c: ChildProcess) => Promise<void>,
  ) => ({ name, s: supervise({ name, first, start, stopChild: stop, onEvent, policy: RESTART_POLICY }) });
  return [
    watch(
      'postgres',
      dp.postgres.child,
      (track) => dp.restartPostgres(track),
      (c) => stopChild(c, 'SIGINT', 30_000, 'SIGQUIT'),
    ),
    watch(
      'pgbouncer',
      dp.pgbouncer.child,
      (track) => dp.restartPgbouncer(track),
      (c) => stopChild(c, 'SIGTERM', 10_000),
    ),
    ...opts.children.map((c) => watch(c.name, c.first, c.start, (ch) => stopChild(ch, 'SIGTERM', 15_000))),
  ];
}

/** A supervisor event as one line of the stack's output, naming the child's log. */
export function describe(e: SupervisorEvent, logs: string): string {
  const log = path.join(logs, `${e.name}.log`);
  switch (e.kind) {
    case 'crashed':
      return `${e.name} exited unexpectedly (${e.exit.signal ?? `code ${e.exit.code}`}); restarting in ${e.restartInMs} ms; see ${log}`;
    case 'restart_failed':
      return `${e.name} did not start again (${e.error.split('\n')[0]}); retrying in ${e.restartInMs} ms; see ${log}`;
    case 'restarted':
      return `${e.name} is running again (pid ${e.pid}, down ${e.downMs} ms)`;
    case 'gave_up':
      return `${e.name} crashed ${e.crashesInWindow} times within ${e.windowMs / 60_000} min: not restarting it; see ${log}`;
  }
}
