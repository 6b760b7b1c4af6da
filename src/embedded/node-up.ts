import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import { isIP } from 'node:net';
import path from 'node:path';
import { VERSION } from '../shared/version.ts';
import { adminUrlFile, agentEnvironment } from './child-settings.ts';
import { type DataPlane, startDataPlane } from './data-plane.ts';
import { dataLayout } from './layout.ts';
import { stopStalePostmaster } from './postgres-cluster.ts';
import {
  acquireLock,
  assertPortFree,
  checkLayout,
  EXIT,
  PreflightError,
  stopStalePgbouncer,
  writeLayoutVersion,
} from './preflight.ts';
import { stopChild, tailFile } from './process.ts';
import { resolveServiceUser } from './service-user.ts';
import { agentStarter, superviseStack } from './supervise-stack.ts';
import type { Supervised } from './supervisor.ts';
import { writeSecretFile } from './up.ts';
import { type UpConfig, upConfigSchema } from './up-config.ts';

export type NodeUpOptions = {
  dataDir: string;
  /** The control plane's URL (https, or http to loopback). */
  serverUrl: string;
  /** A one-time enrollment token (`bwe_…`); needed only until the node's agent is enrolled. */
  token?: string | undefined;
  /** Where PgBouncer listens for tenants and the address connection info names. */
  poolerHost: string;
  poolerPort: number;
  pgPort: number;
  out: (line: string) => void;
  config?: UpConfig;
  /** The operator's environment: its agent `BULWARK_*` settings are handed to the agent. */
  env?: NodeJS.ProcessEnv;
  agentConfigFile?: string | undefined;
};

const WILDCARD = new Set(['0.0.0.0', '::', '*']);

/**
 * PgBouncer's listen_addr: the pooler host, and loopback too (the agent reaches PgBouncer's console
 * and makes its login probes on 127.0.0.1); a wildcard address already covers it.
 */
export function nodeListenAddr(poolerHost: string): string {
  if (WILDCARD.has(poolerHost) || poolerHost === '127.0.0.1') return poolerHost;
  return `127.0.0.1,${poolerHost}`;
}

/** The agent token file: present once the node's agent has enrolled. */
export const agentTokenFile = (dataDir: string) => path.join(dataLayout(dataDir).agent, 'agent-token');

/**
 * `bulwark node up`: a data-plane node on its own machine — PostgreSQL, PgBouncer and an agent
 * under one data dir, supervised like `bulwark up`'s (supervisor.ts), with no server and no
 * control database. The agent enrolls with the token once and keeps its own credentials in its
 * state dir (0600); a restart with the same data dir reuses them (no token needed). The agent
 * reports the pooler address (`--pooler-host`/`--pooler-port`) so that connection info of the
 * node's databases names this node's PgBouncer.
 *
 * Supervisor events are written to this process's output only (the audit log is the control
 * plane's, which this machine cannot write to). Resolves with the exit code once all stopped.
 */
export async function nodeUp(opts: NodeUpOptions): Promise<number> {
  const layout = dataLayout(opts.dataDir);
  const config: UpConfig = opts.config ?? upConfigSchema.parse({});
  const operatorEnv = opts.env ?? {};
  if (!isIP(opts.poolerHost) && !/^[A-Za-z0-9.-]{1,255}$/.test(opts.poolerHost))
    throw new PreflightError('--pooler-host: a host name or an IP address', EXIT.usage);
  await fs.mkdir(layout.root, { recursive: true, mode: process.getuid?.() === 0 ? 0o711 : 0o700 });
  const enrolled = existsSync(agentTokenFile(opts.dataDir));
  if (!enrolled && !opts.token)
    throw new PreflightError(
      'this node is not enrolled yet: give --token (from `bulwark admin enroll-node` or POST /v1/nodes/enrollments)',
      EXIT.usage,
    );
  await checkLayout(layout, config.pgBin);
  const release = await acquireLock(layout);
  let dataPlane: DataPlane | undefined;
  const supervised: { name: string; s: Supervised }[] = [];
  let firstAgent: ChildProcess | undefined;
  let stopping = false;
  let resolveStopped: (code: number) => void = () => {};
  const stopped = new Promise<number>((r) => {
    resolveStopped = r;
  });

  const shutdown = async (code: number) => {
    if (stopping) return;
    stopping = true;
    const started = dataPlane !== undefined;
    if (started) opts.out('stopping the node…');
    for (const { s } of supervised) s.hold();
    for (const { s } of [...supervised].reverse()) await s.stop();
    if (firstAgent && supervised.length === 0) await stopChild(firstAgent, 'SIGTERM', 15_000);
    await dataPlane
      ?.stop()
      .catch((err: Error) => opts.out(`error while stopping the data plane: ${err.message}`));
    await release();
    if (started) opts.out('node stopped');
    resolveStopped(code);
  };
  let signals = 0;
  const onSignal = () => {
    signals += 1;
    if (signals === 1) {
      void shutdown(0);
      return;
    }
    opts.out('second signal: forcing every process down');
    for (const { name, s } of supervised) s.current()?.kill(name === 'postgres' ? 'SIGQUIT' : 'SIGKILL');
    firstAgent?.kill('SIGKILL');
    dataPlane?.pgbouncer.child.kill('SIGKILL');
    dataPlane?.postgres.child.kill('SIGQUIT');
    void release().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    if (config.unsafeFast)
      opts.out(
        'WARNING: BULWARK_UNSAFE_FAST=1 (test-only): PostgreSQL runs with fsync off; a crash loses data',
      );
    const user = resolveServiceUser(config.serviceUser);
    if (await stopStalePostmaster(layout.pgData, config.pgBin))
      opts.out('stopped a PostgreSQL left running by an interrupted run');
    if (await stopStalePgbouncer(path.join(layout.pooler, 'pgbouncer.pid'), config.pgbouncerBin))
      opts.out('stopped a PgBouncer left running by an interrupted run');
    const listenAddr = nodeListenAddr(opts.poolerHost);
    for (const host of listenAddr.split(','))
      await assertPortFree(
        WILDCARD.has(host) ? '0.0.0.0' : host,
        opts.poolerPort,
        'PgBouncer',
        '--pooler-port',
      );
    await assertPortFree('127.0.0.1', opts.pgPort, 'PostgreSQL', '--pg-port');
    await writeLayoutVersion(layout);

    dataPlane = await startDataPlane({
      layout,
      ports: { postgres: opts.pgPort, pooler: opts.poolerPort },
      poolerListenAddr: listenAddr,
      controlDatabase: false,
      user,
      unsafeFast: config.unsafeFast,
      binaries: { pgBin: config.pgBin, pgbouncerBin: config.pgbouncerBin },
      pgMemoryLimitBytes: config.pgBackendMemoryMb * 1024 * 1024,
      log: opts.out,
    });
    await writeSecretFile(adminUrlFile(layout), dataPlane.adminUrl);

    // The agent's settings: the operator's, then the node's own (they win).
    const own: NodeJS.ProcessEnv = {
      BULWARK_SERVER_URL: opts.serverUrl,
      BULWARK_AGENT_STATE_DIR: layout.agent,
      BULWARK_AGENT_ADMIN_DATABASE_URL_FILE: adminUrlFile(layout),
      BULWARK_POOLER_DIR: layout.pooler,
      BULWARK_POOLER_PORT: String(opts.poolerPort),
      BULWARK_POOLER_LISTEN_ADDR: listenAddr,
      BULWARK_POOLER_ADMIN_PASSWORD_FILE: layout.poolerAdminPassword,
      BULWARK_BACKUP_DIR: layout.backups,
    };
    // The address tenants are told: the operator's BULWARK_POOLER_PUBLIC_HOST, else the pooler host.
    if (!operatorEnv.BULWARK_POOLER_PUBLIC_HOST && !WILDCARD.has(opts.poolerHost))
      own.BULWARK_POOLER_PUBLIC_HOST = opts.poolerHost;
    if (!enrolled && opts.token) own.BULWARK_ENROLLMENT_TOKEN = opts.token;
    const agentEnv = agentEnvironment(operatorEnv, own);
    const agentArgs = opts.agentConfigFile ? ['agent', '--config', opts.agentConfigFile] : ['agent'];
    const startAgent = agentStarter({ layout, args: agentArgs, env: agentEnv });
    const agent = await startAgent((child) => {
      firstAgent = child;
    });

    supervised.push(
      ...superviseStack({
        dataPlane,
        children: [{ name: 'agent', first: agent, start: startAgent }],
        logs: layout.logs,
        what: 'the node',
        out: opts.out,
        shutdown: () => void shutdown(EXIT.error),
      }),
    );

    const pids: Record<string, number | undefined> = {};
    for (const { name, s } of supervised) pids[name] = s.current()?.pid;
    const info = {
      version: VERSION,
      role: 'node',
      pid: process.pid,
      started_at: new Date().toISOString(),
      server_url: opts.serverUrl,
      pooler: { host: opts.poolerHost, port: opts.poolerPort },
      ports: { pooler: opts.poolerPort, postgres: opts.pgPort },
      pids,
    };
    await fs.writeFile(path.join(layout.root, 'node.json'), `${JSON.stringify(info, null, 2)}\n`, {
      mode: 0o600,
    });
    opts.out('');
    opts.out(`Bulwark node ${VERSION} is running`);
    opts.out(`  control plane  ${opts.serverUrl}`);
    opts.out(`  databases      PgBouncer on ${opts.poolerHost}:${opts.poolerPort}`);
    opts.out(`  postgres       127.0.0.1:${opts.pgPort} (loopback only)`);
    opts.out(`  data dir       ${layout.root}   (logs in ${layout.logs})`);
    opts.out(enrolled ? '  enrolled earlier: the stored agent credentials are used' : '  enrolled now');
    opts.out('Press Ctrl-C to stop.');
    opts.out('Bulwark node is ready');
  } catch (err) {
    const e = err as Error;
    opts.out(`bulwark node up failed: ${e.message}`);
    const tail = await tailFile(path.join(layout.logs, 'agent.log'), 5);
    if (tail) opts.out(`--- last lines of agent.log ---\n${tail}`);
    await shutdown(err instanceof PreflightError ? err.exitCode : EXIT.error);
  }
  const code = await stopped;
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  return code;
}
