/**
 * `bulwark db query` and `bulwark db tables`: the SQL explorer from a terminal
 * (`POST /v1/databases/:name/explorer/query`, `GET /v1/databases/:name/explorer/schema`).
 * Everything the database sent is made terminal-safe before it is shown (`--csv` and `--json`
 * excepted: they are for programs, and JSON escapes control characters itself).
 */
import { open } from 'node:fs/promises';
import type { Command } from 'commander';
import {
  EXPLORER_LIMITS,
  type QueryOutput,
  type SchemaOutput,
} from '../../shared/contracts/explorer-channel.ts';
import { ApiError, CliError, EXIT, runCommand } from '../api-client.ts';
import { clientFromCredentials } from '../credentials.ts';
import { databaseNameArg, intInRange } from '../options.ts';
import { displayWidth, formatGrid, terminalSafe } from '../output.ts';

const MIN_TIMEOUT_MS = 100;
/** UTF-8 takes at most 3 bytes per UTF-16 code unit: more bytes than this is too long, and is not read. */
const MAX_SQL_BYTES = EXPLORER_LIMITS.maxSqlLength * 3;
/** The server gives the node `timeout_ms` + 10 s to answer; the CLI waits a little longer than that. */
const ANSWER_MARGIN_MS = 15_000;
/** Cells are cut at this many columns (a result of one column, e.g. EXPLAIN, gets more). */
const CELL_WIDTH = 60;
const ONE_COLUMN_WIDTH = 160;
const NUMERIC = /^(smallint|integer|bigint|numeric|real|double precision|oid)(\(|$)/;

type QueryOptions = { file?: string; limit?: number; timeout?: number; csv?: boolean; json?: boolean };

/** Writes and waits until it is handed over, so a large result is not cut by the exit that follows. */
const write = (text: string) => new Promise<void>((resolve) => process.stdout.write(text, () => resolve()));

const tooLong = () =>
  new CliError(
    `the SQL is longer than ${EXPLORER_LIMITS.maxSqlLength} characters (the explorer's limit)`,
    EXIT.usage,
  );

/** At most MAX_SQL_BYTES + 1 bytes of a file or of stdin (`-`): enough to know it is too long. */
async function readBounded(from: string): Promise<Buffer> {
  if (from === '-') {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of process.stdin as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      size += chunk.length;
      if (size > MAX_SQL_BYTES) break;
    }
    return Buffer.concat(chunks);
  }
  const fh = await open(from, 'r');
  try {
    const buf = Buffer.alloc(MAX_SQL_BYTES + 1);
    let size = 0;
    while (size < buf.length) {
      const { bytesRead } = await fh.read(buf, size, buf.length - size, null);
      if (bytesRead === 0) break;
      size += bytesRead;
    }
    return buf.subarray(0, size);
  } finally {
    await fh.close();
  }
}

/** Refuses (exit 2) SQL that is empty or over the explorer's limit. */
function checkSql(sql: string): string {
  if (sql.length > EXPLORER_LIMITS.maxSqlLength) throw tooLong();
  if (sql.trim() === '') throw new CliError('the SQL is empty', EXIT.usage);
  return sql;
}

/** Where the SQL comes from (checked before any work): the argument itself, or a file or stdin to read. */
function sqlSource(arg: string | undefined, file: string | undefined): { sql: string } | { from: string } {
  if (arg !== undefined && file !== undefined)
    throw new CliError('give the SQL or --file, not both', EXIT.usage);
  if (file !== undefined) return { from: file };
  if (arg === undefined)
    throw new CliError('give the SQL as an argument, - to read it from stdin, or --file PATH', EXIT.usage);
  return arg === '-' ? { from: '-' } : { sql: checkSql(arg) };
}

/** The SQL of a file or of stdin (`-`): UTF-8, bounded before it is decoded. */
async function readSql(from: string): Promise<string> {
  const what = from === '-' ? 'stdin' : from;
  let bytes: Buffer;
  try {
    bytes = await readBounded(from);
  } catch (err) {
    throw new CliError(`cannot read ${what}: ${(err as Error).message}`, EXIT.usage);
  }
  if (bytes.length > MAX_SQL_BYTES) throw tooLong();
  try {
    return checkSql(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch (err) {
    if (err instanceof CliError) throw err;
    throw new CliError(`${what} is not valid UTF-8`, EXIT.usage);
  }
}

/**
 * Points at `position` (a 0-based index in `sql`) the way psql does: the line that holds it,
 * prefixed `LINE n: `, and a caret under it. Long lines are cut around the position.
 */
export function sqlCaret(sql: string, position: number): string {
  const p = Math.max(0, Math.min(position, sql.length));
  const start = p === 0 ? 0 : sql.lastIndexOf('\n', p - 1) + 1;
  const newline = sql.indexOf('\n', p);
  const line = sql.slice(start, newline < 0 ? sql.length : newline).replace(/\r$/, '');
  const lineNo = sql.slice(0, start).split('\n').length;
  // Tabs become one space (as psql does); everything else that could drive a terminal is escaped.
  const show = (s: string) => terminalSafe(s.replaceAll('\t', ' '));
  let before = Array.from(line.slice(0, p - start));
  let after = Array.from(line.slice(p - start));
  const cutBefore = before.length > 50;
  const cutAfter = after.length > 70;
  if (cutBefore) before = before.slice(-50);
  if (cutAfter) after = after.slice(0, 70);
  const prefix = `LINE ${lineNo}: ${cutBefore ? '…' : ''}${show(before.join(''))}`;
  return `${prefix}${show(after.join(''))}${cutAfter ? '…' : ''}\n${' '.repeat(displayWidth(prefix))}^`;
}

/** A refused or failed query, with its SQLSTATE and a caret under the position when there is one. */
function withSqlContext(err: unknown, sql: string): unknown {
  if (!(err instanceof ApiError) || (err.code !== 'query_refused' && err.code !== 'query_failed')) return err;
  const d = (typeof err.details === 'object' && err.details !== null ? err.details : {}) as {
    sqlstate?: unknown;
    position?: unknown;
  };
  const lines: string[] = [];
  if (typeof d.sqlstate === 'string') lines.push(`SQLSTATE ${terminalSafe(d.sqlstate)}`);
  if (typeof d.position === 'number' && Number.isInteger(d.position) && d.position >= 0)
    lines.push(sqlCaret(sql, d.position));
  return new ApiError(err.status, err.code, err.message, {
    requestId: err.requestId,
    details: err.details,
    context: lines.length ? lines.join('\n') : undefined,
  });
}

function cellText(v: unknown): string {
  if (v === null || v === undefined) return 'NULL';
  return typeof v === 'string' ? v : typeof v === 'object' ? JSON.stringify(v) : String(v);
}

/** An aligned table, then `3 rows (12.4 ms)` and why the result was cut, if it was. */
function formatRows(out: QueryOutput): string {
  const table = out.columns.length
    ? formatGrid(
        out.columns.map((c) => c.name),
        out.rows.map((r) => r.map(cellText)),
        {
          maxWidth: out.columns.length === 1 ? ONE_COLUMN_WIDTH : CELL_WIDTH,
          right: out.columns.map((c) => NUMERIC.test(c.type)),
        },
      )
    : '(no columns)';
  const n = out.row_count;
  const cut = out.truncated ? ` (truncated by ${terminalSafe(String(out.truncated_by ?? 'a limit'))})` : '';
  return `${table}\n${n} ${n === 1 ? 'row' : 'rows'} (${Number(out.duration_ms).toFixed(1)} ms)${cut}`;
}

/** Each table or view with its kind, then its columns (name, type, nullable). */
function formatSchema(s: SchemaOutput): string {
  if (s.tables.length === 0) return 'no tables or views in schema public';
  const blocks = s.tables.map((t) => {
    const head = `${terminalSafe(t.name)} (${terminalSafe(t.kind.replaceAll('_', ' '))})`;
    if (t.columns.length === 0) return `${head}\n  (no columns)`;
    const grid = formatGrid(
      ['column', 'type', 'nullable'],
      t.columns.map((c) => [c.name, c.type, c.nullable ? 'yes' : 'no']),
      { maxWidth: CELL_WIDTH },
    );
    return `${head}\n${grid.replace(/^/gm, '  ')}`;
  });
  const cut = s.truncated ? '\n(truncated: the schema has more columns than are listed)' : '';
  return `${blocks.join('\n\n')}${cut}`;
}

export function registerDbQuery(db: Command): void {
  db.command('query')
    .description('Run one read-only SELECT on a database (the SQL explorer) and print the rows')
    .argument('<name>', 'database name', databaseNameArg)
    .argument('[sql]', 'the SQL (one statement), or - to read it from stdin')
    .option('--file <path>', 'read the SQL from a file (- for stdin)')
    .option(
      '--limit <rows>',
      `at most this many rows (1–${EXPLORER_LIMITS.maxRows}, default ${EXPLORER_LIMITS.defaultRows})`,
      intInRange(1, EXPLORER_LIMITS.maxRows, 'rows'),
    )
    .option(
      '--timeout <ms>',
      `statement timeout (${MIN_TIMEOUT_MS}–${EXPLORER_LIMITS.maxStatementTimeoutMs} ms, default ${EXPLORER_LIMITS.defaultStatementTimeoutMs})`,
      intInRange(MIN_TIMEOUT_MS, EXPLORER_LIMITS.maxStatementTimeoutMs, 'milliseconds'),
    )
    .option('--csv', 'print CSV as the API sends it (RFC 4180, CRLF)')
    .option('--json', 'machine-readable output')
    .action((name: string, sqlArg: string | undefined, o: QueryOptions) =>
      runCommand(o.json, async () => {
        if (o.csv && o.json) throw new CliError('give --csv or --json, not both', EXIT.usage);
        const source = sqlSource(sqlArg, o.file);
        const client = clientFromCredentials();
        const sql = 'sql' in source ? source.sql : await readSql(source.from);
        const path = `/v1/databases/${name}/explorer/query`;
        const body = {
          sql,
          ...(o.limit !== undefined ? { limit: o.limit } : {}),
          ...(o.timeout !== undefined ? { timeout_ms: o.timeout } : {}),
        };
        const timeoutMs = (o.timeout ?? EXPLORER_LIMITS.defaultStatementTimeoutMs) + ANSWER_MARGIN_MS;
        try {
          if (o.csv) {
            await write(
              await client.requestText('POST', path, body, {
                accept: 'text/csv',
                query: { format: 'csv' },
                timeoutMs,
              }),
            );
            return;
          }
          const out = await client.request<QueryOutput>('POST', path, body, { timeoutMs });
          await write(o.json ? `${JSON.stringify(out, null, 2)}\n` : `${formatRows(out)}\n`);
        } catch (err) {
          throw withSqlContext(err, sql);
        }
      }),
    );

  db.command('tables')
    .description('List the tables and views of schema public, with their columns (the SQL explorer)')
    .argument('<name>', 'database name', databaseNameArg)
    .option('--json', 'machine-readable output')
    .action((name: string, o: { json?: boolean }) =>
      runCommand(o.json, async () => {
        const s = await clientFromCredentials().request<SchemaOutput>(
          'GET',
          `/v1/databases/${name}/explorer/schema`,
        );
        await write(o.json ? `${JSON.stringify(s, null, 2)}\n` : `${formatSchema(s)}\n`);
      }),
    );
}
