/**
 * One execution's connection (ADR 0021): a new login as `<db>_reader` or `<db>_migrator` on the
 * loopback PostgreSQL port (never PgBouncer, never a superuser or the steward), closed after the
 * execution or, when it ended cleanly, kept after a reset that leaves nothing of it (execution-pool.ts).
 * Settings are pinned at login
 * (postgres/steward.ts PINNED_SETTINGS) with the request's statement and lock timeouts and the
 * tenant's search_path (`public`; pg_catalog is still searched first, so a tenant function cannot
 * shadow a catalog one).
 *
 * Bytes from the server pass the explorer's framing filter (explorer/explorer-stream.ts) before pg
 * parses them: each statement's rows are read under a byte budget and rows past it are skipped as
 * they stream (the statement still completes, with its true row count), so a huge value never
 * reaches Node. Every statement is sent alone with the extended protocol (FIELD-NOTES: a
 * simple-protocol message of several statements can escape the transaction).
 */
import pg from 'pg';
import { extended } from '../explorer/explorer-protocol.ts';
import { ExplorerSocket, explorerSocket } from '../explorer/explorer-stream.ts';
import { type ExplorerTlsOptions, ExplorerTlsSocket } from '../explorer/explorer-tls-socket.ts';
import { pinnedOptions } from '../postgres/steward.ts';

export type RawRow = (string | null)[] & pg.QueryResultRow;
export type PgField = { name: string; dataTypeID: number; dataTypeModifier: number };

export type StatementResult = {
  /** The command tag's verb (`UPDATE`, `CREATE TABLE`…). */
  command: string;
  /** The tag's count (rows affected or returned; exact even when rows were skipped), or null. */
  rowCount: number | null;
  fields: PgField[];
  rows: RawRow[];
  /** Rows were skipped for the byte budget. */
  cut: boolean;
};

export type ExecutionSession = {
  pid: number;
  /** The backend's cancel key (a CancelRequest to a server other than the agent's own). */
  secretKey: number;
  run(text: string, wireBytes: number): Promise<StatementResult>;
  /** format_type() of each column (outside the transaction). */
  columnTypes(fields: PgField[]): Promise<string[]>;
  close(): Promise<void>;
};

/** The verb of a command tag: `INSERT 0 5` → `INSERT`, `CREATE TABLE` → `CREATE TABLE`. */
export function tagVerb(tag: string): string {
  return tag
    .replace(/(\s+\d+)+$/, '')
    .trim()
    .slice(0, 64);
}

export async function openExecutionSession(login: {
  host: string;
  port: number;
  database: string;
  user: string;
  password: string;
  statementTimeoutMs: number;
  lockTimeoutMs: number;
  /**
   * TLS to an attached database's server (attached-connect.ts), negotiated under the framing
   * filter (explorer-tls-socket.ts); none on the loopback port.
   */
  tls?: ExplorerTlsOptions;
}): Promise<ExecutionSession> {
  const client = new pg.Client({
    host: login.host,
    port: login.port,
    database: login.database,
    user: login.user,
    password: login.password,
    application_name: 'bulwark-execution',
    connectionTimeoutMillis: 10_000,
    options: pinnedOptions({
      search_path: 'public',
      // The tenant's approved SQL keeps the tenant's row security (platform logins pin it off).
      row_security: 'on',
      statement_timeout: String(login.statementTimeoutMs),
      lock_timeout: String(login.lockTimeoutMs),
    }),
    stream: () => (login.tls ? new ExplorerTlsSocket(login.tls) : new ExplorerSocket()),
  });
  client.on('error', () => {});
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => {});
    throw err;
  }
  let lastTag = '';
  // pg keeps only the tag's first word; the whole tag says `CREATE TABLE`, `ALTER INDEX`…
  (
    client as unknown as { connection: { on(e: string, f: (m: { text: string }) => void): void } }
  ).connection.on('commandComplete', (m) => {
    lastTag = m.text;
  });
  const socket = explorerSocket(client);
  return {
    pid: (client as unknown as { processID: number }).processID,
    secretKey: (client as unknown as { secretKey: number }).secretKey,
    async run(text, wireBytes) {
      lastTag = '';
      socket.limitRows(wireBytes, 0);
      const r = await extended<RawRow>(client, text);
      return {
        command: tagVerb(lastTag || r.command || ''),
        rowCount: typeof r.rowCount === 'number' ? r.rowCount : null,
        fields: (r.fields ?? []) as PgField[],
        rows: r.rows ?? [],
        cut: socket.rowsDropped(),
      };
    },
    async columnTypes(fields) {
      if (fields.length === 0) return [];
      const r = await extended<[string]>(
        client,
        `SELECT pg_catalog.format_type(o, m)
           FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.oid[]), pg_catalog.unnest($2::pg_catalog.int4[]))
                WITH ORDINALITY AS u(o, m, i)
          ORDER BY i`,
        [fields.map((f) => f.dataTypeID), fields.map((f) => f.dataTypeModifier)],
      );
      return fields.map((_, i) => r.rows[i]?.[0] ?? 'unknown');
    },
    async close() {
      await client.end().catch(() => {});
    },
  };
}
