import { findDrift, fixDrift, type PlatformObjects } from '../postgres/drift.ts';
import { driftPayloadSchema } from './contract.ts';
import { type DatabaseJobDeps, parsePayload } from './database-common.ts';
import type { JobHandler } from './job-context.ts';

type DriftDeps = Pick<DatabaseJobDeps, 'connectAdmin'> & { platform: PlatformObjects };

/** `node.drift`: reports what in the cluster differs from what Bulwark made. Read-only. */
export function nodeDrift(deps: DriftDeps): JobHandler {
  return async (payload, ctx) => {
    const p = parsePayload(driftPayloadSchema, payload);
    return { findings: await findDrift(ctx.admin, deps.connectAdmin, p.known_databases, deps.platform) };
  };
}

/** `node.drift_fix`: re-applies our privileges on our databases, then reports what is left. */
export function nodeDriftFix(deps: DriftDeps): JobHandler {
  return async (payload, ctx) => {
    const p = parsePayload(driftPayloadSchema, payload);
    const fixed = await fixDrift(ctx.admin, deps.connectAdmin, p.known_databases);
    const findings = await findDrift(ctx.admin, deps.connectAdmin, p.known_databases, deps.platform);
    return { fixed, findings };
  };
}
