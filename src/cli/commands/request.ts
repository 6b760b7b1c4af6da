/**
 * `bulwark request`: governed SQL and just-in-time access (issue 14) from a terminal or a CI job.
 *
 *   request create <db> --reason R (--sql SQL | --file F | -) [--capability reader|migrator]
 *   request create <db> --reason R --access reader|migrator --for 1h
 *   request list [db] [--status S] [--awaiting-me]
 *   request show <db> <id> [--wait [seconds]]
 *   request approve|reject|cancel <db> <id> [--comment C]
 *   request execute <db> <id> [--break-glass REASON]
 *   request result <db> <id>
 *
 * Exit codes (request-view.ts): 0 approved/executed (or the action was taken), 2 pending, 3
 * rejected/cancelled/expired/failed, 1 any other error — so a CI job can wait on exit code 2.
 */
import { type Command, InvalidArgumentError } from 'commander';
import { EXECUTION_LIMITS } from '../../shared/contracts/execution.ts';
import { type ApiClient, CliError } from '../api-client.ts';
import { clientFromCredentials } from '../credentials.ts';
import { databaseNameArg, intInRange } from '../options.ts';
import { formatGrid, formatTable, terminalSafe } from '../output.ts';
import { withStepUp } from '../step-up.ts';
import { readBoundedText } from './read-input.ts';
import { runRequestCommand } from './request-run.ts';
import {
  exitCodeOf,
  LIST_COLUMNS,
  listRow,
  REQUEST_EXIT,
  REQUEST_EXIT_HELP,
  type Request,
  requestText,
  STATUSES,
  type Status,
  when,
} from './request-view.ts';

/** The longest `--wait`: a CI job that needs longer loops on exit code 2. */
const MAX_WAIT_S = 3600;
const DEFAULT_WAIT_S = 300;
/** The server waits for the agent's outcome before it answers an execute. */
const EXECUTE_TIMEOUT_MS = 150_000;

type Json = { json?: boolean };

function idArg(v: string): string {
  if (!/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i.test(v))
    throw new InvalidArgumentError('must be a request id (uuid)');
  return v.toLowerCase();
}

function roleArg(v: string): 'reader' | 'migrator' {
  if (v !== 'reader' && v !== 'migrator') throw new InvalidArgumentError('must be reader or migrator');
  return v;
}

function statusArg(v: string): Status {
  if (!(STATUSES as readonly string[]).includes(v))
    throw new InvalidArgumentError(`must be one of ${STATUSES.join(', ')}`);
  return v as Status;
}

/** `30m`, `1h`, `7d` → seconds (1 minute to 365 days; the policy's max_access is the server's). */
function forArg(v: string): number {
  const m = /^([1-9][0-9]{0,5})([mhd])$/.exec(v);
  const s = m ? Number(m[1]) * { m: 60, h: 3600, d: 86_400 }[m[2] as 'm' | 'h' | 'd'] : Number.NaN;
  if (!(s >= 60 && s <= 365 * 86_400))
    throw new InvalidArgumentError('must look like 30m, 1h or 7d (at most 365d)');
  return s;
}

const waitArg = intInRange(1, MAX_WAIT_S, 'seconds');
const waitSeconds = (w: true | number | undefined) => (w === undefined ? 0 : w === true ? DEFAULT_WAIT_S : w);

/** 1–2000 characters without control characters other than line breaks (as the API takes them). */
function proseArg(v: string): string {
  if (v.length < 1 || v.length > 2000) throw new InvalidArgumentError('must be 1–2000 characters');
  if (/[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]/.test(v))
    throw new InvalidArgumentError('must not contain control characters');
  return v;
}

const path = (db: string, id?: string, action?: string) =>
  `/v1/databases/${db}/requests${id ? `/${id}` : ''}${action ? `/${action}` : ''}`;

const print = (json: boolean | undefined, value: unknown, human: string) =>
  process.stdout.write(json ? `${JSON.stringify(value, null, 2)}\n` : `${human}\n`);

/** Follows a request until it is no longer pending, or `seconds` pass (then it is still pending). */
async function waitWhilePending(client: ApiClient, r: Request, seconds: number): Promise<Request> {
  const deadline = Date.now() + seconds * 1000;
  let delay = 250;
  let current = r;
  while (current.status === 'pending' && Date.now() < deadline) {
    await new Promise((ok) => setTimeout(ok, Math.min(delay, Math.max(0, deadline - Date.now()))));
    delay = Math.min(delay * 2, 5_000);
    current = await client.request<Request>('GET', path(r.database, r.id));
  }
  return current;
}

type CreateOptions = Json & {
  reason: string;
  sql?: string;
  file?: string;
  capability?: 'reader' | 'migrator';
  access?: 'reader' | 'migrator';
  for?: number;
  wait?: true | number;
};

async function createBody(source: string | undefined, o: CreateOptions): Promise<Record<string, unknown>> {
  const given = [o.sql !== undefined, o.file !== undefined, source !== undefined, o.access !== undefined];
  if (given.filter(Boolean).length !== 1)
    throw new CliError('give exactly one of --sql, --file, - (stdin) or --access');
  if (source !== undefined && source !== '-')
    throw new CliError(`unexpected argument ${source} (use - for stdin)`);
  if ((o.access === undefined) !== (o.for === undefined))
    throw new CliError('--access and --for go together (e.g. --access reader --for 1h)');
  if (o.access !== undefined) {
    if (o.capability !== undefined)
      throw new CliError('--capability is for SQL requests; --access names the role');
    return { reason: o.reason, access: { role: o.access, duration_s: o.for } };
  }
  const sql =
    o.sql ??
    (await readBoundedText(o.file ?? '-', EXECUTION_LIMITS.maxSqlLength * 3, o.file ?? 'the SQL on stdin'));
  if (sql.trim() === '') throw new CliError('the SQL is empty');
  if (sql.length > EXECUTION_LIMITS.maxSqlLength)
    throw new CliError(`the SQL is longer than ${EXECUTION_LIMITS.maxSqlLength} characters`);
  return { reason: o.reason, sql, ...(o.capability ? { capability: o.capability } : {}) };
}

/** What `execute` prints: the outcome, and an access request's credentials (this one time). */
function executedText(r: Request): string {
  const lines = [requestText(r)];
  if (r.credentials) {
    const c = r.credentials;
    lines.push(
      '',
      'Credentials (shown once; they stop working at valid_until):',
      `  login:      ${terminalSafe(c.login)}`,
      `  password:   ${terminalSafe(c.password)}`,
      `  connection: ${terminalSafe(c.connection_string)}`,
      `  valid until ${when(c.valid_until)}`,
    );
  }
  return lines.join('\n');
}

type Result = {
  columns: { name: string; type: string }[];
  rows: (string | number | boolean | null)[][];
  row_count: number;
  truncated: boolean;
  statements: { command: string; row_count: number | null }[];
  affected_rows: number;
  executed_at: string;
  expires_at: string;
};

function resultText(r: Result): string {
  const cell = (v: unknown) => (v === null ? 'NULL' : String(v));
  const lines: string[] = [];
  if (r.columns.length > 0) {
    lines.push(
      formatGrid(
        r.columns.map((c) => c.name),
        r.rows.map((row) => row.map(cell)),
        { maxWidth: 60 },
      ),
      `(${r.row_count} row${r.row_count === 1 ? '' : 's'}${r.truncated ? ', truncated' : ''})`,
    );
  }
  lines.push(
    `statements: ${r.statements.map((s) => `${terminalSafe(s.command)}${s.row_count === null ? '' : ` ${s.row_count}`}`).join(', ')}`,
    `affected rows: ${r.affected_rows} · executed ${when(r.executed_at)} · kept until ${when(r.expires_at)}`,
  );
  return lines.join('\n');
}

export function registerRequest(program: Command): void {
  const request = program
    .command('request')
    .description('Governed SQL and just-in-time access: request, approve, execute')
    .addHelpText('after', `\n${REQUEST_EXIT_HELP}`)
    // Before the subcommands (they inherit it): a usage error exits 1 here, since 2 means pending.
    .exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : REQUEST_EXIT.error));

  request
    .command('create')
    .description('Request to run SQL (or for temporary credentials) on a database')
    .argument('<database>', 'database name', databaseNameArg)
    .argument('[stdin]', '- to read the SQL from stdin')
    .requiredOption('--reason <text>', 'why (shown to approvers, audited)', proseArg)
    .option('--sql <sql>', 'the SQL')
    .option('--file <file>', 'a file with the SQL')
    .option('--capability <role>', 'run as reader or migrator (default: by class)', roleArg)
    .option('--access <role>', 'ask for temporary credentials with this role instead of SQL', roleArg)
    .option('--for <duration>', 'how long the credentials last (e.g. 1h)', forArg)
    .option(
      '--wait [seconds]',
      `wait while it is pending (default ${DEFAULT_WAIT_S}, at most ${MAX_WAIT_S})`,
      waitArg,
    )
    .option('--json', 'machine-readable output')
    .addHelpText('after', `\n${REQUEST_EXIT_HELP}`)
    .action((db: string, source: string | undefined, o: CreateOptions) =>
      runRequestCommand(o.json, async () => {
        const body = await createBody(source, o);
        const client = clientFromCredentials();
        let r = await client.request<Request>('POST', path(db), body, { timeoutMs: 60_000 });
        r = await waitWhilePending(client, r, waitSeconds(o.wait));
        print(o.json, r, requestText(r));
        return exitCodeOf(r.status);
      }),
    );

  request
    .command('list')
    .description('Requests of a database, or of the whole account (--awaiting-me: the ones you may approve)')
    .argument('[database]', 'database name', databaseNameArg)
    .option('--status <status>', `only this status (${STATUSES.join(', ')})`, statusArg)
    .option('--awaiting-me', 'pending requests you may still approve')
    .option('--limit <n>', 'at most this many (1–100)', intInRange(1, 100, 'requests'), 50)
    .option('--cursor <cursor>', 'the next page (printed after a full page)')
    .option('--json', 'machine-readable output')
    .action(
      (
        db: string | undefined,
        o: Json & { status?: Status; awaitingMe?: boolean; limit: number; cursor?: string },
      ) =>
        runRequestCommand(o.json, async () => {
          if (o.cursor !== undefined && !/^[A-Za-z0-9_-]{1,200}$/.test(o.cursor))
            throw new CliError('--cursor must be the value printed by the previous page');
          const inbox = db === undefined || o.awaitingMe === true;
          const page = await clientFromCredentials().request<{
            items: Request[];
            next_cursor: string | null;
          }>('GET', inbox ? '/v1/requests' : path(db), undefined, {
            query: {
              status: o.status,
              awaiting: o.awaitingMe ? 'me' : undefined,
              limit: o.limit,
              cursor: o.cursor,
            },
          });
          // The inbox is account-wide: narrowed to the database named.
          const items = db === undefined ? page.items : page.items.filter((r) => r.database === db);
          const more = page.next_cursor ? `\nmore: --cursor ${page.next_cursor}` : '';
          print(
            o.json,
            { items, next_cursor: page.next_cursor },
            items.length === 0
              ? `no requests${more}`
              : `${formatTable(items.map(listRow), LIST_COLUMNS)}${more}`,
          );
          return REQUEST_EXIT.done;
        }),
    );

  request
    .command('show')
    .description('One request: its status, approvals, findings, dry run and SQL')
    .argument('<database>', 'database name', databaseNameArg)
    .argument('<id>', 'request id', idArg)
    .option(
      '--wait [seconds]',
      `wait while it is pending (default ${DEFAULT_WAIT_S}, at most ${MAX_WAIT_S})`,
      waitArg,
    )
    .option('--json', 'machine-readable output')
    .addHelpText('after', `\n${REQUEST_EXIT_HELP}`)
    .action((db: string, id: string, o: Json & { wait?: true | number }) =>
      runRequestCommand(o.json, async () => {
        const client = clientFromCredentials();
        const r = await waitWhilePending(
          client,
          await client.request<Request>('GET', path(db, id)),
          waitSeconds(o.wait),
        );
        print(o.json, r, requestText(r));
        return exitCodeOf(r.status);
      }),
    );

  for (const [action, description] of [
    ['approve', 'Approve a request (never your own; one person counts once)'],
    ['reject', 'Reject a request (a comment is required)'],
    ['cancel', 'Cancel a request (the requester, or an owner or admin)'],
  ] as const) {
    const cmd = request
      .command(action)
      .description(description)
      .argument('<database>', 'database name', databaseNameArg)
      .argument('<id>', 'request id', idArg)
      .option('--json', 'machine-readable output');
    if (action !== 'cancel') cmd.option('--comment <text>', 'shown with the decision', proseArg);
    cmd.action((db: string, id: string, o: Json & { comment?: string }) =>
      runRequestCommand(o.json, async () => {
        if (action === 'reject' && o.comment === undefined)
          throw new CliError('reject needs --comment (why, for the requester)');
        const body = action === 'cancel' ? undefined : o.comment === undefined ? {} : { comment: o.comment };
        const r = await clientFromCredentials().request<Request>('POST', path(db, id, action), body);
        print(o.json, r, requestText(r));
        return REQUEST_EXIT.done;
      }),
    );
  }

  request
    .command('execute')
    .description(
      'Run an approved request (waits for the outcome); an access request prints its credentials once',
    )
    .argument('<database>', 'database name', databaseNameArg)
    .argument('<id>', 'request id', idArg)
    .option(
      '--break-glass <reason>',
      'run without approval (owners and admins per the policy; a signed-in user, asked to confirm; audited and notified)',
      proseArg,
    )
    .option('--json', 'machine-readable output')
    .addHelpText('after', `\n${REQUEST_EXIT_HELP}`)
    .action((db: string, id: string, o: Json & { breakGlass?: string }) =>
      runRequestCommand(o.json, async () => {
        if (o.breakGlass !== undefined && o.breakGlass.trim().length < 10)
          throw new CliError('--break-glass needs a reason of at least 10 characters');
        const client = clientFromCredentials();
        const body = o.breakGlass === undefined ? {} : { break_glass: { reason: o.breakGlass } };
        const send = () =>
          client.request<Request>('POST', path(db, id, 'execute'), body, { timeoutMs: EXECUTE_TIMEOUT_MS });
        const r = o.breakGlass === undefined ? await send() : await withStepUp(client, send);
        print(o.json, r, executedText(r));
        return exitCodeOf(r.status);
      }),
    );

  request
    .command('result')
    .description('The result of an executed request (the requester and approvers; kept for a limited time)')
    .argument('<database>', 'database name', databaseNameArg)
    .argument('<id>', 'request id', idArg)
    .option('--json', 'machine-readable output')
    .action((db: string, id: string, o: Json) =>
      runRequestCommand(o.json, async () => {
        const r = await clientFromCredentials().request<Result>('GET', path(db, id, 'result'));
        print(o.json, r, resultText(r));
        return REQUEST_EXIT.done;
      }),
    );
}
