import { type FormEvent, useState } from 'react';
import { useLocation } from 'wouter';
import { api, call } from '../../api/client.ts';
import { Dialog } from '../../components/dialog.tsx';
import { ErrorNotice } from '../../components/error-notice.tsx';
import { TableWrap } from '../../components/table-wrap.tsx';
import { dateTime } from '../../lib/format.ts';
import { useAction } from '../../lib/use-api.ts';
import { canAdminister, useMe } from '../../session.tsx';
import type { Database } from './types.ts';
import './attached.css';

/** An attached database its node offered that no owner or admin of the account accepted yet. */
export function awaitingAcceptance(db: Pick<Database, 'kind' | 'attached'>): boolean {
  return db.kind === 'attached' && !db.attached?.accepted_at;
}

/** Hosted or attached, in a word (never colour alone); an offer not yet accepted says so. */
export function KindBadge({ kind, awaiting = false }: { kind: Database['kind']; awaiting?: boolean }) {
  return kind === 'attached' ? (
    <span className="badge badge-attached">{awaiting ? 'Attached · awaiting acceptance' : 'Attached'}</span>
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

/**
 * Whether this person may decide on an attached database (policy `databases.attach`: owners and
 * admins). When the page does not know the role the buttons show, and the server's 403 is shown.
 */
function useMayDecide(): boolean {
  const { me, role } = useMe();
  return role === null || canAdminister(me, role);
}

/**
 * Reject an offer, or drop an accepted attached database: the name typed to confirm (as a delete).
 * It leaves the account (the database itself is not touched) and its node may not offer it again.
 */
function RejectDialog({ db, onClose }: { db: Database; onClose: () => void }) {
  const name = db.name;
  const waiting = awaitingAcceptance(db);
  const [, navigate] = useLocation();
  const [typed, setTyped] = useState('');
  const reject = useAction(async () => {
    await call(
      api.POST('/v1/databases/{name}/attachment/reject', {
        params: { path: { name } },
        body: { confirm: typed },
      }),
    );
    navigate('/databases');
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    if (typed === name) void reject.run();
  };
  const action = waiting ? 'Reject database' : 'Drop database';
  return (
    <Dialog title={waiting ? `Reject ${name}?` : `Drop ${name} from this account?`} onClose={onClose}>
      <form className="form" onSubmit={submit}>
        <p>
          <strong>{name}</strong> leaves this account and node <bdi>{db.node}</bdi> may not offer it to this
          account again. The database itself, on its own server, is not touched.
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
        <ErrorNotice error={reject.error} title={`Could not ${waiting ? 'reject' : 'drop'} ${name}`} />
        <div className="actions">
          <button type="button" className="secondary" onClick={onClose}>
            Cancel
          </button>
          <button type="submit" className="danger" disabled={typed !== name || reject.busy}>
            {action}
          </button>
        </div>
      </form>
    </Dialog>
  );
}

/**
 * A node offers, the account decides: an attached database no owner or admin accepted yet waits,
 * and nothing (no explorer query, no governed SQL) runs on it. Everyone sees the offer; those who
 * may decide get Accept and Reject.
 */
export function AttachmentOffer({ db, onAccepted }: { db: Database; onAccepted: (d: Database) => void }) {
  const may = useMayDecide();
  const [rejecting, setRejecting] = useState(false);
  const name = db.name;
  const accept = useAction(async () => {
    const d = await call(api.POST('/v1/databases/{name}/attachment/accept', { params: { path: { name } } }));
    onAccepted(d as Database);
  });
  return (
    <section className="card attachment-offer" aria-labelledby="offer-h">
      <h2 id="offer-h">
        Offered by node <bdi>{db.node}</bdi>: waiting for your acceptance
      </h2>
      <p>
        The agent on node <bdi>{db.node}</bdi> offers this existing database to the account. Until an owner or
        admin of the account accepts it, nothing runs on it: no explorer query, no governed SQL. Rejecting it
        removes it, and that node may not offer it again.
      </p>
      {may ? (
        <div className="actions">
          <button type="button" className="primary" disabled={accept.busy} onClick={() => void accept.run()}>
            Accept
          </button>
          <button type="button" className="danger" onClick={() => setRejecting(true)}>
            Reject
          </button>
        </div>
      ) : (
        <p className="muted">Only an owner or admin of the account can accept or reject it.</p>
      )}
      <ErrorNotice error={accept.error} title={`Could not accept ${name}`} />
      {rejecting ? <RejectDialog db={db} onClose={() => setRejecting(false)} /> : null}
    </section>
  );
}

/** An accepted attached database leaves the account the way an offer is rejected (the same route). */
export function DropAttached({ db }: { db: Database }) {
  const may = useMayDecide();
  const [dropping, setDropping] = useState(false);
  if (!may) return null;
  return (
    <section className="card danger-zone" aria-labelledby="drop-h">
      <h3 id="drop-h">Drop from this account</h3>
      <p>
        Bulwark stops exploring and governing <strong>{db.name}</strong>; the database itself is not touched.
        Node <bdi>{db.node}</bdi> may not offer it to this account again.
      </p>
      <button type="button" className="danger" onClick={() => setDropping(true)}>
        Drop from this account
      </button>
      {dropping ? <RejectDialog db={db} onClose={() => setDropping(false)} /> : null}
    </section>
  );
}
