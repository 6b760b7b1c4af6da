import { useState } from 'react';
import { Link } from 'wouter';
import { ConfirmDialog } from '../../components/dialog.tsx';
import { ErrorNotice } from '../../components/error-notice.tsx';
import { Empty, Loading, Page } from '../../components/page.tsx';
import { Pager, useCursorPages } from '../../components/pager.tsx';
import { StatusBadge } from '../../components/status-badge.tsx';
import { TableWrap } from '../../components/table-wrap.tsx';
import { dateTime } from '../../lib/format.ts';
import { useAction, useApi } from '../../lib/use-api.ts';
import { useMe } from '../../session.tsx';
import { SecretOnce } from './secret-once.tsx';
import { type DeliveryStatus, webhooksApi } from './webhooks-api.ts';

const STATUSES: DeliveryStatus[] = ['pending', 'succeeded', 'failed', 'dead'];

/** A webhook: its settings, "Send a test", "Rotate secret", and its delivery log with redeliver. */
export default function WebhookDetail({ id }: { id: string }) {
  const { account, role } = useMe();
  const manage = role === 'owner' || role === 'admin';
  const hook = useApi(() => webhooksApi.get(id), `${account}|${id}`);
  const pages = useCursorPages();
  const [status, setStatus] = useState<DeliveryStatus | ''>('');
  const { cursor } = pages;
  const deliveries = useApi(
    () =>
      webhooksApi.deliveries(id, {
        limit: 25,
        ...(status ? { status } : {}),
        ...(cursor ? { cursor } : {}),
      }),
    `${account}|${id}|${status}|${cursor}`,
  );
  const [secret, setSecret] = useState<string | null>(null);
  const [rotating, setRotating] = useState(false);
  const [note, setNote] = useState<string | null>(null);
  const test = useAction(async () => {
    const out = await webhooksApi.test(id);
    setNote(`Test event queued (delivery ${out.delivery_id}).`);
    deliveries.reload();
  });
  const rotate = useAction(async () => {
    const out = await webhooksApi.rotate(id);
    setRotating(false);
    setSecret(out.secret);
    hook.setData(out);
  });
  const redeliver = useAction(async (deliveryId: string) => {
    const out = await webhooksApi.redeliver(id, deliveryId);
    setNote(`Delivery queued again (delivery ${out.delivery_id}).`);
    deliveries.reload();
  });
  const w = hook.data;
  const items = deliveries.data?.items ?? [];
  return (
    <Page
      title={w ? `Webhook ${w.url}` : 'Webhook'}
      actions={
        manage && w ? (
          <>
            <button type="button" className="secondary" disabled={test.busy} onClick={() => void test.run()}>
              Send a test
            </button>
            <button type="button" className="secondary" onClick={() => setRotating(true)}>
              Rotate secret
            </button>
          </>
        ) : null
      }
    >
      <p>
        <Link href="/webhooks">All webhooks</Link>
      </p>
      <ErrorNotice error={hook.error} title="Could not read the webhook" />
      {!w && hook.loading ? <Loading what="the webhook" /> : null}
      {secret ? (
        <SecretOnce secret={secret} title="New signing secret" onDone={() => setSecret(null)} />
      ) : null}
      {note ? (
        <p role="status" className="ok">
          {note}
        </p>
      ) : null}
      <ErrorNotice error={test.error ?? redeliver.error} />
      {w ? (
        <dl className="card facts">
          <dt>Status</dt>
          <dd>
            <StatusBadge status={w.enabled ? 'active' : 'disabled'} />
            {w.disabled_reason ? <span className="small bad"> {w.disabled_reason}</span> : null}
          </dd>
          <dt>Events</dt>
          <dd className="mono small">{w.events.join(', ')}</dd>
          <dt>Secret</dt>
          <dd>
            <span className="mono">…{w.secret_hint}</span>
            {w.secret_rotated_at ? (
              <span className="muted small"> rotated {dateTime(w.secret_rotated_at)}</span>
            ) : null}
            {w.previous_secret_expires_at ? (
              <span className="muted small">
                {' '}
                (the previous one still signs until {dateTime(w.previous_secret_expires_at)})
              </span>
            ) : null}
          </dd>
          <dt>Failures in a row</dt>
          <dd>{w.consecutive_failures}</dd>
          <dt>Created</dt>
          <dd>{dateTime(w.created_at)}</dd>
        </dl>
      ) : null}
      <h2>Deliveries</h2>
      <label className="inline">
        <span>Status</span>
        <select
          value={status}
          onChange={(e) => {
            setStatus(e.target.value as DeliveryStatus | '');
            pages.reset();
          }}
        >
          <option value="">All</option>
          {STATUSES.map((s) => (
            <option key={s} value={s}>
              {s}
            </option>
          ))}
        </select>
      </label>
      <button type="button" className="secondary small" onClick={deliveries.reload}>
        Refresh
      </button>
      <ErrorNotice error={deliveries.error} title="Could not list deliveries" />
      {!deliveries.data && deliveries.loading ? <Loading what="deliveries" /> : null}
      {deliveries.data && items.length === 0 ? (
        <Empty>
          <p>No deliveries{status ? ` with status ${status}` : ' yet'}.</p>
        </Empty>
      ) : null}
      {items.length > 0 ? (
        <TableWrap label="Deliveries">
          <table>
            <caption className="sr-only">Deliveries</caption>
            <thead>
              <tr>
                <th scope="col">Event</th>
                <th scope="col">Status</th>
                <th scope="col">Code</th>
                <th scope="col" className="num">
                  Duration
                </th>
                <th scope="col" className="num">
                  Attempts
                </th>
                <th scope="col">When</th>
                <th scope="col">Response</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {items.map((d) => (
                <tr key={d.id}>
                  <th scope="row" className="mono small">
                    {d.event_type}
                  </th>
                  <td>
                    <span className={`badge badge-${d.status}`}>{d.status}</span>
                  </td>
                  <td>{d.last_status_code ?? '–'}</td>
                  <td className="num">{d.duration_ms === null ? '–' : `${d.duration_ms} ms`}</td>
                  <td className="num">
                    {d.attempts} / {d.max_attempts}
                  </td>
                  <td className="small">
                    {dateTime(d.delivered_at ?? d.created_at)}
                    {d.next_attempt_at && d.status !== 'succeeded' ? (
                      <div className="muted">next try {dateTime(d.next_attempt_at)}</div>
                    ) : null}
                  </td>
                  <td className="small">
                    {d.last_error ? <div className="bad">{d.last_error}</div> : null}
                    {d.response_body ? <pre className="prewrap excerpt">{d.response_body}</pre> : null}
                  </td>
                  <td>
                    {manage ? (
                      <button
                        type="button"
                        className="secondary small"
                        disabled={redeliver.busy}
                        onClick={() => void redeliver.run(d.id)}
                      >
                        Redeliver <span className="sr-only">{d.event_type}</span>
                      </button>
                    ) : null}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </TableWrap>
      ) : null}
      <Pager pages={pages} next={deliveries.data?.next_cursor} busy={deliveries.loading} />
      {rotating ? (
        <ConfirmDialog
          title="Rotate the signing secret?"
          action="Rotate secret"
          busy={rotate.busy}
          onConfirm={() => void rotate.run()}
          onClose={() => setRotating(false)}
        >
          <p>
            A new secret is shown once. The old one keeps signing alongside it for an overlap window, so your
            receiver can switch without missing a delivery.
          </p>
          <ErrorNotice error={rotate.error} />
        </ConfirmDialog>
      ) : null}
    </Page>
  );
}
