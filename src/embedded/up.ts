import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { agentEnv as agentBindings } from '../agent/config.ts';
import { serverEnv as serverBindings } from '../server/config.ts';
import { createKeyringFile } from '../server/crypto/secret-box.ts';
import { generateToken } from '../shared/api-key.ts';
import { VERSION } from '../shared/version.ts';
import {
  adminUrlFile,
  agentEnvironment,
  agentOwnEnv,
  checkChildSettings,
  controlUrlFile,
  metricsTokenFile,
  serverEnvironment,
  serverOwnEnv,
  serverUrlOf,
} from './child-settings.ts';
import { type DataPlane, startDataPlane } from './data-plane.ts';
import { enrollLocalAgent } from './enrollment.ts';
import { pinServerExecutionKeys } from './execution-pins.ts';
import { firstAdminLines } from './first-admin.ts';
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
import { readOrCreateSecret } from './secrets.ts';
import { resolveServiceUser } from './service-user.ts';
import { agentStarter, spawnNode, superviseStack, waitFor } from './supervise-stack.ts';
import type { Supervised } from './supervisor.ts';
import { createSupervisorAudit } from './supervisor-audit.ts';
import {
  describeSources,
  type UpConfig,
  upConfigSchema,
  upEnv,
  upOwnedAgentEnv,
  upOwnedServerEnv,
} from './up-config.ts';

export type UpOptions = {
  dataDir: string;
  host: string;
  port: number;
  poolerPort: number;
  pgPort: number;
  /** Written to by the supervisor for humans; logs of each process go to files. */
  out: (line: string) => void;
  /** `up`'s own settings (up-config.ts): test-only fsync switch, binaries, service user. */
  config?: UpConfig;
  /**
   * The operator's environment: its `BULWARK_*` settings of the server and the agent are handed
   * to those children (what `up` sets itself wins). Default: none.
   */
  env?: NodeJS.ProcessEnv;
  /** JSON config files of the server and the agent (`--config` of `bulwark server` / `agent`). */
  serverConfigFile?: string | undefined;
  agentConfigFile?: string | undefined;
};

export async function writeSecretFile(file: string, value: string): Promise<void> {
  const tmp = `${file}.tmp`;
  await fs.writeFile(tmp, `${value}\n`, { mode: 0o600 });
  await fs.rename(tmp, file);
}

/**
 * `bulwark up`: the whole stack on one machine under one data dir — PostgreSQL, PgBouncer,
 * the server and one agent, each a direct child, all stopped on Ctrl-C / SIGTERM.
 *
 * A child that dies is started again with backoff (supervisor.ts: 0.5 s doubling to 30 s,
 * reset after 60 s of stable running), each crash and restart an audit event of the system.
 * The server or the agent dying never stops PostgreSQL or PgBouncer: tenants keep their
 * connections while the control plane comes back. After 10 crashes in 10 minutes the
 * supervisor gives up on that child: a server or agent then stays down (the data plane keeps
 * serving tenants; `up` says so and keeps running); PostgreSQL or PgBouncer given up on stops
 * the whole stack with exit code 1, for the service manager to act on.
 * Resolves when everything has stopped; the number is the process exit code.
 */
export async function up(opts: UpOptions): Promise<number> {
  const layout = dataLayout(opts.dataDir);
  const config: UpConfig = opts.config ?? upConfigSchema.parse({});
  const operatorEnv = opts.env ?? {};
  const placement = { layout, host: opts.host, port: opts.port, poolerPort: opts.poolerPort };
  // The children's settings are checked first: a bad one stops `up` before anything is made.
  const problems = checkChildSettings({
    env: operatorEnv,
    placement,
    serverConfigFile: opts.serverConfigFile,
    agentConfigFile: opts.agentConfigFile,
  });
  if (problems.length > 0) {
    throw new PreflightError(
      `invalid settings for the server or the agent; nothing was started\n${problems.map((p) => `  - ${p}`).join('\n')}`,
      EXIT.usage,
    );
  }
  // Traversable by the service user when we run as root (its files live below); never listable.
  await fs.mkdir(layout.root, { recursive: true, mode: process.getuid?.() === 0 ? 0o711 : 0o700 });
  await checkLayout(layout, config.pgBin);
  const release = await acquireLock(layout);
  let dataPlane: DataPlane | undefined;
  const children: { name: string; child: ChildProcess }[] = [];
  /** Supervisors, in start order: postgres, pgbouncer, server, agent. */
  const supervised: { name: string; s: Supervised }[] = [];
  let audit: ReturnType<typeof createSupervisorAudit> | undefined;
  let writeUpInfo: () => Promise<void> = async () => {};
  let stopping = false;
  let resolveStopped: (code: number) => void = () => {};
  const stopped = new Promise<number>((r) => {
    resolveStopped = r;
  });

  const shutdown = async (code: number) => {
    if (stopping) return;
    stopping = true;
    const started = dataPlane !== undefined;
    if (started) opts.out('stopping Bulwark…');
    // No restart from here on, whatever dies next.
    for (const { s } of supervised) s.hold();
    // Events still pending are written while PostgreSQL runs (bounded by its connect timeout).
    await audit?.close();
    // Control plane first, then PgBouncer, then PostgreSQL (each supervisor stops the child it
    // has now, also one it is still starting); then whatever never came under supervision.
    for (const { s } of [...supervised].reverse()) await s.stop();
    for (const { child } of [...children].reverse()) await stopChild(child, 'SIGTERM', 15_000);
    await dataPlane
      ?.stop()
      .catch((err: Error) => opts.out(`error while stopping the data plane: ${err.message}`));
    await release();
    if (started) opts.out('Bulwark stopped');
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
    for (const { child } of children) child.kill('SIGKILL');
    for (const { name, s } of supervised) {
      if (name === 'postgres') s.current()?.kill('SIGQUIT');
      else s.current()?.kill('SIGKILL');
    }
    dataPlane?.pgbouncer.child.kill('SIGKILL');
    dataPlane?.postgres.child.kill('SIGQUIT');
    void release().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    reportSettings(opts, operatorEnv);
    if (config.unsafeFast) {
      opts.out(
        'WARNING: BULWARK_UNSAFE_FAST=1 (test-only): PostgreSQL runs with fsync off; a crash loses data',
      );
    }
    const user = resolveServiceUser(config.serviceUser);
    if (await stopStalePostmaster(layout.pgData, config.pgBin))
      opts.out('stopped a PostgreSQL left running by an interrupted run');
    if (await stopStalePgbouncer(path.join(layout.pooler, 'pgbouncer.pid'), config.pgbouncerBin)) {
      opts.out('stopped a PgBouncer left running by an interrupted run');
    }
    await assertPortFree(opts.host, opts.port, 'server', '--port');
    await assertPortFree('127.0.0.1', opts.poolerPort, 'PgBouncer', '--pooler-port');
    await assertPortFree('127.0.0.1', opts.pgPort, 'PostgreSQL', '--pg-port');
    await writeLayoutVersion(layout);

    dataPlane = await startDataPlane({
      layout,
      ports: { postgres: opts.pgPort, pooler: opts.poolerPort },
      user,
      unsafeFast: config.unsafeFast,
      binaries: { pgBin: config.pgBin, pgbouncerBin: config.pgbouncerBin },
      pgMemoryLimitBytes: config.pgBackendMemoryMb * 1024 * 1024,
      log: opts.out,
    });
    await writeSecretFile(controlUrlFile(layout), dataPlane.controlUrl);
    await writeSecretFile(adminUrlFile(layout), dataPlane.adminUrl);
    // Bearer token of the server's /metrics (Prometheus scrapes with it); kept across restarts.
    await readOrCreateSecret(metricsTokenFile(layout));
    // Master keyring sealing tenant database passwords (0600; `bulwark master-key rotate`).
    if (!existsSync(layout.masterKeyring)) createKeyringFile(layout.masterKeyring);

    const serverUrl = serverUrlOf(placement);
    const serverEnv = serverEnvironment(operatorEnv, serverOwnEnv(placement));
    const serverArgs = opts.serverConfigFile ? ['server', '--config', opts.serverConfigFile] : ['server'];
    // Counted as running only once /ready answers (its database and keyring are usable).
    const startServer = async (track: (c: ChildProcess) => void): Promise<ChildProcess> => {
      const child = await spawnNode(serverArgs, serverEnv, path.join(layout.logs, 'server.log'));
      track(child);
      try {
        await waitFor(
          'the server',
          async () => (await fetch(`${serverUrl}/ready`, { signal: AbortSignal.timeout(2_000) })).ok,
          child,
          60_000,
        );
      } catch (err) {
        await stopChild(child, 'SIGTERM', 15_000);
        throw err;
      }
      return child;
    };
    const server = await startServer((child) => children.push({ name: 'server', child }));

    // First start (or a lost agent token): a one-time enrollment token, stored only hashed.
    const agentOwn = agentOwnEnv(placement);
    if (!existsSync(path.join(layout.agent, 'agent-token'))) {
      const token = generateToken('bwe_');
      await enrollLocalAgent(dataPlane.controlUrl, { nodeName: 'local', token, ttlMs: 10 * 60_000 });
      agentOwn.BULWARK_ENROLLMENT_TOKEN = token;
    }
    const agentEnv = agentEnvironment(operatorEnv, agentOwn);
    const agentArgs = opts.agentConfigFile ? ['agent', '--config', opts.agentConfigFile] : ['agent'];
    const startAgent = agentStarter({
      layout,
      args: agentArgs,
      env: agentEnv,
      // The agent verifies execution tokens only against keys pinned here, from the server's own files.
      beforeStart: () => pinServerExecutionKeys(layout),
    });
    const agent = await startAgent((child) => children.push({ name: 'agent', child }));

    // From here on every child is supervised (restarted with backoff, audited), never a
    // reason to stop the others.
    const dp = dataPlane;
    audit = createSupervisorAudit(dataPlane.controlUrl, (msg) => opts.out(`supervisor: ${msg}`));
    supervised.push(
      ...superviseStack({
        dataPlane,
        children: [
          { name: 'server', first: server, start: startServer },
          { name: 'agent', first: agent, start: startAgent },
        ],
        logs: layout.logs,
        what: 'Bulwark',
        out: opts.out,
        shutdown: () => void shutdown(EXIT.error),
        onEvent: (e) => {
          void audit?.record(e).catch(() => {});
          // Events that could not be written while PostgreSQL was down go in now.
          if (e.kind === 'restarted' && e.name === 'postgres') void audit?.flush().catch(() => {});
          if (e.kind === 'restarted') void writeUpInfo().catch(() => {});
        },
      }),
    );
    children.length = 0;
    // What `bulwark status` reads: rewritten with the new pid whenever a child is restarted.
    const startedAt = new Date().toISOString();
    writeUpInfo = async () => {
      const pids: Record<string, number | undefined> = {};
      for (const { name, s } of supervised) pids[name] = s.current()?.pid;
      const info = {
        version: VERSION,
        pid: process.pid,
        started_at: startedAt,
        server_url: serverUrl,
        ports: { server: opts.port, pooler: opts.poolerPort, postgres: opts.pgPort },
        pids,
      };
      const file = path.join(layout.root, 'up.json');
      await fs.writeFile(`${file}.tmp`, `${JSON.stringify(info, null, 2)}\n`, { mode: 0o600 });
      await fs.rename(`${file}.tmp`, file);
    };
    await writeUpInfo();

    const dd = opts.dataDir === '.bulwark' ? '' : ` --data-dir ${layout.root}`;
    // An install without users: the one-time link of the first platform admin (printed once).
    const firstAdmin = await firstAdminLines(dp.controlUrl, serverUrl, dd);
    opts.out('');
    opts.out(`Bulwark ${VERSION} is running`);
    opts.out(`  server     ${serverUrl}   (API reference: ${serverUrl}/docs)`);
    opts.out(`  databases  PgBouncer on 127.0.0.1:${opts.poolerPort}`);
    opts.out(`  postgres   127.0.0.1:${opts.pgPort} (loopback only; reached by the agent and PgBouncer)`);
    opts.out(`  data dir   ${layout.root}   (logs in ${layout.logs})`);
    opts.out(`  operator key: run  bulwark admin create-key --account NAME${dd}  on this host`);
    for (const line of firstAdmin) opts.out(line);
    opts.out('Press Ctrl-C to stop.');
    opts.out('Bulwark is ready');
  } catch (err) {
    const e = err as Error;
    opts.out(`bulwark up failed: ${e.message}`);
    for (const name of ['server', 'agent']) {
      const tail = await tailFile(path.join(layout.logs, `${name}.log`), 5);
      if (tail && children.some((c) => c.name === name))
        opts.out(`--- last lines of ${name}.log ---\n${tail}`);
    }
    await shutdown(err instanceof PreflightError ? err.exitCode : EXIT.error);
  }
  const code = await stopped;
  process.off('SIGINT', onSignal);
  process.off('SIGTERM', onSignal);
  return code;
}

/**
 * Says at start where each setting that is not a default came from (env or file), never a
 * secret's value, and which of the operator's variables `up` replaces with its own.
 */
function reportSettings(opts: UpOptions, env: NodeJS.ProcessEnv): void {
  const parts: [string, ReturnType<typeof describeSources>][] = [
    ['up', describeSources(upEnv, { env })],
    ['server', describeSources(serverBindings, { env, file: opts.serverConfigFile }, upOwnedServerEnv)],
    ['agent', describeSources(agentBindings, { env, file: opts.agentConfigFile }, upOwnedAgentEnv)],
  ];
  for (const [who, lines] of parts) for (const line of lines) opts.out(`setting (${who}): ${line}`);
  const own = new Set([...upOwnedServerEnv, ...upOwnedAgentEnv].flatMap((n) => [n, `${n}_FILE`]));
  for (const name of Object.keys(env).sort()) {
    if (own.has(name))
      opts.out(
        `setting: ${name} from env is ignored: bulwark up sets it itself (ports, data dir files, enrollment)`,
      );
  }
}
