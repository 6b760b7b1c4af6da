import { useState } from 'react';
import { api, call } from '../../api/client.ts';
import { ErrorNotice } from '../../components/error-notice.tsx';
import { Empty, Loading } from '../../components/page.tsx';
import { Pager, useCursorPages } from '../../components/pager.tsx';
import { useApi } from '../../lib/use-api.ts';
import { NewSqlRequest, RequestAccess } from '../requests/new-request.tsx';
import { RequestTable, StatusFilter } from '../requests/request-table.tsx';
import type { RequestStatus } from '../requests/types.ts';
import type { TabProps } from './detail.tsx';
import '../requests/requests.css';

/** A database's governed requests: the list (filtered, paged), a new SQL request, a request for access. */
export default function RequestsTab({ db }: TabProps) {
  const name = db.name;
  // Just-in-time access makes a login on the database: only on hosted ones (an attached one is 409).
  const attached = db.kind === 'attached';
  const [status, setStatus] = useState<RequestStatus | ''>('');
  const [open, setOpen] = useState<'sql' | 'access' | null>(null);
  const pages = useCursorPages();
  const { cursor } = pages;
  const list = useApi(
    () =>
      call(
        api.GET('/v1/databases/{name}/requests', {
          params: {
            path: { name },
            query: { limit: 25, ...(status ? { status } : {}), ...(cursor ? { cursor } : {}) },
          },
        }),
      ),
    `${name}|${status}|${cursor}`,
  );
  const items = list.data?.items ?? [];
  return (
    <section aria-labelledby="tab-h">
      <h2 id="tab-h">Requests</h2>
      <p className="muted">
        SQL that changes data or schema, and temporary access, go through approval by the account's policy.
        Every step is audited.
      </p>
      <div className="actions">
        <button
          type="button"
          className={open === 'sql' ? 'secondary' : 'primary'}
          aria-expanded={open === 'sql'}
          onClick={() => setOpen(open === 'sql' ? null : 'sql')}
        >
          New request
        </button>
        {attached ? null : (
          <button
            type="button"
            className="secondary"
            aria-expanded={open === 'access'}
            onClick={() => setOpen(open === 'access' ? null : 'access')}
          >
            Request access
          </button>
        )}
      </div>
      {attached ? (
        <p className="muted">
          Temporary access is not granted on an attached database: Bulwark holds none of its logins.
        </p>
      ) : null}
      {db.status !== 'ready' && open ? (
        <p className="notice">Requests run once the database is ready (now: {db.status}).</p>
      ) : null}
      {open === 'sql' ? <NewSqlRequest database={name} onClose={() => setOpen(null)} /> : null}
      {open === 'access' && !attached ? (
        <RequestAccess database={name} onClose={() => setOpen(null)} />
      ) : null}
      <div className="toolbar">
        <StatusFilter
          value={status}
          onChange={(s) => {
            setStatus(s);
            pages.reset();
          }}
        />
      </div>
      <ErrorNotice error={list.error} title="Could not list requests" />
      {!list.data && list.loading ? <Loading what="requests" /> : null}
      {list.data && items.length === 0 ? (
        <Empty>
          <p>No requests{status ? ` with status ${status}` : ''} on this database.</p>
        </Empty>
      ) : null}
      {items.length > 0 ? <RequestTable label="Requests" items={items} /> : null}
      <Pager pages={pages} next={list.data?.next_cursor} busy={list.loading} />
    </section>
  );
}
