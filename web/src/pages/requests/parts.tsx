/** Pieces the request pages share: status and class badges, findings, the policy's decision, the dry run. */
import { RowsTable } from '../../components/rows-table.tsx';
import { dateTime } from '../../lib/format.ts';
import { planText } from './plan-text.ts';
import type { DryRun, Finding, Request, RequestResult, RequestStatus } from './types.ts';

const STATUS_LABELS: Record<RequestStatus, string> = {
  pending: 'Pending',
  approved: 'Approved',
  rejected: 'Rejected',
  cancelled: 'Cancelled',
  expired: 'Expired',
  executing: 'Executing',
  executed: 'Executed',
  failed: 'Failed',
};

/** A request's status as a word (never colour alone). */
export function RequestStatusBadge({ status }: { status: RequestStatus }) {
  return <span className={`badge req-${status}`}>{STATUS_LABELS[status] ?? status}</span>;
}

const CLASS_HELP: Record<Request['classification']['class'], string> = {
  read: 'reads only',
  write: 'changes rows',
  ddl: 'changes the schema',
  destructive: 'drops or truncates',
  refused: 'refused: cannot run',
};

/** The SQL's class (read, write, ddl, destructive, refused), with what it means. */
export function ClassBadge({ cls }: { cls: Request['classification']['class'] }) {
  return (
    <span className={`badge class-${cls}`} title={CLASS_HELP[cls]}>
      {cls}
      <span className="sr-only"> ({CLASS_HELP[cls]})</span>
    </span>
  );
}

/** The review's findings: a block stops the request, a warn is for the approvers to weigh. */
export function Findings({ findings }: { findings: Finding[] }) {
  if (findings.length === 0) return <p className="muted">No review findings.</p>;
  return (
    <ul className="findings" aria-label="Review findings">
      {findings.map((f, i) => (
        // biome-ignore lint/suspicious/noArrayIndexKey: a finding code may repeat across statements
        <li key={i} className={`finding finding-${f.severity}`}>
          <span className={`badge sev-${f.severity}`}>{f.severity === 'block' ? 'Blocks' : 'Warning'}</span>{' '}
          <code>{f.code}</code> <span>{f.message}</span>
          <span className="muted small"> (statement {f.statement_index + 1})</span>
        </li>
      ))}
    </ul>
  );
}

/** The classification's parse error and reasons, when there are any. */
export function ClassificationNotes({ classification }: { classification: Request['classification'] }) {
  const { parse_error, reasons } = classification;
  if (!parse_error && reasons.length === 0) return null;
  return (
    <div className="class-notes">
      {parse_error ? (
        <p>
          The SQL does not parse: {parse_error.message}
          {parse_error.position !== null ? ` (at character ${parse_error.position + 1})` : ''}
        </p>
      ) : null}
      {reasons.length > 0 ? (
        <ul aria-label="Why this class">
          {reasons.map((r, i) => (
            // biome-ignore lint/suspicious/noArrayIndexKey: reasons are positional
            <li key={i}>{r}</li>
          ))}
        </ul>
      ) : null}
    </div>
  );
}

type PolicyView = Request['policy'] & { allowed?: boolean };

function approvalsText(p: PolicyView): string {
  if (p.approvals_required === 0) return 'Runs without approval';
  const n = `${p.approvals_required} approval${p.approvals_required === 1 ? '' : 's'}`;
  return p.admin_approvals_required > 0 ? `${n}, ${p.admin_approvals_required} by an owner or admin` : n;
}

/** Which policy rule decides, why, and how many approvals it needs. */
export function PolicyBox({ policy }: { policy: PolicyView }) {
  return (
    <dl className="kv policy-box">
      <dt>Needs</dt>
      <dd>
        <strong>{approvalsText(policy)}</strong>
        {policy.allowed === false ? <span className="bad"> — you may not make this request</span> : null}
      </dd>
      <dt>Rule</dt>
      <dd>
        <code>{policy.rule}</code> (policy version {policy.version}
        {policy.environment ? `, environment ${policy.environment}` : ''})
      </dd>
      <dt>Why</dt>
      <dd>{policy.why}</dd>
    </dl>
  );
}

/** The dry run: rows it would affect, each statement's count and its EXPLAIN plan (collapsed). */
export function DryRunBox({
  dryRun,
  error,
}: {
  dryRun: DryRun | null;
  error: { sqlstate: string; message: string } | null;
}) {
  // 0A000 (feature not supported): no dry run here (a preflight leaves it to the request it creates).
  if (error?.sqlstate === '0A000') return <p className="notice">No dry run yet: {error.message}.</p>;
  if (error)
    return (
      <p className="notice notice-error">
        The dry run failed: {error.message} <span className="muted">(SQLSTATE {error.sqlstate})</span>
      </p>
    );
  if (!dryRun) return <p className="muted">No dry run (reads and schema changes are not dry-run).</p>;
  return (
    <div className="dry-run">
      <p role="status">
        Dry run: <strong>{dryRun.affected_rows}</strong> {dryRun.affected_rows === 1 ? 'row' : 'rows'} would
        be affected <span className="muted small">(ran {dateTime(dryRun.ran_at)}, rolled back)</span>
      </p>
      {dryRun.statements.map((s, i) => (
        // biome-ignore lint/suspicious/noArrayIndexKey: statements are positional
        <details key={i} className="plan">
          <summary>
            Statement {i + 1}: {s.command}
            {s.row_count !== null ? `, ${s.row_count} ${s.row_count === 1 ? 'row' : 'rows'}` : ''} — plan
          </summary>
          <pre>{s.plan ? planText(s.plan) : 'No plan recorded.'}</pre>
        </details>
      ))}
    </div>
  );
}

/** An execution's rows, in the explorer's grid, with how long the server keeps them. */
export function ResultGrid({ result }: { result: RequestResult }) {
  return (
    <div className="results">
      <p role="status">
        {result.affected_rows} {result.affected_rows === 1 ? 'row' : 'rows'} affected; {result.row_count}{' '}
        {result.row_count === 1 ? 'row' : 'rows'} returned
        {result.truncated ? ' (truncated)' : ''}. Executed {dateTime(result.executed_at)}; kept until{' '}
        {dateTime(result.expires_at)}.
      </p>
      {result.columns.length > 0 ? (
        <RowsTable label="Execution results" columns={result.columns} rows={result.rows} />
      ) : null}
    </div>
  );
}
