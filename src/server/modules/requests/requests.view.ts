/**
 * A stored request as the API shows it, and the approval count rules (issue 14): an approval
 * counts while its approver is an active member of the account, never the requester's own (nor
 * that of the person behind the requesting API key); an
 * admin approval is one whose approver is an owner or admin NOW (roles and suspensions are read
 * at the time of asking, so a suspended or demoted approver stops counting at once).
 */
import type { ApprovalRow, RequestRow } from './requests.repo.ts';
import type { ClassificationView, FindingView, RequestView } from './requests.schemas.ts';

export type ApprovalCount = {
  counted: number;
  adminCounted: number;
  /** Enough approvals (and admin approvals) for the request's policy. */
  enough: boolean;
};

const ADMIN_ROLES = new Set(['owner', 'admin']);

export function approvalCounts(
  row: Pick<RequestRow, 'policy' | 'requester_user_id' | 'requester_person_id'>,
  approvals: ApprovalRow[],
): ApprovalCount & { counts: Map<string, boolean> } {
  const counts = new Map<string, boolean>();
  let counted = 0;
  let adminCounted = 0;
  for (const a of approvals) {
    const ok =
      a.active &&
      a.role !== null &&
      a.role !== 'viewer' && // demoted to read-only since approving: no longer an approver
      a.user_id !== row.requester_user_id &&
      a.user_id !== row.requester_person_id;
    counts.set(a.user_id, ok);
    if (!ok) continue;
    counted++;
    if (a.role !== null && ADMIN_ROLES.has(a.role)) adminCounted++;
  }
  const enough =
    counted >= row.policy.approvals_required && adminCounted >= row.policy.admin_approvals_required;
  return { counted, adminCounted, enough, counts };
}

const iso = (d: Date | string | null): string | null =>
  d === null ? null : (d instanceof Date ? d : new Date(d)).toISOString();

export function toView(
  row: RequestRow,
  approvals: ApprovalRow[],
  opts: { resultInMemory?: Date | null } = {},
): RequestView {
  const mine = approvals.filter((a) => a.request_id === row.id);
  const { counted, adminCounted, counts } = approvalCounts(row, mine);
  const resultExpires = row.result_expires_at ?? opts.resultInMemory ?? null;
  return {
    id: row.id,
    database: row.database,
    status: row.status,
    kind: row.kind,
    sql: row.sql,
    sql_sha256: row.sql_sha256,
    reason: row.reason,
    capability: row.capability,
    access:
      row.access_role !== null && row.access_duration_s !== null
        ? { role: row.access_role, duration_s: row.access_duration_s }
        : null,
    classification: row.classification as ClassificationView,
    findings: row.findings as FindingView[],
    requester: {
      kind: row.requester_key_id !== null ? 'key' : 'user',
      id: row.requester_key_id ?? row.requester_user_id,
      name: row.requester_name,
    },
    policy: row.policy,
    approvals: mine.map((a) => ({
      user_id: a.user_id,
      name: a.name,
      role: a.role,
      comment: a.comment,
      created_at: a.created_at.toISOString(),
      counts: counts.get(a.user_id) ?? false,
    })),
    rejection: row.rejection,
    approvals_counted: counted,
    admin_approvals_counted: adminCounted,
    dry_run: row.dry_run as RequestView['dry_run'],
    dry_run_error: row.dry_run_error,
    approved_rows: row.approved_rows === null ? null : Number(row.approved_rows),
    executions: { count: row.executions, max: row.max_executions },
    break_glass: row.break_glass,
    last_execution: row.last_execution as RequestView['last_execution'],
    result_available: resultExpires !== null,
    result_expires_at: iso(resultExpires),
    expires_at: row.expires_at.toISOString(),
    approval_expires_at: iso(row.approval_expires_at),
    created_at: row.created_at.toISOString(),
    updated_at: row.updated_at.toISOString(),
  };
}
