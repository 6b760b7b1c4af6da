/**
 * Executing a request (issue 14): everything is checked again at execution time — approved and not
 * expired, executions left, the approvals still counting with every approver's current role and
 * status — then the request moves to `executing` under its row lock (two concurrent executes run
 * it once), a signed token goes to the node (requests.dispatch.ts) and the outcome settles it.
 *
 * Break-glass: a signed-in owner/admin (the roles of the rule set's `break_glass`), inside their
 * step-up window, with a reason, runs a pending request without approvals. Never an API key.
 * Flagged on the request, audited `request.break_glass`, and an `event_outbox` row is written
 * with a NOTIFY on `bulwark_events` in the same transaction (notifications deliver it).
 */
import { AppError } from '../../../shared/errors.ts';
import { type MemberRole, type PolicyClass, rulesFor } from '../../../shared/policy/governance.ts';
import { redactSql } from '../../../shared/sql/explorer-validator.ts';
import { type Queryable, withTx } from '../../db/pool.ts';
import type { Caller } from '../../http/caller.ts';
import { decideFor, isDml, policyClassOf } from './requests.classify.ts';
import { type AccessGrants, invalidState, isRequester, type RequestsContext } from './requests.context.ts';
import * as deliveries from './requests.deliveries.repo.ts';
import { NO_ANSWER_SQLSTATE, REFUSED_SQLSTATE } from './requests.outcome.ts';
import * as repo from './requests.repo.ts';
import type { RequestView } from './requests.schemas.ts';
import { approvalCounts } from './requests.view.ts';

type AccessCredentials = Awaited<ReturnType<AccessGrants['grantAccess']>>;

const policyDenied = (message: string, details?: Record<string, unknown>) =>
  new AppError('policy_denied', message, details);

export function createExecution(ctx: RequestsContext) {
  const { db, deps } = ctx;

  /**
   * Who may run an approved request: its requester, an owner/admin, or an admin key. An access
   * request only its requester (same user or same key): its execution hands out the credentials.
   */
  const mayExecute = (caller: Caller, row: repo.RequestRow) =>
    isRequester(caller, row) ||
    (row.kind !== 'access' &&
      (caller.kind === 'user'
        ? caller.role === 'owner' || caller.role === 'admin'
        : caller.level === 'admin'));

  /**
   * The policy asked again for the requester as they are NOW (role and status; a key still valid):
   * a requester demoted, suspended or removed since, or a key revoked or expired, no longer runs
   * what they could not ask for today (403 policy_denied).
   */
  const assertRequesterStillAllowed = async (tx: Queryable, row: repo.RequestRow) => {
    const now = await repo.requesterNow(tx, row);
    if (!now)
      throw policyDenied(
        'The requester can no longer run this request (suspended, removed, or the key revoked or expired)',
      );
    const role: MemberRole =
      now.kind === 'user'
        ? (now.role as MemberRole)
        : now.level === 'admin'
          ? 'admin'
          : now.level === 'write'
            ? 'member'
            : 'viewer';
    const active = await deps.policyOf(tx, row.account_id);
    const cls = row.class as PolicyClass;
    const d = decideFor(active.policy, { database: row.database, cls, capability: row.capability, role });
    if (!d.allowed)
      throw policyDenied(`The requester may no longer ask for this: ${d.why}`, { rule: d.rule, why: d.why });
    // A read as the migrator decided under the read rule (before such reads were decided as writes)
    // does not run on approvals the write rule would not accept.
    if (
      policyClassOf(cls, row.capability) !== cls &&
      (row.policy.approvals_required < d.approvals || row.policy.admin_approvals_required < d.admin_approvals)
    )
      throw policyDenied(
        'A read run as the migrator needs the approvals of a write; this request was decided as a read: create it again',
        { rule: d.rule, why: d.why },
      );
  };

  /** An access request's execution: the grant (a time-boxed login), its credentials shown once. */
  const grant = async (
    caller: Caller,
    row: repo.RequestRow,
    requestId: string,
  ): Promise<RequestView & { credentials?: AccessCredentials }> => {
    const at = () => new Date().toISOString();
    try {
      const credentials = await deps.access!.grantAccess({
        accountId: row.account_id,
        requestId: row.id,
        databaseId: row.database_id,
        capability: row.capability,
        durationS: row.access_duration_s ?? 0,
        actor: { type: caller.kind, id: caller.kind === 'user' ? caller.userId : caller.keyId },
      });
      const after = await withTx(db, async (tx) => {
        const { row: locked } = await ctx.findRequest(caller, row.database, row.id, tx, { forUpdate: true });
        const more = locked.executions < locked.max_executions && locked.break_glass === null;
        await repo.patchRequest(tx, row.id, {
          status: more ? 'approved' : 'executed',
          last_execution: { status: 'executed', affected_rows: null, error: null, mismatch: null, at: at() },
        });
        await ctx.audit(tx, caller, requestId, 'request.executed', locked, {
          kind: 'access',
          login: credentials.login,
          valid_until: credentials.valid_until,
        });
        return ctx.reload(tx, locked);
      });
      return { ...(await ctx.view(db, after)), credentials };
    } catch (err) {
      const refused = err instanceof AppError && err.code === 'execution_refused';
      await withTx(db, async (tx) => {
        const { row: locked } = await ctx.findRequest(caller, row.database, row.id, tx, { forUpdate: true });
        if (locked.status !== 'executing') return;
        const message = (err instanceof AppError ? err.message : 'the grant failed').slice(0, 2000);
        await repo.patchRequest(tx, row.id, {
          status: 'failed',
          last_execution: {
            status: refused ? 'refused' : 'failed',
            affected_rows: null,
            error: { sqlstate: refused ? REFUSED_SQLSTATE : NO_ANSWER_SQLSTATE, message },
            mismatch: null,
            at: at(),
          },
        });
        await ctx.audit(
          tx,
          caller,
          requestId,
          refused ? 'request.refused' : 'request.failed',
          locked,
          { kind: 'access', message },
          refused ? 'denied' : 'failure',
        );
      });
      throw err;
    }
  };

  return {
    async execute(
      caller: Caller,
      name: string,
      id: string,
      body: { break_glass?: { reason: string } | undefined },
      requestId: string,
    ): Promise<RequestView & { credentials?: AccessCredentials }> {
      const breakGlass = body.break_glass;
      const { database, row: seen } = await ctx.findRequest(caller, name, id);
      // An access request's credentials go to whoever executes it: only its requester, break-glass or not.
      if (seen.kind === 'access' && !isRequester(caller, seen))
        throw policyDenied('Only the requester can execute an access request (its credentials are theirs)');
      if (breakGlass) {
        if (caller.kind !== 'user')
          throw policyDenied('Break-glass needs a signed-in person, never an API key');
        const active = await deps.policyOf(db, caller.accountId);
        const { rules } = rulesFor(active.policy, name);
        if (!rules.break_glass.includes(caller.role))
          throw policyDenied(
            `Break-glass is for ${rules.break_glass.join(', ') || 'nobody'} on this database`,
            {
              roles: rules.break_glass,
            },
          );
        await deps.stepUp({ userId: caller.userId, sessionId: caller.sessionId }, 'break glass');
      } else if (!mayExecute(caller, seen)) {
        throw policyDenied(
          seen.kind === 'access'
            ? 'Only the requester can execute an access request (its credentials are theirs)'
            : 'Only the requester, an owner or admin, or an admin key can execute a request',
        );
      }
      ctx.requireReady(database);
      if (seen.kind === 'access' && !deps.access)
        throw invalidState('access grants are not available yet', seen.status);

      const delivery = await withTx(db, async (tx) => {
        const { row } = await ctx.findRequest(caller, name, id, tx, { forUpdate: true });
        const now = Date.now();
        if (breakGlass) {
          if (row.status !== 'pending' && row.status !== 'approved')
            throw invalidState(`A ${row.status} request cannot be executed`, row.status);
        } else if (row.status !== 'approved') {
          throw invalidState(`The request is ${row.status}, not approved`, row.status);
        }
        if (row.status === 'pending' && row.expires_at.getTime() <= now)
          throw invalidState('The request has expired', 'expired');
        if (
          row.status === 'approved' &&
          row.approval_expires_at !== null &&
          row.approval_expires_at.getTime() <= now
        )
          throw invalidState('The approval has expired', 'expired');
        if (row.executions >= row.max_executions)
          throw invalidState(
            `The request ran ${row.executions} of ${row.max_executions} times already`,
            row.status,
          );
        if (!breakGlass) {
          // Approvals are counted now, with each approver's current role and status.
          const counts = approvalCounts(row, await repo.approvalsOf(tx, caller.accountId, [id]));
          if (!counts.enough)
            throw new AppError(
              'invalid_state',
              'The approvals no longer count (an approver was suspended, removed or demoted)',
              {
                status: row.status,
                approvals_counted: counts.counted,
                admin_approvals_counted: counts.adminCounted,
              },
            );
          if (row.kind === 'sql' && isDml(row.class) && row.approved_rows === null)
            throw invalidState(
              'dry run first: a write runs against the row count its dry run recorded',
              row.status,
            );
          // The requester as they are now may still ask for this (break-glass: the breaker answers for it).
          await assertRequesterStillAllowed(tx, row);
        }
        const flag = breakGlass
          ? {
              user_id: (caller as { userId: string }).userId,
              name: await repo.userName(tx, (caller as { userId: string }).userId),
              reason: breakGlass.reason,
              at: new Date(now).toISOString(),
            }
          : null;
        await repo.patchRequest(tx, id, {
          status: 'executing',
          executions: row.executions + 1,
          ...(flag ? { break_glass: flag } : {}),
        });
        if (flag) {
          await ctx.audit(tx, caller, requestId, 'request.break_glass', row, {
            sql: row.sql ?? undefined,
            reason: flag.reason,
            was: row.status,
          });
          await deliveries.insertOutboxEvent(tx, {
            accountId: row.account_id,
            kind: 'request.break_glass',
            payload: {
              request_id: row.id,
              database: row.database,
              user_id: flag.user_id,
              name: flag.name,
              reason: flag.reason,
              sql: row.sql === null ? null : redactSql(row.sql),
              at: flag.at,
            },
          });
        }
        const executing = await ctx.reload(tx, row);
        if (row.kind === 'access') return { access: executing };
        return ctx.startDelivery(tx, caller, executing, 'execute', row.status);
      });

      if ('access' in delivery) return grant(caller, delivery.access, requestId);
      await deps.dispatch.deliver(delivery);
      const after = await ctx.reload(db, seen);
      const outcome = await deliveries.executionOutcome(db, delivery.executionId);
      if (outcome?.status === 'refused') {
        const refusal = (outcome.outcome as { refusal?: { reason?: string; message?: string } } | null)
          ?.refusal;
        throw new AppError(
          'execution_refused',
          `The node refused to run the request: ${refusal?.message ?? 'refused'}`,
          {
            reason: refusal?.reason ?? 'unknown',
            request: await ctx.view(db, after),
          },
        );
      }
      return ctx.view(db, after);
    },
  };
}
