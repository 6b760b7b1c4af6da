import { useEffect, useState } from 'react';
import { api, call } from '../../api/client.ts';
import { CopyButton } from '../../components/copy-button.tsx';
import { ConfirmDialog } from '../../components/dialog.tsx';
import { ErrorNotice } from '../../components/error-notice.tsx';
import { Loading } from '../../components/page.tsx';
import { dateTime } from '../../lib/format.ts';
import { useAction, useApi } from '../../lib/use-api.ts';
import { useReauth } from '../../reauth.tsx';
import type { TabProps } from './detail.tsx';

/** The URI with the password in it (percent-encoded), for snippets after a reveal. */
function withPassword(uri: string, password: string): string {
  const at = uri.indexOf('@');
  const scheme = uri.indexOf('://') + 3;
  if (at < scheme || scheme < 3) return uri;
  return `${uri.slice(0, at)}:${encodeURIComponent(password)}${uri.slice(at)}`;
}

function Snippet({ title, text }: { title: string; text: string }) {
  return (
    <div className="snippet">
      <h3>{title}</h3>
      <pre>
        <code>{text}</code>
      </pre>
      <CopyButton text={text} label={`Copy ${title} snippet`} />
    </div>
  );
}

export function ConnectTab({ db, reload }: TabProps) {
  const name = db.name;
  const withReauth = useReauth();
  const conn = useApi(
    () => call(api.GET('/v1/databases/{name}/connection', { params: { path: { name } } })),
    `${name}|${db.status}`,
  );
  const [password, setPassword] = useState<string | null>(null);
  const [confirmRotate, setConfirmRotate] = useState(false);
  /** The rotation being followed: its request time as the server stamped it (null: not following). */
  const [rotating, setRotating] = useState<{ requestedAt: string | null; until: number } | null>(null);

  // Revealing needs a recent re-authentication: "Confirm it's you" asks for it when the API does.
  const reveal = useAction(async () => {
    const out = await withReauth(() =>
      call(api.POST('/v1/databases/{name}/credentials/reveal', { params: { path: { name } }, body: {} })),
    );
    setPassword(out.password);
  });

  const rotate = useAction(async () => {
    const out = await call(
      api.POST('/v1/databases/{name}/credentials/rotate', { params: { path: { name } } }),
    );
    setConfirmRotate(false);
    setPassword(null);
    setRotating({ requestedAt: out.last_rotation?.requested_at ?? null, until: Date.now() + 120_000 });
    reload();
  });
  // Follows the rotation (polling the database, at most two minutes) until this request has an outcome.
  useEffect(() => {
    if (!rotating && !db.rotation_pending) return;
    const r = db.last_rotation;
    const settled =
      !db.rotation_pending &&
      r !== null &&
      r.status !== 'pending' &&
      (rotating === null || rotating.requestedAt === null || r.requested_at === rotating.requestedAt);
    if (settled || (rotating && Date.now() > rotating.until)) {
      setRotating(null);
      return;
    }
    const t = setTimeout(reload, 1000);
    return () => clearTimeout(t);
  }, [rotating, db, reload]);

  if (db.status !== 'ready')
    return (
      <section aria-labelledby="tab-h">
        <h2 id="tab-h">Connect</h2>
        <p>The connection details appear once the database is ready (now: {db.status}).</p>
      </section>
    );
  const uri = conn.data?.uri ?? '';
  const full = password ? withPassword(uri, password) : uri;
  const rotation = db.last_rotation;
  return (
    <section aria-labelledby="tab-h">
      <h2 id="tab-h">Connect</h2>
      <ErrorNotice error={conn.error} title="Could not read the connection details" />
      {!conn.data && conn.loading ? <Loading what="connection details" /> : null}
      {conn.data ? (
        <>
          <p>
            Connect through the pooler (PgBouncer) on port {conn.data.port}. Only addresses on the Network
            tab's allowlist get in.
          </p>
          <div className="field-row">
            <label className="grow">
              <span>Connection URI</span>
              <input readOnly className="mono" value={uri} onFocus={(e) => e.target.select()} />
            </label>
            <CopyButton text={uri} label="Copy connection URI" />
          </div>
          <div className="card">
            <h3>Password</h3>
            {password ? (
              <div className="field-row">
                <label className="grow">
                  <span>Database password</span>
                  <input readOnly className="mono" value={password} onFocus={(e) => e.target.select()} />
                </label>
                <CopyButton text={password} label="Copy password" />
                <button type="button" className="secondary" onClick={() => setPassword(null)}>
                  Hide password
                </button>
              </div>
            ) : (
              <p className="muted">Hidden. Revealing it asks you to confirm it's you, and is audited.</p>
            )}
            <div className="actions">
              {!password ? (
                <button
                  type="button"
                  className="secondary"
                  disabled={reveal.busy}
                  onClick={() => void reveal.run()}
                >
                  Reveal password
                </button>
              ) : null}
              <button type="button" className="secondary" onClick={() => setConfirmRotate(true)}>
                Rotate password
              </button>
            </div>
            <div role="status">
              {rotating || db.rotation_pending ? <p>Rotating the password…</p> : null}
              {!rotating && rotation && rotation.status !== 'pending' ? (
                <p className={rotation.status === 'succeeded' ? 'ok' : 'bad'}>
                  {rotation.status === 'succeeded'
                    ? `Password rotated ${dateTime(rotation.at)}.`
                    : `Last rotation ${rotation.status.replace('_', ' ')}: ${rotation.reason ?? 'no reason given'}`}
                </p>
              ) : null}
            </div>
            <ErrorNotice error={reveal.error} />
            {confirmRotate ? null : <ErrorNotice error={rotate.error} />}
          </div>
          <Snippet title="psql" text={`psql "${full}"`} />
          <Snippet title="DATABASE_URL" text={`DATABASE_URL='${full}'`} />
          <Snippet
            title="node-postgres"
            text={`import pg from 'pg';\n\nconst pool = new pg.Pool({ connectionString: process.env.DATABASE_URL });\nconst { rows } = await pool.query('select now()');`}
          />
        </>
      ) : null}
      {confirmRotate ? (
        <ConfirmDialog
          title="Rotate the password?"
          action="Rotate"
          danger
          busy={rotate.busy}
          onConfirm={() => void rotate.run()}
          onClose={() => setConfirmRotate(false)}
        >
          <p>
            A new password replaces the current one at once: connections using the old one are closed, and
            every application must be given the new one.
          </p>
          <ErrorNotice error={rotate.error} />
        </ConfirmDialog>
      ) : null}
    </section>
  );
}
