/**
 * Approving and rejecting requests (issue 14): signed-in users only, never the requester (nor the
 * person who created the requesting API key), one
 * person counts once (primary key (request, user)), and concurrent approvals are consistent: each
 * runs in one transaction holding the request's row lock, counts the approvals with every
 * approver's current role and status, and at most one of them moves the request to `approved`.
 */
import { AppError } from '../../../shared/errors.ts';
import { withTx } from '../../db/pool.ts';
import type { Caller, UserCaller } from '../../http/caller.ts';
import { isDml } from './requests.classify.ts';
import { invalidState, isRequesterPerson, type RequestsContext } from './requests.context.ts';
import * as repo from './requests.repo.ts';
import type { RequestView } from './requests.schemas.ts';
import { approvalCounts } from './requests.view.ts';

const policyDenied = (message: string) => new AppError('policy_denied', message);

function requireUser(caller: Caller): UserCaller {
  if (caller.kind !== 'user')
    throw policyDenied('Approvals are given by signed-in people, never by an API key');
  return caller;
}

/** Still open: pending and within its lifetime. */
function assertPendingNow(row: repo.RequestRow): void {
  if (row.status !== 'pending') throw invalidState(`The request is ${row.status}`, row.status);
  if (row.expires_at.getTime() <= Date.now()) throw invalidState('The request has expired', 'expired');
}

export function createApprovals(ctx: RequestsContext) {
  const { db } = ctx;
  return {
    async approve(
      caller: Caller,
      name: string,
      id: string,
      comment: string | undefined,
      requestId: string,
      via?: 'slack',
    ): Promise<RequestView> {
      const row = await withTx(db, async (tx) => {
        const { row: locked } = await ctx.findRequest(caller, name, id, tx, { forUpdate: true });
        // Another account's or an unknown request is a 404 first; then only people approve.
        const user = requireUser(caller);
        // Never self-approval: neither the requester nor the person whose API key made the request.
        if (isRequesterPerson(user, locked))
          throw policyDenied(
            locked.requester_key_id !== null
              ? 'A request made with an API key cannot be approved by the person who created that key'
              : 'A request cannot be approved by its requester',
          );
        assertPendingNow(locked);
        if (locked.kind === 'sql' && isDml(locked.class) && locked.dry_run === null)
          throw invalidState(
            'dry run first: a write is approved for the row count its dry run recorded',
            locked.status,
          );
        const added = await repo.insertApproval(tx, id, user.userId, comment ?? null);
        if (!added) return locked; // one person counts once: a second approval changes nothing
        const counts = approvalCounts(locked, await repo.approvalsOf(tx, caller.accountId, [id]));
        if (counts.enough) {
          await repo.patchRequest(tx, id, {
            status: 'approved',
            approval_expires_at: { inSeconds: locked.approval_lifetime_s },
          });
          await ctx.deps.onChange?.(tx, locked, 'decided');
        } else await repo.patchRequest(tx, id, {});
        await ctx.audit(tx, caller, requestId, 'request.approved', locked, {
          approvals_counted: counts.counted,
          admin_approvals_counted: counts.adminCounted,
          approved: counts.enough,
          approved_rows: locked.approved_rows === null ? null : Number(locked.approved_rows),
          ...(via ? { via } : {}),
        });
        return ctx.reload(tx, locked);
      });
      return ctx.view(db, row);
    },

    async reject(
      caller: Caller,
      name: string,
      id: string,
      comment: string,
      requestId: string,
      via?: 'slack',
    ): Promise<RequestView> {
      const row = await withTx(db, async (tx) => {
        const { row: locked } = await ctx.findRequest(caller, name, id, tx, { forUpdate: true });
        // Another account's or an unknown request is a 404 first; then only people approve.
        const user = requireUser(caller);
        if (isRequesterPerson(user, locked))
          throw policyDenied('A requester does not reject their own request: cancel it instead');
        if (locked.status !== 'pending' && locked.status !== 'approved')
          throw invalidState(`The request is ${locked.status}`, locked.status);
        await repo.patchRequest(tx, id, {
          status: 'rejected',
          rejection: {
            user_id: user.userId,
            name: await repo.userName(tx, user.userId),
            comment,
            created_at: new Date().toISOString(),
          },
        });
        await ctx.deps.onChange?.(tx, locked, 'decided');
        await ctx.audit(tx, caller, requestId, 'request.rejected', locked, {
          was: locked.status,
          ...(via ? { via } : {}),
        });
        return ctx.reload(tx, locked);
      });
      return ctx.view(db, row);
    },
  };
}
