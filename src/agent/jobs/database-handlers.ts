import { JOB_KINDS } from '../../shared/contracts/jobs.ts';
import type { DatabaseJobDeps } from './database-common.ts';
import { databaseCreate } from './database-create.ts';
import { databaseDelete } from './database-delete.ts';
import { nodeDrift, nodeDriftFix } from './database-drift.ts';
import { databaseRotate } from './database-rotate.ts';
import { databaseAllowlist, databaseLimits } from './database-settings.ts';
import type { JobHandler } from './job-context.ts';

const NO_PLATFORM = { databases: [], roles: [] };

/** The tenant-database job kinds (issue 4), given the pooler and the admin connection factory. */
export function databaseHandlers(deps: DatabaseJobDeps): [string, JobHandler][] {
  return [
    [JOB_KINDS.create, databaseCreate(deps)],
    [JOB_KINDS.delete, databaseDelete(deps)],
    [JOB_KINDS.rotate, databaseRotate(deps)],
    [JOB_KINDS.allowlist, databaseAllowlist(deps)],
    [JOB_KINDS.limits, databaseLimits()],
    [JOB_KINDS.drift, nodeDrift({ ...deps, platform: deps.platform ?? NO_PLATFORM })],
    [JOB_KINDS.driftFix, nodeDriftFix({ ...deps, platform: deps.platform ?? NO_PLATFORM })],
  ];
}
