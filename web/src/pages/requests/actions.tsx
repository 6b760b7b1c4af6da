/**
 * What the signed-in person may do with a request, as the API decides it: approve or reject (not
 * the requester), cancel and edit (the requester; owners and admins cancel too), execute (approved;
 * the requester or an owner/admin), break glass (owners/admins, with a reason, after "Confirm it's
 * you"). The server checks all of it again; the page only leaves out what would be refused.
 */
import { type FormEvent, type ReactNode, useRef, useState } from 'react';
import { api, call } from '../../api/client.ts';
import { Dialog } from '../../components/dialog.tsx';
import { ErrorNotice } from '../../components/error-notice.tsx';
import { useAction } from '../../lib/use-api.ts';
import { useReauth } from '../../reauth.tsx';
import { useMe } from '../../session.tsx';
import { SqlEditor, type SqlEditorHandle } from '../databases/sql-editor.tsx';
import { type Executed, REQUESTS_CHANGED, type Request } from './types.ts';

type Open = 'approve' | 'reject' | 'cancel' | 'edit' | 'execute' | 'break-glass' | 'dry-run' | null;
const NO_SCHEMA: Record<string, string[]> = {};

/** Who the signed-in person is to this request. */
export function useStanding(r: Request) {
  const { me, role } = useMe();
  const mine = r.requester.kind === 'user' && r.requester.id === me.user.id;
  const admin = role === 'owner' || role === 'admin';
  const approvedByMe = r.approvals.some((a) => a.user_id === me.user.id);
  return { mine, admin, approvedByMe };
}

function CommentForm(props: {
  label: string;
  required: boolean;
  minLength?: number;
  action: string;
  danger?: boolean;
  busy: boolean;
  onSubmit: (text: string) => void;
  onClose: () => void;
  children?: ReactNode;
}) {
  const [text, setText] = useState('');
  const submit = (e: FormEvent) => {
    e.preventDefault();
    props.onSubmit(text.trim());
  };
  return (
    <form className="form" onSubmit={submit}>
      {props.children}
      <label>
        <span>{props.label}</span>
        <textarea
          rows={3}
          required={props.required}
          minLength={props.minLength}
          maxLength={2000}
          value={text}
          onChange={(e) => setText(e.target.value)}
        />
      </label>
      <div className="actions">
        <button type="button" className="secondary" onClick={props.onClose}>
          Cancel
        </button>
        <button type="submit" className={props.danger ? 'danger' : 'primary'} disabled={props.busy}>
          {props.action}
        </button>
      </div>
    </form>
  );
}

export function RequestActions({
  r,
  onChanged,
  onExecuted,
  reload,
}: {
  r: Request;
  /** Reads the request again (an execution that failed still changed it). */
  reload: () => void;
  /** A new state of the request (after an action). */
  onChanged: (r: Request) => void;
  /** Execute's answer (credentials of an access request, once). */
  onExecuted: (out: Executed) => void;
}) {
  const withReauth = useReauth();
  const { mine, admin } = useStanding(r);
  const [open, setOpen] = useState<Open>(null);
  const editor = useRef<SqlEditorHandle>(null);
  const path = { name: r.database, id: r.id };
  const close = () => {
    setOpen(null);
    act.clear();
  };
  const act = useAction(async (kind: Exclude<Open, null>, text?: string) => {
    let out: Request;
    if (kind === 'approve')
      out = await call(
        api.POST('/v1/databases/{name}/requests/{id}/approve', {
          params: { path },
          body: text ? { comment: text } : {},
        }),
      );
    else if (kind === 'reject')
      out = await call(
        api.POST('/v1/databases/{name}/requests/{id}/reject', {
          params: { path },
          body: { comment: text ?? '' },
        }),
      );
    else if (kind === 'dry-run')
      out = await call(api.POST('/v1/databases/{name}/requests/{id}/dry-run', { params: { path } }));
    else if (kind === 'cancel')
      out = await call(api.POST('/v1/databases/{name}/requests/{id}/cancel', { params: { path } }));
    else if (kind === 'edit') {
      const sql = editor.current?.value().trim() ?? '';
      out = await call(api.PUT('/v1/databases/{name}/requests/{id}', { params: { path }, body: { sql } }));
    } else {
      const body = kind === 'break-glass' ? { break_glass: { reason: text ?? '' } } : {};
      let executed: Executed;
      try {
        executed = await withReauth(() =>
          call(api.POST('/v1/databases/{name}/requests/{id}/execute', { params: { path }, body })),
        );
      } catch (err) {
        reload();
        throw err;
      }
      onExecuted(executed);
      out = executed;
    }
    setOpen(null);
    onChanged(out);
    window.dispatchEvent(new Event(REQUESTS_CHANGED));
  });
  const open_ = r.status === 'pending' || r.status === 'approved';
  const isDml = r.classification.class === 'write' || r.classification.class === 'destructive';
  const mayReview = !mine && open_;
  const mayExecute = r.status === 'approved' && (mine || admin);
  const mayBreakGlass = admin && open_ && r.kind === 'sql' && r.status === 'pending';
  const buttons: ReactNode[] = [];
  if (mayReview && r.status === 'pending')
    buttons.push(
      <button key="approve" type="button" className="primary" onClick={() => setOpen('approve')}>
        Approve
      </button>,
    );
  if (mayReview)
    buttons.push(
      <button key="reject" type="button" className="secondary" onClick={() => setOpen('reject')}>
        Reject
      </button>,
    );
  if (mayExecute)
    buttons.push(
      <button key="execute" type="button" className="primary" onClick={() => setOpen('execute')}>
        Execute
      </button>,
    );
  // A write is approved for its dry run's count: without one (it failed, or the node was away) it runs again.
  if (r.status === 'pending' && r.kind === 'sql' && (r.dry_run === null || r.dry_run_error !== null) && isDml)
    buttons.push(
      <button
        key="dry"
        type="button"
        className="secondary"
        disabled={act.busy}
        onClick={() => void act.run('dry-run')}
      >
        Run the dry run again
      </button>,
    );
  if (mine && r.kind === 'sql' && (open_ || r.status === 'rejected'))
    buttons.push(
      <button key="edit" type="button" className="secondary" onClick={() => setOpen('edit')}>
        Edit SQL
      </button>,
    );
  if ((mine || admin) && open_)
    buttons.push(
      <button key="cancel" type="button" className="secondary" onClick={() => setOpen('cancel')}>
        Cancel request
      </button>,
    );
  if (mayBreakGlass)
    buttons.push(
      <button key="bg" type="button" className="danger" onClick={() => setOpen('break-glass')}>
        Break glass
      </button>,
    );

  return (
    <section aria-labelledby="actions-h" className="card">
      <h2 id="actions-h">Actions</h2>
      {buttons.length > 0 ? (
        <div className="actions">{buttons}</div>
      ) : (
        <p className="muted">
          {mine && r.status === 'pending'
            ? 'Waiting for approval: you cannot approve your own request.'
            : 'Nothing for you to do on this request now.'}
        </p>
      )}
      {open === null ? <ErrorNotice error={act.error} /> : null}
      {mine && r.status === 'pending' && buttons.length > 0 ? (
        <p className="muted small">Waiting for approval: you cannot approve your own request.</p>
      ) : null}
      {open === 'approve' ? (
        <Dialog title="Approve this request?" onClose={close}>
          <CommentForm
            label="Comment (optional)"
            required={false}
            action="Approve"
            busy={act.busy}
            onSubmit={(t) => void act.run('approve', t)}
            onClose={close}
          >
            <p>
              You approve the SQL exactly as shown
              {r.dry_run ? `, for the ${r.dry_run.affected_rows} rows its dry run counted` : ''}.
            </p>
          </CommentForm>
          <ErrorNotice error={act.error} />
        </Dialog>
      ) : null}
      {open === 'reject' ? (
        <Dialog title="Reject this request?" onClose={close}>
          <CommentForm
            label="Why (required)"
            required
            action="Reject"
            danger
            busy={act.busy}
            onSubmit={(t) => void act.run('reject', t)}
            onClose={close}
          />
          <ErrorNotice error={act.error} />
        </Dialog>
      ) : null}
      {open === 'cancel' ? (
        <Dialog title="Cancel this request?" onClose={close}>
          <p>It can no longer be approved or executed.</p>
          <ErrorNotice error={act.error} />
          <div className="actions">
            <button type="button" className="secondary" onClick={close}>
              Keep it
            </button>
            <button
              type="button"
              className="danger"
              disabled={act.busy}
              onClick={() => void act.run('cancel')}
            >
              Cancel request
            </button>
          </div>
        </Dialog>
      ) : null}
      {open === 'edit' ? (
        <Dialog title="Edit the SQL" onClose={close}>
          <p className="notice">
            Editing starts over: every approval is cleared, the SQL is classified and dry-run again, and the
            request goes back to pending.
          </p>
          <SqlEditor ref={editor} initial={r.sql ?? ''} schema={NO_SCHEMA} onRun={() => {}} label="New SQL" />
          <ErrorNotice error={act.error} />
          <div className="actions">
            <button type="button" className="secondary" onClick={close}>
              Cancel
            </button>
            <button
              type="button"
              className="primary"
              disabled={act.busy}
              onClick={() => void act.run('edit')}
            >
              Save and start over
            </button>
          </div>
        </Dialog>
      ) : null}
      {open === 'execute' ? (
        <Dialog title="Execute this request?" onClose={close}>
          <p>
            {r.kind === 'access'
              ? 'A temporary login is created now; its password is shown once.'
              : `The SQL runs now as ${r.capability}${
                  r.approved_rows !== null
                    ? `; it is refused if it would affect other than ${r.approved_rows} rows`
                    : ''
                }.`}{' '}
            Executions left: {Math.max(0, r.executions.max - r.executions.count)}.
          </p>
          <ErrorNotice error={act.error} />
          <div className="actions">
            <button type="button" className="secondary" onClick={close}>
              Cancel
            </button>
            <button
              type="button"
              className="primary"
              disabled={act.busy}
              onClick={() => void act.run('execute')}
            >
              {act.busy ? 'Executing…' : 'Execute now'}
            </button>
          </div>
        </Dialog>
      ) : null}
      {open === 'break-glass' ? (
        <Dialog title="Break glass?" onClose={close}>
          <CommentForm
            label="Reason (at least 10 characters)"
            required
            minLength={10}
            action="Break glass and execute"
            danger
            busy={act.busy}
            onSubmit={(t) => void act.run('break-glass', t)}
            onClose={close}
          >
            <p>
              Runs the request now <strong>without its approvals</strong>. It is flagged, audited and
              notified; you will be asked to confirm it's you.
            </p>
          </CommentForm>
          <ErrorNotice error={act.error} />
        </Dialog>
      ) : null}
    </section>
  );
}
