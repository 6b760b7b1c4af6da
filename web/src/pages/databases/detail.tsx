import { lazy, type ReactNode, Suspense, useEffect } from 'react';
import { Link, useRoute } from 'wouter';
import { api, call } from '../../api/client.ts';
import { ErrorNotice } from '../../components/error-notice.tsx';
import { Loading, Page } from '../../components/page.tsx';
import { StatusBadge } from '../../components/status-badge.tsx';
import { bytes } from '../../lib/format.ts';
import { useApi } from '../../lib/use-api.ts';
import { useMe } from '../../session.tsx';
import {
  AttachedCheck,
  AttachedNote,
  AttachmentOffer,
  awaitingAcceptance,
  DropAttached,
  KindBadge,
} from './attached.tsx';
import { ConnectTab } from './connect-tab.tsx';
import { NetworkTab } from './network-tab.tsx';
import { SettingsTab } from './settings-tab.tsx';
import type { Database } from './types.ts';

// The two heavy tabs load their libraries (CodeMirror, uPlot) only when opened.
const ExplorerTab = lazy(() => import('./explorer-tab.tsx'));
const ChartsTab = lazy(() => import('./charts-tab.tsx'));
const RequestsTab = lazy(() => import('./requests-tab.tsx'));
const BackupsTab = lazy(() => import('./backups-tab.tsx'));

const TABS = [
  ['connect', 'Connect'],
  ['network', 'Network'],
  ['explorer', 'Explorer'],
  ['requests', 'Requests'],
  ['backups', 'Backups'],
  ['charts', 'Charts'],
  ['settings', 'Settings'],
] as const;
type Tab = (typeof TABS)[number][0];

/**
 * An attached database (its agent's own file lists it) shows only what works on it: the agent's
 * last check, the explorer and governed requests. Connect, network, backups, charts (samples are
 * taken of hosted databases only) and settings would each ask a route that answers 409, so they
 * are not offered, and their paths say so without asking anything. One its node offered that the
 * account has not accepted yet shows only its check, with the offer to accept or reject.
 */
const ATTACHED_TABS = [
  ['check', 'Agent check'],
  ['explorer', 'Explorer'],
  ['requests', 'Requests'],
] as const;
type AttachedTab = (typeof ATTACHED_TABS)[number][0];

export default function DatabaseDetail({ name, tab }: { name: string; tab: string }) {
  const { account } = useMe();
  const db = useApi(
    () => call(api.GET('/v1/databases/{name}', { params: { path: { name } } })) as Promise<Database>,
    `${account}|${name}`,
  );
  // A database on its way (provisioning, deleting) is followed until it settles; an attached one
  // awaiting acceptance waits for a person, not for a job, so it is not followed.
  const awaiting = db.data ? awaitingAcceptance(db.data) : false;
  const settling = !awaiting && (db.data?.status === 'provisioning' || db.data?.status === 'deleting');
  // biome-ignore lint/correctness/useExhaustiveDependencies: each new answer (db.data) schedules the next look
  useEffect(() => {
    if (!settling) return;
    const t = setTimeout(db.reload, 2000);
    return () => clearTimeout(t);
  }, [settling, db.data, db.reload]);
  const d = db.data;
  const attached = d?.kind === 'attached';
  // The route's default section is 'connect'; an attached database's default is its agent check
  // (an explicit /connect is a hosted-only section).
  const [explicit] = useRoute('/databases/:name/:tab');
  const wanted = attached && !explicit ? 'check' : tab;
  // A refused attached database is not queried by its agent: no explorer until its checks pass.
  // Nothing runs on one awaiting acceptance: its check only.
  const tabs: readonly (readonly [Tab | AttachedTab, string])[] = !attached
    ? TABS
    : awaiting
      ? ATTACHED_TABS.filter(([id]) => id === 'check')
      : ATTACHED_TABS.filter(([id]) => id !== 'explorer' || d?.status === 'ready');
  const current = (tabs.find(([id]) => id === wanted)?.[0] ?? null) as Tab | AttachedTab | null;
  const hostedOnly =
    attached &&
    current === null &&
    TABS.some(([id]) => id === wanted) &&
    !ATTACHED_TABS.some(([id]) => id === wanted);
  const notYet = awaiting && current === null && ATTACHED_TABS.some(([id]) => id === wanted);
  const refusedExplorer = attached && !awaiting && current === null && wanted === 'explorer';
  const home = attached ? 'check' : 'connect';
  let body: ReactNode = null;
  if (d && current) {
    const props = { db: d, reload: db.reload };
    body = {
      check: (
        <>
          <AttachedCheck db={d} />
          {awaiting ? null : <DropAttached db={d} />}
        </>
      ),
      connect: <ConnectTab {...props} />,
      network: <NetworkTab {...props} />,
      explorer: <ExplorerTab {...props} />,
      requests: <RequestsTab {...props} />,
      backups: <BackupsTab {...props} />,
      charts: <ChartsTab {...props} />,
      settings: <SettingsTab {...props} />,
    }[current];
  }
  return (
    <Page title={name}>
      {db.error ? (
        <>
          <ErrorNotice error={db.error} title="Could not open this database" />
          <p>
            <Link href="/databases">Back to databases</Link>
          </p>
        </>
      ) : null}
      {!d && db.loading ? <Loading what="the database" /> : null}
      {d ? (
        <>
          {attached ? <AttachedNote db={d} /> : null}
          {awaiting ? <AttachmentOffer db={d} onAccepted={db.setData} /> : null}
          <p className="facts">
            <span>
              Status: <StatusBadge status={d.status} />
            </span>
            {attached ? (
              <span>
                Kind: <KindBadge kind={d.kind} awaiting={awaiting} />
              </span>
            ) : null}
            <span>Node: {d.node}</span>
            {attached ? null : (
              <>
                <span>Size: {bytes(d.size_bytes)}</span>
                <span>Connections: {d.connections ?? '—'}</span>
              </>
            )}
          </p>
          {d.status === 'failed' && d.failure_reason ? (
            <p className="notice notice-error">
              {attached ? 'Failed' : 'Provisioning failed'}: {d.failure_reason}
            </p>
          ) : null}
          <nav aria-label="Database sections" className="tabs">
            {tabs.map(([id, label]) => (
              <Link
                key={id}
                href={id === home ? `/databases/${name}` : `/databases/${name}/${id}`}
                aria-current={id === current ? 'page' : undefined}
              >
                {label}
              </Link>
            ))}
          </nav>
          {current ? (
            <Suspense fallback={<Loading what="the tab" />}>{body}</Suspense>
          ) : notYet ? (
            <p>Not available yet: nothing runs on this database until the account accepts it.</p>
          ) : refusedExplorer ? (
            <p>Not available: the agent's checks refused this database, so nothing queries it.</p>
          ) : hostedOnly ? (
            <p>Not available here: Bulwark does not manage an attached database. Choose a section above.</p>
          ) : (
            <p>
              No such section. Choose one above, or go back to <Link href="/databases">databases</Link>.
            </p>
          )}
        </>
      ) : null}
    </Page>
  );
}

export type TabProps = { db: Database; reload: () => void };
