import { randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type pg from 'pg';
import { createAgentVerifier } from '../../src/agent/execution/agent-verifier.ts';
import {
  EXECUTION_KEYS_FILE,
  openPinnedKeys,
  writePinFile,
} from '../../src/agent/execution/execution-keys.ts';
import { createExecutionRoles } from '../../src/agent/execution/execution-role.ts';
import { REPLAY_CACHE_FILE } from '../../src/agent/execution/execution-setup.ts';
import { createExecutionExecutor, type ExecutionExecutor } from '../../src/agent/execution/executor.ts';
import { createReplayCache, type ReplayCache } from '../../src/agent/execution/replay-cache.ts';
import { createExecutionKeyRing, type ExecutionKeyRing } from '../../src/server/crypto/execution-key-ring.ts';
import type { ExecutePayload } from '../../src/shared/contracts/execution.ts';
import {
  type ExecutionCapability,
  type ExecutionClaims,
  type ExecutionMode,
  sqlSha256,
} from '../../src/shared/execution-token.ts';
import { createLogger } from '../../src/shared/logger.ts';
import { clusterAccess, TEST_AGENT_KEY, type Tenant } from './explorer.ts';

export const TEST_NODE = 'node-exec-a';

/**
 * A real agent executor on the test cluster: the server's key ring (its own data dir) and an
 * agent state dir whose pin file holds the ring's public key, as `bulwark up` writes it.
 */
export async function createExecutionHarness(admin: pg.Pool) {
  const root = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-exec-'));
  const ring = createExecutionKeyRing({ dir: path.join(root, 'server') });
  const stateDir = path.join(root, 'agent');
  await fs.mkdir(stateDir, { mode: 0o700 });
  writePinFile(path.join(stateDir, EXECUTION_KEYS_FILE), new Map(ring.jwks().keys.map((k) => [k.kid, k.x])));
  const log = createLogger('execution-test', 'silent');
  const caches: ReplayCache[] = [];

  /** A new executor (as after an agent restart: a new replay cache over the same file). */
  const executor = async (
    opts: { capabilities?: ExecutionCapability[]; now?: () => number; node?: string } = {},
  ): Promise<ExecutionExecutor> => {
    for (const c of caches.splice(0)) c.close(); // one replay cache per state dir at a time
    const replay = createReplayCache({ file: path.join(stateDir, REPLAY_CACHE_FILE), maxEntries: 10_000 });
    caches.push(replay);
    const keys = await openPinnedKeys({ stateDir, fetchKeys: null, log });
    const verifier = createAgentVerifier({
      keys,
      nodeId: opts.node ?? TEST_NODE,
      capabilities: opts.capabilities ?? ['reader', 'migrator'],
      replay,
      ...(opts.now ? { now: opts.now } : {}),
    });
    const access = clusterAccess(TEST_AGENT_KEY);
    return createExecutionExecutor({
      verifier,
      roles: createExecutionRoles({ admin, key: TEST_AGENT_KEY }),
      admin,
      pgHost: access.pgHost,
      pgPort: access.pgPort,
      log,
    });
  };

  return {
    ring,
    stateDir,
    executor,
    async close() {
      for (const c of caches.splice(0)) c.close();
      await fs.rm(root, { recursive: true, force: true });
    },
  };
}

export type RequestSpec = {
  sql: string;
  mode?: Exclude<ExecutionMode, 'access'>;
  capability?: ExecutionCapability;
  approvedRows?: number | null;
  explain?: boolean;
  rowLimit?: number;
  byteLimit?: number;
  statementTimeoutMs?: number;
  /** Claims to sign instead of the request's own (forgeries, other databases…). */
  claims?: Partial<ExecutionClaims>;
  /** Signs with this ring instead of the pinned one. */
  ring?: ExecutionKeyRing;
};

/** A payload and its token, signed by `ring` for `t` on TEST_NODE unless `spec.claims` says otherwise. */
export function signedRequest(ring: ExecutionKeyRing, t: Tenant, spec: RequestSpec): ExecutePayload {
  const mode = spec.mode ?? 'execute';
  const capability = spec.capability ?? 'migrator';
  const requestId = randomUUID();
  const now = Math.floor(Date.now() / 1000);
  const claims: ExecutionClaims = {
    request_id: requestId,
    database: t.name,
    node: TEST_NODE,
    capability,
    mode,
    sql_sha256: sqlSha256(spec.sql),
    approved_rows: spec.approvedRows ?? null,
    jti: randomUUID(),
    iat: now,
    exp: now + 300,
    ...spec.claims,
  };
  return {
    database_id: t.id,
    name: t.name,
    request_id: requestId,
    token: (spec.ring ?? ring).sign(claims),
    sql: spec.sql,
    mode,
    capability,
    statement_timeout_ms: spec.statementTimeoutMs ?? 10_000,
    lock_timeout_ms: 2_000,
    row_limit: spec.rowLimit ?? 1_000,
    byte_limit: spec.byteLimit ?? 1024 * 1024,
    explain: spec.explain ?? false,
  };
}
