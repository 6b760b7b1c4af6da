import { useState } from 'react';
import { api, call } from '../../api/client.ts';
import { ErrorNotice } from '../../components/error-notice.tsx';
import { Empty, Loading } from '../../components/page.tsx';
import { Pager, useCursorPages } from '../../components/pager.tsx';
import { StatusBadge } from '../../components/status-badge.tsx';
import { TableWrap } from '../../components/table-wrap.tsx';
import { dateTime } from '../../lib/format.ts';
import { useAction, useApi } from '../../lib/use-api.ts';
import { useReauth } from '../../reauth.tsx';
import { type Role, useMe } from '../../session.tsx';

const ROLES: Role[] = ['owner', 'admin', 'member', 'viewer'];

export function UsersSection() {
  const { me, account } = useMe();
  const pages = useCursorPages();
  const { cursor } = pages;
  const users = useApi(
    () => call(api.GET('/v1/users', { params: { query: { limit: 50, ...(cursor ? { cursor } : {}) } } })),
    `${account}|${cursor}`,
  );
  const [done, setDone] = useState('');
  // A promotion asks "Confirm it's you" (step-up); a demotion or a suspension never does.
  const withReauth = useReauth();
  const act = useAction(
    async (kind: 'suspend' | 'reactivate' | 'role', id: string, label: string, role?: Role) => {
      if (kind === 'role' && role) {
        await withReauth(() =>
          call(api.PUT('/v1/users/{id}/role', { params: { path: { id } }, body: { role } })),
        );
        setDone(`${label} is now ${role}.`);
      } else if (kind === 'suspend') {
        await call(api.POST('/v1/users/{id}/suspend', { params: { path: { id } } }));
        setDone(`${label} is suspended: their sessions ended and their keys stopped.`);
      } else {
        await call(api.POST('/v1/users/{id}/reactivate', { params: { path: { id } } }));
        setDone(`${label} is active again.`);
      }
      users.reload();
    },
  );
  const items = users.data?.items ?? [];
  return (
    <section aria-labelledby="section-h">
      <h2 id="section-h">Users</h2>
      <p role="status" className="ok">
        {done}
      </p>
      <ErrorNotice error={act.error} />
      <ErrorNotice error={users.error} title="Could not list users" />
      {!users.data && users.loading ? <Loading what="users" /> : null}
      {users.data && items.length === 0 ? (
        <Empty>
          <p>No users yet. Create invites in the Invites section and send the links.</p>
        </Empty>
      ) : null}
      {items.length > 0 ? (
        <TableWrap label="Users">
          <table>
            <caption className="sr-only">Users</caption>
            <thead>
              <tr>
                <th scope="col">Username</th>
                <th scope="col">Role</th>
                <th scope="col">Status</th>
                <th scope="col">Two-factor</th>
                <th scope="col">Joined</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {items.map((u) => {
                const label = u.username ?? u.id;
                const self = u.id === me.user.id;
                return (
                  <tr key={u.id}>
                    <th scope="row">
                      <bdi>{label}</bdi>
                      {u.platform_admin ? <span className="muted small"> (platform admin)</span> : null}
                      {self ? <span className="muted small"> (you)</span> : null}
                    </th>
                    <td>
                      {u.role ? (
                        <label className="inline">
                          <span className="sr-only">Role for {label}</span>
                          <select
                            value={u.role}
                            disabled={act.busy || self}
                            onChange={(e) => void act.run('role', u.id, label, e.target.value as Role)}
                          >
                            {ROLES.map((r) => (
                              <option key={r} value={r}>
                                {r}
                              </option>
                            ))}
                          </select>
                        </label>
                      ) : (
                        '—'
                      )}
                    </td>
                    <td>
                      <StatusBadge status={u.status} />
                    </td>
                    <td>{u.totp_enabled ? 'On' : 'Off'}</td>
                    <td>{dateTime(u.created_at)}</td>
                    <td>
                      {self ? null : u.status === 'active' ? (
                        <button
                          type="button"
                          className="danger small"
                          disabled={act.busy}
                          onClick={() => void act.run('suspend', u.id, label)}
                        >
                          Suspend {label}
                        </button>
                      ) : (
                        <button
                          type="button"
                          className="secondary small"
                          disabled={act.busy}
                          onClick={() => void act.run('reactivate', u.id, label)}
                        >
                          Reactivate {label}
                        </button>
                      )}
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </TableWrap>
      ) : null}
      <Pager pages={pages} next={users.data?.next_cursor} />
    </section>
  );
}
