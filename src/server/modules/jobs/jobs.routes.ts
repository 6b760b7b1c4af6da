import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { requireAgent } from '../../http/auth.ts';
import { requireCaller } from '../../http/caller.ts';
import { errorResponses } from '../../http/errors.ts';
import { decodeCursor, pageQuery, pageSchema, toPage } from '../../http/pagination.ts';
import type { AccountJobRow } from './jobs.repo.ts';
import type { JobsService } from './jobs.service.ts';

const jobSchema = z.object({
  id: z.number().int(),
  kind: z.string().max(64),
  database: z.string().max(63).nullable(),
  status: z.enum(['queued', 'running', 'succeeded', 'dead']),
  attempts: z.number().int(),
  max_attempts: z.number().int(),
  last_error: z.string().max(500).nullable(),
  created_at: z.string().max(40),
  claimed_at: z.string().max(40).nullable(),
  finished_at: z.string().max(40).nullable(),
});

function present(row: AccountJobRow): z.infer<typeof jobSchema> {
  return {
    id: row.id,
    kind: row.kind,
    database: row.database,
    status: row.status,
    attempts: row.attempts,
    max_attempts: row.max_attempts,
    last_error: row.last_error ? row.last_error.slice(0, 500) : null,
    created_at: row.created_at.toISOString(),
    claimed_at: row.claimed_at?.toISOString() ?? null,
    finished_at: row.finished_at?.toISOString() ?? null,
  };
}

const security = [{ apiKey: [] }];

/** Read-only view of the caller's jobs: what the platform is doing for this account. */
export function jobRoutes(deps: { jobs: JobsService }): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      '/v1/jobs',
      {
        config: { action: 'jobs.read' },
        schema: {
          tags: ['jobs'],
          security,
          summary: "List the account's jobs (newest first)",
          querystring: pageQuery,
          response: { 200: pageSchema(jobSchema), ...errorResponses },
        },
      },
      async (req) => {
        const caller = requireCaller(req);
        const rows = await deps.jobs.list(caller, {
          limit: req.query.limit,
          after: decodeCursor(req.query.cursor),
        });
        return toPage(
          rows,
          req.query.limit,
          (r) => ({ ts: Number(r.created_us), id: String(r.id) }),
          present,
        );
      },
    );

    app.get(
      '/v1/jobs/:id',
      {
        config: { action: 'jobs.read' },
        schema: {
          tags: ['jobs'],
          security,
          summary: 'Show one job and its status',
          params: z.object({ id: z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER) }),
          response: { 200: jobSchema, ...errorResponses },
        },
      },
      async (req) => present(await deps.jobs.get(requireCaller(req), req.params.id)),
    );

    app.post(
      '/v1/agent/jobs/:id/lease',
      {
        config: { agentToken: true },
        schema: {
          tags: ['agent'],
          security: [{ agentToken: [] }],
          summary: 'Renew the lease of a job this agent runs (long jobs renew it while they work)',
          description:
            "Extends the lease to the server's lease length from now; 404 when the lease is lost (expired, " +
            "reclaimed, finished, or another node's): the agent then stops the job.",
          params: z.object({ id: z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER) }),
          body: z.object({ attempt: z.number().int().min(1).max(1000) }),
          response: {
            200: z.object({ lease_expires_at: z.string().max(40), lease_ms: z.number().int() }),
            ...errorResponses,
          },
        },
      },
      async (req) => {
        const agent = requireAgent(req);
        return deps.jobs.renewLease(agent.nodeId, req.params.id, req.body.attempt);
      },
    );
  };
}
