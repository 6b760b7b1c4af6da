import type { FastifyReply, FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { hashToken } from '../../../shared/api-key.ts';
import {
  CHANNEL_PROTOCOL_VERSION,
  CHANNEL_VERSION_HEADER,
  EXPLORER_CHANNEL_PATH,
  EXPLORER_LIMITS,
  EXPLORER_RESULT_MAX_BYTES,
  explorerResultBodySchema,
  queryOutputSchema,
  schemaOutputSchema,
} from '../../../shared/contracts/explorer-channel.ts';
import { AppError, forbidden } from '../../../shared/errors.ts';
import { requireAgent } from '../../http/auth.ts';
import { requireCaller } from '../../http/caller.ts';
import { errorResponses, errorResponsesWith } from '../../http/errors.ts';
import { auditFromRequest } from '../audit/audit.service.ts';
import { nameParams } from '../databases/databases.schemas.ts';
import type { ExplorerChannels } from './explorer.channel.ts';
import { toCsv } from './explorer.csv.ts';
import type { AuditBase, ExplorerService } from './explorer.service.ts';

const tags = ['explorer'];
const security = [{ apiKey: [] }];
const agentSecurity = [{ agentToken: [] }];
const jobParams = z.object({ id: z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER) });

/** Aborted when the HTTP client goes away before the response is written. */
function clientGone(reply: FastifyReply): AbortSignal {
  const controller = new AbortController();
  reply.raw.once('close', () => {
    if (!reply.raw.writableFinished) controller.abort();
  });
  return controller.signal;
}

function auditBase(req: FastifyRequest): AuditBase {
  const { actorType, actorId, accountId, sourceIp, requestId } = auditFromRequest(req, {
    action: 'explorer.query',
  });
  return { actorType, actorId, accountId, sourceIp, requestId };
}

const wantsCsv = (req: FastifyRequest, format: string | undefined) =>
  format === 'csv' || (format === undefined && /\btext\/csv\b/i.test(req.headers.accept ?? ''));

/** The SQL explorer: read-only queries and the public schema of a database, plus the agent's hand-over. */
export function explorerRoutes(deps: {
  explorer: ExplorerService;
  channels: ExplorerChannels;
}): FastifyPluginAsyncZod {
  const svc = deps.explorer;
  return async (app) => {
    app.post(
      '/v1/databases/:name/explorer/query',
      {
        config: { action: 'explorer.query' },
        schema: {
          tags,
          security,
          summary: 'Run one read-only SELECT as the database explorer role (JSON, or CSV with format=csv)',
          description:
            'Admin keys and keys granted the explorer only; ready databases only. The SQL is checked with the ' +
            'PostgreSQL parser (refused: 400 query_refused with reason_code and position), then run in a READ ' +
            'ONLY transaction that is always rolled back, under a statement timeout and row/byte caps ' +
            '(`truncated`). A PostgreSQL error is a 400 query_failed with its SQLSTATE. `Accept: text/csv` or ' +
            '`?format=csv` downloads CSV. Every query is audited with its SQL redacted; results are not stored.',
          params: nameParams,
          querystring: z.object({ format: z.enum(['json', 'csv']).optional() }),
          body: z
            .object({
              sql: z.string().min(1).max(EXPLORER_LIMITS.maxSqlLength),
              limit: z.number().int().min(1).max(EXPLORER_LIMITS.maxRows).optional(),
              timeout_ms: z.number().int().min(100).max(EXPLORER_LIMITS.maxStatementTimeoutMs).optional(),
            })
            .strict(),
          response: {
            200: {
              description: 'The rows (JSON), or the same as CSV with `?format=csv` or `Accept: text/csv`',
              content: {
                'application/json': { schema: queryOutputSchema },
                'text/csv': {
                  schema: z
                    .string()
                    .max(EXPLORER_RESULT_MAX_BYTES * 2)
                    .describe('RFC 4180 CSV: a header line of column names, then one line per row'),
                },
              },
            },
            ...errorResponsesWith('query_refused', 'query_failed', 'cancelled', 'timeout'),
          },
        },
      },
      async (req, reply) => {
        const out = await svc.query(requireCaller(req), req.params.name, req.body, {
          signal: clientGone(reply),
          audit: auditBase(req),
        });
        reply.header('cache-control', 'no-store');
        if (!wantsCsv(req, req.query.format)) return out;
        return reply
          .type('text/csv; charset=utf-8')
          .header('content-disposition', `attachment; filename="${req.params.name}-query.csv"`)
          .serializer((payload) => payload as string)
          .send(toCsv(out) as never); // plain text: the serializer above passes it through
      },
    );

    app.get(
      '/v1/databases/:name/explorer/schema',
      {
        config: { action: 'explorer.query' },
        schema: {
          tags,
          security,
          summary: 'Tables, views and columns (with types) of schema public',
          params: nameParams,
          response: { 200: schemaOutputSchema, ...errorResponsesWith('timeout') },
        },
      },
      async (req, reply) => {
        reply.header('cache-control', 'no-store');
        return svc.schema(requireCaller(req), req.params.name, {
          signal: clientGone(reply),
          audit: auditBase(req),
        });
      },
    );

    // Agent tokens are checked by the auth hook before the (large) body is read.
    const agentOf = async (req: FastifyRequest) => requireAgent(req);

    // The agent's explorer channel (ADR 0009). The auth hook has checked the agent token before the
    // upgrade; browsers cannot send that header, and an Origin (sent only by browsers) is refused.
    app.get(
      EXPLORER_CHANNEL_PATH,
      {
        config: { agentToken: true },
        websocket: true,
        schema: {
          tags: ['agent'],
          summary: 'Explorer channel (WebSocket, agent token): requests down, outcomes up; nothing stored',
        },
        preHandler: async (req) => {
          if (req.headers.origin !== undefined) throw forbidden('The explorer channel is for agents only');
          // Another contract version: refuse, so that this agent's explorer requests use the queue.
          if (req.headers[CHANNEL_VERSION_HEADER] !== CHANNEL_PROTOCOL_VERSION) {
            throw new AppError(
              'upgrade_required',
              `The explorer channel speaks version ${CHANNEL_PROTOCOL_VERSION} (${CHANNEL_VERSION_HEADER})`,
            );
          }
        },
      },
      (socket, req) => {
        const agent = requireAgent(req);
        const token = (req.headers.authorization ?? '').slice('Bearer '.length).trim();
        deps.channels.attach(agent.nodeId, hashToken(token), socket);
      },
    );

    app.post(
      '/v1/agent/jobs/:id/explorer-result',
      {
        config: { agentToken: true },
        bodyLimit: EXPLORER_RESULT_MAX_BYTES,
        schema: {
          tags: ['agent'],
          security: agentSecurity,
          summary: 'Hand explorer rows to the waiting request (lease holder only; never stored in the job)',
          params: jobParams,
          body: explorerResultBodySchema,
          response: { 200: z.object({ accepted: z.boolean() }), ...errorResponses },
        },
      },
      async (req) => {
        const agent = await agentOf(req);
        return svc.receiveResult(agent, req.params.id, req.body.attempt, req.body.outcome);
      },
    );

    app.post(
      '/v1/agent/jobs/:id/status',
      {
        config: { agentToken: true },
        schema: {
          tags: ['agent'],
          security: agentSecurity,
          summary: 'Whether this agent still holds the job (false: the server ended it; cancel the work)',
          params: jobParams,
          body: z.object({ attempt: z.number().int().min(1).max(1000) }),
          response: { 200: z.object({ active: z.boolean() }), ...errorResponses },
        },
      },
      async (req) => svc.leaseActive(await agentOf(req), req.params.id, req.body.attempt),
    );
  };
}
