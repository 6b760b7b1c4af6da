import type { FastifyReply } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { AppError } from '../../../shared/errors.ts';
import { requireCaller } from '../../http/caller.ts';
import { errorResponsesWith } from '../../http/errors.ts';
import { idempotencyHeaders } from '../../http/idempotency.schemas.ts';
import type { WithIdempotency } from '../../http/idempotency.ts';
import { pageSchema } from '../../http/pagination.ts';
import { nameParams } from '../databases/databases.schemas.ts';
import {
  approveBody,
  createRequestBody,
  editRequestBody,
  executeBody,
  executeResponseSchema,
  inboxQuery,
  listQuery,
  preflightBody,
  preflightResponseSchema,
  rejectBody,
  requestParams,
  requestSchema,
  resultSchema,
} from './requests.schemas.ts';
import type { RequestsService } from './requests.service.ts';

const tags = ['requests'];

/** A 503 `retry` that says how long to wait (details.retry_after_s) gets the Retry-After header. */
async function withRetryAfter<T>(reply: FastifyReply, run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (err) {
    const after = err instanceof AppError && err.code === 'retry' ? err.details?.retry_after_s : undefined;
    if (typeof after === 'number') reply.header('retry-after', String(after));
    throw err;
  }
}
const errors = errorResponsesWith('invalid_state', 'policy_denied');

/** Governed SQL requests (issue 14): create, review, approve, execute, read the result. */
export function requestsRoutes(deps: {
  requests: RequestsService;
  /** A retried create (same Idempotency-Key) answers the first request instead of a second one. */
  withIdempotency: WithIdempotency;
}): FastifyPluginAsyncZod {
  const svc = deps.requests;
  return async (app) => {
    app.post(
      '/v1/databases/:name/requests',
      {
        config: { action: 'requests.create' },
        schema: {
          tags,
          summary: 'Ask to run SQL (or for time-boxed access) on a database',
          description:
            'Exactly one of `sql` or `access`. The SQL is classified with the PostgreSQL parser (refused or ' +
            'unparseable SQL, or a review finding of severity block: 400) and the account policy decides who may ' +
            'ask and how many approvals it needs (403 policy_denied). A write is dry-run at once: its affected-row ' +
            'count is what approvals bind. A request that needs no approval is approved at once. ' +
            '`Idempotency-Key` honoured: a retry answers the first request.',
          params: nameParams,
          headers: idempotencyHeaders,
          body: createRequestBody,
          response: { 201: requestSchema, ...errors },
        },
      },
      async (req, reply) => {
        const caller = requireCaller(req);
        return deps.withIdempotency(
          req,
          reply,
          () => svc.create(caller, req.params.name, req.body, String(req.id)),
          { status: 201 },
        );
      },
    );

    app.post(
      '/v1/databases/:name/requests/preflight',
      {
        config: { action: 'requests.create' },
        schema: {
          tags,
          summary: 'Classification, review findings and the policy decision for SQL, without a request',
          params: nameParams,
          body: preflightBody,
          response: { 200: preflightResponseSchema, ...errors },
        },
      },
      async (req, reply) =>
        withRetryAfter(reply, () => svc.preflight(requireCaller(req), req.params.name, req.body)),
    );

    app.get(
      '/v1/databases/:name/requests',
      {
        config: { action: 'requests.read' },
        schema: {
          tags,
          summary: "A database's requests, newest first",
          params: nameParams,
          querystring: listQuery,
          response: { 200: pageSchema(requestSchema), ...errors },
        },
      },
      async (req) => svc.listForDatabase(requireCaller(req), req.params.name, req.query),
    );

    app.get(
      '/v1/requests',
      {
        config: { action: 'requests.read' },
        schema: {
          tags,
          summary: "The account's requests, newest first (awaiting=me: the approvals inbox)",
          querystring: inboxQuery,
          response: { 200: pageSchema(requestSchema), ...errors },
        },
      },
      async (req) => svc.listForAccount(requireCaller(req), req.query),
    );

    app.get(
      '/v1/databases/:name/requests/:id',
      {
        config: { action: 'requests.read' },
        schema: {
          tags,
          summary: 'One request',
          params: requestParams,
          response: { 200: requestSchema, ...errors },
        },
      },
      async (req) => svc.get(requireCaller(req), req.params.name, req.params.id),
    );

    app.put(
      '/v1/databases/:name/requests/:id',
      {
        config: { action: 'requests.create' },
        schema: {
          tags,
          summary:
            'The requester edits the SQL: approvals are cleared, it is classified and dry-run again, pending',
          params: requestParams,
          body: editRequestBody,
          response: { 200: requestSchema, ...errors },
        },
      },
      async (req) => svc.edit(requireCaller(req), req.params.name, req.params.id, req.body, String(req.id)),
    );

    app.post(
      '/v1/databases/:name/requests/:id/approve',
      {
        config: { action: 'requests.approve' },
        schema: {
          tags,
          summary: 'Approve (signed-in people only; never your own request; one person counts once)',
          params: requestParams,
          body: approveBody.nullish(),
          response: { 200: requestSchema, ...errors },
        },
      },
      async (req) =>
        svc.approve(requireCaller(req), req.params.name, req.params.id, req.body?.comment, String(req.id)),
    );

    app.post(
      '/v1/databases/:name/requests/:id/reject',
      {
        config: { action: 'requests.approve' },
        schema: {
          tags,
          summary: 'Reject, with a comment (ends the request)',
          params: requestParams,
          body: rejectBody,
          response: { 200: requestSchema, ...errors },
        },
      },
      async (req) =>
        svc.reject(requireCaller(req), req.params.name, req.params.id, req.body.comment, String(req.id)),
    );

    app.post(
      '/v1/databases/:name/requests/:id/cancel',
      {
        config: { action: 'requests.cancel' },
        schema: {
          tags,
          summary: 'Cancel (the requester, or an owner or admin)',
          params: requestParams,
          response: { 200: requestSchema, ...errors },
        },
      },
      async (req) => svc.cancel(requireCaller(req), req.params.name, req.params.id, String(req.id)),
    );

    app.post(
      '/v1/databases/:name/requests/:id/dry-run',
      {
        config: { action: 'requests.create' },
        schema: {
          tags,
          summary: 'Run the dry run again (pending requests)',
          params: requestParams,
          response: { 200: requestSchema, ...errors },
        },
      },
      async (req, reply) =>
        withRetryAfter(reply, () => svc.dryRun(requireCaller(req), req.params.name, req.params.id)),
    );

    app.post(
      '/v1/databases/:name/requests/:id/execute',
      {
        config: { action: 'requests.execute' },
        schema: {
          tags,
          summary: 'Execute an approved request (or break glass) and wait for its outcome',
          description:
            'Checked again now: approved and not expired, executions left, approvals still counting with each ' +
            "approver's current role and status (409 invalid_state otherwise). The node verifies a signed token " +
            'before it touches the database; a refusal is 502 execution_refused. `break_glass` runs a pending ' +
            'request without approvals: signed-in owners/admins inside their re-authentication window only, ' +
            'with a reason; flagged, audited and notified.',
          params: requestParams,
          body: executeBody.nullish(),
          response: {
            200: executeResponseSchema,
            ...errorResponsesWith('invalid_state', 'policy_denied', 'reauth_required', 'execution_refused'),
          },
        },
      },
      async (req) =>
        svc.execute(requireCaller(req), req.params.name, req.params.id, req.body ?? {}, String(req.id)),
    );

    app.get(
      '/v1/databases/:name/requests/:id/result',
      {
        config: { action: 'requests.read' },
        schema: {
          tags,
          summary: "The last execution's rows (the requester and the approvers only; kept 24 h)",
          params: requestParams,
          response: { 200: resultSchema, ...errors },
        },
      },
      async (req, reply) => {
        reply.header('cache-control', 'no-store');
        return svc.result(requireCaller(req), req.params.name, req.params.id);
      },
    );
  };
}
