import { api, call } from '../../api/client.ts';
import { ErrorNotice } from '../../components/error-notice.tsx';
import { Loading, Page } from '../../components/page.tsx';
import { TableWrap } from '../../components/table-wrap.tsx';
import { dateTime, duration } from '../../lib/format.ts';
import { useApi } from '../../lib/use-api.ts';
import { useMe } from '../../session.tsx';
import { CLASSES, effectiveRules, type Rules } from './policy-rules.ts';
import './requests.css';

function approvals(n: number, admins: number): string {
  if (n === 0) return 'none (runs at once)';
  return admins > 0 ? `${n} (${admins} owner/admin)` : String(n);
}

function RulesTable({ scope, rules }: { scope: string; rules: Rules }) {
  const label = `Rules: ${scope}`;
  const findings = Object.entries(rules.findings);
  return (
    <section aria-label={label} className="card">
      <h3>
        <code>{scope}</code>
      </h3>
      <TableWrap label={label}>
        <table>
          <caption className="sr-only">{label}</caption>
          <thead>
            <tr>
              <th scope="col">Class</th>
              <th scope="col">Who may ask</th>
              <th scope="col">Approvals</th>
            </tr>
          </thead>
          <tbody>
            {CLASSES.map((c) => (
              <tr key={c}>
                <th scope="row">{c}</th>
                <td>{rules.classes[c].requesters.join(', ') || 'nobody'}</td>
                <td>{approvals(rules.classes[c].approvals, rules.classes[c].admin_approvals)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </TableWrap>
      <p className="small">
        Requests live {duration(rules.request_lifetime_s)}; approvals {duration(rules.approval_lifetime_s)};{' '}
        {rules.max_executions} {rules.max_executions === 1 ? 'execution' : 'executions'} each; access at most{' '}
        {duration(rules.max_access_s)}; break glass: {rules.break_glass.join(', ') || 'nobody'}.
        {findings.length > 0 ? ` Findings: ${findings.map(([c, s]) => `${c} ${s}`).join(', ')}.` : ''}
      </p>
    </section>
  );
}

/** The account's governance policy: read-only here; it is applied as code. */
export default function PolicyPage() {
  const { account, role } = useMe();
  const policy = useApi(() => call(api.GET('/v1/policy')), `${account}`);
  const p = policy.data;
  const admin = role === 'owner' || role === 'admin';
  return (
    <Page title="Policy">
      <p className="muted">
        Who may request what, and how many approvals each class of request needs.
        {admin ? (
          <>
            {' '}
            To change it, edit the YAML file and apply it with <code>bulwark policy apply</code> (each apply
            is a new version, audited).
          </>
        ) : (
          ' Owners and admins change it.'
        )}
      </p>
      <ErrorNotice error={policy.error} title="Could not read the policy" />
      {!p && policy.loading ? <Loading what="the policy" /> : null}
      {p ? (
        <>
          <dl className="kv">
            <dt>Version</dt>
            <dd>{p.version === 0 ? '0 (none applied: the built-in rules decide)' : p.version}</dd>
            <dt>Applied</dt>
            <dd>
              {p.applied_at ? dateTime(p.applied_at) : '—'}
              {p.applied_by ? (
                <>
                  {' '}
                  by <bdi>{p.applied_by.name}</bdi>
                  {p.applied_by.kind === 'key' ? ' (API key)' : ''}
                </>
              ) : null}
            </dd>
            {p.source_sha256 ? (
              <>
                <dt>SHA-256</dt>
                <dd className="mono small">{p.source_sha256}</dd>
              </>
            ) : null}
          </dl>
          <h2>Effective rules</h2>
          {effectiveRules(p.policy).map((x) => (
            <RulesTable key={x.scope} scope={x.scope} rules={x.rules} />
          ))}
          <h2>Source</h2>
          {p.source ? (
            <TableWrap label="Policy source">
              <pre className="policy-source">
                <code>{p.source}</code>
              </pre>
            </TableWrap>
          ) : (
            <p className="muted">
              No policy file has been applied{p.version > 0 ? ' (or it is not shown to you)' : ''}.
            </p>
          )}
        </>
      ) : null}
    </Page>
  );
}
