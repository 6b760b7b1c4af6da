import { type FormEvent, useState } from 'react';
import { api, call } from '../../api/client.ts';
import { CopyButton } from '../../components/copy-button.tsx';
import { ErrorNotice } from '../../components/error-notice.tsx';
import { Empty, Loading } from '../../components/page.tsx';
import { TableWrap } from '../../components/table-wrap.tsx';
import { dateTime } from '../../lib/format.ts';
import { useAction, useApi } from '../../lib/use-api.ts';
import { useReauth } from '../../reauth.tsx';
import { type Role, useMe } from '../../session.tsx';

/** The link carries the code in the fragment, which browsers never send to a server. */
function inviteLink(code: string): string {
  return `${window.location.origin}/#invite=${encodeURIComponent(code)}`;
}

export function InvitesSection() {
  const { me, account } = useMe();
  const withReauth = useReauth();
  const [count, setCount] = useState('1');
  const [role, setRole] = useState<Role>('member');
  const [platformAdmin, setPlatformAdmin] = useState(false);
  const [hours, setHours] = useState('72');
  const [links, setLinks] = useState<{ link: string; expires_at: string }[]>([]);
  const pending = useApi(
    () => call(api.GET('/v1/invites', { params: { query: { limit: 100 } } })),
    account ?? '',
  );
  const create = useAction(async () => {
    const body = {
      count: Number(count),
      role,
      expires_in_hours: Number(hours),
      ...(platformAdmin ? { platform_admin: true } : {}),
      ...(account ? { account } : {}),
    };
    const out = await withReauth(() => call(api.POST('/v1/invites', { body })));
    setLinks(out.invites.map((i) => ({ link: inviteLink(i.code), expires_at: i.expires_at })));
    pending.reload();
  });
  const revoke = useAction(async (id: string) => {
    await call(api.DELETE('/v1/invites/{id}', { params: { path: { id } } }));
    pending.reload();
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    void create.run();
  };
  const items = pending.data?.items ?? [];
  return (
    <section aria-labelledby="section-h">
      <h2 id="section-h">Invites</h2>
      <form className="card form" onSubmit={submit} aria-label="Create invites">
        <div className="grid2">
          <label>
            <span>Number of invites</span>
            <input
              type="number"
              min={1}
              max={100}
              required
              value={count}
              onChange={(e) => setCount(e.target.value)}
            />
          </label>
          <label>
            <span>Role</span>
            <select value={role} onChange={(e) => setRole(e.target.value as Role)}>
              <option value="viewer">viewer</option>
              <option value="member">member</option>
              <option value="admin">admin</option>
              <option value="owner">owner</option>
            </select>
          </label>
          <label>
            <span>Expires in (hours)</span>
            <input
              type="number"
              min={1}
              max={720}
              required
              value={hours}
              onChange={(e) => setHours(e.target.value)}
            />
          </label>
        </div>
        {me.user.platform_admin ? (
          <label className="inline">
            <input
              type="checkbox"
              checked={platformAdmin}
              onChange={(e) => setPlatformAdmin(e.target.checked)}
            />
            <span>Platform admin</span>
          </label>
        ) : null}
        <button type="submit" className="primary" disabled={create.busy}>
          Create invites
        </button>
        <ErrorNotice error={create.error} />
      </form>
      {links.length > 0 ? (
        <section className="card" aria-labelledby="links-h">
          <h3 id="links-h">New invite links</h3>
          <p>Send each link to one person. They are shown only now; each works once.</p>
          <ol className="links">
            {links.map((l, i) => (
              <li key={l.link}>
                <code className="wrap">{l.link}</code>{' '}
                <CopyButton text={l.link} label={`Copy link ${i + 1}`} className="secondary small" />
                <span className="muted small"> expires {dateTime(l.expires_at)}</span>
              </li>
            ))}
          </ol>
          <CopyButton text={links.map((l) => l.link).join('\n')} label="Copy all links" />
        </section>
      ) : null}
      <h3>Pending invites</h3>
      <ErrorNotice error={pending.error} title="Could not list invites" />
      <ErrorNotice error={revoke.error} />
      {!pending.data && pending.loading ? <Loading what="invites" /> : null}
      {pending.data && items.length === 0 ? (
        <Empty>
          <p>No pending invites. Create some above to bring people in.</p>
        </Empty>
      ) : null}
      {items.length > 0 ? (
        <TableWrap label="Pending invites">
          <table>
            <caption className="sr-only">Pending invites</caption>
            <thead>
              <tr>
                <th scope="col">#</th>
                <th scope="col">Account</th>
                <th scope="col">Role</th>
                <th scope="col">Expires</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {items.map((inv, i) => (
                <tr key={inv.id}>
                  <th scope="row">{i + 1}</th>
                  <td>{inv.account?.name ?? '—'}</td>
                  <td>
                    {inv.role ?? '—'}
                    {inv.platform_admin ? ' (platform admin)' : ''}
                  </td>
                  <td>{dateTime(inv.expires_at)}</td>
                  <td>
                    <button
                      type="button"
                      className="secondary small"
                      disabled={revoke.busy}
                      onClick={() => void revoke.run(inv.id)}
                    >
                      Revoke invite {i + 1}
                    </button>
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </TableWrap>
      ) : null}
    </section>
  );
}
