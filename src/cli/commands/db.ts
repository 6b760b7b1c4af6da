import { type Command, InvalidArgumentError } from 'commander';
import { parseCidr } from '../../shared/cidr.ts';
import { type ApiClient, ApiError, CliError, EXIT, runCommand } from '../api-client.ts';
import { clientFromCredentials } from '../credentials.ts';
import { databaseNameArg } from '../options.ts';
import { formatTable } from '../output.ts';
import { type AttachedCheck, attachedLines, registerDbAttached } from './db-attached.ts';
import { registerDbQuery } from './db-query.ts';
import { revealPassword } from './db-reveal.ts';

type Database = {
  id: string;
  name: string;
  status: string;
  node: string;
  /** hosted: made and managed by Bulwark; attached: listed by its agent's own file (not managed). */
  kind: 'hosted' | 'attached';
  attached: AttachedCheck | null;
  failure_reason: string | null;
  password_version: number;
  rotation_pending: boolean;
  created_at: string;
  ready_at: string | null;
  last_rotation: {
    status: 'pending' | 'restoring' | 'succeeded' | 'failed_restored' | 'failed';
    reason: string | null;
    requested_at: string;
    at: string;
  } | null;
};
type Entry = { cidr: string; expires_at: string | null; note: string | null };
type Connection = {
  host: string;
  port: number;
  user: string;
  database: string;
  sslmode: string;
  uri: string;
};

const COLUMNS = [
  { key: 'name', title: 'name' },
  { key: 'status', title: 'status' },
  { key: 'node', title: 'node' },
  { key: 'created', title: 'created' },
  { key: 'kind', title: 'kind' },
  { key: 'failure_reason', title: 'problem' },
];
const row = (d: Database) => ({ ...d, created: d.created_at.slice(0, 16).replace('T', ' ') });

function cidrArg(v: string): string {
  try {
    return parseCidr(v.includes('/') ? v : `${v}/${v.includes(':') ? 128 : 32}`);
  } catch {
    throw new InvalidArgumentError('must be an IP address or CIDR, e.g. 203.0.113.7 or 2001:db8::/48');
  }
}

/** `30m`, `2h`, `7d` → milliseconds. */
function durationArg(v: string): number {
  const m = /^(\d{1,6})([mhd])$/.exec(v);
  if (!m) throw new InvalidArgumentError('must look like 30m, 2h or 7d');
  return Number(m[1]) * { m: 60_000, h: 3_600_000, d: 86_400_000 }[m[2] as 'm' | 'h' | 'd'];
}

function secondsArg(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 3600) throw new InvalidArgumentError('must be 1–3600 seconds');
  return n;
}

const print = (json: boolean | undefined, value: unknown, human: string) =>
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${human}\n`);

/** What a `--wait` step decides: keep waiting (undefined), done, or did not take effect (a reason). */
type Settled = { done: Database } | { notApplied: string } | undefined;

const WAIT_HELP =
  'exit codes: 0 it took effect · 7 it did not (final state, reason on stderr) · 8 --timeout passed first';

/**
 * Follows a database until `settle` reaches a final state of the request (bounded). A final
 * state where the change did not take effect exits 7 with the reason; a timeout exits 8.
 */
async function waitFor(
  client: ApiClient,
  name: string,
  settle: (d: Database) => Settled,
  timeoutS: number,
): Promise<Database> {
  const deadline = Date.now() + timeoutS * 1000;
  let delay = 50;
  for (;;) {
    const d = await client.request<Database>('GET', `/v1/databases/${name}`);
    const s = settle(d);
    if (s && 'done' in s) return s.done;
    if (s) throw new CliError(s.notApplied, EXIT.notApplied);
    if (Date.now() > deadline)
      throw new CliError(
        `gave up waiting after ${timeoutS} s: database ${name} is still ${d.status}` +
          `${d.rotation_pending ? ' (rotation pending)' : ''}; the request stays queued`,
        EXIT.timeout,
      );
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 1_000);
  }
}

/** The create of database `id` (not another one of the same name) is ready, or failed. */
const created =
  (id: string) =>
  (d: Database): Settled => {
    if (d.id !== id) return { notApplied: `database ${d.name} was replaced by another create while waiting` };
    if (d.status === 'failed')
      return { notApplied: `database ${d.name} was not created: ${d.failure_reason ?? 'unknown reason'}` };
    return d.status === 'ready' ? { done: d } : undefined;
  };

/** The rotation requested at `requestedAt` reached a final state. */
const rotated =
  (requestedAt: string | undefined) =>
  (d: Database): Settled => {
    const r = d.last_rotation;
    if (!r || r.requested_at !== requestedAt)
      return { notApplied: `the rotation of ${d.name} was superseded by another request while waiting` };
    switch (r.status) {
      case 'succeeded':
        return { done: d };
      case 'failed_restored':
        return {
          notApplied: `the rotation of ${d.name} did not take effect: ${r.reason ?? 'it failed'}; the old password was restored and still works`,
        };
      case 'failed':
        return {
          notApplied: `the rotation of ${d.name} failed: ${r.reason ?? 'unknown reason'}; run \`bulwark db rotate ${d.name}\` again`,
        };
      default:
        return undefined;
    }
  };

export function registerDb(program: Command): void {
  const db = program.command('db').description('Create and manage databases');

  db.command('create')
    .description('Create a database (placed on the node with the fewest databases unless --node)')
    .argument('<name>', 'database name', databaseNameArg)
    .option('--node <node>', 'the node to place it on')
    .option('--wait', `wait until it is ready (${WAIT_HELP})`)
    .option('--timeout <seconds>', 'how long --wait waits', secondsArg, 120)
    .option('--json', 'machine-readable output')
    .action((name: string, o: { node?: string; wait?: boolean; timeout: number; json?: boolean }) =>
      runCommand(o.json, async () => {
        const client = clientFromCredentials();
        // With --wait the server itself holds the answer until the database is ready (at most
        // 60 s of the timeout); what is left of the timeout is waited for here.
        const started = Date.now();
        const serverWaitMs = o.wait ? Math.min(o.timeout, 60) * 1000 : 0;
        let d = await client.request<Database>(
          'POST',
          '/v1/databases',
          {
            name,
            ...(o.node ? { node: o.node } : {}),
            ...(serverWaitMs > 0 ? { wait_ms: serverWaitMs } : {}),
          },
          serverWaitMs > 0 ? { timeoutMs: serverWaitMs + 30_000 } : {},
        );
        if (o.wait) {
          const leftS = Math.max(1, Math.ceil(o.timeout - (Date.now() - started) / 1000));
          d = await waitFor(client, name, created(d.id), leftS);
        }
        print(o.json, d, `database ${d.name} is ${d.status} on node ${d.node}`);
      }),
    );

  db.command('list')
    .description('List databases')
    .option('--json', 'machine-readable output')
    .action((o: { json?: boolean }) =>
      runCommand(o.json, async () => {
        const client = clientFromCredentials();
        const items: Database[] = [];
        let cursor: string | undefined;
        for (let page = 0; page < 10_000; page++) {
          const r = await client.request<{ items: Database[]; next_cursor: string | null }>(
            'GET',
            '/v1/databases',
            undefined,
            { query: { limit: 100, cursor } },
          );
          items.push(...r.items);
          if (!r.next_cursor) break;
          cursor = r.next_cursor;
        }
        print(o.json, { items }, formatTable(items.map(row), COLUMNS));
      }),
    );

  db.command('show')
    .description(
      'Show a database, where to connect and who may connect (no password); an attached one: its agent check',
    )
    .argument('<name>', 'database name', databaseNameArg)
    .option('--json', 'machine-readable output')
    .action((name: string, o: { json?: boolean }) =>
      runCommand(o.json, async () => {
        const client = clientFromCredentials();
        const d = await client.request<Database>('GET', `/v1/databases/${name}`);
        // An attached database has no connection or allowlist here (both answer 409): its check instead.
        if (d.kind === 'attached') {
          print(o.json, d, [formatTable([row(d)], COLUMNS), '', ...attachedLines(d)].join('\n'));
          return;
        }
        const conn = await client.request<Connection>('GET', `/v1/databases/${name}/connection`);
        const { entries } = await client.request<{ entries: Entry[] }>(
          'GET',
          `/v1/databases/${name}/allowlist`,
        );
        const human = [
          formatTable([row(d)], COLUMNS),
          '',
          `connect   ${conn.uri}`,
          `allowed   ${entries.map((e) => `${e.cidr}${e.expires_at ? ` (until ${e.expires_at})` : ''}`).join(', ') || 'nobody'}`,
          `password  bulwark db reveal ${name}`,
        ].join('\n');
        print(o.json, { ...d, connection: conn, allowlist: entries }, human);
      }),
    );

  db.command('reveal')
    .description("Print the owner's password (needs write permission; audited)")
    .argument('<name>', 'database name', databaseNameArg)
    .option('--json', 'machine-readable output')
    .action((name: string, o: { json?: boolean }) =>
      runCommand(o.json, async () => {
        const r = await revealPassword(clientFromCredentials(), name);
        print(o.json, r, r.password);
      }),
    );

  db.command('delete')
    .description('Delete a database and everything in it')
    .argument('<name>', 'database name', databaseNameArg)
    .requiredOption('--confirm <name>', 'repeat the name to confirm')
    .option('--wait', `wait until it is gone (${WAIT_HELP})`)
    .option('--timeout <seconds>', 'how long --wait waits', secondsArg, 120)
    .option('--json', 'machine-readable output')
    .action((name: string, o: { confirm: string; wait?: boolean; timeout: number; json?: boolean }) =>
      runCommand(o.json, async () => {
        if (o.confirm !== name) throw new CliError('--confirm must repeat the database name', EXIT.usage);
        const client = clientFromCredentials();
        const d = await client.request<Database>('DELETE', `/v1/databases/${name}`, { confirm: o.confirm });
        if (o.wait) {
          try {
            // Gone (404), or a new database of the same name already: this one was deleted.
            await waitFor(
              client,
              name,
              (x): Settled =>
                x.id !== d.id
                  ? { done: x }
                  : x.status === 'failed'
                    ? {
                        notApplied: `database ${name} was not deleted: ${x.failure_reason ?? 'unknown reason'}`,
                      }
                    : undefined,
              o.timeout,
            );
          } catch (err) {
            if (!(err instanceof ApiError && err.status === 404)) throw err;
          }
          print(o.json, { ...d, status: 'deleted' }, `database ${name} deleted`);
          return;
        }
        print(o.json, d, `database ${name} is ${d.status}`);
      }),
    );

  db.command('rotate')
    .description('Give the owner a new password; the old one and its sessions stop working')
    .argument('<name>', 'database name', databaseNameArg)
    .option('--wait', `wait until the new password is live (${WAIT_HELP})`)
    .option('--timeout <seconds>', 'how long --wait waits', secondsArg, 120)
    .option('--json', 'machine-readable output')
    .action((name: string, o: { wait?: boolean; timeout: number; json?: boolean }) =>
      runCommand(o.json, async () => {
        const client = clientFromCredentials();
        let d = await client.request<Database>('POST', `/v1/databases/${name}/credentials/rotate`);
        if (o.wait) d = await waitFor(client, name, rotated(d.last_rotation?.requested_at), o.timeout);
        print(
          o.json,
          d,
          d.rotation_pending
            ? `rotation of ${name} queued`
            : `${name} has a new password (bulwark db reveal ${name})`,
        );
      }),
    );

  /** `/v1/databases/<name>/allowlist[/<cidr>]`: per-entry edits, atomic on the server. */
  const allowlistPath = (name: string, cidr?: string) =>
    `/v1/databases/${name}/allowlist${cidr === undefined ? '' : `/${encodeURIComponent(cidr)}`}`;

  db.command('allow')
    .description('Let an address or network connect to a database (optionally for a while)')
    .argument('<name>', 'database name', databaseNameArg)
    .argument('<cidr>', 'IP address or CIDR', cidrArg)
    .option('--for <duration>', 'expire after 30m, 2h, 7d …', durationArg)
    .option('--expires-in <duration>', 'the same as --for', durationArg)
    .option('--note <text>', 'why (at most 200 characters)')
    .option('--json', 'machine-readable output')
    .action(
      (name: string, cidr: string, o: { for?: number; expiresIn?: number; note?: string; json?: boolean }) =>
        runCommand(o.json, async () => {
          if (o.note !== undefined && o.note.length > 200)
            throw new CliError('--note is too long', EXIT.usage);
          if (o.for !== undefined && o.expiresIn !== undefined)
            throw new CliError('give --for or --expires-in, not both', EXIT.usage);
          const ttl = o.for ?? o.expiresIn;
          const expiresAt = ttl ? new Date(Date.now() + ttl).toISOString() : null;
          const r = await clientFromCredentials().request<{ entries: Entry[] }>('POST', allowlistPath(name), {
            cidr,
            ...(expiresAt ? { expires_at: expiresAt } : {}),
            ...(o.note ? { note: o.note } : {}),
          });
          print(o.json, r, `${cidr} may connect to ${name}${expiresAt ? ` until ${expiresAt}` : ''}`);
        }),
    );

  db.command('deny')
    .description('Remove an address or network from a database allowlist')
    .argument('<name>', 'database name', databaseNameArg)
    .argument('<cidr>', 'IP address or CIDR', cidrArg)
    .option('--json', 'machine-readable output')
    .action((name: string, cidr: string, o: { json?: boolean }) =>
      runCommand(o.json, async () => {
        // A missing entry is the API's 404 (`<cidr> is not on the allowlist of <name>`): exit 6.
        const r = await clientFromCredentials().request<{ entries: Entry[] }>(
          'DELETE',
          allowlistPath(name, cidr),
        );
        print(o.json, r, `${cidr} may no longer connect to ${name}`);
      }),
    );

  registerDbAttached(db);
  registerDbQuery(db);
}
