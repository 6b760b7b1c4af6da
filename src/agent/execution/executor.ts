/**
 * The agent's executor of governed SQL (issue 14; ADR 0021): `execute(payload, signal)` verifies
 * the execution token, then runs the approved SQL exactly as approved, and answers an
 * ExecutionOutcome. It never throws.
 *
 * Order: token (agent-verifier.ts: pinned keys, node, database, mode, the SQL's hash, local
 * capabilities, time, replay) → the payload's capability and mode against the signed claims →
 * the agent's own parse (execution-plan.ts) → the role's login (execution-role.ts) → run. Any
 * refusal answers `refused` and nothing has touched the tenant database.
 *
 * Run: one transaction (`BEGIN READ ONLY` for the reader), each statement sent alone; a dry run
 * (with `explain`, an EXPLAIN (FORMAT JSON) before each explainable statement) always rolls back;
 * `affected_rows` is every row the transaction inserted, updated or deleted in user tables
 * (changed-rows.ts: CTE DML, EXPLAIN ANALYZE of a write and triggers included), read before
 * COMMIT/ROLLBACK; an execution whose count differs from the approved count rolls back and fails
 * with both numbers; any error rolls back. A CONCURRENTLY statement (alone) runs
 * outside a transaction. A cancel (signal) reaches the backend through pg_cancel_backend.
 */
import type pg from 'pg';
import type { Logger } from 'pino';
import {
  EXECUTION_LIMITS,
  type ExecutePayload,
  type ExecutionOutcome,
  ROW_COUNT_MISMATCH_SQLSTATE,
  type StatementOutcome,
} from '../../shared/contracts/execution.ts';
import type { RefusalReason } from '../../shared/execution-token.ts';
import { roleNames } from '../../shared/identifiers.ts';
import type { AttachedRegistry } from '../attached/attached-registry.ts';
import { isLoginRefused } from '../postgres/steward.ts';
import { type AgentVerifier, EXECUTION_SKEW_SECONDS } from './agent-verifier.ts';
import { CHANGED_ROWS_SQL, parseChangedRows } from './changed-rows.ts';
import { connectAttached, type Leased } from './execution-attached.ts';
import { planExecution } from './execution-plan.ts';
import { createExecutionPool } from './execution-pool.ts';
import { resultOf, wireBudget } from './execution-result.ts';
import { type ExecutionRoles, NotPreparedError } from './execution-role.ts';
import { type ExecutionSession, openExecutionSession, type StatementResult } from './execution-session.ts';
import { createOutcomeMemo } from './outcome-memo.ts';

export type ExecutionExecutor = {
  execute(payload: ExecutePayload, signal: AbortSignal): Promise<ExecutionOutcome>;
  /** Closes the kept logins (agent shutdown). */
  close(): Promise<void>;
};

export type ExecutorDeps = {
  verifier: AgentVerifier;
  roles: ExecutionRoles;
  /** The agent's admin pool (pg_cancel_backend only). */
  admin: pg.Pool;
  pgHost: string;
  pgPort: number;
  log: Logger;
  /**
   * Attached databases (ADR 0031): an id found here runs as the entry's own reader or migrator
   * at the entry's host; nothing is prepared there.
   */
  attached?: Pick<AttachedRegistry, 'get'>;
};

const REFUSAL_MESSAGES: Record<RefusalReason, string> = {
  malformed: 'the execution token is malformed',
  alg: 'the execution token names another algorithm than EdDSA',
  unknown_kid: 'the execution token was signed by a key this agent has not pinned',
  bad_signature: 'the execution token signature does not verify against the pinned key',
  expired: 'the execution token has expired',
  not_yet_valid: 'the execution token is not valid yet (clock skew?)',
  wrong_database: 'the execution token is for another database',
  wrong_node: 'the execution token is for another node',
  wrong_mode: 'the execution token is for another mode',
  sql_mismatch: 'the SQL is not the SQL the token was signed for',
  capability_forbidden: "this node's configuration does not allow the token's capability",
  replayed: 'the execution token was already used',
  replay_cache_full: "the agent's replay cache is full; retry later",
};

const DML = new Set(['INSERT', 'UPDATE', 'DELETE', 'MERGE']);
type PgErrorLike = { code: string; message: string; position?: string };
const isPgError = (err: unknown): err is PgErrorLike =>
  typeof err === 'object' &&
  err !== null &&
  typeof (err as { code?: unknown }).code === 'string' &&
  /^[0-9A-Z]{5}$/.test((err as { code: string }).code) &&
  'severity' in err;

/** A statement failed: where, and what PostgreSQL said. */
class StatementError extends Error {
  readonly sqlstate: string;
  readonly statementIndex: number | null;
  readonly position: number | null;
  constructor(sqlstate: string, message: string, statementIndex: number | null, position: number | null) {
    super(message);
    this.sqlstate = sqlstate;
    this.statementIndex = statementIndex;
    this.position = position;
  }
}

export function createExecutionExecutor(deps: ExecutorDeps): ExecutionExecutor {
  const { log } = deps;
  const pool = createExecutionPool(log);
  const answered = createOutcomeMemo();

  const refuse = (p: ExecutePayload, reason: string, message: string): ExecutionOutcome => {
    // Never the SQL or the token: what was refused and why.
    log.warn({ request_id: p.request_id, database: p.name, mode: p.mode, reason }, 'execution refused');
    return { kind: 'refused', refusal: { reason, message: message.slice(0, 1_000) } };
  };

  /** The admin pool's pg_cancel_backend: the session is on the agent's own cluster. */
  const cancelHosted = (session: ExecutionSession) => () =>
    deps.admin.query('SELECT pg_catalog.pg_cancel_backend($1)', [session.pid]);

  const connect = async (p: ExecutePayload): Promise<Leased> => {
    const attached = deps.attached?.get(p.database_id);
    if (attached) return connectAttached(pool, p, attached);
    const target = {
      databaseId: p.database_id,
      name: p.name,
      roles: roleNames(p.name),
      capability: p.capability,
    };
    const login = async (force: boolean) => {
      const { user, password } = await deps.roles.prepare(target, force);
      const key = `${p.database_id}:${user}`;
      // A kept login of this database and role (execution-pool.ts) saves the SCRAM handshake.
      const kept = force
        ? null
        : await pool.take(key, { statementMs: p.statement_timeout_ms, lockMs: p.lock_timeout_ms });
      if (kept) return { session: kept, key, user, cancel: cancelHosted(kept) };
      const session = await openExecutionSession({
        host: deps.pgHost,
        port: deps.pgPort,
        database: p.name,
        user,
        password,
        statementTimeoutMs: p.statement_timeout_ms,
        lockTimeoutMs: p.lock_timeout_ms,
      });
      return { session, key, user, cancel: cancelHosted(session) };
    };
    try {
      return await login(false);
    } catch (err) {
      // The role lost its password or LOGIN (a re-created database, a restore): prepare again.
      if (!isLoginRefused(err)) throw err;
      return login(true);
    }
  };

  return {
    close: () => pool.close(),
    async execute(p, signal) {
      const started = performance.now();
      const elapsed = () => Math.round((performance.now() - started) * 100) / 100;
      try {
        if (signal.aborted) return refuse(p, 'cancelled', 'the execution was cancelled before it started');
        const v = await deps.verifier.verify(p.token, { database: p.name, mode: p.mode, sql: p.sql });
        if (!v.ok) {
          // The same token delivered again (a retried job, a resent frame): what happened, not `replayed`.
          const earlier = v.reason === 'replayed' ? answered.recall(p.token) : null;
          if (earlier) {
            log.info({ request_id: p.request_id, database: p.name }, 'execution answered again (same token)');
            return earlier;
          }
          return refuse(p, v.reason, REFUSAL_MESSAGES[v.reason]);
        }
        if (v.claims.capability !== p.capability)
          return refuse(p, 'capability_mismatch', 'the request names another capability than its token');
        if (v.claims.mode !== p.mode) return refuse(p, 'wrong_mode', REFUSAL_MESSAGES.wrong_mode);
        if (v.claims.request_id !== p.request_id)
          return refuse(p, 'request_mismatch', 'the execution token is for another request');
        const plan = planExecution(p.sql, p.mode);
        if (!plan.ok) return refuse(p, 'sql', plan.message);

        let leased: Leased;
        try {
          leased = await connect(p);
        } catch (err) {
          if (err instanceof NotPreparedError) return refuse(p, 'database', err.message);
          throw err;
        }
        const outcome = await run(p, plan, v.claims.approved_rows, leased, signal, elapsed);
        const size = outcome.kind === 'executed' && outcome.result ? p.byte_limit * 2 : 4096;
        answered.remember(p.token, v.claims.exp + EXECUTION_SKEW_SECONDS, outcome, size);
        return outcome;
      } catch (err) {
        // Not the SQL's error (that is `failed` from run()): the node could not run it.
        const message = err instanceof Error ? err.message : String(err);
        log.error(
          { request_id: p.request_id, database: p.name, err: { message } },
          'execution failed on the node',
        );
        return {
          kind: 'failed',
          error: {
            sqlstate: isPgError(err) ? err.code : 'XX000',
            message: `the node could not run the request: ${message}`.slice(0, 2_000),
            statement_index: null,
            position: null,
          },
          mismatch: null,
          rolled_back: true,
          duration_ms: elapsed(),
        };
      }
    },
  };

  async function run(
    p: ExecutePayload,
    plan: Extract<ReturnType<typeof planExecution>, { ok: true }>,
    approvedRows: number | null,
    leased: Leased,
    signal: AbortSignal,
    elapsed: () => number,
  ): Promise<ExecutionOutcome> {
    const { session } = leased;
    // Kept for the next execution only when it ended as planned: no error, no cancel (execution-pool.ts).
    let clean = false;
    let cancelled = false;
    let running = true;
    let recancel: NodeJS.Timeout | null = null;
    const cancel = () => {
      if (!running) return;
      cancelled = true;
      leased.cancel().catch((err: Error) => {
        log.warn({ err: { message: err.message } }, 'execution cancel failed');
      });
    };
    // A cancel landing between two statements is ignored by PostgreSQL: resent every 250 ms.
    const onAbort = () => {
      cancel();
      recancel ??= setInterval(cancel, 250);
      recancel.unref();
    };
    signal.addEventListener('abort', onAbort, { once: true });
    const wire = wireBudget(p.byte_limit);
    const statements: StatementOutcome[] = [];
    let last: StatementResult | null = null;
    let affected = 0;
    let inTransaction = false;
    let index: number | null = null;
    // The transaction's changed rows: PostgreSQL's counters after BEGIN, then before its end.
    const changedRows = async () => {
      const r = await session.run(CHANGED_ROWS_SQL, wire).catch((err: unknown) => {
        throw statementError(err, null, null);
      });
      try {
        return parseChangedRows(r.rows[0]);
      } catch (err) {
        throw new StatementError('55000', (err as Error).message, null, null);
      }
    };
    let baseline = 0;
    try {
      if (!plan.outsideTransaction) {
        await session.run(p.capability === 'reader' ? 'BEGIN READ ONLY' : 'BEGIN', wire);
        inTransaction = true;
        baseline = await changedRows();
      }
      for (const [i, s] of plan.statements.entries()) {
        index = i;
        if (signal.aborted) throw new StatementError('57014', 'the execution was cancelled', i, null);
        let plan_: string | null = null;
        if (p.mode === 'dry_run' && p.explain && s.explainable) {
          const prefix = 'EXPLAIN (FORMAT JSON) ';
          const r = await session.run(`${prefix}${s.text}`, wire).catch((err: unknown) => {
            throw statementError(err, i, s.start - prefix.length);
          });
          plan_ = (r.rows.map((row) => row[0] ?? '').join('\n') || '').slice(
            0,
            EXECUTION_LIMITS.maxPlanChars,
          );
        }
        const r = await session.run(s.text, wire).catch((err: unknown) => {
          throw statementError(err, i, s.start);
        });
        statements.push({ command: r.command, row_count: r.rowCount, plan: plan_ });
        if (DML.has(r.command)) affected += r.rowCount ?? 0;
        if (r.fields.length > 0) last = r;
      }
      index = null;
      // In a transaction, the rows it changed (not the tags: a CTE's DELETE is a SELECT's tag).
      if (inTransaction) affected = (await changedRows()) - baseline;
      const mismatch =
        p.mode === 'execute' && approvedRows !== null && affected !== approvedRows && !plan.outsideTransaction
          ? { approved_rows: approvedRows, affected_rows: affected }
          : null;
      let committed = false;
      if (inTransaction) {
        const commit = p.mode === 'execute' && mismatch === null;
        await session.run(commit ? 'COMMIT' : 'ROLLBACK', wire);
        inTransaction = false;
        committed = commit;
      } else {
        committed = p.mode === 'execute';
      }
      running = false;
      if (mismatch) {
        log.warn(
          { request_id: p.request_id, database: p.name, ...mismatch },
          'execution rolled back: row count mismatch',
        );
        return {
          kind: 'failed',
          error: {
            sqlstate: ROW_COUNT_MISMATCH_SQLSTATE,
            message: `the request affected ${affected} rows; ${approvedRows} were approved: rolled back`,
            statement_index: null,
            position: null,
          },
          mismatch,
          rolled_back: true,
          duration_ms: elapsed(),
        };
      }
      const result = last ? await resultOf(p, session, last, elapsed) : null;
      clean = !cancelled && !signal.aborted;
      return {
        kind: 'executed',
        committed,
        statements,
        affected_rows: affected,
        result,
        duration_ms: elapsed(),
      };
    } catch (err) {
      running = false;
      let rolledBack = !plan.outsideTransaction;
      if (inTransaction) {
        // An aborted transaction ends with ROLLBACK; a dead connection rolls back on its own.
        await session.run('ROLLBACK', wire).catch(() => {});
      } else if (plan.outsideTransaction && index !== null) {
        // A failed CREATE INDEX CONCURRENTLY may leave an INVALID index behind: said, not hidden.
        rolledBack = false;
      }
      const e = err instanceof StatementError ? err : statementError(err, index, null);
      log.info(
        {
          request_id: p.request_id,
          database: p.name,
          sqlstate: e.sqlstate,
          statement_index: e.statementIndex,
        },
        'execution failed',
      );
      return {
        kind: 'failed',
        error: {
          sqlstate: e.sqlstate,
          message: e.message.slice(0, 2_000),
          statement_index: e.statementIndex,
          position: e.position,
        },
        mismatch: null,
        rolled_back: rolledBack,
        duration_ms: elapsed(),
      };
    } finally {
      running = false;
      if (recancel) clearInterval(recancel);
      signal.removeEventListener('abort', onAbort);
      // Off the answer's path: the reset (or the close) runs after the outcome is returned.
      void pool.give(leased.key, leased.user, session, clean && !cancelled);
    }
  }

  function statementError(err: unknown, index: number | null, start: number | null): StatementError {
    if (err instanceof StatementError) return err;
    if (isPgError(err)) {
      const raw = err.position ? Number(err.position) - 1 : Number.NaN;
      const position = start !== null && Number.isFinite(raw) && start + raw >= 0 ? start + raw : null;
      return new StatementError(err.code, err.message, index, position);
    }
    const message = err instanceof Error ? err.message : String(err);
    // The framing filter refused a message (a value past every bound) or the connection died.
    const sqlstate = /BULWARK_EXPLORER_STREAM/.test(String((err as { code?: unknown })?.code))
      ? '54000'
      : '08006';
    return new StatementError(sqlstate, message, index, null);
  }
}
