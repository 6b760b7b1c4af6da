import { useEffect, useMemo, useRef, useState } from 'react';
import { api, call } from '../../api/client.ts';
import type { paths } from '../../api/schema';
import { ConfirmDialog } from '../../components/dialog.tsx';
import { ErrorNotice } from '../../components/error-notice.tsx';
import { Empty, Loading } from '../../components/page.tsx';
import { Pager, useCursorPages } from '../../components/pager.tsx';
import { TableWrap } from '../../components/table-wrap.tsx';
import { ago, bytes, dateTime, duration } from '../../lib/format.ts';
import { useAction, useApi, useNow } from '../../lib/use-api.ts';
import { useReauth } from '../../reauth.tsx';
import type { TabProps } from './detail.tsx';
import { JobProgressLine } from './job-progress.tsx';
import { RestoreDialog } from './restore-dialog.tsx';

export type Backup =
  paths['/v1/databases/{name}/backups']['get']['responses'][200]['content']['application/json']['items'][number];

const STATUS_LABELS: Record<Backup['status'], string> = {
  pending: 'Pending',
  running: 'Running',
  completed: 'Completed',
  failed: 'Failed',
};
const TRIGGER_LABELS: Record<Backup['trigger'], string> = {
  scheduled: 'Scheduled',
  manual: 'Manual',
  safety: 'Safety',
  drill: 'Drill',
};

/** While a backup is pending or running the list is read again every 2 s, at most this many times. */
const POLL_MS = 2000;
const MAX_POLLS = 300;

export function BackupStatusBadge({ status }: { status: Backup['status'] }) {
  return <span className={`badge badge-${status}`}>{STATUS_LABELS[status] ?? status}</span>;
}

/** The last good backup's age against the RPO; a stale database is said so in words, not colour alone. */
export function Freshness({ backup }: { backup: TabProps['db']['backup'] }) {
  // The server's age when it answered, aged on this page's clock until the next answer.
  // biome-ignore lint/correctness/useExhaustiveDependencies: a new answer (backup) restarts the count
  const answeredAt = useMemo(() => Date.now(), [backup]);
  const now = useNow(15_000);
  if (!backup) return null;
  const seconds =
    backup.last_good_at && backup.age_seconds !== null
      ? backup.age_seconds + Math.max(0, now - answeredAt) / 1000
      : null;
  const age = seconds === null ? 'none yet' : `${duration(seconds)} ago`;
  const stale = backup.stale || (seconds !== null && seconds > backup.rpo_hours * 3600);
  return (
    <p className={stale ? 'notice freshness freshness-stale' : 'notice freshness'} role="status">
      <span>
        Last good backup: <strong>{age}</strong>
      </span>
      <span className="muted"> (RPO {backup.rpo_hours} h)</span>
      {stale ? (
        <>
          {' '}
          <span className="badge badge-stale">Stale</span>{' '}
          <span>Older than the RPO: take a backup now, or check why the scheduled ones fail.</span>
        </>
      ) : null}
    </p>
  );
}

/** A database's backups: freshness, "Back up now", the list (restore, download, delete). */
export default function BackupsTab({ db, reload }: TabProps) {
  const name = db.name;
  const pages = useCursorPages();
  const { cursor } = pages;
  const list = useApi(
    () =>
      call(
        api.GET('/v1/databases/{name}/backups', {
          params: { path: { name }, query: { limit: 20, ...(cursor ? { cursor } : {}) } },
        }),
      ),
    `${name}|${cursor}`,
  );
  const items = list.data?.items ?? [];
  const active = items.some((b) => b.status === 'pending' || b.status === 'running');

  // Follow a backup in progress until it settles (bounded), then refresh the freshness line.
  const polls = useRef(0);
  const wasActive = useRef(false);
  // biome-ignore lint/correctness/useExhaustiveDependencies: each new answer (list.data) schedules the next look
  useEffect(() => {
    if (!active) {
      if (wasActive.current) reload();
      wasActive.current = false;
      polls.current = 0;
      return;
    }
    wasActive.current = true;
    if (polls.current >= MAX_POLLS) return;
    const t = setTimeout(() => {
      polls.current++;
      list.reload();
    }, POLL_MS);
    return () => clearTimeout(t);
  }, [active, list.data, list.reload, reload]);

  const backUp = useAction(async () => {
    await call(api.POST('/v1/databases/{name}/backups', { params: { path: { name } } }));
    polls.current = 0;
    // The freshness line is read again once this backup settles, however fast it does.
    wasActive.current = true;
    pages.reset();
    list.reload();
  });
  // A download is the whole database's data: the server asks for a recent "Confirm it's you".
  const withReauth = useReauth();
  const download = useAction(async (b: Backup) => {
    const link = await withReauth(() =>
      call(
        api.POST('/v1/databases/{name}/backups/{id}/download-link', { params: { path: { name, id: b.id } } }),
      ),
    );
    // Same origin only: the link is a path on this server.
    const url = new URL(link.url, window.location.origin);
    if (url.origin !== window.location.origin) throw new Error('The download link is not on this server.');
    window.location.assign(url.href);
  });
  const [deleting, setDeleting] = useState<Backup | null>(null);
  const remove = useAction(async (b: Backup) => {
    await call(api.DELETE('/v1/databases/{name}/backups/{id}', { params: { path: { name, id: b.id } } }));
    setDeleting(null);
    list.reload();
    // The newest good backup may have gone: the freshness line is read again.
    reload();
  });
  const [restoring, setRestoring] = useState<Backup | null>(null);

  return (
    <section aria-labelledby="tab-h">
      <h2 id="tab-h">Backups</h2>
      <Freshness backup={db.backup} />
      <p className="muted">
        Each backup is a <code>pg_dump</code> archive, encrypted under its own key. A download is the plain
        archive, for <code>pg_restore</code>: check it against its SHA-256.
      </p>
      <div className="actions">
        <button
          type="button"
          className="primary"
          disabled={backUp.busy || db.status !== 'ready'}
          onClick={() => void backUp.run()}
        >
          Back up now
        </button>
        {active ? (
          <span className="muted" role="status">
            A backup is in progress…
          </span>
        ) : null}
      </div>
      {db.status !== 'ready' ? (
        <p className="notice">Backups run once the database is ready (now: {db.status}).</p>
      ) : null}
      <ErrorNotice error={backUp.error} title="Could not start a backup" />
      <ErrorNotice error={download.error} title="Could not download the backup" />
      <ErrorNotice error={list.error} title="Could not list backups" />
      {!list.data && list.loading ? <Loading what="backups" /> : null}
      {list.data && items.length === 0 ? (
        <Empty>
          <p>No backups of this database yet.</p>
        </Empty>
      ) : null}
      {items.length > 0 ? (
        <TableWrap label="Backups">
          <table className="backups">
            <caption className="sr-only">Backups</caption>
            <thead>
              <tr>
                <th scope="col">Started</th>
                <th scope="col">Status</th>
                <th scope="col">Trigger</th>
                <th scope="col" className="num">
                  Size
                </th>
                <th scope="col">SHA-256</th>
                <th scope="col">Completed</th>
                <th scope="col">Verified</th>
                <th scope="col">Actions</th>
              </tr>
            </thead>
            <tbody>
              {items.map((b) => (
                <tr key={b.id}>
                  <th scope="row" title={dateTime(b.started_at ?? b.created_at)}>
                    {ago(b.started_at ?? b.created_at)}
                  </th>
                  <td>
                    <BackupStatusBadge status={b.status} />
                    <JobProgressLine progress={b.progress} />
                    {b.failure_reason ? <div className="small bad">{b.failure_reason}</div> : null}
                  </td>
                  <td>{TRIGGER_LABELS[b.trigger] ?? b.trigger}</td>
                  <td className="num">{bytes(b.size_bytes)}</td>
                  <td>{b.sha256 ? <code title={b.sha256}>{b.sha256.slice(0, 12)}</code> : '—'}</td>
                  <td title={dateTime(b.completed_at)}>{b.completed_at ? ago(b.completed_at) : '—'}</td>
                  <td title={dateTime(b.verified_at)}>
                    {b.verified_at ? ago(b.verified_at) : '—'}
                    {b.verify_failure ? (
                      <div className="small bad">Drill failed: {b.verify_failure}</div>
                    ) : null}
                  </td>
                  <td>
                    <div className="row-actions">
                      {b.status === 'completed' ? (
                        <>
                          <button type="button" className="secondary" onClick={() => setRestoring(b)}>
                            Restore…
                          </button>
                          <button
                            type="button"
                            className="secondary"
                            disabled={download.busy}
                            onClick={() => void download.run(b)}
                          >
                            Download
                          </button>
                        </>
                      ) : null}
                      {b.status === 'completed' || b.status === 'failed' ? (
                        <button type="button" className="secondary" onClick={() => setDeleting(b)}>
                          Delete
                        </button>
                      ) : null}
                    </div>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </TableWrap>
      ) : null}
      <Pager pages={pages} next={list.data?.next_cursor} busy={list.loading} />
      {deleting ? (
        <ConfirmDialog
          title="Delete this backup?"
          action="Delete backup"
          danger
          busy={remove.busy}
          onConfirm={() => void remove.run(deleting)}
          onClose={() => {
            setDeleting(null);
            remove.clear();
          }}
        >
          <p>
            The backup taken {ago(deleting.started_at ?? deleting.created_at)} (
            {dateTime(deleting.started_at ?? deleting.created_at)}) is removed for good: it can no longer be
            restored or downloaded.
          </p>
          <ErrorNotice error={remove.error} title="Could not delete the backup" />
        </ConfirmDialog>
      ) : null}
      {restoring ? (
        <RestoreDialog
          database={name}
          backup={restoring}
          onClose={() => {
            setRestoring(null);
            list.reload();
            reload();
          }}
        />
      ) : null}
    </section>
  );
}
