import { useEffect, useRef, useState } from 'react';
import { Link } from 'wouter';
import { api, call } from '../../api/client.ts';
import { CopyButton } from '../../components/copy-button.tsx';
import { ErrorNotice } from '../../components/error-notice.tsx';
import { Loading, Page } from '../../components/page.tsx';
import { TableWrap } from '../../components/table-wrap.tsx';
import { dateTime, duration } from '../../lib/format.ts';
import { useApi } from '../../lib/use-api.ts';
import { useMe } from '../../session.tsx';
import { SqlEditor } from '../databases/sql-editor.tsx';
import { RequestActions, useStanding } from './actions.tsx';
import {
  ClassBadge,
  ClassificationNotes,
  DryRunBox,
  Findings,
  PolicyBox,
  RequestStatusBadge,
  ResultGrid,
} from './parts.tsx';
import { Timeline } from './timeline.tsx';
import type { Executed, Request } from './types.ts';
import '../databases/explorer.css';
import './requests.css';

const NO_SCHEMA: Record<string, string[]> = {};
type Credentials = NonNullable<Executed['credentials']>;

/** One request: what it runs, why, what the policy asks, who approved, what happened. */
export default function RequestDetail({ name, id }: { name: string; id: string }) {
  const { account } = useMe();
  const req = useApi(
    () => call(api.GET('/v1/databases/{name}/requests/{id}', { params: { path: { name, id } } })),
    `${account}|${name}|${id}`,
  );
  const [credentials, setCredentials] = useState<Credentials | null>(null);
  const r = req.data;
  // A request on its way (executing) is followed until it settles.
  useEffect(() => {
    if (r?.status !== 'executing') return;
    const t = setTimeout(req.reload, 1500);
    return () => clearTimeout(t);
  }, [r, req.reload]);
  return (
    <Page title={`Request ${id.slice(0, 8)}`}>
      <p>
        <Link href={`/databases/${encodeURIComponent(name)}/requests`}>
          Back to <bdi>{name}</bdi>'s requests
        </Link>
      </p>
      <ErrorNotice error={req.error} title="Could not open this request" />
      {!r && req.loading ? <Loading what="the request" /> : null}
      {r ? (
        <RequestBody
          r={r}
          credentials={credentials}
          onChanged={(next) => req.setData(next)}
          onExecuted={(out) => {
            if (out.credentials) setCredentials(out.credentials);
          }}
          reload={req.reload}
        />
      ) : null}
    </Page>
  );
}

function RequestBody({
  r,
  credentials,
  onChanged,
  onExecuted,
  reload,
}: {
  r: Request;
  credentials: Credentials | null;
  onChanged: (r: Request) => void;
  onExecuted: (out: Executed) => void;
  reload: () => void;
}) {
  const { mine, approvedByMe } = useStanding(r);
  const statusRef = useRef<HTMLParagraphElement>(null);
  const first = useRef(true);
  // After an action the status line takes the focus (the button pressed may be gone).
  // biome-ignore lint/correctness/useExhaustiveDependencies: the status and its last change are the triggers
  useEffect(() => {
    if (first.current) {
      first.current = false;
      return;
    }
    statusRef.current?.focus();
  }, [r.status, r.updated_at]);
  return (
    <>
      <p className="facts" ref={statusRef} tabIndex={-1}>
        <span>
          Status: <RequestStatusBadge status={r.status} />
        </span>
        <span>
          {r.kind === 'access' ? (
            'Access request'
          ) : (
            <>
              Class: <ClassBadge cls={r.classification.class} />
            </>
          )}
        </span>
        <span>
          Database: <Link href={`/databases/${encodeURIComponent(r.database)}`}>{r.database}</Link>
        </span>
        <span>
          Requested by <bdi>{r.requester.name}</bdi>
          {r.requester.kind === 'key' ? ' (API key)' : ''}
          {mine ? ' (you)' : ''}
        </span>
        <span>Runs as {r.capability}</span>
      </p>
      {r.break_glass ? (
        <p className="notice notice-error" role="note">
          <strong>Break glass</strong> by <bdi>{r.break_glass.name}</bdi> at {dateTime(r.break_glass.at)}:{' '}
          {r.break_glass.reason}
        </p>
      ) : null}
      {credentials ? <CredentialsOnce credentials={credentials} /> : null}
      <RequestActions r={r} onChanged={onChanged} onExecuted={onExecuted} reload={reload} />
      <section aria-labelledby="what-h">
        <h2 id="what-h">{r.kind === 'access' ? 'Access' : 'SQL'}</h2>
        {r.kind === 'access' && r.access ? (
          <p>
            A temporary login with the <strong>{r.access.role}</strong> role for{' '}
            {duration(r.access.duration_s)}.
          </p>
        ) : (
          <SqlEditor
            key={r.sql_sha256 ?? ''}
            initial={r.sql ?? ''}
            schema={NO_SCHEMA}
            onRun={() => {}}
            label="Request SQL (read-only)"
            readOnly
          />
        )}
        <h3>Reason</h3>
        <p className="prewrap">{r.reason}</p>
      </section>
      {r.kind === 'sql' ? (
        <section aria-labelledby="review-h">
          <h2 id="review-h">Review</h2>
          <ClassificationNotes classification={r.classification} />
          <Findings findings={r.findings} />
          <h3>Dry run</h3>
          <DryRunBox dryRun={r.dry_run} error={r.dry_run_error} />
          {r.approved_rows !== null ? (
            <p className="small">
              Approvals bind <strong>{r.approved_rows}</strong> affected rows: an execution affecting another
              count is rolled back.
            </p>
          ) : null}
        </section>
      ) : null}
      <section aria-labelledby="policy-h">
        <h2 id="policy-h">Policy</h2>
        <PolicyBox policy={r.policy} />
      </section>
      <Approvals r={r} />
      {r.last_execution ? <LastExecution r={r} /> : null}
      {r.result_available && (mine || approvedByMe) ? <Result r={r} /> : null}
      <Timeline r={r} />
    </>
  );
}

function Approvals({ r }: { r: Request }) {
  return (
    <section aria-labelledby="approvals-h">
      <h2 id="approvals-h">Approvals</h2>
      <p>
        {r.policy.approvals_required === 0
          ? 'None needed.'
          : `${r.approvals_counted} of ${r.policy.approvals_required} counted${
              r.policy.admin_approvals_required > 0
                ? `; ${r.admin_approvals_counted} of ${r.policy.admin_approvals_required} by an owner or admin`
                : ''
            }.`}
        {r.approval_expires_at ? ` The approval expires ${dateTime(r.approval_expires_at)}.` : ''}
      </p>
      {r.approvals.length > 0 ? (
        <TableWrap label="Approvals">
          <table>
            <caption className="sr-only">Approvals</caption>
            <thead>
              <tr>
                <th scope="col">Who</th>
                <th scope="col">Role</th>
                <th scope="col">When</th>
                <th scope="col">Comment</th>
                <th scope="col">Counts</th>
              </tr>
            </thead>
            <tbody>
              {r.approvals.map((a) => (
                <tr key={a.user_id}>
                  <th scope="row">
                    <bdi>{a.name}</bdi>
                  </th>
                  <td>{a.role ?? '—'}</td>
                  <td>{dateTime(a.created_at)}</td>
                  <td className="prewrap">{a.comment ?? ''}</td>
                  <td>{a.counts ? 'Yes' : 'No (role or status changed)'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </TableWrap>
      ) : null}
      {r.rejection ? (
        <p className="notice notice-error">
          Rejected by <bdi>{r.rejection.name}</bdi> at {dateTime(r.rejection.created_at)}:{' '}
          {r.rejection.comment}
        </p>
      ) : null}
    </section>
  );
}

function LastExecution({ r }: { r: Request }) {
  const e = r.last_execution;
  if (!e) return null;
  return (
    <section aria-labelledby="exec-h">
      <h2 id="exec-h">Execution</h2>
      <p>
        {e.status === 'executed' ? 'Executed' : e.status === 'failed' ? 'Failed' : 'Refused by the node'} at{' '}
        {dateTime(e.at)}
        {e.affected_rows !== null
          ? `: ${e.affected_rows} ${e.affected_rows === 1 ? 'row' : 'rows'} affected`
          : ''}
        . Executions: {r.executions.count} of {r.executions.max}.
      </p>
      {e.mismatch ? (
        <p className="notice notice-error">
          Rolled back: it would have affected {e.mismatch.affected_rows} rows, but {e.mismatch.approved_rows}{' '}
          were approved.
        </p>
      ) : null}
      {e.error ? (
        <p className="notice notice-error">
          {e.error.message} <span className="muted">(SQLSTATE {e.error.sqlstate})</span>
        </p>
      ) : null}
    </section>
  );
}

function Result({ r }: { r: Request }) {
  const result = useApi(
    () =>
      call(
        api.GET('/v1/databases/{name}/requests/{id}/result', {
          params: { path: { name: r.database, id: r.id } },
        }),
      ),
    `${r.id}|${r.last_execution?.at ?? ''}`,
  );
  return (
    <section aria-labelledby="result-h">
      <h2 id="result-h">Result</h2>
      <ErrorNotice error={result.error} title="Could not load the result" />
      {!result.data && result.loading ? <Loading what="the result" /> : null}
      {result.data ? <ResultGrid result={result.data} /> : null}
    </section>
  );
}

/** An access request's login, shown once, right after execute. */
function CredentialsOnce({ credentials }: { credentials: Credentials }) {
  return (
    <section className="card credentials" aria-labelledby="cred-h">
      <h2 id="cred-h">Your temporary login</h2>
      <p className="notice notice-error" role="alert">
        Copy it now: <strong>you will not see this again</strong>. It stops working{' '}
        {dateTime(credentials.valid_until)}.
      </p>
      <div className="field-row">
        <label className="grow">
          <span>Login</span>
          <input readOnly className="mono" value={credentials.login} onFocus={(e) => e.target.select()} />
        </label>
        <CopyButton text={credentials.login} label="Copy login" />
      </div>
      <div className="field-row">
        <label className="grow">
          <span>Password</span>
          <input readOnly className="mono" value={credentials.password} onFocus={(e) => e.target.select()} />
        </label>
        <CopyButton text={credentials.password} label="Copy password" />
      </div>
      <div className="field-row">
        <label className="grow">
          <span>Connection string</span>
          <input
            readOnly
            className="mono"
            value={credentials.connection_string}
            onFocus={(e) => e.target.select()}
          />
        </label>
        <CopyButton text={credentials.connection_string} label="Copy connection string" />
      </div>
    </section>
  );
}
