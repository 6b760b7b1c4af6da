/**
 * The agent's one door for execution tokens (ADR 0019, 0021): verifyExecutionToken against the
 * pinned keys, this node's id, the capabilities the local config allows, the agent's clock with
 * ±30 s of skew, and the process's durable replay cache. A token naming a kid we do not hold
 * triggers one (rate-limited) refresh of the pinned keys, then one more verification.
 *
 * Used by the executor (mode execute / dry_run) and by the access-grant jobs (mode access).
 */
import {
  type ExecutionCapability,
  type ExecutionMode,
  type ReplayGuard,
  type VerifyResult,
  verifyExecutionToken,
} from '../../shared/execution-token.ts';
import type { PinnedKeys } from './execution-keys.ts';

export const EXECUTION_SKEW_SECONDS = 30;

/** What the caller binds the token to, besides this node: its database, mode and exact text. */
export type TokenExpectation = { database: string; mode: ExecutionMode } & (
  | { sql: string }
  | { sqlSha256: string }
);

export type AgentVerifier = {
  /** This node's id (the token's `node` claim). */
  readonly nodeId: string;
  /** The capabilities this node's config allows (the token's capability must be one). */
  readonly capabilities: readonly ExecutionCapability[];
  /** Never throws on input; a refusal names a stable reason (RefusalReason). */
  verify(token: string, expect: TokenExpectation): Promise<VerifyResult>;
};

export function createAgentVerifier(deps: {
  keys: PinnedKeys;
  nodeId: string;
  capabilities: readonly ExecutionCapability[];
  /** The agent's replay cache (one per process, one process per state dir). */
  replay: ReplayGuard;
  /** Epoch milliseconds (tests move the clock). */
  now?: () => number;
}): AgentVerifier {
  const now = deps.now ?? Date.now;
  const check = (token: string, expect: TokenExpectation) =>
    verifyExecutionToken(token, {
      keys: deps.keys.keys(),
      now: now(),
      maxSkewSeconds: EXECUTION_SKEW_SECONDS,
      expect: { ...expect, node: deps.nodeId },
      allowedCapabilities: deps.capabilities,
      replay: deps.replay,
    });
  return {
    nodeId: deps.nodeId,
    capabilities: deps.capabilities,
    async verify(token, expect) {
      const first = check(token, expect);
      // unknown_kid is decided before the replay cache is touched: checking again is safe.
      if (first.ok || first.reason !== 'unknown_kid') return first;
      if (!(await deps.keys.refresh())) return first;
      return check(token, expect);
    },
  };
}
