/**
 * The SQL explorer's control-plane half (issue 6). The server never connects to a tenant
 * database: it validates, checks the caller and hands the request to the database's node —
 * down the agent's explorer channel when this replica holds one (ADR 0009), else as an
 * `explorer.query` job whose rows come back through the UNLOGGED `explorer_results` table
 * (ADR 0008; contract in src/shared/contracts/explorer-channel.ts) — and waits, bounded.
 * Every query — refused, failed or answered — is audited with its SQL redacted.
 */
import type { Logger } from 'pino';
import {
  BUSY,
  EXPLORER_JOB_KINDS,
  EXPLORER_LIMITS,
  type QueryOutput,
  type SchemaOutput,
} from '../../../shared/contracts/explorer-channel.ts';
import { AppError, conflict, forbidden, notFound, unavailable } from '../../../shared/errors.ts';
import type { ExplorerValidator } from '../../../shared/sql/explorer-validator.ts';
import type { Db } from '../../db/pool.ts';
import { assertDatabaseInScope, type Caller } from '../../http/caller.ts';
import type { AuditEventDraft, AuditService } from '../audit/audit.service.ts';
import * as databasesRepo from '../databases/databases.repo.ts';
import { checkDatabaseName } from '../databases/databases.service.ts';
import type { JobNotifier } from '../jobs/job-notifier.ts';
import { createExplorerAdmission } from './explorer.admission.ts';
import type { ExplorerChannels, RequestOutcome as Outcome } from './explorer.channel.ts';
import { createExplorerQueue } from './explorer.queue.ts';

export type ExplorerServiceDeps = {
  db: Db;
  notifier: Pick<JobNotifier, 'subscribe' | 'wake'>;
  log: Logger;
  /** Explorer queries and their outcomes are recorded in their own (group-committed) transactions. */
  audit: Pick<AuditService, 'recordNow' | 'recordSoon'>;
  /** The process's SQL validator (built at the wiring point, with its verdict cache). */
  validator: Pick<ExplorerValidator, 'validate'>;
  /** Agents' explorer channels on this replica; without one for the node, the job queue is used. */
  channels?: Pick<ExplorerChannels, 'pick'>;
  /** How long a request waits beyond the statement timeout (queue + agent round trip). */
  marginMs?: number;
  /** Explorer queries in flight per database on this replica (default 4). */
  maxPerDatabase?: number;
  /** Explorer requests in flight per account on this replica, all its databases (default 8). */
  maxPerAccount?: number;
  /** Explorer queries in flight in this process, all databases (default 32): each may bring back 10 MB. */
  maxInProcess?: number;
  /** Sweep interval of uncollected results and left-over SQL (default 30 s). */
  sweepMs?: number;
};

type QueryInput = { sql: string; limit?: number | undefined; timeout_ms?: number | undefined };

/** Who asked, for the audit event (built from the request by the route). */
export type AuditBase = Pick<
  AuditEventDraft,
  'actorType' | 'actorId' | 'accountId' | 'sourceIp' | 'requestId'
>;

const SCHEMA_WAIT_MS = 15_000;
/** Explorer queries in flight per database on this replica (its pool on the node holds 2). */
const MAX_PER_DATABASE = 4;
/** An account with many databases still gets a bounded share of a replica (and of its nodes). */
const MAX_PER_ACCOUNT = 8;
/** Bounds the result bytes a process holds at once (each result up to the 10 MB cap, in a few copies). */
const MAX_IN_PROCESS = 32;

export function createExplorerService(deps: ExplorerServiceDeps) {
  const { db, notifier, log } = deps;
  const marginMs = deps.marginMs ?? 10_000;
  const admit = createExplorerAdmission({
    perDatabase: deps.maxPerDatabase ?? MAX_PER_DATABASE,
    perAccount: deps.maxPerAccount ?? MAX_PER_ACCOUNT,
    perProcess: deps.maxInProcess ?? MAX_IN_PROCESS,
  });
  /** Aborted by close(): waiting requests end at once. */
  const stopping = new AbortController();
  const queue = createExplorerQueue({ db, notifier, log, stopping: stopping.signal, sweepMs: deps.sweepMs });

  const audit = (base: AuditBase, event: AuditEventDraft) =>
    deps.audit
      .recordNow({ ...base, ...event })
      .catch((err: Error) =>
        log.error({ err: { message: err.message } }, 'could not record an explorer event in the audit log'),
      );

  /**
   * Admin keys and keys granted the explorer; the database in scope and ready. A caller without
   * the explorer is refused (and audited, with what it tried) after the database is found.
   */
  const findDatabase = async (
    caller: Caller,
    name: string,
    refused: (row: { id: string }) => Promise<void>,
  ) => {
    checkDatabaseName(name);
    assertDatabaseInScope(caller, name);
    const row = await databasesRepo.findByName(db, caller.accountId, name);
    if (!row) throw notFound('Database');
    if (caller.level !== 'admin' && !caller.explorer) {
      await refused(row);
      throw forbidden('The SQL explorer needs an admin key or a key granted the explorer');
    }
    if (row.status !== 'ready') throw conflict(`The explorer needs a ready database (it is ${row.status})`);
    return row;
  };

  /**
   * The node's channel when this replica holds one (two frames, nothing stored), else the queue.
   * Shutdown ends the wait too: a waiting request must not hold the server open.
   */
  const dispatch = async (
    row: databasesRepo.DatabaseRow,
    kind: 'query' | 'schema',
    payload: Record<string, unknown>,
    waitMs: number,
    signal: AbortSignal,
  ): Promise<Outcome> => {
    const until = AbortSignal.any([signal, stopping.signal]);
    const channel = deps.channels?.pick(row.node_id);
    if (channel) {
      const outcome = await channel.request(
        kind,
        payload as Parameters<typeof channel.request>[1],
        waitMs,
        until,
      );
      if (outcome !== 'unsent') return outcome;
    }
    return queue.run(row, EXPLORER_JOB_KINDS[kind], payload, waitMs, until);
  };

  /** Runs an accepted query on the node and audits it (see query()). */
  const run = async (
    row: databasesRepo.DatabaseRow,
    target: { action: string; targetType: string; targetId: string },
    redacted: string,
    input: QueryInput,
    ctx: { signal: AbortSignal; audit: AuditBase },
  ): Promise<QueryOutput> => {
    const name = row.name;
    const timeoutMs = input.timeout_ms ?? EXPLORER_LIMITS.defaultStatementTimeoutMs;
    const rowLimit = input.limit ?? EXPLORER_LIMITS.defaultRows;

    // Two events per query. The first (who, which database, the SQL redacted) is written while the
    // query runs and must be durable before any row is returned (fail closed): the response waits
    // for the slower of the two. The audit service redacts `sql` itself: it gets the SQL as written.
    // A query whose event cannot be written is cancelled at once: its rows would be withheld anyway.
    const unrecorded = new AbortController();
    const recorded = deps.audit
      .recordNow({
        ...ctx.audit,
        ...target,
        details: { database: name, sql: input.sql, row_limit: rowLimit, timeout_ms: timeoutMs },
      })
      .then(
        () => true,
        (err: Error) => {
          log.error(
            { err: { message: err.message } },
            'could not record an explorer query; withholding its result',
          );
          unrecorded.abort();
          return false;
        },
      );
    const dispatched = dispatch(
      row,
      'query',
      {
        database_id: row.id,
        // The agent finds the database (and its explorer role) by its name on the node.
        name: databasesRepo.physicalName(row),
        sql: input.sql,
        sql_redacted: redacted,
        row_limit: rowLimit,
        byte_limit: EXPLORER_LIMITS.defaultBytes,
        statement_timeout_ms: timeoutMs,
      },
      timeoutMs + marginMs,
      AbortSignal.any([ctx.signal, unrecorded.signal]),
    );
    // The second event is the outcome (rows, duration, SQLSTATE), linked by the request id. It
    // is written after the response is on its way: the first one already made the query durable.
    const result = { ...target, action: 'explorer.query.result' };
    const settle = (outcomeOf: 'success' | 'failure' | 'denied', details: Record<string, unknown>) => {
      const event = { ...result, outcome: outcomeOf, details: { database: name, ...details } };
      setImmediate(() =>
        deps.audit
          .recordSoon({ ...ctx.audit, ...event })
          .catch((err: Error) =>
            log.error(
              { err: { message: err.message } },
              'could not record an explorer event in the audit log',
            ),
          ),
      );
    };
    let durable: boolean;
    let outcome: Outcome;
    try {
      [durable, outcome] = await Promise.all([recorded, dispatched]);
    } catch (err) {
      settle('failure', { reason: 'server_error' });
      throw err;
    }
    if (!durable) {
      settle('failure', { reason: 'audit_failed' });
      throw unavailable('The query could not be recorded in the audit log; its result is withheld');
    }
    if (outcome === 'aborted' || outcome === 'timeout' || 'died' in outcome || outcome.kind === 'schema') {
      const reason =
        typeof outcome === 'string' ? outcome : 'died' in outcome ? 'agent_failed' : 'bad_outcome';
      settle('failure', { reason });
      if (outcome === 'aborted' && stopping.signal.aborted) throw unavailable('The server is shutting down');
      if (outcome === 'aborted') throw new AppError('cancelled', 'The query was cancelled');
      if (outcome === 'timeout') throw new AppError('timeout', 'The database node did not answer in time');
      if (typeof outcome === 'object' && 'died' in outcome && outcome.died === 'busy')
        throw unavailable('The database node is running too many explorer queries; retry shortly');
      throw new AppError('unavailable', 'The query could not be run on the database node');
    }
    if (outcome.kind === 'error') {
      const e = outcome.error;
      if (e.sqlstate === BUSY.sqlstate) {
        settle('failure', { reason: 'busy' });
        throw unavailable(BUSY.message);
      }
      if (e.internal) {
        // The node failed (not the query): the caller's SQL is not at fault.
        settle('failure', { reason: 'agent_failed', sqlstate: e.sqlstate });
        throw unavailable('The query could not be run on the database node');
      }
      settle(e.refused ? 'denied' : 'failure', {
        sqlstate: e.sqlstate,
        duration_ms: outcome.duration_ms,
        row_count: 0,
      });
      throw new AppError(e.refused ? 'query_refused' : 'query_failed', e.message, {
        sqlstate: e.sqlstate,
        position: e.position,
      });
    }
    const o = outcome.output;
    settle('success', { row_count: o.row_count, truncated: o.truncated, duration_ms: o.duration_ms });
    return o;
  };

  return {
    async query(
      caller: Caller,
      name: string,
      input: QueryInput,
      ctx: { signal: AbortSignal; audit: AuditBase },
    ): Promise<QueryOutput> {
      const denied = (r: { id: string }) =>
        audit(ctx.audit, {
          action: 'explorer.query',
          targetType: 'database',
          targetId: r.id,
          outcome: 'denied',
          details: { database: name, sql: input.sql, reason_code: 'not_permitted' },
        });
      // The database lookup (a control-DB round trip) and the parser gate (CPU) overlap; the
      // lookup's answer (not found, out of scope, not permitted, not ready) still comes first.
      const found = findDatabase(caller, name, denied);
      found.catch(() => {}); // observed below; never an unhandled rejection if validation throws
      const verdict = deps.validator.validate(input.sql);
      const row = await found;
      const target = { action: 'explorer.query', targetType: 'database', targetId: row.id };
      if (!verdict.ok) {
        // `sql` is redacted by the audit service (unparseable SQL becomes a placeholder).
        await audit(ctx.audit, {
          ...target,
          outcome: 'denied',
          details: { database: name, sql: input.sql, reason_code: verdict.code, position: verdict.position },
        });
        throw new AppError('query_refused', verdict.reason, {
          reason_code: verdict.code,
          position: verdict.position,
        });
      }
      const slot = admit({ databaseId: row.id, accountId: row.account_id });
      if ('refused' in slot) {
        await audit(ctx.audit, {
          ...target,
          outcome: 'failure',
          details: { database: name, sql: input.sql, reason: 'busy' },
        });
        throw unavailable(`${slot.refused}; retry shortly`);
      }
      try {
        return await run(row, target, verdict.redacted, input, ctx);
      } finally {
        slot.release();
      }
    },

    async schema(
      caller: Caller,
      name: string,
      ctx: { signal: AbortSignal; audit: AuditBase },
    ): Promise<SchemaOutput> {
      const denied = (r: { id: string }) =>
        audit(ctx.audit, {
          action: 'explorer.schema',
          targetType: 'database',
          targetId: r.id,
          outcome: 'denied',
          details: { database: name, reason_code: 'not_permitted' },
        });
      const row = await findDatabase(caller, name, denied);
      const slot = admit({ databaseId: row.id, accountId: row.account_id });
      if ('refused' in slot) throw unavailable(`${slot.refused}; retry shortly`);
      const outcome = await dispatch(
        row,
        'schema',
        { database_id: row.id, name: databasesRepo.physicalName(row) },
        SCHEMA_WAIT_MS,
        ctx.signal,
      ).finally(() => slot.release());
      const ok = typeof outcome === 'object' && 'kind' in outcome && outcome.kind === 'schema';
      await audit(ctx.audit, {
        action: 'explorer.schema',
        targetType: 'database',
        targetId: row.id,
        outcome: ok ? 'success' : 'failure',
        details: { database: name },
      });
      if (ok) return outcome.output;
      if (outcome === 'timeout') throw new AppError('timeout', 'The database node did not answer in time');
      throw new AppError('unavailable', 'The schema could not be read on the database node');
    },

    /** The job queue's agent-facing half (results, lease checks, job hook, sweep). */
    receiveResult: queue.receiveResult,
    leaseActive: queue.leaseActive,
    onJobFinished: queue.onJobFinished,
    sweep: queue.sweep,

    /** Stops the sweeper and ends every waiting request (their jobs are ended too). */
    close() {
      stopping.abort();
      queue.close();
    },
  };
}

export type ExplorerService = ReturnType<typeof createExplorerService>;
