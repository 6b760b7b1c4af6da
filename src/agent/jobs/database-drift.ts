import { driftPayloadSchema } from '../../shared/contracts/jobs.ts';
import {
  boundFindings,
  type DriftFinding,
  type DriftTarget,
  findDrift,
  fixDrift,
  type PlatformObjects,
} from '../postgres/drift.ts';
import { type DatabaseJobDeps, parsePayload } from './database-common.ts';
import type { JobContext, JobHandler } from './job-context.ts';

type DriftJobDeps = Pick<DatabaseJobDeps, 'cluster' | 'pooler' | 'warmPool'> & { platform: PlatformObjects };

/** The payload's databases: ids and limits when the server sent them, names only otherwise. */
function targetsOf(payload: unknown): DriftTarget[] {
  const p = parsePayload(driftPayloadSchema, payload);
  const detailed = new Map((p.databases ?? []).map((d) => [d.name, d]));
  return p.known_databases.map((name) => {
    const d = detailed.get(name);
    return { name, id: d?.id ?? null, limits: d?.limits ?? null };
  });
}

function driftDeps(deps: DriftJobDeps, ctx: JobContext) {
  return {
    admin: ctx.admin,
    cluster: deps.cluster,
    ownerVerifier: (name: string) => deps.pooler.state().databases[name]?.verifier ?? null,
  };
}

/**
 * The warm pool's spares, checked inside (ADR 0028): a tampered one is reported here and is
 * never handed out — the pool destroys and replaces it (the one change a drift job makes).
 */
async function spareFindings(deps: DriftJobDeps): Promise<DriftFinding[]> {
  return deps.warmPool ? deps.warmPool.audit() : [];
}

/** `node.drift`: reports what in the cluster differs from what Bulwark made. Read-only for tenants. */
export function nodeDrift(deps: DriftJobDeps): JobHandler {
  return async (payload, ctx) => {
    const targets = targetsOf(payload);
    const spares = await spareFindings(deps);
    const findings = await findDrift(driftDeps(deps, ctx), targets, deps.platform);
    return { findings: boundFindings([...spares, ...findings]) };
  };
}

/** `node.drift_fix`: re-applies what is ours on our databases, then reports what is left. */
export function nodeDriftFix(deps: DriftJobDeps): JobHandler {
  return async (payload, ctx) => {
    const targets = targetsOf(payload);
    // Each database is repaired on its own: one that fails (a tenant holding a lock) is a
    // `repair_failed` finding, the others are still repaired and the job still reports.
    const { fixed, failed } = await fixDrift(driftDeps(deps, ctx), targets);
    const spares = await spareFindings(deps);
    const findings = await findDrift(driftDeps(deps, ctx), targets, deps.platform);
    return { fixed, findings: boundFindings([...failed, ...spares, ...findings]) };
  };
}
