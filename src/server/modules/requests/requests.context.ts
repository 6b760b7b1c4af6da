/**
 * What the request services share: their dependencies, the scoped lookups (another account's or
 * an out-of-scope database or request is a 404), the view of a stored request, audit events in
 * the change's transaction, and the start of a delivery.
 */
import type { Logger } from 'pino';
import { AppError, conflict, notFound } from '../../../shared/errors.ts';
import type { Db, Queryable, Tx } from '../../db/pool.ts';
import { assertDatabaseInScope, type Caller } from '../../http/caller.ts';
import { type AuditService, auditFromCaller } from '../audit/audit.service.ts';
import * as databasesRepo from '../databases/databases.repo.ts';
import { checkDatabaseName } from '../databases/databases.service.ts';
import type { RequireStepUp } from '../sessions/step-up.ts';
import * as deliveries from './requests.deliveries.repo.ts';
import type { Delivery, Dispatch } from './requests.dispatch.ts';
import type { DryRunSlots } from './requests.dry-run-slots.ts';
import type { ActivePolicy } from './requests.policy.ts';
import * as repo from './requests.repo.ts';
import type { ResultStore } from './requests.results.ts';
import type { RequestView } from './requests.schemas.ts';
import { toView } from './requests.view.ts';

/** Just-in-time credentials (access.service.ts): the grant an executed access request makes. */
export type AccessGrants = {
  grantAccess(input: {
    accountId: string;
    requestId: string;
    databaseId: string;
    capability: 'reader' | 'migrator';
    durationS: number;
    actor: { type: 'user' | 'key' | 'system'; id: string | null };
  }): Promise<{ login: string; password: string; connection_string: string; valid_until: string }>;
  /** Ends the live grants of a request, in the caller's transaction. */
  revokeForRequest(tx: Tx, requestId: string): Promise<number>;
};

export type RequestsDeps = {
  db: Db;
  log: Logger;
  audit: Pick<AuditService, 'record' | 'recordNow'>;
  dispatch: Pick<Dispatch, 'deliver' | 'preflightDryRun' | 'newJti' | 'sqlSha256'>;
  results: ResultStore;
  /** The step-up window a signed-in user needs to break glass (sessions/step-up.ts). */
  stepUp: RequireStepUp;
  /** The account's active policy (version 0 / null: built-in rules). */
  policyOf: (db: Queryable, accountId: string) => Promise<ActivePolicy>;
  /** Access requests' grants; absent: executing one answers 409 (not available). */
  access?: AccessGrants;
  /** Dry runs in flight per database (this process); default: requests.dry-run-slots.ts. */
  dryRunSlots?: DryRunSlots;
  /** Dry runs at creation and edit: how long the statement may run, and how long the API waits. */
  dryRunTimeoutMs?: number;
  dryRunWaitMs?: number;
  /**
   * Called in the transaction that made a request pending (created, or edited back to pending) or
   * decided it (approved, rejected, cancelled): the Slack outbox queues its message there (issue 18).
   */
  onChange?: (
    tx: Tx,
    row: Pick<repo.RequestRow, 'id' | 'account_id'>,
    change: 'pending' | 'decided',
  ) => Promise<void>;
};

export type RequestsContext = ReturnType<typeof createRequestsContext>;

export const isRequester = (
  caller: Caller,
  row: Pick<repo.RequestRow, 'requester_user_id' | 'requester_key_id'>,
) =>
  caller.kind === 'user' ? row.requester_user_id === caller.userId : row.requester_key_id === caller.keyId;

/**
 * The caller is the person behind the request: its requester user, or the user who created the
 * requesting API key (up the key's created_by chain, `requester_person_id`). Such a person never
 * approves or rejects it and may cancel it; editing and executing stay with the requester itself.
 */
export const isRequesterPerson = (
  caller: Caller,
  row: Pick<repo.RequestRow, 'requester_user_id' | 'requester_person_id'>,
) =>
  caller.kind === 'user' &&
  (row.requester_user_id === caller.userId || row.requester_person_id === caller.userId);

export const invalidState = (message: string, status: string) =>
  new AppError('invalid_state', message, { status });

export function createRequestsContext(deps: RequestsDeps) {
  const { db } = deps;

  const findDatabase = async (caller: Caller, name: string, q: Queryable = db) => {
    checkDatabaseName(name);
    assertDatabaseInScope(caller, name);
    const row = await databasesRepo.findByName(q, caller.accountId, name);
    if (!row) throw notFound('Database');
    return row;
  };

  const requireReady = (row: databasesRepo.DatabaseRow) => {
    if (row.status !== 'ready') throw conflict(`Requests need a ready database (it is ${row.status})`);
  };

  /** The request `id` of database `name`, as the caller may see it (404 otherwise). */
  const findRequest = async (
    caller: Caller,
    name: string,
    id: string,
    q: Queryable = db,
    opts: { forUpdate?: boolean } = {},
  ) => {
    const database = await findDatabase(caller, name, q);
    const row = await repo.findRequest(q, { accountId: caller.accountId, id, databaseId: database.id }, opts);
    if (!row) throw notFound('Request');
    return { database, row };
  };

  const views = async (q: Queryable, accountId: string, rows: repo.RequestRow[]): Promise<RequestView[]> => {
    const approvals = await repo.approvalsOf(
      q,
      accountId,
      rows.map((r) => r.id),
    );
    return rows.map((r) => toView(r, approvals, { resultInMemory: deps.results.inMemory(r.id) }));
  };

  const view = async (q: Queryable, row: repo.RequestRow): Promise<RequestView> =>
    (await views(q, row.account_id, [row]))[0]!;

  /** Re-reads a request after a change (its status, approvals, result). */
  const reload = async (q: Queryable, row: Pick<repo.RequestRow, 'id' | 'account_id'>) => {
    const fresh = await repo.findRequest(q, { accountId: row.account_id, id: row.id });
    if (!fresh) throw notFound('Request');
    return fresh;
  };

  const audit = (
    q: Queryable,
    caller: Caller,
    requestId: string | null,
    action: string,
    row: Pick<repo.RequestRow, 'id' | 'database'>,
    details: Record<string, unknown> = {},
    outcome: 'success' | 'failure' | 'denied' = 'success',
  ) =>
    deps.audit.record(
      q,
      auditFromCaller(
        caller,
        {
          action,
          outcome,
          targetType: 'request',
          targetId: row.id,
          details: { database: row.database, ...details },
        },
        requestId,
      ),
    );

  /** Records a delivery (its jti) in `tx`; deliver it after commit. */
  const startDelivery = async (
    tx: Queryable,
    caller: Caller | null,
    row: repo.RequestRow,
    mode: 'execute' | 'dry_run',
    priorStatus: string,
  ): Promise<Delivery> => {
    const jti = deps.dispatch.newJti();
    const executionId = await deliveries.insertExecution(tx, {
      requestId: row.id,
      mode,
      jti,
      sqlSha256: row.sql_sha256 ?? deps.dispatch.sqlSha256(''),
      priorStatus,
      userId: caller?.kind === 'user' ? caller.userId : null,
      keyId: caller?.kind === 'key' ? caller.keyId : null,
    });
    return { executionId, jti, mode, row };
  };

  return { deps, db, findDatabase, requireReady, findRequest, views, view, reload, audit, startDelivery };
}
