/**
 * Runs explorer queries on the database host, defence in depth (docs/adr/0008-explorer-execution.md):
 *
 * 1. The agent re-validates the SQL with the same parser gate as the server (a compromised
 *    server cannot make it run anything else).
 * 2. The connection logs in directly on the loopback PostgreSQL port AS `<db>_explorer`
 *    (SELECT on public only, no EXECUTE on user routines, default read-only). An attached
 *    database (ADR 0031) is read as its configured read-only role at its own host instead, with
 *    every rail below the same; its cancel goes to that server (attached/attached-connect.ts).
 * 3. Extended query protocol only (one statement per message: `COMMIT; …` cannot escape).
 * 4. One pipelined write: `BEGIN READ ONLY`, `set_config(…, true)` of the statement/lock/idle
 *    timeouts, `search_path = public` and standard_conforming_strings, a guard statement that
 *    raises inside PostgreSQL unless every rail holds (read only, UTF8, standard strings, current
 *    and session user = the explorer, search_path, timeouts), then the user's SELECT wrapped as
 *    `SELECT * FROM (<sql>) AS bulwark_q LIMIT <row cap + 1>`, executed with fetch count 0 (no
 *    cursor, no portal suspension: PostgreSQL may plan it with parallel workers).
 *    A failed step aborts the transaction, so the user's statement is never even parsed.
 * 5. The row cap is the LIMIT; the byte cap is enforced on the wire by the connection's stream
 *    filter (explorer-stream.ts) before node-postgres parses a row: rows past the budget are
 *    skipped unread, so no value of any size is materialised (truncated, never an error).
 * 6. Always ROLLBACK, then DISCARD ALL and a check that no session state (prepared statements,
 *    advisory locks, LISTEN channels, temp tables, another role) survived — otherwise the
 *    connection is destroyed, not reused. Rollback and reset run after the result is handed
 *    back; the connection is not reused before they finish.
 * 7. Cancellation (client gone, agent stopping, or the byte budget spent: the rest of the rows would
 *    only be skipped) → pg_cancel_backend on that backend; the connection is closed afterwards.
 */

import { parseSync } from 'libpg-query';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { ExplorerOutcome, QueryPayload, SchemaOutput } from '../../shared/contracts/explorer-channel.ts';
import { BUSY, EXPLORER_LIMITS } from '../../shared/contracts/explorer-channel.ts';
import type { ExplorerVerdict } from '../../shared/sql/explorer-validator.ts';
import { createExplorerPools, type ExplorerPoolDeps } from './explorer-pools.ts';
import { extended, pipelined, type Step } from './explorer-protocol.ts';
import { readAttachedSchema, readPublicSchema } from './explorer-schema.ts';
import { ExplorerStreamError, explorerSocket } from './explorer-stream.ts';

export type ExplorerExecutorDeps = ExplorerPoolDeps & {
  log: Logger;
  /**
   * The SQL gate: the process's explorer validator (`createExplorerValidator().validate`, built at the
   * wiring point). Tests swap it to prove the run-time layers alone.
   */
  validate: (sql: string) => ExplorerVerdict;
};

/** Session state of an explorer connection as the next query would find it (diagnostics, tests). */
export type SessionProbe = {
  prepared: number;
  advisory: number;
  listening: number;
  cursors: number;
  temp: number;
  readOnlyDefault: string;
  user: string;
};

export type ExplorerExecutor = {
  runQuery(input: QueryPayload, signal: AbortSignal): Promise<ExplorerOutcome>;
  readSchema(input: { database_id: string; name: string }): Promise<SchemaOutput>;
  /** Resolves when every connection used so far has been rolled back and reset. */
  settled(): Promise<void>;
  /** What a pooled explorer connection carries (after `settled()`: nothing). */
  probeSession(input: { database_id: string; name: string }): Promise<SessionProbe>;
  close(): Promise<void>;
};

/**
 * The user's SELECT runs wrapped, so the row cap holds inside PostgreSQL without a cursor (a
 * cursor, or an Execute with a fetch count, rules out parallel workers). The newline before the
 * closing parenthesis ends a trailing `--` comment; error positions are shifted back by WRAP_HEAD.
 */
const WRAP_HEAD = 'SELECT * FROM (\n';
const wrapSelect = (sql: string, limit: number) => `${WRAP_HEAD}${sql}\n) AS bulwark_q LIMIT ${limit}`;
/** Statements of the prelude (BEGIN, limits, guard): the byte budget starts after their answers. */
const PRELUDE_STEPS = 3;

/**
 * The wire budget for a byte cap. The cap is measured on text values as `rowBytes` does (JSON-ish:
 * value + 3, NULL 5, row + 2); on the wire a DataRow costs 2 + Σ(4 + value), NULL 4 — at most 4/3
 * of that (empty strings). With 4/3 the wire filter never drops a row the exact cap would keep.
 */
export const wireBudget = (byteLimit: number) => Math.ceil((byteLimit * 4) / 3) + 64;

/**
 * The statement without a trailing `;` (and whatever comment follows it): it must fit inside the
 * wrapper's parentheses. libpg-query reports where the one statement ends (the validator parsed it).
 */
function statementText(sql: string): string {
  try {
    const first = (parseSync(sql) as { stmts?: { stmt_location?: number; stmt_len?: number }[] }).stmts?.[0];
    const end = (first?.stmt_location ?? 0) + (first?.stmt_len ?? 0);
    if (first?.stmt_len) return Buffer.from(sql, 'utf8').subarray(0, end).toString('utf8');
    return sql;
  } catch {
    return sql.replace(/;\s*$/, '');
  }
}

/** The transaction's limits: $1 statement, $2 lock, $3 idle-in-transaction timeout (ms). */
const SET_LIMITS = `SELECT pg_catalog.set_config('statement_timeout', $1, true),
  pg_catalog.set_config('lock_timeout', $2, true),
  pg_catalog.set_config('idle_in_transaction_session_timeout', $3, true),
  pg_catalog.set_config('search_path', 'public', true),
  pg_catalog.set_config('standard_conforming_strings', 'on', true)`;

/**
 * Fails inside PostgreSQL (22P02: the ELSE text is no integer) unless every guard rail holds;
 * $1 is the explorer role, $2–$4 the timeouts as set. The conditions call stable functions, so
 * the planner cannot fold the CASE: it is evaluated when the statement runs, after SET_LIMITS.
 */
export const GUARD_ASSERT = `SELECT pg_catalog.int4(CASE WHEN
      pg_catalog.current_setting('transaction_read_only') OPERATOR(pg_catalog.=) 'on'
  AND pg_catalog.current_setting('client_encoding') OPERATOR(pg_catalog.=) 'UTF8'
  AND pg_catalog.current_setting('standard_conforming_strings') OPERATOR(pg_catalog.=) 'on'
  AND pg_catalog.current_setting('search_path') OPERATOR(pg_catalog.=) 'public'
  AND current_user OPERATOR(pg_catalog.=) $1::pg_catalog.name
  AND session_user OPERATOR(pg_catalog.=) $1::pg_catalog.name
  AND pg_catalog.current_setting('statement_timeout')::pg_catalog.interval
      OPERATOR(pg_catalog.=) ($2::pg_catalog.int4 OPERATOR(pg_catalog.*) '1 ms'::pg_catalog.interval)
  AND pg_catalog.current_setting('lock_timeout')::pg_catalog.interval
      OPERATOR(pg_catalog.=) ($3::pg_catalog.int4 OPERATOR(pg_catalog.*) '1 ms'::pg_catalog.interval)
  AND pg_catalog.current_setting('idle_in_transaction_session_timeout')::pg_catalog.interval
      OPERATOR(pg_catalog.=) ($4::pg_catalog.int4 OPERATOR(pg_catalog.*) '1 ms'::pg_catalog.interval)
  THEN '1' ELSE 'explorer guard rails did not hold' END)`;

const GUARD_FAILED = 'explorer session guard rails did not hold; refusing to run the query';

type Cell = string | number | boolean | null;
type PgField = { name: string; dataTypeID: number; dataTypeModifier: number };
type RawRow = (string | null)[] & pg.QueryResultRow;
type RawResult = pg.QueryResult<RawRow>;

const isPgError = (err: unknown): err is pg.DatabaseError =>
  typeof err === 'object' &&
  err !== null &&
  typeof (err as { code?: unknown }).code === 'string' &&
  /^[0-9A-Z]{5}$/.test((err as { code: string }).code) &&
  'severity' in err;

const INT_TYPES = new Set([20, 21, 23, 26]);
const FLOAT_TYPES = new Set([700, 701]);

function toCell(v: string | null, typeId: number): Cell {
  if (v === null) return null;
  if (typeId === 16) return v === 't';
  if (INT_TYPES.has(typeId) || FLOAT_TYPES.has(typeId)) {
    const n = Number(v);
    if (Number.isFinite(n) && (!INT_TYPES.has(typeId) || Number.isSafeInteger(n))) return n;
  }
  return v;
}

/** JSON-ish size of a row of text values: what it costs to carry. */
function rowBytes(row: (string | null)[]): number {
  let n = 2;
  for (const v of row) n += v === null ? 5 : Buffer.byteLength(v, 'utf8') + 3;
  return n;
}

/** Rows kept under the row and byte caps; `add` says whether more may be read. */
function collector(input: QueryPayload) {
  const out = {
    rows: [] as (string | null)[][],
    bytes: 0,
    truncatedBy: null as 'rows' | 'bytes' | null,
    add(batch: (string | null)[][]): boolean {
      for (const row of batch) {
        const size = rowBytes(row);
        if (out.rows.length >= input.row_limit) out.truncatedBy = 'rows';
        else if (out.bytes + size > input.byte_limit) out.truncatedBy = 'bytes';
        if (out.truncatedBy) return false;
        out.rows.push(row);
        out.bytes += size;
      }
      return true;
    },
  };
  return out;
}

export function createExplorerExecutor(deps: ExplorerExecutorDeps): ExplorerExecutor {
  const pools = createExplorerPools(deps);
  const { validate } = deps;
  const resets = new Set<Promise<void>>();
  const typeNames = new Map<string, string>();

  /** format_type() of each column, cached (built-in types globally, others per database). */
  const columnTypes = async (c: pg.ClientBase, databaseId: string, fields: PgField[]): Promise<string[]> => {
    const keyOf = (f: PgField) =>
      `${f.dataTypeID < 16384 ? '' : databaseId}:${f.dataTypeID}:${f.dataTypeModifier}`;
    const missing = fields.filter((f) => !typeNames.has(keyOf(f)));
    if (missing.length) {
      const r = await extended<[string]>(
        c,
        `SELECT pg_catalog.format_type(o, m)
           FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.oid[]), pg_catalog.unnest($2::pg_catalog.int4[]))
                WITH ORDINALITY AS u(o, m, i)
          ORDER BY i`,
        [missing.map((f) => f.dataTypeID), missing.map((f) => f.dataTypeModifier)],
      );
      for (const [i, f] of missing.entries()) typeNames.set(keyOf(f), r.rows[i]?.[0] ?? 'unknown');
      if (typeNames.size > 10_000) typeNames.clear();
    }
    return fields.map((f) => typeNames.get(keyOf(f)) ?? 'unknown');
  };

  /**
   * One round trip: BEGIN READ ONLY, the limits, the guard assert, then `statements`. A failed
   * prelude step throws (internal: the session is not what it must be); otherwise the first
   * failed statement's error is thrown, else their results are returned in order.
   */
  const open = async (
    c: pg.ClientBase,
    /** The login the session must be: the explorer role, or an attached database's reader. */
    user: string,
    timeoutMs: number,
    statements: string[],
    budget?: { bytes: number; onDrop: () => void },
  ) => {
    const ms = [timeoutMs, Math.min(timeoutMs, 1_000), timeoutMs + 5_000].map(String);
    const steps: Step[] = [
      { text: 'BEGIN READ ONLY' },
      { text: SET_LIMITS, values: ms },
      { text: GUARD_ASSERT, values: [user, ...ms] },
      ...statements.map((text) => ({ text })),
    ];
    // The rows of the first statement after the prelude are read under the byte budget.
    if (budget) explorerSocket(c).limitRows(budget.bytes, PRELUDE_STEPS, budget.onDrop);
    const settled = await pipelined(c, steps);
    const prelude = settled.slice(0, 3);
    for (const r of prelude) {
      if (r.status === 'fulfilled') continue;
      // A dead connection or a cancel is reported as such (nothing ran); the rest is a broken rail.
      if (!isPgError(r.reason) || r.reason.code === '57014') throw r.reason;
      throw new Error(GUARD_FAILED, { cause: r.reason });
    }
    const guardRow = prelude[2]?.status === 'fulfilled' ? prelude[2].value.rows[0] : undefined;
    if ((guardRow as unknown[] | undefined)?.[0] !== '1') throw new Error(GUARD_FAILED);
    const results: RawResult[] = [];
    for (const r of settled.slice(3)) {
      if (r.status === 'rejected') throw r.reason;
      results.push(r.value as RawResult);
    }
    return results;
  };

  return {
    async runQuery(input, signal) {
      const started = performance.now();
      const elapsed = () => Math.round((performance.now() - started) * 100) / 100;
      // The agent's own gate: never run what the validator would refuse, whoever asked.
      const verdict = validate(input.sql);
      if (!verdict.ok) {
        return {
          kind: 'error',
          error: {
            sqlstate: '42501',
            message: `refused: ${verdict.reason}`,
            position: verdict.position,
            refused: true,
          },
          duration_ms: elapsed(),
        };
      }
      const timeoutMs = Math.min(input.statement_timeout_ms, EXPLORER_LIMITS.maxStatementTimeoutMs);
      let lease: Awaited<ReturnType<typeof pools.acquire>>;
      try {
        lease = await pools.acquire(input.database_id, input.name);
      } catch (err) {
        // Every explorer connection of this database is in use (pool wait or the role's limit).
        const code = (err as { code?: unknown }).code;
        if (code !== '53300' && !/timeout exceeded when trying to connect/i.test((err as Error).message))
          throw err;
        return { kind: 'error', error: { ...BUSY, position: null }, duration_ms: elapsed() };
      }
      const c = lease.client;
      let running = true;
      let cancel: Promise<unknown> | null = null;
      // Client gone, agent stopping, or the result already cut by the byte budget (the rest of
      // its rows would only be skipped): cancel the statement on its backend. Never throws.
      const onAbort = () => {
        if (!running || cancel) return;
        try {
          cancel = lease
            .cancel()
            .catch((err: Error) =>
              deps.log.warn({ err: { message: err.message } }, 'explorer cancel failed'),
            );
        } catch (err) {
          deps.log.warn({ err: { message: (err as Error).message } }, 'explorer cancel failed');
        }
      };
      // A cancel that reaches the backend between the pipelined BEGIN/SET and the statement (or
      // before the statement starts) is ignored by PostgreSQL, and the statement would then run to
      // its timeout with nobody waiting. When the request itself is given up, the cancel is sent
      // again every 250 ms until the statement has ended.
      let recancel: NodeJS.Timeout | null = null;
      const onSignal = () => {
        onAbort();
        recancel ??= setInterval(() => {
          if (!running) return;
          lease.cancel().catch(() => {});
        }, 250);
        recancel.unref();
      };
      signal.addEventListener('abort', onSignal, { once: true });
      try {
        if (signal.aborted) {
          return {
            kind: 'error',
            error: { sqlstate: '57014', message: 'cancelled before the query started', position: null },
            duration_ms: elapsed(),
          };
        }
        const socket = explorerSocket(c);
        let result: RawResult | undefined;
        if (verdict.kind === 'explain') {
          // EXPLAIN cannot be wrapped, so it is sent only once the guarded transaction stands
          // (were BEGIN to fail, a pipelined EXPLAIN would run in an implicit transaction of its own).
          await open(c, lease.role, timeoutMs, []);
          socket.limitRows(wireBudget(input.byte_limit), 0, onAbort);
          result = await extended<RawRow>(c, input.sql);
        } else {
          [result] = await open(
            c,
            lease.role,
            timeoutMs,
            [wrapSelect(statementText(input.sql), input.row_limit + 1)],
            { bytes: wireBudget(input.byte_limit), onDrop: onAbort },
          );
          if (!result) throw new Error('explorer pipeline lost the result');
        }
        // Rows past the wire budget never reached pg; the exact caps apply to the rows that did.
        const kept = collector(input);
        kept.add(result.rows);
        const out = {
          rows: kept.rows,
          fields: result.fields as PgField[],
          truncatedBy: kept.truncatedBy ?? (socket.rowsDropped() ? ('bytes' as const) : null),
        };
        running = false;
        if (cancel) {
          // Cancelled after its result was cut (the cancel's error ended the result): wait until the
          // cancel has landed (one reaching an idle backend is ignored), then end the aborted
          // transaction before asking for column types. The connection is closed afterwards.
          await cancel;
          await extended(c, 'ROLLBACK');
        }
        const types = await columnTypes(c, input.database_id, out.fields);
        const ids = out.fields.map((f) => f.dataTypeID);
        return {
          kind: 'rows',
          output: {
            columns: out.fields.map((f, i) => ({ name: f.name, type: types[i] ?? 'unknown' })),
            rows: out.rows.map((row) => row.map((v, i) => toCell(v, ids[i] ?? 0))),
            row_count: out.rows.length,
            truncated: out.truncatedBy !== null,
            truncated_by: out.truncatedBy,
            duration_ms: elapsed(),
          },
        };
      } catch (err) {
        if (err instanceof ExplorerStreamError) {
          // The server sent a message the agent refuses to hold: this connection is gone, not the node.
          return {
            kind: 'error',
            error: { sqlstate: '54000', message: err.message.slice(0, 2_000), position: null },
            duration_ms: elapsed(),
          };
        }
        if (!isPgError(err)) {
          // The backend went away under the query (e.g. it terminated itself): report, do not retry.
          if (!/connection|terminated/i.test((err as Error).message)) throw err;
          return {
            kind: 'error',
            error: { sqlstate: '08006', message: 'the query connection was terminated', position: null },
            duration_ms: elapsed(),
          };
        }
        const raw = err.position ? Number(err.position) - 1 : Number.NaN;
        const offset = verdict.kind === 'explain' ? 0 : WRAP_HEAD.length;
        const position =
          Number.isFinite(raw) && raw - offset >= 0 && raw - offset < input.sql.length ? raw - offset : null;
        return {
          kind: 'error',
          error: { sqlstate: err.code ?? 'XX000', message: err.message.slice(0, 2_000), position },
          duration_ms: elapsed(),
        };
      } finally {
        running = false;
        if (recancel) clearInterval(recancel);
        signal.removeEventListener('abort', onSignal);
        // Rollback + reset run off the response path; the connection is reused only after them.
        // A cancelled one is closed instead (a late cancel must not reach the next query).
        // The reset starts on the next turn of the event loop, so the outcome is answered first
        // (its frame leaves before the reset's statements are built and written).
        const cancelled = cancel;
        const done = new Promise<void>((r) => setImmediate(r))
          .then(() => (cancelled ? lease.discard(cancelled) : lease.reset()))
          .catch(() => {})
          .finally(() => resets.delete(done));
        resets.add(done);
      }
    },

    async readSchema(input) {
      const attached = deps.attached?.get(input.database_id);
      // An attached database: its own reader at its own host (the payload's name is Bulwark's).
      if (attached) return readAttachedSchema(attached);
      return readPublicSchema(deps, input.name, input.database_id);
    },

    async settled() {
      await Promise.all([...resets]);
    },

    async probeSession(input) {
      const lease = await pools.acquire(input.database_id, input.name);
      try {
        const r = await extended<Record<string, string>>(
          lease.client,
          `SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_statements) AS prepared,
                  (SELECT pg_catalog.count(*) FROM pg_catalog.pg_locks
                    WHERE pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()
                      AND locktype OPERATOR(pg_catalog.=) 'advisory') AS advisory,
                  (SELECT pg_catalog.count(*) FROM pg_catalog.pg_listening_channels()) AS listening,
                  (SELECT pg_catalog.count(*) FROM pg_catalog.pg_cursors
                    WHERE name OPERATOR(pg_catalog.<>) '') AS cursors,
                  (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class
                    WHERE relnamespace OPERATOR(pg_catalog.=) pg_catalog.pg_my_temp_schema()) AS temp,
                  pg_catalog.current_setting('default_transaction_read_only') AS ro,
                  current_user::pg_catalog.text AS who`,
          [],
          'object',
        );
        const row = r.rows[0] ?? {};
        return {
          prepared: Number(row.prepared),
          advisory: Number(row.advisory),
          listening: Number(row.listening),
          cursors: Number(row.cursors),
          temp: Number(row.temp),
          readOnlyDefault: String(row.ro),
          user: String(row.who),
        };
      } finally {
        await lease.reset();
      }
    },

    async close() {
      await Promise.all([...resets]);
      await pools.close();
    },
  };
}
