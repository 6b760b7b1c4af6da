import { type FormEvent, useRef, useState } from 'react';
import { useLocation } from 'wouter';
import { api, call } from '../../api/client.ts';
import { ApiError } from '../../api/errors.ts';
import { ErrorNotice } from '../../components/error-notice.tsx';
import { useAction } from '../../lib/use-api.ts';
import { SqlEditor, type SqlEditorHandle } from '../databases/sql-editor.tsx';
import { ClassBadge, ClassificationNotes, DryRunBox, Findings, PolicyBox } from './parts.tsx';
import { type Preflight, requestHref } from './types.ts';

type Capability = 'auto' | 'reader' | 'migrator';
/** No completion in the request editor: the SQL is reviewed, not explored. */
const NO_SCHEMA: Record<string, string[]> = {};
const MAX_REASON = 2000;

/**
 * A new SQL request: the SQL, why, the role it runs as; "Preflight" shows what the server will
 * decide (class, findings, the policy rule, the dry run) before anything is stored; then submit.
 */
export function NewSqlRequest({ database, onClose }: { database: string; onClose: () => void }) {
  const [, navigate] = useLocation();
  const editor = useRef<SqlEditorHandle>(null);
  const [reason, setReason] = useState('');
  const [capability, setCapability] = useState<Capability>('auto');
  const [preflight, setPreflight] = useState<{ sql: string; out: Preflight } | null>(null);
  const sqlNow = () => {
    const text = editor.current?.value().trim() ?? '';
    if (!text) throw new ApiError(0, 'empty', 'Write the SQL first.', null);
    return text;
  };
  const cap = capability === 'auto' ? {} : { capability };
  const check = useAction(async () => {
    const sql = sqlNow();
    const out = await call(
      api.POST('/v1/databases/{name}/requests/preflight', {
        params: { path: { name: database } },
        body: { sql, ...cap },
      }),
    );
    setPreflight({ sql, out });
  });
  const submit = useAction(async () => {
    const sql = sqlNow();
    if (!reason.trim()) throw new ApiError(0, 'empty', 'Say why: approvers read the reason.', null);
    const created = await call(
      api.POST('/v1/databases/{name}/requests', {
        params: { path: { name: database } },
        body: { sql, reason: reason.trim(), ...cap },
      }),
    );
    navigate(requestHref(created));
  });
  const onSubmit = (e: FormEvent) => {
    e.preventDefault();
    void submit.run();
  };
  const p = preflight?.out;
  // What the server would refuse anyway: refused SQL, a blocking finding, a requester the policy does
  // not allow (as of the last preflight: after a fix, the next preflight lifts it).
  const blocked = p
    ? p.classification.class === 'refused' ||
      p.findings.some((f) => f.severity === 'block') ||
      !p.policy.allowed
    : false;
  return (
    <form className="card form" onSubmit={onSubmit} aria-labelledby="new-req-h">
      <h3 id="new-req-h">New SQL request</h3>
      <p className="muted small">
        The SQL runs in one transaction on the database once the policy's approvals are given. A write is
        dry-run first: the approvals bind its row count.
      </p>
      <div className="field">
        <span>SQL</span>
        <SqlEditor
          ref={editor}
          initial=""
          schema={NO_SCHEMA}
          onRun={() => void check.run()}
          label="Request SQL"
        />
        <span className="hint">Ctrl+Enter runs the preflight.</span>
      </div>
      <label>
        <span>Reason</span>
        <textarea
          required
          rows={2}
          maxLength={MAX_REASON}
          value={reason}
          onChange={(e) => setReason(e.target.value)}
        />
      </label>
      <label>
        <span>Runs as</span>
        <select value={capability} onChange={(e) => setCapability(e.target.value as Capability)}>
          <option value="auto">Automatic (reader for reads, migrator otherwise)</option>
          <option value="reader">reader</option>
          <option value="migrator">migrator</option>
        </select>
      </label>
      <div className="actions">
        <button type="button" className="secondary" disabled={check.busy} onClick={() => void check.run()}>
          Preflight
        </button>
        <button type="submit" className="primary" disabled={submit.busy || blocked}>
          Submit for approval
        </button>
        <button type="button" className="link" onClick={onClose}>
          Close
        </button>
      </div>
      <ErrorNotice error={check.error} title="Preflight failed" />
      <ErrorNotice error={submit.error} title="Could not submit" />
      {p ? (
        <section className="preflight" aria-labelledby="preflight-h">
          <h4 id="preflight-h">
            Preflight: <ClassBadge cls={p.classification.class} />
          </h4>
          <ClassificationNotes classification={p.classification} />
          <Findings findings={p.findings} />
          <PolicyBox policy={p.policy} />
          <DryRunBox dryRun={p.dry_run} error={p.dry_run_error} />
          {blocked ? (
            <p className="bad">
              {p.policy.allowed
                ? 'This SQL cannot be submitted: fix what blocks it above, then run the preflight again.'
                : 'The policy does not let you make this request.'}
            </p>
          ) : null}
        </section>
      ) : null}
    </form>
  );
}

/** Up to the built-in limit (8 h); a policy may allow less (the server says so). */
const DURATIONS: [number, string][] = [
  [1800, '30 minutes'],
  [3600, '1 hour'],
  [2 * 3600, '2 hours'],
  [4 * 3600, '4 hours'],
  [8 * 3600, '8 hours'],
];

/** Just-in-time access: a temporary login with the reader or migrator role, after approval. */
export function RequestAccess({ database, onClose }: { database: string; onClose: () => void }) {
  const [, navigate] = useLocation();
  const [role, setRole] = useState<'reader' | 'migrator'>('reader');
  const [duration, setDuration] = useState(3600);
  const [reason, setReason] = useState('');
  const create = useAction(async () => {
    const created = await call(
      api.POST('/v1/databases/{name}/requests', {
        params: { path: { name: database } },
        body: { reason: reason.trim(), access: { role, duration_s: duration } },
      }),
    );
    navigate(requestHref(created));
  });
  return (
    <form
      className="card form"
      aria-labelledby="access-h"
      onSubmit={(e) => {
        e.preventDefault();
        void create.run();
      }}
    >
      <h3 id="access-h">Request access</h3>
      <p className="muted small">
        A temporary database login, created after approval and removed when it expires. Its password is shown
        once, when you execute the approved request.
      </p>
      <label>
        <span>Role</span>
        <select value={role} onChange={(e) => setRole(e.target.value as 'reader' | 'migrator')}>
          <option value="reader">reader (read only)</option>
          <option value="migrator">migrator (reads, writes and schema changes)</option>
        </select>
      </label>
      <label>
        <span>For</span>
        <select value={duration} onChange={(e) => setDuration(Number(e.target.value))}>
          {DURATIONS.map(([s, label]) => (
            <option key={s} value={s}>
              {label}
            </option>
          ))}
        </select>
      </label>
      <label>
        <span>Reason</span>
        <textarea
          required
          rows={2}
          maxLength={MAX_REASON}
          value={reason}
          onChange={(e) => setReason(e.target.value)}
        />
      </label>
      <div className="actions">
        <button type="submit" className="primary" disabled={create.busy}>
          Submit access request
        </button>
        <button type="button" className="link" onClick={onClose}>
          Close
        </button>
      </div>
      <ErrorNotice error={create.error} title="Could not request access" />
    </form>
  );
}
