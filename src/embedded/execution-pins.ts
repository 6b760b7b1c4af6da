import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { EXECUTION_KEYS_FILE, writePinFile } from '../agent/execution/execution-keys.ts';
import { createExecutionKeyRing } from '../server/crypto/execution-key-ring.ts';
import type { DataLayout } from './layout.ts';

/**
 * The embedded stack's pinning of execution keys (ADR 0021): the server and the agent share this
 * host and its data dir, so before each agent start `up` writes the server's execution JWKS (the
 * active key and the retired ones still valid) into the agent's pin file — trust through the
 * filesystem, no trust-on-first-use over the network. The server's key is made here if it has none
 * yet (the same create-once file the server itself would write).
 */
export function pinServerExecutionKeys(layout: Pick<DataLayout, 'server' | 'agent'>): string[] {
  const ring = createExecutionKeyRing({ dir: layout.server });
  mkdirSync(layout.agent, { recursive: true, mode: 0o700 });
  const keys = new Map(ring.jwks().keys.map((k) => [k.kid, k.x] as const));
  writePinFile(path.join(layout.agent, EXECUTION_KEYS_FILE), keys);
  return [...keys.keys()];
}
