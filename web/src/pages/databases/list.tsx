import { useEffect, useState } from 'react';
import { Link } from 'wouter';
import { api, call } from '../../api/client.ts';
import { ErrorNotice } from '../../components/error-notice.tsx';
import { Empty, Loading, Page } from '../../components/page.tsx';
import { Pager, useCursorPages } from '../../components/pager.tsx';
import { StatusBadge } from '../../components/status-badge.tsx';
import { TableWrap } from '../../components/table-wrap.tsx';
import { bytes } from '../../lib/format.ts';
import { useApi } from '../../lib/use-api.ts';
import { useMe } from '../../session.tsx';
import { awaitingAcceptance, KindBadge } from './attached.tsx';
import type { Database } from './types.ts';

const PAGE = 50;
type StatusFilter = '' | 'provisioning' | 'ready' | 'failed' | 'deleting';

function allowlistSummary(d: Database): string {
  // An attached database's network access is its own server's business, not an allowlist here.
  if (d.kind === 'attached') return 'Not managed';
  const n = d.allowlist_count;
  if (n === undefined) return '—';
  if (n === 0) return 'None (closed)';
  return n === 1 ? '1 entry' : `${n} entries`;
}

/** Server-side search and cursor paging: the page holds at most PAGE rows whatever the total. */
export default function DatabasesList() {
  const { account } = useMe();
  const [input, setInput] = useState('');
  const [q, setQ] = useState('');
  const [status, setStatus] = useState<StatusFilter>('');
  const pages = useCursorPages();
  const { cursor, reset } = pages;

  useEffect(() => {
    const t = setTimeout(() => {
      setQ(input.trim());
      reset();
    }, 250);
    return () => clearTimeout(t);
  }, [input, reset]);

  const list = useApi(() => {
    const query = {
      limit: PAGE,
      ...(q ? { q } : {}),
      ...(status ? { status } : {}),
      ...(cursor ? { cursor } : {}),
    };
    return call(api.GET('/v1/databases', { params: { query } }));
  }, `${account}|${q}|${status}|${cursor}`);
  const items = (list.data?.items ?? []) as Database[];
  const filtered = q !== '' || status !== '';

  return (
    <Page
      title="Databases"
      actions={
        <Link href="/databases/new" className="button primary">
          Create database
        </Link>
      }
    >
      <search className="toolbar">
        <label>
          <span>Search databases</span>
          <input
            type="search"
            maxLength={63}
            placeholder="Part of a name"
            value={input}
            onChange={(e) => setInput(e.target.value)}
          />
        </label>
        <label>
          <span>Status</span>
          <select
            value={status}
            onChange={(e) => {
              setStatus(e.target.value as StatusFilter);
              pages.reset();
            }}
          >
            <option value="">Any</option>
            <option value="ready">Ready</option>
            <option value="provisioning">Provisioning</option>
            <option value="failed">Failed</option>
            <option value="deleting">Deleting</option>
          </select>
        </label>
      </search>
      <ErrorNotice error={list.error} title="Could not list databases" />
      {list.loading && !list.data ? <Loading what="databases" /> : null}
      {list.data && items.length === 0 ? (
        <Empty>
          {filtered ? (
            <p>No databases match this search. Try another part of the name, or clear the status filter.</p>
          ) : (
            <p>
              No databases yet. <Link href="/databases/new">Create database</Link> to get your first one; it
              is ready in a few seconds.
            </p>
          )}
        </Empty>
      ) : null}
      {items.length > 0 ? (
        <TableWrap label="Databases">
          <table aria-busy={list.loading}>
            <caption className="sr-only">Databases</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Status</th>
                <th scope="col">Node</th>
                <th scope="col" className="num">
                  Size
                </th>
                <th scope="col" className="num">
                  Connections
                </th>
                <th scope="col">Allowlist</th>
              </tr>
            </thead>
            <tbody>
              {items.map((d) => (
                <tr key={d.id}>
                  <th scope="row">
                    <span className="name-cell">
                      <Link href={`/databases/${d.name}`}>{d.name}</Link>
                      {d.kind === 'attached' ? (
                        <KindBadge kind={d.kind} awaiting={awaitingAcceptance(d)} />
                      ) : null}
                    </span>
                  </th>
                  <td>
                    <StatusBadge status={d.status} />
                  </td>
                  <td>{d.node}</td>
                  <td className="num">{bytes(d.size_bytes)}</td>
                  <td className="num">{d.connections ?? '—'}</td>
                  <td>{allowlistSummary(d)}</td>
                </tr>
              ))}
            </tbody>
          </table>
        </TableWrap>
      ) : null}
      <Pager pages={pages} next={list.data?.next_cursor} busy={list.loading} showPage />
    </Page>
  );
}
