import { type FormEvent, useEffect, useState } from 'react';
import { useLocation } from 'wouter';
import { api, call } from '../../api/client.ts';
import { ErrorNotice } from '../../components/error-notice.tsx';
import { Loading } from '../../components/page.tsx';
import { useAction, useApi } from '../../lib/use-api.ts';
import type { TabProps } from './detail.tsx';

type Limits = {
  owner_connection_limit: number;
  reader_connection_limit: number;
  statement_timeout_ms: number;
  idle_in_transaction_timeout_ms: number;
};

const FIELDS: { key: keyof Limits; label: string; min: number; max: number; hint: string }[] = [
  {
    key: 'owner_connection_limit',
    label: 'Owner connection limit',
    min: 1,
    max: 10_000,
    hint: "The application's login.",
  },
  {
    key: 'reader_connection_limit',
    label: 'Reader connection limit',
    min: 1,
    max: 10_000,
    hint: 'The read-only login.',
  },
  {
    key: 'statement_timeout_ms',
    label: 'Statement timeout (ms)',
    min: 0,
    max: 86_400_000,
    hint: '0 means none.',
  },
  {
    key: 'idle_in_transaction_timeout_ms',
    label: 'Idle in transaction timeout (ms)',
    min: 0,
    max: 86_400_000,
    hint: '0 means none.',
  },
];

function LimitsForm({ name }: { name: string }) {
  const limits = useApi(
    () => call(api.GET('/v1/databases/{name}/limits', { params: { path: { name } } })),
    name,
  );
  const [draft, setDraft] = useState<Record<keyof Limits, string> | null>(null);
  const [saved, setSaved] = useState(false);
  useEffect(() => {
    if (limits.data)
      setDraft(
        Object.fromEntries(FIELDS.map((f) => [f.key, String(limits.data?.[f.key] ?? '')])) as Record<
          keyof Limits,
          string
        >,
      );
  }, [limits.data]);
  const save = useAction(async () => {
    if (!draft) return;
    const body = Object.fromEntries(FIELDS.map((f) => [f.key, Number(draft[f.key])])) as Limits;
    limits.setData(await call(api.PUT('/v1/databases/{name}/limits', { params: { path: { name } }, body })));
    setSaved(true);
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setSaved(false);
    void save.run();
  };
  return (
    <form className="card form" onSubmit={submit} aria-labelledby="limits-h">
      <h3 id="limits-h">Limits</h3>
      <ErrorNotice error={limits.error} title="Could not read the limits" />
      {!draft && limits.loading ? <Loading what="limits" /> : null}
      {draft ? (
        <>
          <div className="grid2">
            {FIELDS.map((f) => (
              <div key={f.key} className="field">
                <label>
                  <span>{f.label}</span>
                  <input
                    type="number"
                    inputMode="numeric"
                    required
                    min={f.min}
                    max={f.max}
                    step={1}
                    aria-describedby={`${f.key}-hint`}
                    value={draft[f.key]}
                    onChange={(e) => setDraft({ ...draft, [f.key]: e.target.value })}
                  />
                </label>
                <span id={`${f.key}-hint`} className="hint">
                  {f.hint}
                </span>
              </div>
            ))}
          </div>
          <button type="submit" className="primary" disabled={save.busy}>
            Save limits
          </button>
          <p role="status" className="ok">
            {saved && !save.busy && !save.error ? 'Limits saved.' : ''}
          </p>
          <ErrorNotice error={save.error} />
        </>
      ) : null}
    </form>
  );
}

export function SettingsTab({ db }: TabProps) {
  const name = db.name;
  const [, navigate] = useLocation();
  const [typed, setTyped] = useState('');
  const remove = useAction(async () => {
    await call(api.DELETE('/v1/databases/{name}', { params: { path: { name } }, body: { confirm: typed } }));
    navigate('/databases');
  });
  return (
    <section aria-labelledby="tab-h">
      <h2 id="tab-h">Settings</h2>
      {db.status === 'ready' ? (
        <LimitsForm name={name} />
      ) : (
        <p>Limits can be changed once the database is ready.</p>
      )}
      <form
        className="card form danger-zone"
        aria-labelledby="delete-h"
        onSubmit={(e) => {
          e.preventDefault();
          if (typed === name) void remove.run();
        }}
      >
        <h3 id="delete-h">Delete database</h3>
        <p>
          This drops <strong>{name}</strong>, its roles and its pooler entry. It cannot be undone.
        </p>
        <label>
          <span>Type the database name to confirm</span>
          <input
            autoComplete="off"
            spellCheck={false}
            maxLength={63}
            value={typed}
            onChange={(e) => setTyped(e.target.value)}
          />
        </label>
        <button type="submit" className="danger" disabled={typed !== name || remove.busy}>
          Delete database
        </button>
        <ErrorNotice error={remove.error} />
      </form>
    </section>
  );
}
