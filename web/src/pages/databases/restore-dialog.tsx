import { type FormEvent, useEffect, useRef, useState } from 'react';
import { Link } from 'wouter';
import { api, call } from '../../api/client.ts';
import type { paths } from '../../api/schema';
import { Dialog } from '../../components/dialog.tsx';
import { ErrorNotice } from '../../components/error-notice.tsx';
import { ago, dateTime } from '../../lib/format.ts';
import { useAction, useApi } from '../../lib/use-api.ts';
import { useReauth } from '../../reauth.tsx';
import { useMe } from '../../session.tsx';
import type { Backup } from './backups-tab.tsx';
import { JobProgressLine } from './job-progress.tsx';
import { nameProblem } from './name-rule.ts';

type Restore =
  paths['/v1/databases/{name}/restores/{id}']['get']['responses'][200]['content']['application/json'];

/** A restore in progress is read again every 2 s, at most this many times (10 minutes). */
const POLL_MS = 2000;
const MAX_POLLS = 300;

const STATUS_WORDS: Record<Restore['status'], string> = {
  pending: 'Pending',
  running: 'Running',
  completed: 'Completed',
  failed: 'Failed',
};

/** Restore a completed backup into a new database, or in place after a safety backup; then its progress. */
export function RestoreDialog({
  database,
  backup,
  onClose,
}: {
  database: string;
  backup: Backup;
  onClose: () => void;
}) {
  const [target, setTarget] = useState<'new' | 'in_place'>('new');
  const [newName, setNewName] = useState('');
  const [restoreId, setRestoreId] = useState<string | null>(null);
  const problem = newName === '' ? null : nameProblem(newName);
  // Replacing a database's data is what a DROP needs: an owner or admin, recently confirmed.
  const { role } = useMe();
  const mayReplace = role === 'owner' || role === 'admin';
  const withReauth = useReauth();
  const start = useAction(async () => {
    const body =
      target === 'in_place'
        ? { backup_id: backup.id, target: 'in_place' as const }
        : { backup_id: backup.id, target: 'new' as const, ...(newName ? { new_name: newName } : {}) };
    const r = await withReauth(() =>
      call(api.POST('/v1/databases/{name}/restore', { params: { path: { name: database } }, body })),
    );
    setRestoreId(r.id);
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (target === 'new' && problem) return;
    void start.run();
  };
  const taken = backup.started_at ?? backup.created_at;
  return (
    <Dialog title="Restore a backup" onClose={onClose}>
      <p>
        The backup taken {ago(taken)} ({dateTime(taken)}).
      </p>
      {restoreId ? (
        <RestoreProgress database={database} id={restoreId} onClose={onClose} />
      ) : (
        <form className="form" onSubmit={submit}>
          <fieldset>
            <legend>Restore into</legend>
            <label className="inline">
              <input
                type="radio"
                name="target"
                checked={target === 'new'}
                onChange={() => setTarget('new')}
              />
              <span>A new database</span>
            </label>
            <label className="inline">
              <input
                type="radio"
                name="target"
                checked={target === 'in_place'}
                disabled={!mayReplace}
                aria-describedby={mayReplace ? undefined : 'restore-in-place-hint'}
                onChange={() => setTarget('in_place')}
              />
              <span>This database ({database}), in place</span>
            </label>
            {mayReplace ? null : (
              <span id="restore-in-place-hint" className="hint">
                Only an owner or admin of the account restores in place.
              </span>
            )}
          </fieldset>
          {target === 'new' ? (
            <div className="field">
              <label>
                <span>New database name (optional)</span>
                <input
                  maxLength={63}
                  autoComplete="off"
                  spellCheck={false}
                  aria-invalid={problem !== null}
                  aria-describedby="restore-name-hint"
                  value={newName}
                  onChange={(e) => setNewName(e.target.value.trim())}
                />
              </label>
              <span id="restore-name-hint" className={problem ? 'hint hint-bad' : 'hint'}>
                {problem ?? `Empty: ${database}_restored_ and six random characters.`}
              </span>
            </div>
          ) : (
            <div className="notice notice-error" role="alert">
              <strong>This replaces the data of {database}.</strong> A safety backup of it is taken first
              (restore it to undo); then every connection to {database} is cut and the backup restored.
              Everything written since this backup is lost.
            </div>
          )}
          <ErrorNotice error={start.error} title="Could not start the restore" />
          <div className="actions">
            <button type="button" className="secondary" onClick={onClose}>
              Cancel
            </button>
            <button
              type="submit"
              className={target === 'in_place' ? 'danger' : 'primary'}
              disabled={start.busy || (target === 'new' && problem !== null)}
            >
              {target === 'in_place' ? `Replace ${database}` : 'Restore'}
            </button>
          </div>
        </form>
      )}
    </Dialog>
  );
}

function RestoreProgress({ database, id, onClose }: { database: string; id: string; onClose: () => void }) {
  const r = useApi(
    () => call(api.GET('/v1/databases/{name}/restores/{id}', { params: { path: { name: database, id } } })),
    `${database}|${id}`,
  );
  const polls = useRef(0);
  const status = r.data?.status;
  const going = status === 'pending' || status === 'running' || (!r.data && !r.error);
  // biome-ignore lint/correctness/useExhaustiveDependencies: each new answer (r.data) schedules the next look
  useEffect(() => {
    if (!going || polls.current >= MAX_POLLS) return;
    const t = setTimeout(() => {
      polls.current++;
      r.reload();
    }, POLL_MS);
    return () => clearTimeout(t);
  }, [going, r.data, r.reload]);
  const d = r.data;
  return (
    <div className="restore-progress">
      <ErrorNotice error={r.error} title="Could not read the restore" />
      {d ? (
        <p role="status">
          Restore <span className={`badge badge-${d.status}`}>{STATUS_WORDS[d.status] ?? d.status}</span>
          {d.database ? (
            <>
              {' '}
              into{' '}
              {d.target === 'new' ? (
                <Link href={`/databases/${d.database}`} onClick={onClose}>
                  {d.database}
                </Link>
              ) : (
                <strong>{d.database}</strong>
              )}
            </>
          ) : null}
          {d.status === 'completed' && d.tables_checked !== null ? (
            <>
              : {d.tables_checked} tables and {d.rows_checked ?? 0} rows checked against the backup.
            </>
          ) : null}
        </p>
      ) : null}
      {d?.status === 'running' ? <JobProgressLine progress={d.progress} /> : null}
      {d?.safety_backup_id ? (
        <p className="small muted">
          Safety backup taken first: <code>{d.safety_backup_id.slice(0, 8)}</code>
        </p>
      ) : null}
      {d?.failure_reason ? <p className="small bad">{d.failure_reason}</p> : null}
      {going && polls.current >= MAX_POLLS ? (
        <p className="muted small">Still in progress: this page stopped following it. Check back later.</p>
      ) : null}
      <div className="actions">
        <button type="button" className="primary" onClick={onClose}>
          Close
        </button>
      </div>
    </div>
  );
}
