import { type FormEvent, useState } from 'react';
import { api, call } from '../../api/client.ts';
import { ErrorNotice } from '../../components/error-notice.tsx';
import { Empty, Loading } from '../../components/page.tsx';
import { TableWrap } from '../../components/table-wrap.tsx';
import { dateTime, duration } from '../../lib/format.ts';
import { useAction, useApi, useNow } from '../../lib/use-api.ts';
import { clientIp, useMe } from '../../session.tsx';
import type { TabProps } from './detail.tsx';

const EXPIRY = [
  ['', 'Never'],
  ['3600', 'In 1 hour'],
  ['86400', 'In 1 day'],
  ['604800', 'In 7 days'],
] as const;

function asCidr(ip: string): string {
  return ip.includes(':') ? `${ip}/128` : `${ip}/32`;
}

export function NetworkTab({ db, reload }: TabProps) {
  const name = db.name;
  const { me } = useMe();
  const myIp = clientIp(me);
  const now = useNow(1000);
  const list = useApi(
    () => call(api.GET('/v1/databases/{name}/allowlist', { params: { path: { name } } })),
    name,
  );
  const [cidr, setCidr] = useState('');
  const [note, setNote] = useState('');
  const [expiry, setExpiry] = useState<string>('');

  const add = useAction(async () => {
    const body = {
      cidr: cidr.trim(),
      ...(note.trim() ? { note: note.trim() } : {}),
      ...(expiry ? { expires_at: new Date(Date.now() + Number(expiry) * 1000).toISOString() } : {}),
    };
    const out = await call(api.POST('/v1/databases/{name}/allowlist', { params: { path: { name } }, body }));
    list.setData(out);
    setCidr('');
    setNote('');
    reload();
  });
  const remove = useAction(async (entry: string) => {
    const out = await call(
      api.DELETE('/v1/databases/{name}/allowlist/{cidr}', { params: { path: { name, cidr: entry } } }),
    );
    list.setData(out);
    reload();
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void add.run();
  };
  const entries = list.data?.entries ?? [];
  const mine = myIp ? asCidr(myIp) : null;
  return (
    <section aria-labelledby="tab-h">
      <h2 id="tab-h">Network</h2>
      <p>
        The pooler admits connections to <strong>{name}</strong> only from these addresses. Removing one cuts
        its open connections too.
      </p>
      <ErrorNotice error={list.error} title="Could not read the allowlist" />
      {!list.data && list.loading ? <Loading what="the allowlist" /> : null}
      {list.data && entries.length === 0 ? (
        <Empty>
          <p>
            No addresses are allowed yet, so nobody can connect. Add your current IP below (or your servers'
            ranges) to open the door.
          </p>
        </Empty>
      ) : null}
      {entries.length > 0 ? (
        <TableWrap label="Allowed addresses">
          <table>
            <caption className="sr-only">Allowed addresses</caption>
            <thead>
              <tr>
                <th scope="col">Address</th>
                <th scope="col">Note</th>
                <th scope="col">Expires</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {entries.map((e) => {
                const left = e.expires_at ? (Date.parse(e.expires_at) - now) / 1000 : null;
                return (
                  <tr key={e.cidr}>
                    <th scope="row" className="mono">
                      {e.cidr}
                      {e.cidr === mine ? <span className="muted small"> (you)</span> : null}
                    </th>
                    <td>{e.note ?? <span className="muted">—</span>}</td>
                    <td>
                      {left === null ? (
                        'Never'
                      ) : left > 0 ? (
                        <time dateTime={e.expires_at ?? undefined} title={dateTime(e.expires_at)}>
                          expires in {duration(left)}
                        </time>
                      ) : (
                        'expired'
                      )}
                    </td>
                    <td>
                      <button
                        type="button"
                        className="secondary small"
                        disabled={remove.busy}
                        onClick={() => void remove.run(e.cidr)}
                      >
                        Remove {e.cidr}
                      </button>
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </TableWrap>
      ) : null}
      <ErrorNotice error={remove.error} title="Could not remove the entry" />
      <form className="card form" onSubmit={submit} aria-label="Add an allowlist entry">
        <h3>Add an address</h3>
        <div className="field-row">
          <label className="grow">
            <span>Address or range (CIDR)</span>
            <input
              name="cidr"
              required
              maxLength={64}
              placeholder="203.0.113.7/32"
              spellCheck={false}
              className="mono"
              value={cidr}
              onChange={(e) => setCidr(e.target.value)}
            />
          </label>
          {mine ? (
            <button type="button" className="secondary" onClick={() => setCidr(mine)}>
              Add my current IP
            </button>
          ) : null}
        </div>
        {mine ? <p className="hint">Your address as the server sees it: {myIp}</p> : null}
        <label>
          <span>Note</span>
          <input
            name="note"
            maxLength={200}
            placeholder="Office, CI runner…"
            value={note}
            onChange={(e) => setNote(e.target.value)}
          />
        </label>
        <label>
          <span>Expires</span>
          <select value={expiry} onChange={(e) => setExpiry(e.target.value)}>
            {EXPIRY.map(([v, l]) => (
              <option key={l} value={v}>
                {l}
              </option>
            ))}
          </select>
        </label>
        <button type="submit" className="primary" disabled={add.busy}>
          Add entry
        </button>
        <ErrorNotice error={add.error} />
      </form>
    </section>
  );
}
