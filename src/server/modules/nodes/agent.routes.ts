import type { FastifyRequest } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { jobSecretRequestSchema, jobSecretResponseSchema } from '../../../shared/contracts/jobs.ts';
import { notFound } from '../../../shared/errors.ts';
import { requireAgent } from '../../http/auth.ts';
import { errorResponses, errorResponsesWith } from '../../http/errors.ts';
import type { AgentIdentity, NodesService } from './nodes.service.ts';

const jobSchema = z.object({
  id: z.number().int(),
  kind: z.string().max(64),
  payload: z.record(z.string().max(100), z.unknown()),
  attempt: z.number().int(),
  lease_expires_at: z.string().max(40).nullable(),
});

const jobParams = z.object({ id: z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER) });
const jobStatus = z.object({ status: z.enum(['queued', 'running', 'succeeded', 'dead']) });

/** A JSON object an agent reports, bounded in keys and serialised size (it is stored). */
const boundedRecord = (maxBytes: number) =>
  z
    // The JSON parser refuses `__proto__` and `constructor` keys (prototype poisoning): said here too.
    .record(
      z
        .string()
        .max(100)
        .regex(/^(?!(?:__proto__|constructor)$)/),
      z.unknown(),
    )
    .refine((r) => Object.keys(r).length <= 200, 'too many keys')
    .refine((r) => JSON.stringify(r).length <= maxBytes, `larger than ${maxBytes} bytes`)
    .meta({
      maxProperties: 200,
      description:
        `A JSON object of at most 200 keys (each at most 100 characters), ${maxBytes} characters serialised; ` +
        'no key named __proto__ or constructor at any depth',
    });

/** Where tenants reach a node's PgBouncer, as its agent reports it (connection info names it). */
const poolerAddressSchema = z
  .object({
    host: z
      .string()
      .min(1)
      .max(255)
      .regex(/^[A-Za-z0-9.:_-]+$/, 'a host name or an IP address'),
    port: z.number().int().min(1).max(65535),
  })
  .strict()
  .describe("Where tenants reach this node's PgBouncer (host name or address, and port)");

/** The agent token (`bwa_…`), declared in the document as its own security scheme. */
const security = [{ agentToken: [] }];

/** The agent-facing API: enrollment, long-poll for jobs, results, heartbeats. */
export function agentRoutes(deps: {
  nodes: NodesService;
  pollMaxMs: number;
  /** The clear secret a leased job needs (e.g. a database password for a login probe). */
  jobSecret?: (nodeId: string, jobId: number, attempt: number) => Promise<string>;
}): FastifyPluginAsyncZod {
  return async (app) => {
    // Agent tokens are checked by the auth hook before the body is read (src/server/http/auth.ts).
    const authed = async (req: FastifyRequest): Promise<AgentIdentity> => requireAgent(req);

    app.post(
      '/v1/agent/enroll',
      {
        config: { agentToken: true },
        schema: {
          tags: ['agent'],
          // Public: the enrollment token in the body is the credential.
          summary: 'Exchange a one-time enrollment token for an agent token',
          body: z.object({
            enrollment_token: z.string().min(1).max(200),
            agent_version: z.string().min(1).max(64),
            pooler: poolerAddressSchema.optional(),
          }),
          response: {
            200: z.object({
              node_id: z.uuid(),
              node_name: z.string().max(63),
              agent_token: z.string().max(128),
            }),
            ...errorResponses,
          },
        },
      },
      async (req) => {
        const { node, agentToken } = await deps.nodes.enroll(
          req.body.enrollment_token,
          req.body.agent_version,
          { sourceIp: req.ip, requestId: String(req.id) },
          req.body.pooler ?? null,
        );
        return { node_id: node.id, node_name: node.name, agent_token: agentToken };
      },
    );

    app.post(
      '/v1/agent/poll',
      {
        config: { agentToken: true },
        schema: {
          tags: ['agent'],
          security,
          summary: 'Long-poll for the next job of this node',
          body: z.object({ wait_ms: z.number().int().min(0).max(120_000).default(25_000) }),
          response: { 200: z.object({ job: jobSchema.nullable() }), ...errorResponses },
        },
      },
      async (req, reply) => {
        const agent = await authed(req);
        const abort = new AbortController();
        // The connection closing before our answer means the agent is gone (or gave up).
        reply.raw.once('close', () => {
          if (!reply.raw.writableEnded) abort.abort();
        });
        const job = await deps.nodes.poll(agent, Math.min(req.body.wait_ms, deps.pollMaxMs), abort.signal);
        if (!job) return { job: null };
        return {
          job: {
            id: job.id,
            kind: job.kind,
            payload: job.payload,
            attempt: job.attempts,
            lease_expires_at: job.lease_expires_at?.toISOString() ?? null,
          },
        };
      },
    );

    app.post(
      '/v1/agent/jobs/:id/complete',
      {
        config: { agentToken: true },
        schema: {
          tags: ['agent'],
          security,
          summary: "Report a job done (its result is checked against the kind's schema)",
          description:
            "The result must match the job kind's result schema (src/shared/contracts/jobs.ts). A result that does not is refused with 422 `invalid_job_result` and the job is failed for good (`dead`, reason in `last_error`); the result is never stored.",
          params: jobParams,
          body: z.object({
            attempt: z.number().int().min(1).max(1000),
            result: boundedRecord(64 * 1024),
          }),
          response: { 200: jobStatus, ...errorResponsesWith('invalid_job_result') },
        },
      },
      async (req) => {
        const agent = await authed(req);
        const job = await deps.nodes.complete(agent, req.params.id, req.body.attempt, req.body.result);
        return { status: job.status };
      },
    );

    app.post(
      '/v1/agent/jobs/:id/fail',
      {
        config: { agentToken: true },
        schema: {
          tags: ['agent'],
          security,
          summary: 'Report a job failed (retried with backoff unless final)',
          params: jobParams,
          body: z.object({
            attempt: z.number().int().min(1).max(1000),
            error: z.string().min(1).max(4000),
            retryable: z.boolean().default(true),
          }),
          response: { 200: jobStatus, ...errorResponses },
        },
      },
      async (req) => {
        const agent = await authed(req);
        const job = await deps.nodes.fail(
          agent,
          req.params.id,
          req.body.attempt,
          req.body.error,
          req.body.retryable,
        );
        return { status: job.status };
      },
    );

    app.post(
      '/v1/agent/jobs/:id/secret',
      {
        config: { agentToken: true },
        schema: {
          tags: ['agent'],
          security,
          summary: 'The secret of a job this agent holds the lease of (create/rotate login probes)',
          params: jobParams,
          body: jobSecretRequestSchema,
          response: { 200: jobSecretResponseSchema, ...errorResponses },
        },
      },
      async (req, reply) => {
        const agent = await authed(req);
        if (!deps.jobSecret) throw notFound('Job lease');
        reply.header('cache-control', 'no-store');
        return { password: await deps.jobSecret(agent.nodeId, req.params.id, req.body.attempt) };
      },
    );

    app.post(
      '/v1/agent/heartbeat',
      {
        config: { agentToken: true },
        schema: {
          tags: ['agent'],
          security,
          summary: 'Agent liveness and facts about its node',
          body: z.object({
            agent_version: z.string().max(64).optional(),
            pg_version: z.string().max(256).optional(),
            capabilities: boundedRecord(16 * 1024).optional(),
            /** The cluster's connection slots: the node's tenant connection budget is derived from them. */
            connections: z
              .object({
                max_connections: z.number().int().min(1).max(262_143),
                superuser_reserved_connections: z.number().int().min(0).max(262_143),
                reserved_connections: z.number().int().min(0).max(262_143).default(0),
              })
              .refine(
                (c) => c.superuser_reserved_connections + c.reserved_connections < c.max_connections,
                'reserved slots must be fewer than max_connections',
              )
              .optional()
              .describe(
                "The cluster's connection slots; superuser_reserved_connections + reserved_connections must be fewer than max_connections",
              ),
            pooler: poolerAddressSchema.optional(),
          }),
          response: { 200: z.object({ ok: z.literal(true) }), ...errorResponses },
        },
      },
      async (req) => {
        const agent = await authed(req);
        await deps.nodes.heartbeat(agent, {
          ...(req.body.agent_version ? { agentVersion: req.body.agent_version } : {}),
          ...(req.body.pg_version ? { pgVersion: req.body.pg_version } : {}),
          ...(req.body.capabilities ? { capabilities: req.body.capabilities } : {}),
          ...(req.body.pooler ? { pooler: req.body.pooler } : {}),
          ...(req.body.connections
            ? {
                connections: {
                  maxConnections: req.body.connections.max_connections,
                  reservedConnections:
                    req.body.connections.superuser_reserved_connections +
                    req.body.connections.reserved_connections,
                },
              }
            : {}),
        });
        return { ok: true as const };
      },
    );
  };
}
