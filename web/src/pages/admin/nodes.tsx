import { useState } from 'react';
import { api, call } from '../../api/client.ts';
import { ErrorNotice } from '../../components/error-notice.tsx';
import { Empty, Loading } from '../../components/page.tsx';
import { StatusBadge } from '../../components/status-badge.tsx';
import { TableWrap } from '../../components/table-wrap.tsx';
import { duration } from '../../lib/format.ts';
import { useAction, useApi } from '../../lib/use-api.ts';
import { useMe } from '../../session.tsx';

type Drift = {
  node: { id: string; name: string };
  clean: boolean;
  findings: { kind: string; object: string; detail: string }[];
};
const STALE_S = 120;

export function NodesSection() {
  const { me } = useMe();
  const admin = me.user.platform_admin;
  const nodes = useApi(
    () => (admin ? call(api.GET('/v1/nodes')) : Promise.resolve({ items: [] })),
    String(admin),
  );
  const [drift, setDrift] = useState<Drift | null>(null);
  const cordon = useAction(async (id: string, on: boolean) => {
    const path = on ? '/v1/nodes/{id}/cordon' : '/v1/nodes/{id}/uncordon';
    await call(api.POST(path, { params: { path: { id } } }));
    nodes.reload();
  });
  const check = useAction(async (id: string) => {
    setDrift(null);
    setDrift(await call(api.POST('/v1/nodes/{id}/drift-check', { params: { path: { id } } })));
  });
  if (!admin)
    return (
      <section aria-labelledby="section-h">
        <h2 id="section-h">Nodes</h2>
        <p>Only platform admins see the data-plane nodes.</p>
      </section>
    );
  const items = nodes.data?.items ?? [];
  return (
    <section aria-labelledby="section-h">
      <h2 id="section-h">Nodes</h2>
      <ErrorNotice error={nodes.error} title="Could not list nodes" />
      {!nodes.data && nodes.loading ? <Loading what="nodes" /> : null}
      {nodes.data && items.length === 0 ? (
        <Empty>
          <p>
            No nodes have enrolled. Start an agent on a database host (<code>bulwark up</code> starts one on
            this machine).
          </p>
        </Empty>
      ) : null}
      {items.length > 0 ? (
        <TableWrap label="Nodes">
          <table>
            <caption className="sr-only">Nodes</caption>
            <thead>
              <tr>
                <th scope="col">Name</th>
                <th scope="col">Status</th>
                <th scope="col">Health</th>
                <th scope="col">Placement</th>
                <th scope="col">Last heartbeat</th>
                <th scope="col" className="num">
                  Databases
                </th>
                <th scope="col">Pooler</th>
                <th scope="col">Agent version</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {items.map((n) => {
                const age = n.heartbeat_age_seconds;
                return (
                  <tr key={n.id}>
                    <th scope="row">{n.name}</th>
                    <td>
                      <StatusBadge status={n.status} />
                    </td>
                    <td className={n.health === 'unhealthy' ? 'bad' : undefined}>
                      {n.health === 'healthy'
                        ? 'Healthy'
                        : n.health === 'unhealthy'
                          ? 'Unhealthy'
                          : 'Disabled'}
                    </td>
                    <td>{n.cordoned ? 'Cordoned: no new databases' : 'Open'}</td>
                    <td className={age === null || age > STALE_S ? 'bad' : undefined}>
                      {age === null ? 'never' : `${duration(age)} ago`}
                      {age !== null && age > STALE_S ? ' (not responding)' : ''}
                    </td>
                    <td className="num">
                      {n.database_count}
                      {n.reserved_databases > 0 ? (
                        <span className="muted"> + {n.reserved_databases} reserved</span>
                      ) : null}
                    </td>
                    <td>
                      {n.pooler ? <code>{`${n.pooler.host}:${n.pooler.port}`}</code> : 'server default'}
                    </td>
                    <td>{n.agent_version ?? '—'}</td>
                    <td>
                      {n.status === 'active' ? (
                        <button
                          type="button"
                          className="secondary small"
                          disabled={cordon.busy}
                          onClick={() => void cordon.run(n.id, !n.cordoned)}
                        >
                          {n.cordoned ? 'Uncordon' : 'Cordon'} {n.name}
                        </button>
                      ) : null}{' '}
                      <button
                        type="button"
                        className="secondary small"
                        disabled={check.busy}
                        onClick={() => void check.run(n.id)}
                      >
                        Check drift on {n.name}
                      </button>
                    </td>
                  </tr>
                );
              })}
            </tbody>
          </table>
        </TableWrap>
      ) : null}
      <div role="status">
        {check.busy ? <p>Checking drift…</p> : null}
        {drift?.clean ? (
          <p className="ok">No drift on {drift.node.name}: the node matches the control plane.</p>
        ) : null}
      </div>
      {drift && !drift.clean ? (
        <section className="card" aria-labelledby="drift-h">
          <h3 id="drift-h">Drift on {drift.node.name}</h3>
          <ul>
            {drift.findings.map((f) => (
              <li key={`${f.kind}|${f.object}`}>
                <strong>{f.kind}</strong> <code>{f.object}</code>: {f.detail}
              </li>
            ))}
          </ul>
        </section>
      ) : null}
      <ErrorNotice error={check.error} title="Drift check failed" />
      <ErrorNotice error={cordon.error} title="Could not change the cordon" />
    </section>
  );
}
