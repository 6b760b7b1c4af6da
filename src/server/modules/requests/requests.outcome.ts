/**
 * What a delivery's outcome does to its request (issue 14), in one transaction with the audit
 * event. The same function settles an outcome that came down the channel and one that completed a
 * `request.execute` job (the job hook, inside the job's transaction), so both paths agree; the
 * delivery row is locked first and settled once.
 */
import { type ExecutionOutcome, ROW_COUNT_MISMATCH_SQLSTATE } from '../../../shared/contracts/execution.ts';
import type { Queryable } from '../../db/pool.ts';
import type { AuditService } from '../audit/audit.service.ts';
import * as deliveries from './requests.deliveries.repo.ts';
import * as repo from './requests.repo.ts';
import type { ResultStore } from './requests.results.ts';

/** How a delivery ended: the agent's outcome, or none (sent and unanswered / never taken). */
export type Settlement =
  | ExecutionOutcome
  | { kind: 'unknown'; why: string }
  | { kind: 'not_taken'; why: string };

/** SQLSTATE shown for a node that gave no answer (PostgreSQL's "system error" class). */
export const NO_ANSWER_SQLSTATE = '58000';
/** SQLSTATE shown for an agent refusal (nothing ran): insufficient_privilege. */
export const REFUSED_SQLSTATE = '42501';

/** A dry run's outcome as a request shows it: the counts and plans, or the error. */
export function dryRunView(s: Settlement): {
  dry_run: {
    affected_rows: number;
    statements: { command: string; row_count: number | null; plan: string | null }[];
    ran_at: string;
  } | null;
  dry_run_error: { sqlstate: string; message: string } | null;
} {
  if (s.kind === 'executed')
    return {
      dry_run: {
        affected_rows: s.affected_rows,
        statements: s.statements.map((st) => ({
          command: st.command,
          row_count: st.row_count,
          plan: st.plan,
        })),
        ran_at: new Date().toISOString(),
      },
      dry_run_error: null,
    };
  const error =
    s.kind === 'failed'
      ? { sqlstate: s.error.sqlstate, message: s.error.message }
      : s.kind === 'refused'
        ? {
            sqlstate: REFUSED_SQLSTATE,
            message: `the node refused the dry run (${s.refusal.reason}): ${s.refusal.message}`.slice(
              0,
              2000,
            ),
          }
        : {
            sqlstate: NO_ANSWER_SQLSTATE,
            message: `no dry-run outcome from the node: ${s.why}`.slice(0, 2000),
          };
  return { dry_run: null, dry_run_error: error };
}

export function createOutcomeApplier(deps: {
  audit: Pick<AuditService, 'record'>;
  results: Pick<ResultStore, 'put'>;
}) {
  const event = (
    row: repo.RequestRow,
    exec: deliveries.ExecutionRow,
    action: string,
    outcome: 'success' | 'failure' | 'denied',
    details: Record<string, unknown>,
  ) => ({
    action,
    outcome,
    actorType: exec.actor_key_id
      ? ('key' as const)
      : exec.actor_user_id
        ? ('user' as const)
        : ('system' as const),
    actorId: exec.actor_key_id ?? exec.actor_user_id,
    accountId: row.account_id,
    targetType: 'request',
    targetId: row.id,
    details: { database: row.database, mode: exec.mode, ...details },
  });

  const settleDryRun = async (
    tx: Queryable,
    row: repo.RequestRow,
    exec: deliveries.ExecutionRow,
    s: Settlement,
  ) => {
    const view = dryRunView(s);
    if (s.kind === 'executed' && view.dry_run) {
      const changed = row.approved_rows !== null && Number(row.approved_rows) !== s.affected_rows;
      if (changed) await repo.deleteApprovals(tx, row.id);
      const openNow =
        row.status === 'pending' &&
        row.policy.approvals_required === 0 &&
        row.policy.admin_approvals_required === 0;
      await repo.patchRequest(tx, row.id, {
        dry_run: view.dry_run,
        dry_run_error: null,
        approved_rows: s.affected_rows,
        ...(openNow
          ? { status: 'approved', approval_expires_at: { inSeconds: row.approval_lifetime_s } }
          : {}),
      });
      await deps.audit.record(
        tx,
        event(row, exec, 'request.dry_run', 'success', {
          affected_rows: s.affected_rows,
          approvals_cleared: changed,
        }),
      );
      return;
    }
    const error = view.dry_run_error!;
    await repo.patchRequest(tx, row.id, { dry_run: null, dry_run_error: error, approved_rows: null });
    await deps.audit.record(
      tx,
      event(row, exec, 'request.dry_run', s.kind === 'refused' ? 'denied' : 'failure', {
        sqlstate: error.sqlstate,
        ...(s.kind === 'refused' ? { reason: s.refusal.reason } : {}),
      }),
    );
  };

  const settleExecution = async (
    tx: Queryable,
    row: repo.RequestRow,
    exec: deliveries.ExecutionRow,
    s: Settlement,
  ) => {
    const at = new Date().toISOString();
    const sql = row.sql ?? undefined;
    if (s.kind === 'not_taken') {
      // Nothing ran: the request is as it was, the execution not spent.
      await repo.patchRequest(tx, row.id, {
        status: exec.prior_status,
        executions: Math.max(0, row.executions - 1),
      });
      await deps.audit.record(
        tx,
        event(row, exec, 'request.failed', 'failure', { sql, reason: 'not_taken', why: s.why }),
      );
      return;
    }
    if (s.kind === 'executed') {
      const more = row.executions < row.max_executions && row.break_glass === null;
      const result = s.result;
      const expires = await deps.results.put(
        tx,
        row.id,
        {
          columns: result?.columns ?? [],
          rows: result?.rows ?? [],
          row_count: result?.row_count ?? 0,
          truncated: result?.truncated ?? false,
          statements: s.statements.map((st) => ({
            command: st.command,
            row_count: st.row_count,
            plan: null,
          })),
          affected_rows: s.affected_rows,
        },
        new Date(),
      );
      await repo.patchRequest(tx, row.id, {
        status: more ? 'approved' : 'executed',
        last_execution: {
          status: 'executed',
          affected_rows: s.affected_rows,
          error: null,
          mismatch: null,
          at,
        },
      });
      await deps.audit.record(
        tx,
        event(row, exec, 'request.executed', 'success', {
          sql,
          affected_rows: s.affected_rows,
          duration_ms: Math.round(s.duration_ms),
          result_expires_at: expires.toISOString(),
        }),
      );
      return;
    }
    if (s.kind === 'refused') {
      const error = {
        sqlstate: REFUSED_SQLSTATE,
        message: `the node refused to run it (${s.refusal.reason}): ${s.refusal.message}`.slice(0, 2000),
      };
      await repo.patchRequest(tx, row.id, {
        status: 'failed',
        last_execution: { status: 'refused', affected_rows: null, error, mismatch: null, at },
      });
      await deps.audit.record(
        tx,
        event(row, exec, 'request.refused', 'denied', {
          sql,
          reason: s.refusal.reason,
          message: s.refusal.message,
        }),
      );
      return;
    }
    const error =
      s.kind === 'failed'
        ? { sqlstate: s.error.sqlstate, message: s.error.message }
        : {
            sqlstate: NO_ANSWER_SQLSTATE,
            message: `no outcome from the node (${s.why}); it may have run: check the database`,
          };
    const mismatch = s.kind === 'failed' ? s.mismatch : null;
    await repo.patchRequest(tx, row.id, {
      status: 'failed',
      last_execution: { status: 'failed', affected_rows: null, error, mismatch, at },
    });
    await deps.audit.record(
      tx,
      event(row, exec, 'request.failed', 'failure', {
        sql,
        sqlstate: error.sqlstate,
        ...(mismatch ? { mismatch } : {}),
        ...(s.kind === 'failed' && error.sqlstate === ROW_COUNT_MISMATCH_SQLSTATE
          ? { reason: 'row_count_mismatch' }
          : {}),
        ...(s.kind === 'unknown' ? { reason: 'no_outcome' } : {}),
      }),
    );
  };

  return {
    /**
     * Settles one running delivery (locked here); false when it was settled already (the other
     * path won) — then nothing changes.
     */
    async apply(
      tx: Queryable,
      where: { id: string } | { jobId: number },
      s: Settlement,
    ): Promise<deliveries.ExecutionRow | null> {
      const exec = await deliveries.lockRunningExecution(tx, where);
      if (!exec) return null;
      const status = s.kind === 'executed' ? 'executed' : s.kind === 'refused' ? 'refused' : 'failed';
      // Rows never go to the delivery row: counts, errors and the refusal only.
      const kept =
        s.kind === 'executed'
          ? { ...s, result: null, statements: s.statements.map((st) => ({ ...st, plan: null })) }
          : s;
      await deliveries.finishExecution(tx, exec.id, status, kept);
      const row = await findLocked(tx, exec.request_id);
      if (!row) return exec;
      if (exec.mode === 'dry_run') {
        // A dry run of text edited since settles nothing on the request.
        if (row.sql_sha256 === exec.sql_sha256) await settleDryRun(tx, row, exec, s);
      } else if (row.status === 'executing') {
        await settleExecution(tx, row, exec, s);
      }
      return exec;
    },
  };
}

async function findLocked(tx: Queryable, id: string): Promise<repo.RequestRow | null> {
  const r = await tx.query<{ account_id: string }>('SELECT account_id FROM governed_requests WHERE id = $1', [
    id,
  ]);
  const accountId = r.rows[0]?.account_id;
  return accountId ? repo.findRequest(tx, { accountId, id }, { forUpdate: true }) : null;
}

export type OutcomeApplier = ReturnType<typeof createOutcomeApplier>;
