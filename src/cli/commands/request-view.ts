/**
 * Governed requests in the terminal: the Request object of the API (its fields as `bulwark request`
 * reads them), the human text of one request, and the exit code its status means.
 *
 * Exit codes of `bulwark request`: 0 done (approved, executed; or the action was taken) · 2 still
 * pending (or executing) · 3 rejected, cancelled, expired or failed · 1 any other error, bad usage
 * included (never 2, so that 2 always means "pending") · 5 not authenticated or not allowed ·
 * 6 not found.
 */
import { terminalSafe } from '../output.ts';
import {
  approvalsText,
  type Classification,
  classLine,
  type Finding,
  findingLines,
  type PolicyDecision,
} from './policy-explain.ts';

export const REQUEST_EXIT = { done: 0, error: 1, pending: 2, closed: 3 } as const;

export const REQUEST_EXIT_HELP =
  'exit codes: 0 approved/executed (or the action was taken) · 2 pending · 3 rejected, cancelled, expired or failed · ' +
  '1 other errors (bad usage included) · 5 not authenticated or not allowed · 6 not found';

export const STATUSES = [
  'pending',
  'approved',
  'rejected',
  'cancelled',
  'expired',
  'executing',
  'executed',
  'failed',
] as const;
export type Status = (typeof STATUSES)[number];

export type Request = {
  id: string;
  database: string;
  status: Status;
  kind: 'sql' | 'access';
  sql: string | null;
  sql_sha256: string | null;
  reason: string;
  capability: 'reader' | 'migrator';
  access: { role: 'reader' | 'migrator'; duration_s: number } | null;
  classification: Classification;
  findings: Finding[];
  requester: { kind: 'user' | 'key'; id: string | null; name: string };
  policy: PolicyDecision;
  approvals: {
    user_id: string;
    name: string;
    role: string | null;
    comment: string | null;
    created_at: string;
    counts: boolean;
  }[];
  rejection: { user_id: string; name: string; comment: string; created_at: string } | null;
  approvals_counted: number;
  admin_approvals_counted: number;
  dry_run: { affected_rows: number; ran_at: string } | null;
  dry_run_error: { sqlstate: string; message: string } | null;
  approved_rows: number | null;
  executions: { count: number; max: number };
  break_glass: { user_id: string; name: string; reason: string; at: string } | null;
  last_execution: {
    status: 'executed' | 'failed' | 'refused';
    affected_rows: number | null;
    error: { sqlstate: string; message: string } | null;
    mismatch: { approved_rows: number; affected_rows: number } | null;
    at: string;
  } | null;
  result_available: boolean;
  result_expires_at: string | null;
  expires_at: string;
  approval_expires_at: string | null;
  created_at: string;
  updated_at: string;
  credentials?: { login: string; password: string; connection_string: string; valid_until: string };
};

/** What a status means for a script waiting on the request. */
export function exitCodeOf(status: Status): number {
  switch (status) {
    case 'approved':
    case 'executed':
      return REQUEST_EXIT.done;
    case 'pending':
    case 'executing':
      return REQUEST_EXIT.pending;
    default:
      return REQUEST_EXIT.closed;
  }
}

const t = terminalSafe;
export const when = (s: string | null) => (s ? s.slice(0, 19).replace('T', ' ') : '-');

function duration(s: number): string {
  if (s % 86_400 === 0) return `${s / 86_400}d`;
  if (s % 3600 === 0) return `${s / 3600}h`;
  if (s % 60 === 0) return `${s / 60}m`;
  return `${s}s`;
}

/** One line of a list: the columns of `bulwark request list`. */
export function listRow(r: Request) {
  return {
    id: r.id,
    database: r.database,
    status: r.status,
    what:
      r.kind === 'access' && r.access
        ? `access ${r.access.role} ${duration(r.access.duration_s)}`
        : r.classification.class,
    approvals: `${r.approvals_counted}/${r.policy.approvals_required}`,
    requester: t(r.requester.name),
    reason: t(r.reason.length > 40 ? `${r.reason.slice(0, 39)}…` : r.reason),
    created: when(r.created_at),
  };
}

export const LIST_COLUMNS = [
  { key: 'id', title: 'id' },
  { key: 'database', title: 'database' },
  { key: 'status', title: 'status' },
  { key: 'what', title: 'what' },
  { key: 'approvals', title: 'approvals' },
  { key: 'requester', title: 'requester' },
  { key: 'reason', title: 'reason' },
  { key: 'created', title: 'created' },
];

/** The human text of one request (`bulwark request show`). */
export function requestText(r: Request): string {
  const lines = [`request ${r.id} on ${t(r.database)}: ${r.status.toUpperCase()}`];
  lines.push(
    r.kind === 'access' && r.access
      ? `  what:       ${r.access.role} access for ${duration(r.access.duration_s)}`
      : `  what:       ${classLine(r.classification)} as ${r.capability}`,
    `  reason:     ${t(r.reason)}`,
    `  requester:  ${t(r.requester.name)} (${r.requester.kind})`,
    `  policy:     ${r.policy.version === 0 ? 'built-in rules' : `version ${r.policy.version}`} · ${t(r.policy.rule)}`,
    `              ${t(r.policy.why)}`,
    `  approvals:  ${r.approvals_counted} of ${r.policy.approvals_required}` +
      (r.policy.admin_approvals_required > 0
        ? ` (${r.admin_approvals_counted} of ${r.policy.admin_approvals_required} by an owner or admin)`
        : '') +
      ` — needs ${approvalsText(r.policy)}`,
  );
  for (const a of r.approvals)
    lines.push(
      `    ${a.counts ? '✓' : '·'} ${t(a.name)}${a.role ? ` (${a.role})` : ''} ${when(a.created_at)}${
        a.comment ? `: ${t(a.comment)}` : ''
      }${a.counts ? '' : ' [does not count]'}`,
    );
  if (r.rejection)
    lines.push(
      `  rejected:   by ${t(r.rejection.name)} ${when(r.rejection.created_at)}: ${t(r.rejection.comment)}`,
    );
  if (r.classification.parse_error) lines.push(`  parse error: ${t(r.classification.parse_error.message)}`);
  if (r.findings.length > 0) lines.push('  findings:', ...findingLines(r.findings).map((l) => `  ${l}`));
  if (r.dry_run)
    lines.push(`  dry run:    ${r.dry_run.affected_rows} row(s) affected (${when(r.dry_run.ran_at)})`);
  if (r.dry_run_error)
    lines.push(`  dry run:    failed: ${t(r.dry_run_error.sqlstate)} ${t(r.dry_run_error.message)}`);
  if (r.break_glass)
    lines.push(
      `  BREAK GLASS by ${t(r.break_glass.name)} ${when(r.break_glass.at)}: ${t(r.break_glass.reason)}`,
    );
  lines.push(`  executions: ${r.executions.count} of ${r.executions.max}`);
  const last = r.last_execution;
  if (last) {
    const detail = last.mismatch
      ? `: ${last.mismatch.affected_rows} rows instead of the approved ${last.mismatch.approved_rows}; rolled back`
      : last.error
        ? `: ${t(last.error.sqlstate)} ${t(last.error.message)}`
        : last.affected_rows !== null
          ? `: ${last.affected_rows} row(s) affected`
          : '';
    lines.push(`  last run:   ${last.status} ${when(last.at)}${detail}`);
  }
  if (r.result_available)
    lines.push(`  result:     available until ${when(r.result_expires_at)} (bulwark request result)`);
  if (r.status === 'pending') lines.push(`  expires:    ${when(r.expires_at)}`);
  if (r.status === 'approved' && r.approval_expires_at)
    lines.push(`  run before: ${when(r.approval_expires_at)}`);
  if (r.sql !== null) lines.push('  sql:', ...r.sql.split('\n').map((l) => `    ${t(l)}`));
  return lines.join('\n');
}
