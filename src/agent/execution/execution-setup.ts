/**
 * Wiring of governed execution in the agent (ADR 0021): this node's id, the pinned execution keys,
 * the durable replay cache, the verifier and the executor. One replay cache per agent process; its
 * file has no lock, so one agent per state dir (as for the rest of the state dir).
 */
import fs from 'node:fs/promises';
import path from 'node:path';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { ExecutionCapability } from '../../shared/execution-token.ts';
import type { AttachedRegistry } from '../attached/attached-registry.ts';
import type { ClusterAccess } from '../postgres/steward.ts';
import { type AgentVerifier, createAgentVerifier } from './agent-verifier.ts';
import { type ExecutionKeysAnswer, executionKeysAnswerSchema, openPinnedKeys } from './execution-keys.ts';
import { createExecutionRoles } from './execution-role.ts';
import { createExecutionExecutor, type ExecutionExecutor } from './executor.ts';
import { createReplayCache, type ReplayCache } from './replay-cache.ts';

export const NODE_ID_FILE = 'node-id';
export const REPLAY_CACHE_FILE = 'execution-replay.log';
export const EXECUTION_KEYS_PATH = '/v1/agent/execution-keys';
/** Unexpired jtis kept at most (an agent admits far fewer per 5-minute token lifetime). */
const REPLAY_MAX_ENTRIES = 100_000;

/** GET /v1/agent/execution-keys with the agent token (the authenticated agent API). */
export function executionKeysFetcher(serverUrl: string, token: () => string | null) {
  return async (): Promise<ExecutionKeysAnswer> => {
    const t = token();
    const res = await fetch(new URL(EXECUTION_KEYS_PATH, serverUrl), {
      headers: t ? { authorization: `Bearer ${t}` } : {},
      signal: AbortSignal.timeout(10_000),
      redirect: 'error',
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${EXECUTION_KEYS_PATH}: ${res.status}`);
    if (text.length > 256 * 1024) throw new Error(`${EXECUTION_KEYS_PATH}: answer too large`);
    return executionKeysAnswerSchema.parse(JSON.parse(text));
  };
}

/** Saves this node's id (at enrollment); read back at every start. */
export async function saveNodeId(stateDir: string, nodeId: string): Promise<void> {
  await fs.writeFile(path.join(stateDir, NODE_ID_FILE), `${nodeId}\n`, { mode: 0o600 });
}

export async function startExecution(deps: {
  stateDir: string;
  serverUrl: string;
  token: () => string | null;
  /** The node id from this start's enrollment, else '' (read from the state dir or asked). */
  nodeId: string;
  capabilities: readonly ExecutionCapability[];
  admin: pg.Pool;
  cluster: ClusterAccess;
  log: Logger;
  /** Attached databases the server registered (ADR 0031): run as their own roles. */
  attached?: Pick<AttachedRegistry, 'get'>;
}): Promise<{
  executor: ExecutionExecutor;
  verifier: AgentVerifier;
  nodeId: string;
  close(): Promise<void>;
}> {
  const { log } = deps;
  const fetchKeys = executionKeysFetcher(deps.serverUrl, deps.token);
  let nodeId = deps.nodeId;
  const idFile = path.join(deps.stateDir, NODE_ID_FILE);
  if (!nodeId) nodeId = (await fs.readFile(idFile, 'utf8').catch(() => '')).trim();
  if (!nodeId) {
    // Enrolled before the id was kept: the authenticated agent API says which node this token is.
    try {
      nodeId = (await fetchKeys()).node_id;
      await saveNodeId(deps.stateDir, nodeId);
    } catch (err) {
      log.warn({ err: { message: (err as Error).message } }, 'node id unknown: execution tokens are refused');
    }
  }
  const keys = await openPinnedKeys({ stateDir: deps.stateDir, fetchKeys, log });
  let replay: ReplayCache | null = null;
  try {
    replay = createReplayCache({
      file: path.join(deps.stateDir, REPLAY_CACHE_FILE),
      maxEntries: REPLAY_MAX_ENTRIES,
    });
  } catch (err) {
    // Fail closed: without its replay cache the agent runs no token (the rest of the agent runs).
    log.error(
      { err: { message: (err as Error).message } },
      'execution replay cache unavailable: every token is refused',
    );
  }
  const verifier = createAgentVerifier({
    keys,
    nodeId,
    capabilities: deps.capabilities,
    replay: replay ?? { admit: () => 'full' },
  });
  const executor = createExecutionExecutor({
    verifier,
    roles: createExecutionRoles({ admin: deps.admin, key: deps.cluster.key }),
    admin: deps.admin,
    pgHost: deps.cluster.pgHost,
    pgPort: deps.cluster.pgPort,
    log: log.child({ component: 'execution' }),
    ...(deps.attached ? { attached: deps.attached } : {}),
  });
  return {
    executor,
    verifier,
    nodeId,
    close: async () => {
      await executor.close();
      replay?.close();
    },
  };
}
