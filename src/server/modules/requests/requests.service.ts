/**
 * Governed SQL requests (issue 14, "Requests"): a caller asks to run SQL (or for time-boxed
 * access) on a database; the SQL is classified with the real parser and reviewed, the account's
 * policy decides who may ask and how many approvals it needs, DML is dry-run at once (the count
 * approvals bind), and the request then waits for approvals (requests.approvals.ts) and execution
 * (requests.execute.ts). Every transition is audited with the SQL redacted.
 */
import { AppError, badRequest, forbidden, notFound } from '../../../shared/errors.ts';
import { type PolicyClass, rulesFor } from '../../../shared/policy/governance.ts';
import { withTx } from '../../db/pool.ts';
import type { Caller } from '../../http/caller.ts';
import { decodeCursor, toPage } from '../../http/pagination.ts';
import { requireHosted } from '../databases/databases.kind.ts';
import { createApprovals } from './requests.approvals.ts';
import { assertApprovable, decideOrDeny, isDml, judgeSql, policyView } from './requests.classify.ts';
import {
  createRequestsContext,
  invalidState,
  isRequester,
  isRequesterPerson,
  type RequestsDeps,
} from './requests.context.ts';
import {
  createDryRunSlots,
  DRY_RUN_BUSY_ERROR,
  DRY_RUN_TIMEOUT_MS,
  DRY_RUN_WAIT_MS,
  dryRunsBusy,
} from './requests.dry-run-slots.ts';
import { createExecution } from './requests.execute.ts';
import { createPreflight } from './requests.preflight.ts';
import * as repo from './requests.repo.ts';
import type { CreateRequestBody, RequestResult, RequestStatus, RequestView } from './requests.schemas.ts';

export function createRequestsService(deps: RequestsDeps) {
  const ctx = createRequestsContext(deps);
  const { db } = ctx;

  /** Classifies, reviews and decides for a caller; throws what may never be requested. */
  const judge = async (caller: Caller, database: string, sql: string, capability?: 'reader' | 'migrator') => {
    const active = await deps.policyOf(db, caller.accountId);
    const { rules } = rulesFor(active.policy, database);
    const judged = judgeSql(sql, rules.findings);
    assertApprovable(judged);
    const cls = judged.cls as PolicyClass;
    const cap = capability ?? (cls === 'read' ? 'reader' : 'migrator');
    if (cap === 'reader' && cls !== 'read')
      throw new AppError(
        'query_refused',
        `A ${cls} request needs the migrator capability (reader runs reads only)`,
      );
    // A read as the migrator is decided as a write (requests.classify.ts policyClassOf).
    const decision = decideOrDeny(active.policy, { database, cls, caller, capability: cap });
    return { active, judged, cls, decision, capability: cap };
  };

  const slots = deps.dryRunSlots ?? createDryRunSlots();

  /**
   * Dry-runs a request's DML (bounded wait) and returns it as it then stands. With no free dry-run
   * slot for the database: `busy: 'throw'` is a 503 retry; `'record'` (creation, edit) leaves the
   * request without a dry run and says so in dry_run_error.
   */
  const dryRun = async (
    caller: Caller | null,
    row: repo.RequestRow,
    busy: 'throw' | 'record',
  ): Promise<repo.RequestRow> => {
    const release = slots.tryAcquire(row.database_id);
    if (!release) {
      if (busy === 'throw') throw dryRunsBusy();
      await repo.markDryRunSkipped(db, row.id, row.sql_sha256 ?? '', DRY_RUN_BUSY_ERROR);
      return ctx.reload(db, row);
    }
    try {
      const delivery = await withTx(db, (tx) => ctx.startDelivery(tx, caller, row, 'dry_run', row.status));
      await deps.dispatch.deliver(delivery, {
        statementTimeoutMs: deps.dryRunTimeoutMs ?? DRY_RUN_TIMEOUT_MS,
        waitMs: deps.dryRunWaitMs ?? DRY_RUN_WAIT_MS,
      });
    } finally {
      release();
    }
    return ctx.reload(db, row);
  };

  const requesterName = async (caller: Caller) =>
    caller.kind === 'user'
      ? repo.userName(db, caller.userId)
      : (caller.keyName ?? (await repo.keyName(db, caller.keyId)));

  const list = async (
    caller: Caller,
    filter: Omit<repo.ListFilter, 'accountId' | 'cursor' | 'limit' | 'databaseNames'>,
    page: { cursor?: string | undefined; limit: number },
  ) => {
    const rows = await repo.listRequests(db, {
      ...filter,
      accountId: caller.accountId,
      databaseNames: caller.databases,
      cursor: decodeCursor(page.cursor),
      limit: page.limit,
    });
    const views = await ctx.views(db, caller.accountId, rows.slice(0, page.limit));
    const byId = new Map(views.map((v) => [v.id, v]));
    return toPage(
      rows,
      page.limit,
      (r) => ({ ts: Number(r.created_us), id: r.id }),
      (r) => byId.get(r.id)!,
    );
  };

  return {
    ...createApprovals(ctx),
    ...createExecution(ctx),
    ...createPreflight(ctx, slots),

    async create(
      caller: Caller,
      name: string,
      body: CreateRequestBody,
      requestId: string,
    ): Promise<RequestView> {
      if ((body.sql === undefined) === (body.access === undefined))
        throw badRequest('Give exactly one of sql (run SQL) or access (time-boxed credentials)');
      const database = await ctx.findDatabase(caller, name);
      ctx.requireReady(database);
      // Governed SQL runs on attached databases as on hosted ones; a just-in-time login cannot be
      // made where Bulwark owns no role.
      if (body.access !== undefined) requireHosted(database, 'make just-in-time logins on');
      let fields: Pick<
        repo.NewRequest,
        'kind' | 'sql' | 'sqlSha256' | 'capability' | 'access' | 'cls' | 'classification' | 'findings'
      >;
      let decision: ReturnType<typeof decideOrDeny>;
      let version: number;
      if (body.sql !== undefined) {
        const j = await judge(caller, name, body.sql, body.capability);
        decision = j.decision;
        version = j.active.version;
        fields = {
          kind: 'sql',
          sql: body.sql,
          sqlSha256: deps.dispatch.sqlSha256(body.sql),
          capability: j.capability,
          access: null,
          cls: j.cls,
          classification: j.judged.classification,
          findings: j.judged.findings,
        };
      } else {
        const access = body.access!;
        const active = await deps.policyOf(db, caller.accountId);
        const cls: PolicyClass = access.role === 'reader' ? 'access_read' : 'access_write';
        decision = decideOrDeny(active.policy, { database: name, cls, caller });
        if (access.duration_s > decision.rules.max_access_s)
          throw new AppError(
            'policy_denied',
            `Access lasts at most ${decision.rules.max_access_s} seconds here`,
            {
              max_access_s: decision.rules.max_access_s,
            },
          );
        version = active.version;
        fields = {
          kind: 'access',
          sql: null,
          sqlSha256: null,
          capability: access.role,
          access,
          cls,
          classification: { class: 'read', statements: [], reasons: [], parse_error: null },
          findings: [],
        };
      }
      const noApprovals = decision.approvals === 0 && decision.admin_approvals === 0;
      // DML waits for its dry run before it can be approved (even with no approvals needed).
      const openAtOnce = noApprovals && !isDml(fields.cls);
      const row = await withTx(db, async (tx) => {
        const id = await repo.insertRequest(tx, {
          ...fields,
          accountId: caller.accountId,
          databaseId: database.id,
          status: openAtOnce ? 'approved' : 'pending',
          reason: body.reason,
          requesterUserId: caller.kind === 'user' ? caller.userId : null,
          requesterKeyId: caller.kind === 'key' ? caller.keyId : null,
          requesterPersonId: caller.kind === 'user' ? caller.userId : await repo.keyPerson(tx, caller.keyId),
          requesterName: await requesterName(caller),
          policy: policyView(version, decision),
          maxExecutions: decision.rules.max_executions,
          approvalLifetimeS: decision.rules.approval_lifetime_s,
          requestLifetimeS: decision.rules.request_lifetime_s,
        });
        if (openAtOnce)
          await repo.patchRequest(tx, id, {
            approval_expires_at: { inSeconds: decision.rules.approval_lifetime_s },
          });
        const created = (await repo.findRequest(tx, { accountId: caller.accountId, id }))!;
        if (created.status === 'pending') await deps.onChange?.(tx, created, 'pending');
        await ctx.audit(tx, caller, requestId, 'request.created', created, {
          sql: fields.sql ?? undefined,
          kind: fields.kind,
          class: fields.cls,
          capability: fields.capability,
          approvals_required: decision.approvals,
          status: created.status,
        });
        return created;
      });
      const settled = row.kind === 'sql' && isDml(row.class) ? await dryRun(caller, row, 'record') : row;
      return ctx.view(db, settled);
    },

    /**
     * The requester changes the SQL: approvals cleared, classified again, a new dry run, pending
     * (approved at once when the new SQL needs no approval, as at creation).
     */
    async edit(
      caller: Caller,
      name: string,
      id: string,
      body: { sql: string; reason?: string | undefined },
      requestId: string,
    ): Promise<RequestView> {
      const { row: current } = await ctx.findRequest(caller, name, id);
      if (current.kind !== 'sql') throw invalidState('Only SQL requests can be edited', current.status);
      if (!isRequester(caller, current)) throw forbidden('Only the requester can edit a request');
      // The capability follows the new SQL's class (reader for a read, migrator otherwise).
      const j = await judge(caller, name, body.sql);
      const row = await withTx(db, async (tx) => {
        const { row: locked } = await ctx.findRequest(caller, name, id, tx, { forUpdate: true });
        if (!['pending', 'approved', 'rejected'].includes(locked.status))
          throw invalidState(`A ${locked.status} request cannot be edited`, locked.status);
        await repo.deleteApprovals(tx, id);
        // As at creation: what needs no approval (and no dry run) is approved at once.
        const openAtOnce = j.decision.approvals === 0 && j.decision.admin_approvals === 0 && !isDml(j.cls);
        await repo.patchRequest(tx, id, {
          status: openAtOnce ? 'approved' : 'pending',
          sql: body.sql,
          sql_sha256: deps.dispatch.sqlSha256(body.sql),
          ...(body.reason !== undefined ? { reason: body.reason } : {}),
          capability: j.capability,
          class: j.cls,
          classification: j.judged.classification,
          findings: j.judged.findings,
          policy: policyView(j.active.version, j.decision),
          max_executions: j.decision.rules.max_executions,
          approval_lifetime_s: j.decision.rules.approval_lifetime_s,
          dry_run: null,
          dry_run_error: null,
          approved_rows: null,
          rejection: null,
          approval_expires_at: openAtOnce ? { inSeconds: j.decision.rules.approval_lifetime_s } : null,
        });
        const edited = await ctx.reload(tx, locked);
        if (edited.status === 'pending') await deps.onChange?.(tx, edited, 'pending');
        await ctx.audit(tx, caller, requestId, 'request.edited', edited, {
          sql: body.sql,
          class: j.cls,
          was: locked.status,
        });
        return edited;
      });
      const settled = isDml(row.class) ? await dryRun(caller, row, 'record') : row;
      return ctx.view(db, settled);
    },

    /** Runs the dry run again (pending requests): the count approvals bind. */
    async dryRun(caller: Caller, name: string, id: string): Promise<RequestView> {
      const { database, row } = await ctx.findRequest(caller, name, id);
      ctx.requireReady(database);
      if (row.kind !== 'sql') throw invalidState('Only SQL requests have a dry run', row.status);
      if (row.status !== 'pending')
        throw invalidState(`A ${row.status} request is not dry-run again`, row.status);
      return ctx.view(db, await dryRun(caller, row, 'throw'));
    },

    async get(caller: Caller, name: string, id: string): Promise<RequestView> {
      const { row } = await ctx.findRequest(caller, name, id);
      return ctx.view(db, row);
    },

    async listForDatabase(
      caller: Caller,
      name: string,
      q: {
        status?: RequestStatus | undefined;
        requester?: string | undefined;
        cursor?: string | undefined;
        limit: number;
      },
    ) {
      const database = await ctx.findDatabase(caller, name);
      return list(
        caller,
        {
          databaseId: database.id,
          ...(q.status ? { status: q.status } : {}),
          ...requesterOf(caller, q.requester),
        },
        q,
      );
    },

    /** Account-wide (the approvals inbox with awaiting=me). */
    async listForAccount(
      caller: Caller,
      q: {
        status?: RequestStatus | undefined;
        awaiting?: 'me' | undefined;
        requester?: string | undefined;
        cursor?: string | undefined;
        limit: number;
      },
    ) {
      // A key approves nothing: its inbox is empty.
      if (q.awaiting === 'me' && caller.kind !== 'user') return { items: [], next_cursor: null };
      return list(
        caller,
        {
          ...(q.status ? { status: q.status } : {}),
          ...(q.awaiting === 'me' && caller.kind === 'user' ? { awaitingUserId: caller.userId } : {}),
          ...requesterOf(caller, q.requester),
        },
        q,
      );
    },

    /**
     * The last execution's result: the requester (same user or key), the approvers and whoever broke
     * glass to run it; others 404.
     */
    async result(caller: Caller, name: string, id: string): Promise<RequestResult> {
      const { row } = await ctx.findRequest(caller, name, id);
      let allowed =
        isRequester(caller, row) || (caller.kind === 'user' && row.break_glass?.user_id === caller.userId);
      if (!allowed && caller.kind === 'user') {
        const approvals = await repo.approvalsOf(db, caller.accountId, [row.id]);
        allowed = approvals.some((a) => a.user_id === caller.userId);
      }
      if (!allowed) throw notFound('Result');
      const result = await deps.results.get(db, row.id);
      if (!result) throw notFound('Result');
      return result;
    },

    async cancel(caller: Caller, name: string, id: string, requestId: string): Promise<RequestView> {
      const row = await withTx(db, async (tx) => {
        const { row: locked } = await ctx.findRequest(caller, name, id, tx, { forUpdate: true });
        const admin =
          caller.kind === 'user'
            ? caller.role === 'owner' || caller.role === 'admin'
            : caller.level === 'admin';
        // The person who created the requesting API key may cancel what it asked for too.
        if (!isRequester(caller, locked) && !isRequesterPerson(caller, locked) && !admin)
          throw forbidden('Only the requester (or an owner or admin) can cancel a request');
        if (locked.status !== 'pending' && locked.status !== 'approved')
          throw invalidState(`A ${locked.status} request cannot be cancelled`, locked.status);
        await repo.patchRequest(tx, id, { status: 'cancelled' });
        // An access request's live logins end with it.
        if (locked.kind === 'access') await deps.access?.revokeForRequest(tx, id);
        await deps.onChange?.(tx, locked, 'decided');
        await ctx.audit(tx, caller, requestId, 'request.cancelled', locked, { was: locked.status });
        return ctx.reload(tx, locked);
      });
      return ctx.view(db, row);
    },
  };
}

export type RequestsService = ReturnType<typeof createRequestsService>;

/** The list filter of `requester`: `me` (this user or key), `user:<id>` or `key:<id>`. */
function requesterOf(
  caller: Caller,
  who: string | undefined,
): { requesterUserId?: string; requesterKeyId?: string } {
  if (who === 'me')
    return caller.kind === 'user' ? { requesterUserId: caller.userId } : { requesterKeyId: caller.keyId };
  if (who?.startsWith('user:')) return { requesterUserId: who.slice(5) };
  if (who?.startsWith('key:')) return { requesterKeyId: who.slice(4) };
  return {};
}
