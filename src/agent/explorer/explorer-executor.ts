/**
 * Runs explorer queries on the database host, defence in depth (docs/adr/0006-explorer-execution.md):
 *
 * 1. The agent re-validates the SQL with the same parser gate as the server (a compromised
 *    server cannot make it run anything else).
 * 2. The connection logs in directly on the loopback PostgreSQL port AS `<db>_explorer`
 *    (SELECT on public only, no EXECUTE on user routines, default read-only).
 * 3. Extended query protocol only (one statement per message: `COMMIT; …` cannot escape).
 * 4. `BEGIN READ ONLY` + `SET LOCAL` statement/lock/idle timeouts, `search_path = public`,
 *    standard_conforming_strings; verified before the user's statement runs.
 * 5. Rows are read through a NO SCROLL cursor in adaptive batches under a row cap and a byte
 *    cap (truncated, never an error).
 * 6. Always ROLLBACK, then DISCARD ALL and a check that no session state (prepared statements,
 *    advisory locks, LISTEN channels, temp tables, another role) survived — otherwise the
 *    connection is destroyed, not reused. Rollback and reset run after the result is handed
 *    back; the connection is not reused before they finish.
 * 7. Cancellation (client gone, agent stopping) → pg_cancel_backend on that backend.
 */
import type pg from 'pg';
import type { Logger } from 'pino';
import {
  type ExplorerVerdict,
  validateExplorerSql,
} from '../../server/modules/explorer/explorer.validator.ts';
import { type RoleNames, roleNames } from '../../shared/identifiers.ts';
import type { ExplorerOutcome, QueryPayload, SchemaOutput } from './explorer.contract.ts';
import { EXPLORER_LIMITS } from './explorer.contract.ts';
import { createExplorerPools, type ExplorerPoolDeps } from './explorer-pools.ts';
import { backendPid, extended } from './explorer-protocol.ts';
import { readPublicSchema } from './explorer-schema.ts';

export type ExplorerExecutorDeps = ExplorerPoolDeps & {
  log: Logger;
  /** The SQL gate (default: the explorer validator). Tests swap it to prove the run-time layers alone. */
  validate?: (sql: string) => ExplorerVerdict;
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

const CURSOR = 'bulwark_explorer';
const DECLARE_PREFIX = `DECLARE ${CURSOR} NO SCROLL CURSOR FOR `;
const MAX_BATCH = 1_000;
/** Small on purpose: rows of unknown size (1 MB each?) must not blow the byte cap before it is measured. */
const FIRST_BATCH = 8;

type Cell = string | number | boolean | null;
type PgField = { name: string; dataTypeID: number; dataTypeModifier: number };

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

export function createExplorerExecutor(deps: ExplorerExecutorDeps): ExplorerExecutor {
  const pools = createExplorerPools(deps);
  const validate = deps.validate ?? validateExplorerSql;
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
        'SELECT format_type(o, m) FROM unnest($1::oid[], $2::int[]) WITH ORDINALITY AS u(o, m, i) ORDER BY i',
        [missing.map((f) => f.dataTypeID), missing.map((f) => f.dataTypeModifier)],
      );
      for (const [i, f] of missing.entries()) typeNames.set(keyOf(f), r.rows[i]?.[0] ?? 'unknown');
      if (typeNames.size > 10_000) typeNames.clear();
    }
    return fields.map((f) => typeNames.get(keyOf(f)) ?? 'unknown');
  };

  /** The transaction's guard rails, set and then read back (fail closed if any did not stick). */
  const guard = async (c: pg.ClientBase, roles: RoleNames, timeoutMs: number) => {
    await extended(c, 'BEGIN READ ONLY');
    const r = await extended<[string, string, string, string, string]>(
      c,
      `SELECT set_config('statement_timeout', $1, true), set_config('lock_timeout', $2, true),
              set_config('idle_in_transaction_session_timeout', $3, true),
              set_config('search_path', 'public', true), set_config('standard_conforming_strings', 'on', true),
              current_setting('transaction_read_only'), current_setting('client_encoding'),
              current_user::text, session_user::text, current_setting('search_path')`,
      [String(timeoutMs), String(Math.min(timeoutMs, 1_000)), String(timeoutMs + 5_000)],
    );
    const row = r.rows[0] ?? [];
    const [, , , , scs, ro, enc, cur, sess] = row as unknown as string[];
    if (scs !== 'on' || ro !== 'on' || enc !== 'UTF8' || cur !== roles.explorer || sess !== roles.explorer) {
      throw new Error('explorer session guard rails did not hold; refusing to run the query');
    }
  };

  const fetchAll = async (c: pg.ClientBase, input: QueryPayload, sql: string) => {
    await extended(c, DECLARE_PREFIX + sql);
    const rows: (string | null)[][] = [];
    let fields: PgField[] = [];
    let bytes = 0;
    let truncatedBy: 'rows' | 'bytes' | null = null;
    let batch = FIRST_BATCH;
    for (;;) {
      const want = Math.max(1, Math.min(batch, input.row_limit + 1 - rows.length));
      const r = await extended<(string | null)[] & pg.QueryResultRow>(
        c,
        `FETCH FORWARD ${want} FROM ${CURSOR}`,
      );
      if (fields.length === 0) fields = r.fields;
      for (const row of r.rows) {
        const size = rowBytes(row);
        if (rows.length >= input.row_limit) truncatedBy = 'rows';
        else if (bytes + size > input.byte_limit) truncatedBy = 'bytes';
        if (truncatedBy) break;
        rows.push(row);
        bytes += size;
      }
      if (truncatedBy || r.rows.length < want) break;
      // Next batch sized to what is left of the byte budget at the average row size so far.
      const avg = Math.max(1, bytes / Math.max(1, rows.length));
      batch = Math.max(1, Math.min(MAX_BATCH, Math.floor((input.byte_limit - bytes) / avg)));
    }
    return { rows, fields, truncatedBy };
  };

  const runExplain = async (c: pg.ClientBase, input: QueryPayload, sql: string) => {
    const r = await extended<(string | null)[] & pg.QueryResultRow>(c, sql);
    const rows: (string | null)[][] = [];
    let bytes = 0;
    let truncatedBy: 'rows' | 'bytes' | null = null;
    for (const row of r.rows) {
      const size = rowBytes(row);
      if (rows.length >= input.row_limit) truncatedBy = 'rows';
      else if (bytes + size > input.byte_limit) truncatedBy = 'bytes';
      if (truncatedBy) break;
      rows.push(row);
      bytes += size;
    }
    return { rows, fields: r.fields as PgField[], truncatedBy };
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
      const roles = roleNames(input.name);
      const timeoutMs = Math.min(input.statement_timeout_ms, EXPLORER_LIMITS.maxStatementTimeoutMs);
      const lease = await pools.acquire(input.database_id, input.name);
      const c = lease.client;
      let running = true;
      const onAbort = () => {
        if (!running) return;
        deps.admin
          .query('SELECT pg_cancel_backend($1)', [backendPid(c)])
          .catch((err: Error) => deps.log.warn({ err: { message: err.message } }, 'explorer cancel failed'));
      };
      signal.addEventListener('abort', onAbort, { once: true });
      try {
        if (signal.aborted) throw new Error('cancelled before the query started');
        await guard(c, roles, timeoutMs);
        const out =
          verdict.kind === 'explain'
            ? await runExplain(c, input, input.sql)
            : await fetchAll(c, input, input.sql);
        running = false;
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
        const offset = verdict.kind === 'explain' ? 0 : DECLARE_PREFIX.length;
        const position = Number.isFinite(raw) && raw - offset >= 0 ? raw - offset : null;
        return {
          kind: 'error',
          error: { sqlstate: err.code ?? 'XX000', message: err.message.slice(0, 2_000), position },
          duration_ms: elapsed(),
        };
      } finally {
        running = false;
        signal.removeEventListener('abort', onAbort);
        // Rollback + reset run off the response path; the connection is reused only after them.
        const done = lease.reset().finally(() => resets.delete(done));
        resets.add(done);
      }
    },

    async readSchema(input) {
      return readPublicSchema(deps, input.name);
    },

    async settled() {
      await Promise.all([...resets]);
    },

    async probeSession(input) {
      const lease = await pools.acquire(input.database_id, input.name);
      try {
        const r = await extended<Record<string, string>>(
          lease.client,
          `SELECT (SELECT count(*) FROM pg_prepared_statements) AS prepared,
                  (SELECT count(*) FROM pg_locks WHERE pid = pg_backend_pid() AND locktype = 'advisory') AS advisory,
                  (SELECT count(*) FROM pg_listening_channels()) AS listening,
                  (SELECT count(*) FROM pg_cursors WHERE name <> '') AS cursors,
                  (SELECT count(*) FROM pg_class WHERE relnamespace = pg_my_temp_schema()) AS temp,
                  current_setting('default_transaction_read_only') AS ro, current_user::text AS who`,
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
