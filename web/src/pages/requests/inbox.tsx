import { useState } from 'react';
import { api, call } from '../../api/client.ts';
import { ErrorNotice } from '../../components/error-notice.tsx';
import { Empty, Loading, Page } from '../../components/page.tsx';
import { Pager, useCursorPages } from '../../components/pager.tsx';
import { useApi } from '../../lib/use-api.ts';
import { useMe } from '../../session.tsx';
import { RequestTable, StatusFilter } from './request-table.tsx';
import type { RequestStatus } from './types.ts';
import './requests.css';

/** The approvals inbox: pending requests the signed-in person may still approve, across databases. */
function Awaiting() {
  const { account } = useMe();
  const pages = useCursorPages();
  const { cursor } = pages;
  const list = useApi(
    () =>
      call(
        api.GET('/v1/requests', {
          params: { query: { awaiting: 'me', status: 'pending', limit: 25, ...(cursor ? { cursor } : {}) } },
        }),
      ),
    `${account}|${cursor}`,
  );
  const items = list.data?.items ?? [];
  return (
    <section aria-labelledby="awaiting-h">
      <h2 id="awaiting-h">Awaiting your approval</h2>
      <ErrorNotice error={list.error} title="Could not list your approvals" />
      {!list.data && list.loading ? <Loading what="requests" /> : null}
      {list.data && items.length === 0 ? (
        <Empty>
          <p>Nothing awaits your approval.</p>
        </Empty>
      ) : null}
      {items.length > 0 ? <RequestTable label="Awaiting your approval" items={items} showDatabase /> : null}
      <Pager pages={pages} next={list.data?.next_cursor} busy={list.loading} />
    </section>
  );
}

/** Every request of the account (newest first), by status. */
function AllRequests() {
  const { account } = useMe();
  const [status, setStatus] = useState<RequestStatus | ''>('');
  const [mine, setMine] = useState(false);
  const pages = useCursorPages();
  const { cursor } = pages;
  const list = useApi(
    () =>
      call(
        api.GET('/v1/requests', {
          params: {
            query: {
              limit: 25,
              ...(status ? { status } : {}),
              ...(mine ? { requester: 'me' } : {}),
              ...(cursor ? { cursor } : {}),
            },
          },
        }),
      ),
    `${account}|${status}|${mine}|${cursor}`,
  );
  const items = list.data?.items ?? [];
  return (
    <section aria-labelledby="all-h">
      <h2 id="all-h">All requests</h2>
      <div className="toolbar">
        <StatusFilter
          value={status}
          onChange={(s) => {
            setStatus(s);
            pages.reset();
          }}
        />
        <label className="inline">
          <input
            type="checkbox"
            checked={mine}
            onChange={(e) => {
              setMine(e.currentTarget.checked);
              pages.reset();
            }}
          />{' '}
          Only my requests
        </label>
      </div>
      <ErrorNotice error={list.error} title="Could not list requests" />
      {!list.data && list.loading ? <Loading what="requests" /> : null}
      {list.data && items.length === 0 ? (
        <Empty>
          <p>No requests{status ? ` with status ${status}` : ''}. Make one from a database's Requests tab.</p>
        </Empty>
      ) : null}
      {items.length > 0 ? <RequestTable label="All requests" items={items} showDatabase /> : null}
      <Pager pages={pages} next={list.data?.next_cursor} busy={list.loading} />
    </section>
  );
}

export default function Approvals() {
  return (
    <Page title="Approvals">
      <p className="muted">
        Governed SQL and access requests of this account. A request is never approved by the person who made
        it.
      </p>
      <Awaiting />
      <AllRequests />
    </Page>
  );
}
