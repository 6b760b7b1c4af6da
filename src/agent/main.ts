import { existsSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import type { Logger } from 'pino';
import { createLogger } from '../shared/logger.ts';
import { VERSION } from '../shared/version.ts';
import type { AgentConfig } from './config.ts';
import { type JobHandler, PermanentJobError } from './jobs/job-context.ts';
import { defaultHandlers } from './jobs/registry.ts';
import { createServerClient, type PolledJob, ServerError } from './server-client.ts';

export type RunningAgent = {
  nodeId: string;
  /** Resolves when the agent has stopped. */
  done: Promise<void>;
  stop(): Promise<void>;
};

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener(
      'abort',
      () => {
        clearTimeout(t);
        resolve();
      },
      { once: true },
    );
  });

async function writeFileAtomic(file: string, data: string, mode: number): Promise<void> {
  const tmp = `${file}.${process.pid}.tmp`;
  await fs.writeFile(tmp, data, { mode });
  await fs.rename(tmp, file);
}

/**
 * The data-plane agent: enrolls once, then long-polls the server for jobs and runs them
 * with the only admin connection to its cluster. Liveness and readiness are files in its
 * state dir (`alive` is touched on every heartbeat, `ready` exists while it serves).
 */
export async function startAgent(
  config: AgentConfig,
  opts: { log?: Logger; handlers?: Map<string, JobHandler> } = {},
): Promise<RunningAgent> {
  const log = opts.log ?? createLogger('bulwark-agent', config.logLevel);
  const handlers = opts.handlers ?? defaultHandlers();
  await fs.mkdir(config.stateDir, { recursive: true, mode: 0o700 });
  const tokenFile = path.join(config.stateDir, 'agent-token');
  const aliveFile = path.join(config.stateDir, 'alive');
  const readyFile = path.join(config.stateDir, 'ready');
  await fs.rm(readyFile, { force: true });

  let token: string | null = existsSync(tokenFile) ? (await fs.readFile(tokenFile, 'utf8')).trim() : null;
  const client = createServerClient(config.serverUrl, () => token);
  let nodeId = '';
  if (!token) {
    if (!config.enrollmentToken) throw new Error('agent is not enrolled: set BULWARK_ENROLLMENT_TOKEN');
    const enrolled = await client.enroll(config.enrollmentToken, VERSION);
    token = enrolled.agent_token;
    nodeId = enrolled.node_id;
    await writeFileAtomic(tokenFile, `${token}\n`, 0o600);
    log.info({ node: enrolled.node_name }, 'agent enrolled');
  }

  const admin = new pg.Pool({
    connectionString: config.adminDatabaseUrl,
    max: 4,
    application_name: 'bulwark-agent',
  });
  admin.on('error', (err) => log.warn({ err: { message: err.message } }, 'idle admin connection lost'));
  const stopping = new AbortController();

  const heartbeat = async () => {
    try {
      const r = await admin.query<{ v: string }>('SELECT version() AS v');
      await client.heartbeat({
        agent_version: VERSION,
        pg_version: r.rows[0]?.v ?? 'unknown',
        capabilities: { jobs: [...handlers.keys()] },
      });
      const now = new Date();
      await fs.writeFile(aliveFile, `${now.toISOString()}\n`);
    } catch (err) {
      log.warn({ err: { message: (err as Error).message } }, 'heartbeat failed');
    }
  };
  try {
    await heartbeat();
  } catch {}
  const hbTimer = setInterval(() => void heartbeat(), config.heartbeatMs);
  await fs.writeFile(readyFile, `${new Date().toISOString()}\n`);

  const runJob = async (job: PolledJob) => {
    const handler = handlers.get(job.kind);
    const started = Date.now();
    if (!handler) {
      await client.fail(job, `this agent does not run jobs of kind ${job.kind}`, false);
      return;
    }
    try {
      const result = await handler(job.payload, {
        admin,
        log: log.child({ job: job.id, kind: job.kind }),
        signal: stopping.signal,
      });
      await client.complete(job, result);
      log.info({ job: job.id, kind: job.kind, ms: Date.now() - started }, 'job done');
    } catch (err) {
      const permanent = err instanceof PermanentJobError;
      log.warn({ job: job.id, kind: job.kind, err: { message: (err as Error).message } }, 'job failed');
      await client.fail(job, (err as Error).message.slice(0, 4000), !permanent).catch((e: Error) => {
        log.warn({ err: { message: e.message } }, 'could not report a failure; the lease will expire');
      });
    }
  };

  const loop = async () => {
    let backoff = 100;
    while (!stopping.signal.aborted) {
      try {
        const { job } = await client.poll(config.pollWaitMs, stopping.signal);
        backoff = 100;
        if (job) await runJob(job);
      } catch (err) {
        if (stopping.signal.aborted) break;
        if (err instanceof ServerError && err.status === 401) {
          log.error('the server refused this agent token (revoked or re-enrolled); stopping');
          break;
        }
        log.warn({ err: { message: (err as Error).message } }, 'poll failed; retrying');
        await sleep(backoff, stopping.signal);
        backoff = Math.min(backoff * 2, 5_000);
      }
    }
  };
  const done = loop().finally(async () => {
    clearInterval(hbTimer);
    await fs.rm(readyFile, { force: true });
    await admin.end().catch(() => {});
  });

  return {
    nodeId,
    done,
    async stop() {
      stopping.abort();
      await done;
    },
  };
}
