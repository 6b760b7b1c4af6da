import { type FormEvent, useEffect, useState } from 'react';
import { Link } from 'wouter';
import { api, call } from '../../api/client.ts';
import type { ApiError } from '../../api/errors.ts';
import { asApiError } from '../../api/errors.ts';
import { ErrorNotice } from '../../components/error-notice.tsx';
import { Page } from '../../components/page.tsx';
import { useAction } from '../../lib/use-api.ts';
import { nameProblem } from './name-rule.ts';
import type { Database } from './types.ts';

const POLL_MS = 1000;
const POLL_LIMIT_MS = 10 * 60_000;

/** Follows a new database until it is ready or failed (bounded: ten minutes). */
function useProvisioning(name: string | null): {
  db: Database | null;
  error: ApiError | null;
  gaveUp: boolean;
} {
  const [db, setDb] = useState<Database | null>(null);
  const [error, setError] = useState<ApiError | null>(null);
  const [gaveUp, setGaveUp] = useState(false);
  useEffect(() => {
    if (!name) return;
    let stop = false;
    const started = Date.now();
    const tick = async () => {
      if (stop) return;
      try {
        const d = await call(api.GET('/v1/databases/{name}', { params: { path: { name } } }));
        if (stop) return;
        setDb(d);
        setError(null);
        if (d.status !== 'provisioning') return;
      } catch (err) {
        if (stop) return;
        setError(asApiError(err));
      }
      if (Date.now() - started > POLL_LIMIT_MS) setGaveUp(true);
      else setTimeout(tick, POLL_MS);
    };
    void tick();
    return () => {
      stop = true;
    };
  }, [name]);
  return { db, error, gaveUp };
}

export default function CreateDatabase() {
  const [name, setName] = useState('');
  const [touched, setTouched] = useState(false);
  const [created, setCreated] = useState<string | null>(null);
  const problem = nameProblem(name);
  const create = useAction(async () => {
    const d = await call(api.POST('/v1/databases', { body: { name } }));
    setCreated(d.name);
  });
  const progress = useProvisioning(created);
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setTouched(true);
    if (!problem) void create.run();
  };
  const status = progress.db?.status ?? (created ? 'provisioning' : null);
  return (
    <Page title="Create database">
      <form className="card form narrow" onSubmit={submit} aria-label="Create a database">
        <label>
          <span>Database name</span>
          <input
            name="name"
            required
            maxLength={63}
            autoComplete="off"
            spellCheck={false}
            aria-invalid={touched && problem !== null}
            aria-describedby="name-hint"
            disabled={created !== null}
            value={name}
            onChange={(e) => {
              setName(e.target.value);
              setTouched(true);
            }}
          />
        </label>
        <span id="name-hint" className={touched && problem ? 'hint hint-bad' : 'hint'} aria-live="polite">
          {touched && problem
            ? problem
            : name
              ? `"${name}" is a valid name.`
              : 'Lowercase letters, digits and _, starting with a letter; at most 63 characters.'}
        </span>
        <button type="submit" className="primary" disabled={create.busy || created !== null}>
          Create database
        </button>
        <ErrorNotice error={create.error} />
      </form>
      {created ? (
        <section className="card narrow" aria-labelledby="progress-h">
          <h2 id="progress-h">{created}</h2>
          <div role="status" aria-live="polite">
            {status === 'provisioning' ? (
              <p>
                <span className="spinner" aria-hidden="true" /> Provisioning: creating the database, its roles
                and its pooler entry…
              </p>
            ) : null}
            {status === 'ready' ? (
              <p className="ok">
                Ready.{' '}
                <Link href={`/databases/${created}`}>
                  Open <bdi>{created}</bdi>
                </Link>{' '}
                to allow your address and connect.
              </p>
            ) : null}
            {status === 'failed' ? (
              <p className="bad">Failed: {progress.db?.failure_reason ?? 'the node gave no reason'}</p>
            ) : null}
            {status && !['provisioning', 'ready', 'failed'].includes(status) ? <p>Status: {status}</p> : null}
            {progress.gaveUp ? (
              <p>
                Still provisioning after ten minutes: is the node's agent running? See{' '}
                <Link href="/admin/nodes">Nodes</Link>.
              </p>
            ) : null}
          </div>
          <ErrorNotice error={progress.error} title="Could not read the database's status" />
        </section>
      ) : null}
    </Page>
  );
}
