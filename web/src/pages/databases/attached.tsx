import { TableWrap } from '../../components/table-wrap.tsx';
import { dateTime } from '../../lib/format.ts';
import type { Database } from './types.ts';
import './attached.css';

/** Hosted or attached, in a word (never colour alone). */
export function KindBadge({ kind }: { kind: Database['kind'] }) {
  return kind === 'attached' ? (
    <span className="badge badge-attached">Attached</span>
  ) : (
    <span className="badge badge-hosted">Hosted</span>
  );
}

/** What Bulwark does and does not do with an attached database, at the top of its page. */
export function AttachedNote({ db }: { db: Database }) {
  return (
    <p className="notice attached-note">
      <strong>Attached:</strong> an existing database listed by node <bdi>{db.node}</bdi>'s agent. Bulwark
      explores it and governs SQL on it; it does not manage, back up or move it.
    </p>
  );
}

const SEVERITY: Record<string, string> = { refuse: 'Refuse', warn: 'Warning' };

/** The agent's last check of an attached database's roles: when, the server's version, what it found. */
export function AttachedCheck({ db }: { db: Database }) {
  const check = db.attached;
  return (
    <section aria-labelledby="tab-h">
      <h2 id="tab-h">Agent check</h2>
      {db.status === 'failed' ? (
        <p>
          Until its roles pass, the explorer and requests cannot use it. Fix what the findings below refuse;
          the agent checks its databases again when it starts.
        </p>
      ) : null}
      {check ? (
        <>
          <p className="facts">
            <span>Checked: {dateTime(check.checked_at)}</span>
            <span>PostgreSQL: {check.server_version ?? 'unknown'}</span>
          </p>
          {check.findings.length === 0 ? (
            <p>No findings: the configured roles passed every check.</p>
          ) : (
            <TableWrap label="Findings">
              <table>
                <caption className="sr-only">Findings</caption>
                <thead>
                  <tr>
                    <th scope="col">Severity</th>
                    <th scope="col">Role</th>
                    <th scope="col">Finding</th>
                    <th scope="col">Object</th>
                    <th scope="col">Detail</th>
                  </tr>
                </thead>
                <tbody>
                  {check.findings.map((f, i) => (
                    // biome-ignore lint/suspicious/noArrayIndexKey: findings have no id and never reorder in place
                    <tr key={i}>
                      <td>
                        <span className={`badge badge-${f.severity === 'refuse' ? 'refuse' : 'warn'}`}>
                          {SEVERITY[f.severity] ?? f.severity}
                        </span>
                      </td>
                      <td>{f.role}</td>
                      <td>{f.kind}</td>
                      <td>
                        <code>{f.object}</code>
                      </td>
                      <td>{f.detail}</td>
                    </tr>
                  ))}
                </tbody>
              </table>
            </TableWrap>
          )}
        </>
      ) : (
        <p className="muted">The agent has not reported a check yet.</p>
      )}
    </section>
  );
}
