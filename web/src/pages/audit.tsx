import { type FormEvent, useState } from 'react';
import { api, call, download } from '../api/client.ts';
import { ErrorNotice } from '../components/error-notice.tsx';
import { Empty, Loading, Page } from '../components/page.tsx';
import { Pager, useCursorPages } from '../components/pager.tsx';
import { StatusBadge } from '../components/status-badge.tsx';
import { TableWrap } from '../components/table-wrap.tsx';
import { dateTime } from '../lib/format.ts';
import { useAction, useApi } from '../lib/use-api.ts';
import { useMe } from '../session.tsx';

type Outcome = '' | 'success' | 'failure' | 'denied';
type Filters = {
  actor: string;
  action: string;
  target: string;
  outcome: Outcome;
  since: string;
  until: string;
};
const NONE: Filters = { actor: '', action: '', target: '', outcome: '', since: '', until: '' };

/** The filters as the API's query (datetime-local inputs are local time: sent as ISO with offset). */
function toQuery(f: Filters): Record<string, string> {
  const q: Record<string, string> = {};
  if (f.actor.trim()) q.actor = f.actor.trim();
  if (f.action.trim()) q.action = f.action.trim();
  if (f.target.trim()) q.target = f.target.trim();
  if (f.outcome) q.outcome = f.outcome;
  if (f.since) q.since = new Date(f.since).toISOString();
  if (f.until) q.until = new Date(f.until).toISOString();
  return q;
}

function Verify() {
  const verify = useAction(async () => call(api.GET('/v1/audit/verify')));
  const [result, setResult] = useState<Awaited<ReturnType<typeof verify.run>>>(undefined);
  return (
    <div className="card">
      <h2>Chain</h2>
      <p className="muted">
        Every event is hashed into a chain: an edited, deleted or reordered event breaks it from that point
        on.
      </p>
      <button
        type="button"
        className="secondary"
        disabled={verify.busy}
        onClick={async () => setResult(await verify.run())}
      >
        Verify chain
      </button>
      {result ? (
        result.ok ? (
          <p role="status" className="ok">
            Chain verified: intact up to event #{result.head_seq}
            {result.pending ? ` (${result.pending} recent events not chained yet)` : ''}. Checked{' '}
            {dateTime(result.checked_at)}.
          </p>
        ) : (
          <p role="alert" className="bad">
            Chain broken at event #{result.broken_at_seq ?? '?'}: events from there on were altered or
            removed. Checked {dateTime(result.checked_at)}.
          </p>
        )
      ) : null}
      <ErrorNotice error={verify.error} title="Could not verify the chain" />
    </div>
  );
}

/** An id in the table that narrows the listing to it. */
function QuickFilter(props: { label: 'by' | 'on'; value: string; onPick: (v: string) => void }) {
  return (
    <button
      type="button"
      className="link mono small"
      title={`Show only the events ${props.label} ${props.value}`}
      aria-label={`Only events ${props.label} ${props.value}`}
      onClick={() => props.onPick(props.value)}
    >
      {props.value}
    </button>
  );
}

export default function Audit() {
  const { account } = useMe();
  const [draft, setDraft] = useState<Filters>(NONE);
  const [filters, setFilters] = useState<Filters>(NONE);
  const pages = useCursorPages();
  const { cursor } = pages;
  const events = useApi(
    () => {
      const query = { ...toQuery(filters), limit: 50, ...(cursor ? { cursor } : {}) };
      return call(api.GET('/v1/audit/events', { params: { query } }));
    },
    `${account}|${JSON.stringify(filters)}|${cursor}`,
  );
  const exporting = useAction(async () => {
    const qs = new URLSearchParams(toQuery(filters)).toString();
    await download(`/v1/audit/export${qs ? `?${qs}` : ''}`, { method: 'GET' }, 'audit-events.jsonl');
  });
  const apply = (e: FormEvent) => {
    e.preventDefault();
    setFilters(draft);
    pages.reset();
  };
  /** Narrows the listing to one actor or target (a click on its id in the table). */
  const narrow = (f: Partial<Filters>) => {
    const next = { ...filters, ...f };
    setDraft(next);
    setFilters(next);
    pages.reset();
  };
  const set = (k: keyof Filters) => (e: { target: { value: string } }) =>
    setDraft({ ...draft, [k]: e.target.value });
  const items = events.data?.items ?? [];
  const filtered = JSON.stringify(filters) !== JSON.stringify(NONE);
  return (
    <Page
      title="Audit log"
      actions={
        <button
          type="button"
          className="secondary"
          disabled={exporting.busy}
          onClick={() => void exporting.run()}
        >
          Export
        </button>
      }
    >
      <ErrorNotice error={exporting.error} title="Export failed" />
      <Verify />
      <form className="card form filters" onSubmit={apply} aria-label="Filter events">
        <div className="grid3">
          <label>
            <span>Actor</span>
            <input
              maxLength={200}
              placeholder="User, key or node id"
              value={draft.actor}
              onChange={set('actor')}
            />
          </label>
          <label>
            <span>Action</span>
            <input
              maxLength={100}
              placeholder="database.created"
              value={draft.action}
              onChange={set('action')}
            />
          </label>
          <label>
            <span>Target</span>
            <input maxLength={200} placeholder="Target id" value={draft.target} onChange={set('target')} />
          </label>
          <label>
            <span>Outcome</span>
            <select value={draft.outcome} onChange={set('outcome')}>
              <option value="">Any</option>
              <option value="success">Success</option>
              <option value="failure">Failure</option>
              <option value="denied">Denied</option>
            </select>
          </label>
          <label>
            <span>Since</span>
            <input type="datetime-local" value={draft.since} onChange={set('since')} />
          </label>
          <label>
            <span>Until</span>
            <input type="datetime-local" value={draft.until} onChange={set('until')} />
          </label>
        </div>
        <div className="actions">
          <button type="submit" className="primary">
            Apply filters
          </button>
          <button
            type="button"
            className="secondary"
            onClick={() => {
              setDraft(NONE);
              setFilters(NONE);
              pages.reset();
            }}
          >
            Clear filters
          </button>
        </div>
      </form>
      <ErrorNotice error={events.error} title="Could not list events" />
      {!events.data && events.loading ? <Loading what="events" /> : null}
      {events.data && items.length === 0 ? (
        <Empty>
          <p>
            {filtered
              ? 'No events match these filters. Widen the time range or clear a filter.'
              : 'No events yet. Actions such as signing in or creating a database appear here.'}
          </p>
        </Empty>
      ) : null}
      {items.length > 0 ? (
        <TableWrap label="Audit events">
          <table>
            <caption className="sr-only">Audit events</caption>
            <thead>
              <tr>
                <th scope="col">Time</th>
                <th scope="col">Actor</th>
                <th scope="col">Action</th>
                <th scope="col">Target</th>
                <th scope="col">Outcome</th>
                <th scope="col">Source</th>
                <th scope="col">Request ID</th>
              </tr>
            </thead>
            <tbody>
              {items.map((e) => (
                <tr key={e.id}>
                  <td>
                    <time dateTime={e.occurred_at}>{dateTime(e.occurred_at)}</time>
                  </td>
                  <td>
                    {e.actor_type}
                    {e.actor_id ? (
                      <>
                        {' '}
                        <QuickFilter label="by" value={e.actor_id} onPick={(v) => narrow({ actor: v })} />
                      </>
                    ) : null}
                  </td>
                  <th scope="row" className="mono">
                    {e.action}
                  </th>
                  <td>
                    {e.target_type ?? '—'}
                    {e.target_id ? (
                      <>
                        {' '}
                        <QuickFilter label="on" value={e.target_id} onPick={(v) => narrow({ target: v })} />
                      </>
                    ) : null}
                  </td>
                  <td>
                    <StatusBadge status={e.outcome} />
                  </td>
                  <td className="mono small">{e.source_ip ?? '—'}</td>
                  <td className="mono small">{e.request_id ?? '—'}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </TableWrap>
      ) : null}
      <Pager pages={pages} next={events.data?.next_cursor} />
    </Page>
  );
}
