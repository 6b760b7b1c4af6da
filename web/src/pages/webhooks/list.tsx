import { type FormEvent, useState } from 'react';
import { Link } from 'wouter';
import { ConfirmDialog } from '../../components/dialog.tsx';
import { ErrorNotice } from '../../components/error-notice.tsx';
import { Empty, Loading, Page } from '../../components/page.tsx';
import { StatusBadge } from '../../components/status-badge.tsx';
import { TableWrap } from '../../components/table-wrap.tsx';
import { ago, dateTime } from '../../lib/format.ts';
import { useAction, useApi } from '../../lib/use-api.ts';
import { useMe } from '../../session.tsx';
import { EventPicker } from './event-picker.tsx';
import { SecretOnce } from './secret-once.tsx';
import { type Webhook, webhooksApi } from './webhooks-api.ts';

function CreateWebhook({ onCreated }: { onCreated: (secret: string, w: Webhook) => void }) {
  const types = useApi(() => webhooksApi.eventTypes(), 'event-types');
  const [url, setUrl] = useState('');
  const [description, setDescription] = useState('');
  const [events, setEvents] = useState<string[]>([]);
  const [noEvents, setNoEvents] = useState(false);
  const create = useAction(async () => {
    const out = await webhooksApi.create({
      url: url.trim(),
      events,
      ...(description.trim() ? { description: description.trim() } : {}),
    });
    setUrl('');
    setDescription('');
    setEvents([]);
    onCreated(out.secret, out);
  });
  const submit = (e: FormEvent) => {
    e.preventDefault();
    setNoEvents(events.length === 0);
    if (events.length === 0) return;
    void create.run();
  };
  return (
    <form className="card form" onSubmit={submit} aria-labelledby="create-webhook-h">
      <h2 id="create-webhook-h">Add a webhook</h2>
      <label>
        <span>Payload URL</span>
        <input
          required
          type="url"
          maxLength={2048}
          placeholder="https://example.com/bulwark-events"
          value={url}
          onChange={(e) => setUrl(e.target.value)}
        />
      </label>
      <label>
        <span>Description (optional)</span>
        <input maxLength={200} value={description} onChange={(e) => setDescription(e.target.value)} />
      </label>
      <ErrorNotice error={types.error} title="Could not list the event types" />
      {types.data ? (
        <EventPicker types={types.data.items} value={events} onChange={setEvents} invalid={noEvents} />
      ) : types.loading ? (
        <Loading what="event types" />
      ) : null}
      <button type="submit" className="primary" disabled={create.busy}>
        Add webhook
      </button>
      <ErrorNotice error={create.error} />
    </form>
  );
}

/** Webhooks (issue 18): the account's subscriptions, their health, and what each last delivered. */
export default function Webhooks() {
  const { account, role } = useMe();
  const manage = role === 'owner' || role === 'admin';
  const hooks = useApi(() => webhooksApi.list(), `${account}`);
  const [secret, setSecret] = useState<{ secret: string; url: string } | null>(null);
  const [deleting, setDeleting] = useState<Webhook | null>(null);
  const remove = useAction(async (id: string) => {
    await webhooksApi.remove(id);
    setDeleting(null);
    hooks.reload();
  });
  const toggle = useAction(async (w: Webhook) => {
    await webhooksApi.patch(w.id, { enabled: !w.enabled });
    hooks.reload();
  });
  const items = hooks.data?.items ?? [];
  return (
    <Page title="Webhooks">
      <p>
        Bulwark sends a signed POST to each webhook when one of its events happens (the
        <code> Bulwark-Signature</code> header: docs/api.md, "Webhooks"). SQL in payloads is redacted; no
        secret is ever sent.
      </p>
      {secret ? (
        <SecretOnce
          secret={secret.secret}
          title={`Signing secret of ${secret.url}`}
          onDone={() => setSecret(null)}
        />
      ) : manage ? (
        <CreateWebhook
          onCreated={(s, w) => {
            setSecret({ secret: s, url: w.url });
            hooks.reload();
          }}
        />
      ) : null}
      <h2>Webhooks</h2>
      <ErrorNotice error={hooks.error} title="Could not list webhooks" />
      {!hooks.data && hooks.loading ? <Loading what="webhooks" /> : null}
      {hooks.data && items.length === 0 ? (
        <Empty>
          <p>No webhooks yet.{manage ? ' Add one above to be told when something happens.' : ''}</p>
        </Empty>
      ) : null}
      {items.length > 0 ? (
        <TableWrap label="Webhooks">
          <table>
            <caption className="sr-only">Webhooks</caption>
            <thead>
              <tr>
                <th scope="col">URL</th>
                <th scope="col">Events</th>
                <th scope="col">Status</th>
                <th scope="col">Last delivery</th>
                <th scope="col">Secret</th>
                <th scope="col">
                  <span className="sr-only">Actions</span>
                </th>
              </tr>
            </thead>
            <tbody>
              {items.map((w) => (
                <tr key={w.id}>
                  <th scope="row">
                    <Link href={`/webhooks/${w.id}`} className="mono">
                      {w.url}
                    </Link>
                    {w.description ? <div className="muted small">{w.description}</div> : null}
                  </th>
                  <td className="small">{w.events.join(', ')}</td>
                  <td>
                    <StatusBadge status={w.enabled ? 'active' : 'disabled'} />
                    {w.disabled_reason ? <div className="small bad">{w.disabled_reason}</div> : null}
                    {w.consecutive_failures > 0 ? (
                      <div className="small">{w.consecutive_failures} failures in a row</div>
                    ) : null}
                  </td>
                  <td title={dateTime(w.last_delivery?.at)}>
                    {w.last_delivery ? (
                      <>
                        {w.last_delivery.status}
                        {w.last_delivery.status_code !== null ? ` (${w.last_delivery.status_code})` : ''}{' '}
                        <span className="muted small">{ago(w.last_delivery.at)}</span>
                      </>
                    ) : (
                      <span className="muted">None yet</span>
                    )}
                  </td>
                  <td className="mono small">…{w.secret_hint}</td>
                  <td>
                    {manage ? (
                      <div className="toolbar">
                        <button
                          type="button"
                          className="secondary small"
                          disabled={toggle.busy}
                          onClick={() => void toggle.run(w)}
                        >
                          {w.enabled ? 'Disable' : 'Enable'} <bdi className="sr-only">{w.url}</bdi>
                        </button>
                        <button type="button" className="secondary small" onClick={() => setDeleting(w)}>
                          Delete <bdi className="sr-only">{w.url}</bdi>
                        </button>
                      </div>
                    ) : null}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        </TableWrap>
      ) : null}
      <ErrorNotice error={toggle.error} />
      {deleting ? (
        <ConfirmDialog
          title="Delete this webhook?"
          action="Delete webhook"
          danger
          busy={remove.busy}
          onConfirm={() => void remove.run(deleting.id)}
          onClose={() => setDeleting(null)}
        >
          <p>
            Nothing more is sent to <code>{deleting.url}</code>, and its delivery log goes with it.
          </p>
          <ErrorNotice error={remove.error} />
        </ConfirmDialog>
      ) : null}
    </Page>
  );
}
