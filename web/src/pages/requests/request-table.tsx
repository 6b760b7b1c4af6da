import { Link } from 'wouter';
import { TableWrap } from '../../components/table-wrap.tsx';
import { ago, dateTime } from '../../lib/format.ts';
import { useMe } from '../../session.tsx';
import { ClassBadge, RequestStatusBadge } from './parts.tsx';
import { REQUEST_STATUSES, type Request, type RequestStatus, requestHref } from './types.ts';

/** A request in one line: its SQL's first line, or the access it asks for. */
export function requestSummary(r: Request): string {
  if (r.kind === 'access' && r.access)
    return `Access as ${r.access.role} for ${Math.round(r.access.duration_s / 60)} min`;
  const first = (r.sql ?? '').trim().split('\n')[0] ?? '';
  return first.length > 80 ? `${first.slice(0, 79)}…` : first || '(empty)';
}

/** Approvals given (that count) over those the policy asks for. */
export function approvalsLine(r: Request): string {
  const { approvals_required, admin_approvals_required } = r.policy;
  if (approvals_required === 0) return 'none needed';
  const admins =
    admin_approvals_required > 0 ? ` (${r.admin_approvals_counted}/${admin_approvals_required} admin)` : '';
  return `${r.approvals_counted}/${approvals_required}${admins}`;
}

/** A list of requests; `showDatabase` for the account-wide lists. */
export function RequestTable({
  label,
  items,
  showDatabase,
}: {
  label: string;
  items: Request[];
  showDatabase?: boolean;
}) {
  const { me } = useMe();
  return (
    <TableWrap label={label}>
      <table>
        <caption className="sr-only">{label}</caption>
        <thead>
          <tr>
            <th scope="col">Request</th>
            {showDatabase ? <th scope="col">Database</th> : null}
            <th scope="col">Class</th>
            <th scope="col">Status</th>
            <th scope="col">Requester</th>
            <th scope="col">Approvals</th>
            <th scope="col">Created</th>
          </tr>
        </thead>
        <tbody>
          {items.map((r) => (
            <tr key={r.id}>
              <th scope="row">
                <Link href={requestHref(r)} className="mono req-link">
                  {requestSummary(r)}
                </Link>
                <div className="muted small">
                  {r.reason.length > 100 ? `${r.reason.slice(0, 99)}…` : r.reason}
                </div>
              </th>
              {showDatabase ? <td>{r.database}</td> : null}
              <td>
                {r.kind === 'access' ? (
                  <span className="badge">access</span>
                ) : (
                  <ClassBadge cls={r.classification.class} />
                )}
              </td>
              <td>
                <RequestStatusBadge status={r.status} />
                {r.break_glass ? <span className="badge sev-block">Break glass</span> : null}
              </td>
              <td>
                <bdi>{r.requester.name}</bdi>
                {r.requester.kind === 'key' ? <span className="muted small"> (key)</span> : null}
                {r.requester.kind === 'user' && r.requester.id === me.user.id ? (
                  <span className="muted small"> (you)</span>
                ) : null}
              </td>
              <td>{approvalsLine(r)}</td>
              <td title={dateTime(r.created_at)}>{ago(r.created_at)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </TableWrap>
  );
}

/** The status filter of a request list ('' = every status). */
export function StatusFilter({
  value,
  onChange,
}: {
  value: RequestStatus | '';
  onChange: (s: RequestStatus | '') => void;
}) {
  return (
    <label className="inline">
      <span>Status</span>
      <select value={value} onChange={(e) => onChange(e.target.value as RequestStatus | '')}>
        <option value="">Any</option>
        {REQUEST_STATUSES.map((s) => (
          <option key={s} value={s}>
            {s}
          </option>
        ))}
      </select>
    </label>
  );
}
