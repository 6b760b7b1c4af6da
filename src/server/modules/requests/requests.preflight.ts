/**
 * Preflight (issue 14): classification, review findings and the policy's answer for SQL without
 * making a request, and a dry run of a write that could be requested (bounded by the database's
 * dry-run slots, requests.dry-run-slots.ts).
 */
import { AppError } from '../../../shared/errors.ts';
import { type PolicyClass, rulesFor } from '../../../shared/policy/governance.ts';
import type { Caller } from '../../http/caller.ts';
import { physicalName } from '../databases/databases.repo.ts';
import { decideFor, isDml, judgeSql, policyView, requesterRole } from './requests.classify.ts';
import type { RequestsContext } from './requests.context.ts';
import {
  DRY_RUN_TIMEOUT_MS,
  DRY_RUN_WAIT_MS,
  type DryRunSlots,
  dryRunsBusy,
} from './requests.dry-run-slots.ts';
import { dryRunView } from './requests.outcome.ts';

export function createPreflight(ctx: RequestsContext, slots: DryRunSlots) {
  const { db, deps } = ctx;
  return {
    /**
     * Classification, findings and the policy's answer for SQL, without a request; a write that
     * could be requested is dry-run too (unless `dry_run: false`): counts and plans, rolled back,
     * nothing stored (the count approvals bind is the request's own dry run).
     */
    async preflight(
      caller: Caller,
      name: string,
      body: { sql: string; capability?: 'reader' | 'migrator' | undefined; dry_run?: boolean | undefined },
    ) {
      const database = await ctx.findDatabase(caller, name);
      const active = await deps.policyOf(db, caller.accountId);
      const { rules } = rulesFor(active.policy, name);
      const judged = judgeSql(body.sql, rules.findings);
      const refused = judged.cls === 'refused';
      const blocked = judged.findings.some((f) => f.severity === 'block');
      const cls: PolicyClass = refused ? 'destructive' : (judged.cls as PolicyClass);
      // As at creation: a read with capability migrator is decided as a write.
      const capability = body.capability ?? (cls === 'read' ? 'reader' : 'migrator');
      const d = decideFor(active.policy, { database: name, cls, capability, role: requesterRole(caller) });
      // The policy's answer (a blocking finding is reported in `findings`, not here).
      const allowed = d.allowed && !refused;
      const wantsDryRun = body.dry_run !== false && isDml(judged.cls) && allowed && !blocked;
      let dry: ReturnType<typeof dryRunView> = { dry_run: null, dry_run_error: null };
      if (wantsDryRun) {
        ctx.requireReady(database);
        if (body.capability === 'reader')
          throw new AppError(
            'query_refused',
            `A ${cls} request needs the migrator capability (reader runs reads only)`,
          );
        const release = slots.tryAcquire(database.id);
        if (!release) throw dryRunsBusy();
        try {
          dry = dryRunView(
            await deps.dispatch.preflightDryRun(
              {
                databaseId: database.id,
                database: physicalName(database),
                nodeId: database.node_id,
                accountId: caller.accountId,
              },
              body.sql,
              'migrator',
              {
                statementTimeoutMs: deps.dryRunTimeoutMs ?? DRY_RUN_TIMEOUT_MS,
                waitMs: deps.dryRunWaitMs ?? DRY_RUN_WAIT_MS,
              },
            ),
          );
        } finally {
          release();
        }
      }
      return {
        classification: judged.classification,
        findings: judged.findings,
        policy: { ...policyView(active.version, d), allowed },
        ...dry,
      };
    },
  };
}
