import { type Command, InvalidArgumentError } from 'commander';
import { runCommand } from '../api-client.ts';
import { clientFromCredentials } from '../credentials.ts';
import { formatTable } from '../output.ts';

type Webhook = {
  id: string;
  url: string;
  events: string[];
  description: string | null;
  enabled: boolean;
  disabled_reason: string | null;
  consecutive_failures: number;
  last_delivery: { status: string; status_code: number | null; at: string } | null;
  secret?: string;
};
type Delivery = {
  id: string;
  event_type: string;
  status: string;
  attempts: number;
  max_attempts: number;
  last_status_code: number | null;
  last_error: string | null;
  duration_ms: number | null;
  created_at: string;
};

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function idArg(v: string): string {
  if (!UUID.test(v)) throw new InvalidArgumentError('must be a webhook id (uuid)');
  return v;
}

function eventsOption(v: string): string[] {
  const list = v
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (list.length === 0 || list.length > 64 || list.some((e) => !/^(\*|[a-z_]+\.(\*|[a-z_]+))$/.test(e)))
    throw new InvalidArgumentError('must be a comma-separated list of event types, "<area>.*" or "*"');
  return list;
}

function urlOption(v: string): string {
  if (v.length > 2048 || !/^https?:\/\/\S+$/i.test(v))
    throw new InvalidArgumentError('must be an http(s) URL');
  return v;
}

const HOOK_COLUMNS = [
  { key: 'id', title: 'id' },
  { key: 'url', title: 'url' },
  { key: 'events', title: 'events' },
  { key: 'state', title: 'state' },
  { key: 'last', title: 'last delivery' },
];
const hookRow = (w: Webhook) => ({
  id: w.id,
  url: w.url,
  events: w.events.join(','),
  state: w.enabled ? 'enabled' : `disabled${w.disabled_reason ? ` (${w.disabled_reason.slice(0, 60)})` : ''}`,
  last: w.last_delivery
    ? `${w.last_delivery.status}${w.last_delivery.status_code ? ` ${w.last_delivery.status_code}` : ''} ${w.last_delivery.at.slice(0, 19).replace('T', ' ')}`
    : null,
});
const DELIVERY_COLUMNS = [
  { key: 'id', title: 'id' },
  { key: 'event_type', title: 'event' },
  { key: 'status', title: 'status' },
  { key: 'tries', title: 'attempts' },
  { key: 'code', title: 'code' },
  { key: 'ms', title: 'ms' },
  { key: 'at', title: 'created' },
  { key: 'error', title: 'last error' },
];

const print = (json: boolean | undefined, value: unknown, human: () => string): void => {
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${human()}\n`);
};

/** `bulwark webhook list|create|delete|test|deliveries` over /v1/webhooks (docs/api.md "Webhooks"). */
export function registerWebhook(program: Command): void {
  const webhook = program.command('webhook').description('Signed webhooks of the account');

  webhook
    .command('list')
    .description('List the webhooks')
    .option('--json', 'machine-readable output')
    .action((o: { json?: boolean }) =>
      runCommand(o.json, async () => {
        const r = await clientFromCredentials().request<{ items: Webhook[] }>('GET', '/v1/webhooks');
        print(o.json, r.items, () => formatTable(r.items.map(hookRow), HOOK_COLUMNS));
      }),
    );

  webhook
    .command('create')
    .description('Create a webhook; its signing secret is printed once')
    .requiredOption('--url <url>', 'where deliveries are POSTed (http or https)', urlOption)
    .requiredOption('--events <list>', 'event types, "<area>.*" or "*" (comma-separated)', eventsOption)
    .option('--description <text>', 'what it is for (at most 500 characters)', (v) => {
      if (v.length > 500) throw new InvalidArgumentError('at most 500 characters');
      return v;
    })
    .option('--json', 'machine-readable output')
    .action((o: { url: string; events: string[]; description?: string; json?: boolean }) =>
      runCommand(o.json, async () => {
        const w = await clientFromCredentials().request<Webhook>('POST', '/v1/webhooks', {
          url: o.url,
          events: o.events,
          ...(o.description !== undefined ? { description: o.description } : {}),
        });
        if (o.json) {
          print(true, w, () => '');
          return;
        }
        process.stderr.write(
          `${formatTable([hookRow(w)], HOOK_COLUMNS)}\n\nThe signing secret (shown only once):\n`,
        );
        process.stdout.write(`${w.secret}\n`);
      }),
    );

  webhook
    .command('delete')
    .description('Delete a webhook and its delivery log')
    .argument('<id>', 'the webhook id', idArg)
    .option('--json', 'machine-readable output')
    .action((id: string, o: { json?: boolean }) =>
      runCommand(o.json, async () => {
        await clientFromCredentials().request('DELETE', `/v1/webhooks/${id}`);
        print(o.json, { deleted: id }, () => `deleted ${id}`);
      }),
    );

  webhook
    .command('test')
    .description('Queue a webhook.test delivery')
    .argument('<id>', 'the webhook id', idArg)
    .option('--json', 'machine-readable output')
    .action((id: string, o: { json?: boolean }) =>
      runCommand(o.json, async () => {
        const r = await clientFromCredentials().request<{ delivery_id: string }>(
          'POST',
          `/v1/webhooks/${id}/test`,
        );
        print(o.json, r, () => `queued delivery ${r.delivery_id}`);
      }),
    );

  webhook
    .command('deliveries')
    .description('The delivery log of a webhook, newest first (one page)')
    .argument('<id>', 'the webhook id', idArg)
    .option('--status <status>', 'pending, succeeded, failed or dead', (v) => {
      if (!['pending', 'succeeded', 'failed', 'dead'].includes(v))
        throw new InvalidArgumentError('must be pending, succeeded, failed or dead');
      return v;
    })
    .option('--limit <n>', '1–100 (default 50)', (v) => {
      const n = Number(v);
      if (!Number.isInteger(n) || n < 1 || n > 100) throw new InvalidArgumentError('must be 1–100');
      return n;
    })
    .option('--json', 'machine-readable output')
    .action((id: string, o: { status?: string; limit?: number; json?: boolean }) =>
      runCommand(o.json, async () => {
        const q = new URLSearchParams({
          ...(o.status ? { status: o.status } : {}),
          ...(o.limit ? { limit: String(o.limit) } : {}),
        });
        const r = await clientFromCredentials().request<{ items: Delivery[] }>(
          'GET',
          `/v1/webhooks/${id}/deliveries${q.size ? `?${q}` : ''}`,
        );
        print(o.json, r.items, () =>
          formatTable(
            r.items.map((d) => ({
              id: d.id,
              event_type: d.event_type,
              status: d.status,
              tries: `${d.attempts}/${d.max_attempts}`,
              code: d.last_status_code,
              ms: d.duration_ms,
              at: d.created_at.slice(0, 19).replace('T', ' '),
              error: d.last_error?.slice(0, 60) ?? null,
            })),
            DELIVERY_COLUMNS,
          ),
        );
      }),
    );
}
