import { type FormEvent, useState } from 'react';
import { api, call } from '../api/client.ts';
import { CopyButton } from '../components/copy-button.tsx';
import { ConfirmDialog } from '../components/dialog.tsx';
import { ErrorNotice } from '../components/error-notice.tsx';
import { Empty, Loading, Page } from '../components/page.tsx';
import { Pager, useCursorPages } from '../components/pager.tsx';
import { StatusBadge } from '../components/status-badge.tsx';
import { TableWrap } from '../components/table-wrap.tsx';
import { ago, dateTime } from '../lib/format.ts';
import { useAction, useApi } from '../lib/use-api.ts';
import { useReauth } from '../reauth.tsx';
import { useMe } from '../session.tsx';

type Level = 'read' | 'write' | 'admin';
const EXPIRY_DAYS = [7, 30, 90, 365] as const;
const DB_NAME = /^[a-z][a-z0-9_]{0,62}$/;

function CreateKey({ onCreated }: { onCreated: () => void }) {
  const withReauth = useReauth();
  const [name, setName] = useState('');
  const [scope, setScope] = useState<'account' | 'some'>('account');
  const [dbs, setDbs] = useState('');
  const [level, setLevel] = useState<Level>('read');
  const [explorer, setExplorer] = useState(false);
  const [days, setDays] = useState<number>(90);
  const [secret, setSecret] = useState<string | null>(null);
  const names = dbs
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  const badNames = names.filter((n) => !DB_NAME.test(n));
  const create = useAction(async () => {
    const body = {
      name: name.trim(),
      level,
      explorer,
      expires_at: new Date(Date.now() + days * 86_400_000).toISOString(),
      ...(scope === 'some' ? { databases: names } : {}),
    };
    const out = await withReauth(() => call(api.POST('/v1/keys', { body })));
    setSecret(out.key ?? null);
    setName('');
    onCreated();
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (scope === 'some' && (names.length === 0 || badNames.length)) return;
    void create.run();
  };
  if (secret)
    return (
      <section className="card" aria-labelledby="new-key-h">
        <h2 id="new-key-h">Your new key</h2>
        <p>
          Copy it now: this is the only time it is shown. Bulwark keeps only a hash. Use it as{' '}
          <code>Authorization: Bearer …</code>.
        </p>
        <div className="field-row">
          <label className="grow">
            <span>New API key</span>
            <input readOnly className="mono" value={secret} onFocus={(e) => e.target.select()} />
          </label>
          <CopyButton text={secret} label="Copy key" />
        </div>
        <button type="button" className="primary" onClick={() => setSecret(null)}>
          Done
        </button>
      </section>
    );
  return (
    <form className="card form" onSubmit={submit} aria-labelledby="create-key-h">
      <h2 id="create-key-h">Create a key</h2>
      <label>
        <span>Name</span>
        <input required maxLength={100} value={name} onChange={(e) => setName(e.target.value)} />
      </label>
      <fieldset>
        <legend>Scope</legend>
        <label className="inline">
          <input
            type="radio"
            name="scope"
            checked={scope === 'account'}
            onChange={() => setScope('account')}
          />
          <span>Whole account</span>
        </label>
        <label className="inline">
          <input type="radio" name="scope" checked={scope === 'some'} onChange={() => setScope('some')} />
          <span>Some databases</span>
        </label>
        {scope === 'some' ? (
          <div className="field">
            <label>
              <span>Databases (comma-separated)</span>
              <input
                maxLength={6400}
                aria-invalid={badNames.length > 0}
                aria-describedby="dbs-hint"
                value={dbs}
                onChange={(e) => setDbs(e.target.value)}
              />
            </label>
            <span id="dbs-hint" className={badNames.length ? 'hint hint-bad' : 'hint'}>
              {badNames.length
                ? `Not database names: ${badNames.join(', ')}`
                : 'For example: shop, shop_staging'}
            </span>
          </div>
        ) : null}
      </fieldset>
      <div className="grid2">
        <label>
          <span>Level</span>
          <select value={level} onChange={(e) => setLevel(e.target.value as Level)}>
            <option value="read">Read: list and inspect</option>
            <option value="write">Write: create, change</option>
            <option value="admin">Admin: also keys and deletes</option>
          </select>
        </label>
        <label>
          <span>Expires</span>
          <select value={days} onChange={(e) => setDays(Number(e.target.value))}>
            {EXPIRY_DAYS.map((d) => (
              <option key={d} value={d}>
                In {d} days
              </option>
            ))}
          </select>
        </label>
      </div>
      <label className="inline">
        <input type="checkbox" checked={explorer} onChange={(e) => setExplorer(e.target.checked)} />
        <span>Allow the SQL explorer</span>
      </label>
      <button type="submit" className="primary" disabled={create.busy}>
        Create key
      </button>
      <ErrorNotice error={create.error} />
    </form>
  );
}

export default function Keys() {
  const { account } = useMe();
  const pages = useCursorPages();
  const { cursor } = pages;
  const keys = useApi(
    () => call(api.GET('/v1/keys', { params: { query: { limit: 50, ...(cursor ? { cursor } : {}) } } })),
    `${account}|${cursor}`,
  );
  const [revoking, setRevoking] = useState<{ id: string; name: string } | null>(null);
  const revoke = useAction(async (id: string) => {
    await call(api.DELETE('/v1/keys/{id}', { params: { path: { id } } }));
    setRevoking(null);
    keys.reload();
  });
  const items = keys.data?.items ?? [];
  return (
    <Page title="API keys">
      <p>Keys let scripts, CI and the CLI call the API. A key never outranks the person who created it.</p>
      <CreateKey onCreated={keys.reload} />
      <h2>Keys</h2>
      <ErrorNotice error={keys.error} title="Could not list keys" />
      {!keys.data && keys.loading ? <Loading what="keys" /> : null}
      {keys.data && items.length === 0 ? (
        <Empty>
          <p>
            No keys yet. Create one above for a script or CI job; give it the lowest level that does the job.
          </p>
        </Empty>
      ) : null}
      {items.length > 0 ? (
        <TableWrap label="API keys">
          <table>
            <caption className="sr-only">API keys</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Prefix</th>
                <th scope="col">Level</th>
                <th scope="col">Scope</th>
                <th scope="col">Explorer</th>
                <th scope="col">Last used</th>
                <th scope="col">Expires</th>
                <th scope="col">Status</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {items.map((k) => (
                <tr key={k.id}>
                  <th scope="row">{k.name}</th>
                  <td className="mono">{k.prefix}</td>
                  <td>{k.level}</td>
                  <td>{k.databases ? k.databases.join(', ') : 'Whole account'}</td>
                  <td>{k.explorer ? 'Yes' : 'No'}</td>
                  <td title={dateTime(k.last_used_at)}>
                    {ago(k.last_used_at)}
                    {k.last_used_ip ? <span className="muted small"> from {k.last_used_ip}</span> : null}
                  </td>
                  <td>{dateTime(k.expires_at)}</td>
                  <td>
                    <StatusBadge status={k.status} />
                  </td>
                  <td>
                    {k.status === 'active' ? (
                      <button
                        type="button"
                        className="secondary small"
                        onClick={() => setRevoking({ id: k.id, name: k.name })}
                      >
                        Revoke <bdi>{k.name}</bdi>
                      </button>
                    ) : null}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </TableWrap>
      ) : null}
      <Pager pages={pages} next={keys.data?.next_cursor} />
      {revoking ? (
        <ConfirmDialog
          title={
            <>
              Revoke key <bdi>{revoking.name}</bdi>?
            </>
          }
          action="Revoke"
          danger
          busy={revoke.busy}
          onConfirm={() => void revoke.run(revoking.id)}
          onClose={() => {
            setRevoking(null);
            revoke.clear();
          }}
        >
          <p>Every server refuses it from the next request on. This cannot be undone.</p>
          <ErrorNotice error={revoke.error} />
        </ConfirmDialog>
      ) : null}
    </Page>
  );
}
