import type { ChildProcess } from 'node:child_process';
import path from 'node:path';
import type { DataPlane } from './data-plane.ts';
import { stopChild } from './process.ts';
import { RESTART_POLICY, type Supervised, type SupervisorEvent, supervise } from './supervisor.ts';

/** A Node child (server, agent) to supervise: the one running now and how to start another. */
export type NodeChild = {
  name: string;
  first: ChildProcess;
  start: (track: (c: ChildProcess) => void) => Promise<ChildProcess>;
};

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
