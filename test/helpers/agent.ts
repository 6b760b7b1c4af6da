import { agentConfigSchema } from '../../src/agent/config.ts';
import { type RunningAgent, startAgent } from '../../src/agent/main.ts';
import { createLogger } from '../../src/shared/logger.ts';
import type { PrivatePooler } from '../pooler-harness.ts';
import { testEnv } from './env.ts';
import type { TestServer } from './server.ts';

/**
 * A real agent, enrolled on a test server (listening at `url`) as node `name`, holding the run's
 * admin connection; with `pooler`, it owns that private PgBouncer (tenant databases need one).
 * Its explorer channel is on unless `explorerChannel: false` (explorer requests then use the queue).
 */
export async function startTestAgent(
  s: Pick<TestServer, 'nodes'>,
  url: string,
  opts: {
    name: string;
    stateDir?: string;
    pooler?: PrivatePooler;
    explorerChannel?: boolean;
    /** How often it samples its databases' size and connections (default: the agent's, 60 s). */
    sampleIntervalMs?: number;
    /** Spare databases it keeps (default 0 here: tests share one cluster; the agent's own default is 3). */
    warmPoolSize?: number;
  },
): Promise<RunningAgent> {
  const stateDir = opts.pooler?.stateDir ?? opts.stateDir;
  if (!stateDir) throw new Error('startTestAgent needs a stateDir or a pooler');
  const { token } = await s.nodes.createEnrollment(opts.name, 10);
  const config = agentConfigSchema.parse({
    serverUrl: url,
    stateDir,
    enrollmentToken: token,
    adminDatabaseUrl: testEnv().adminUrl,
    ...(opts.pooler
      ? {
          poolerDir: opts.pooler.dir,
          poolerPort: opts.pooler.port,
          poolerAdminPassword: opts.pooler.adminPassword,
        }
      : {}),
    logLevel: 'silent',
    pollWaitMs: 20_000,
    explorerChannel: opts.explorerChannel ?? true,
    ...(opts.sampleIntervalMs ? { sampleIntervalMs: opts.sampleIntervalMs } : {}),
    warmPoolSize: opts.warmPoolSize ?? 0,
  });
  return startAgent(config, { log: createLogger('agent', 'silent') });
}
