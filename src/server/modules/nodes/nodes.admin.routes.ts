import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { requireUser } from '../../http/caller.ts';
import { errorResponses } from '../../http/errors.ts';
import { driftReportSchema } from '../drift/drift.routes.ts';
import { MAX_NODES_LISTED, type NodesAdmin, presentNode } from './nodes.admin.ts';
import type { NodesFleet } from './nodes.fleet.ts';

const tags = ['nodes'];

const isoTime = z.string().max(40);

export const nodeSchema = z.object({
  id: z.uuid(),
  name: z.string().max(63),
  status: z.enum(['active', 'disabled']),
  health: z
    .enum(['healthy', 'unhealthy', 'disabled'])
    .describe('unhealthy: no heartbeat within the server threshold (alerted as node.unhealthy)'),
  cordoned: z.boolean().describe('No new database is placed on a cordoned node'),
  cordoned_at: isoTime.nullable(),
  unhealthy_since: isoTime.nullable(),
  decommissioned_at: isoTime.nullable(),
  last_heartbeat_at: isoTime.nullable(),
  heartbeat_age_seconds: z
    .number()
    .int()
    .nullable()
    .describe('Seconds since the last heartbeat, by the server clock (null: none yet)'),
  database_count: z
    .number()
    .int()
    .min(0)
    .describe("Accounts' databases on the node (deleted ones left out; reserved ones are not counted)"),
  reserved_databases: z
    .number()
    .int()
    .min(0)
    .describe('Reserved databases ready on the node for creates to take (ADR 0037; no account owns them)'),
  agent_version: z.string().max(64).nullable(),
  pg_version: z.string().max(256).nullable(),
  pooler: z
    .object({ host: z.string().max(255), port: z.number().int().min(1).max(65535) })
    .nullable()
    .describe(
      "Where tenants reach the node's PgBouncer, as its agent reports it (null: the server's own setting)",
    ),
  capacity: z.object({
    max_connections: z.number().int().nullable().describe('As the agent reported it (null: not yet)'),
    budget: z.number().int().min(0).describe('Tenant connections the node can give'),
    committed: z.number().int().min(0).describe("Committed by its databases' connection limits"),
    free: z.number().int().min(0),
  }),
  drift: z
    .object({ checked_at: isoTime, findings: z.number().int().min(0) })
    .nullable()
    .describe('The latest drift check that answered (null: none yet)'),
});

/** A node by id, or by name (platform admins know their nodes by name). */
const nodeParams = z.object({
  id: z
    .string()
    .max(63)
    // No regex flags: the OpenAPI pattern carries none, and must say exactly what is accepted.
    .regex(
      /^(?:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}|[a-z][a-z0-9_-]{0,62})$/,
    )
    .describe("The node's id or name"),
});

/**
 * Nodes for signed-in platform admins only (policy actions nodes.read, nodes.drift, nodes.enroll,
 * nodes.cordon, nodes.decommission): list, detail, enrollment tokens, cordons, decommission, drift.
 */
export function nodesAdminRoutes(deps: { nodesAdmin: NodesAdmin; fleet: NodesFleet }): FastifyPluginAsyncZod {
  const present = (n: Parameters<typeof presentNode>[0]) => presentNode(n, deps.fleet.capacity);
  return async (app) => {
    app.get(
      '/v1/nodes',
      {
        config: { action: 'nodes.read' },
        schema: {
          tags,
          summary: 'Every node with its health, capacity, cordon and database count (platform admins)',
          response: {
            200: z.object({ items: z.array(nodeSchema).max(MAX_NODES_LISTED) }),
            ...errorResponses,
          },
        },
      },
      async () => ({ items: (await deps.nodesAdmin.list()).map(present) }),
    );

    app.get(
      '/v1/nodes/:id',
      {
        config: { action: 'nodes.read' },
        schema: {
          tags,
          summary: 'One node (platform admins)',
          params: nodeParams,
          response: { 200: nodeSchema, ...errorResponses },
        },
      },
      async (req) => present(await deps.fleet.find(req.params.id)),
    );

    app.post(
      '/v1/nodes/enrollments',
      {
        config: { action: 'nodes.enroll' },
        schema: {
          tags,
          summary: 'A one-time enrollment token for a new node (platform admins; audited)',
          description:
            'Shown once; only its SHA-256 is stored. Single use, valid for the server setting ' +
            '`enrollmentTtlMinutes` (default 60); expired ones are swept and audited. Give it to ' +
            '`bulwark node up --token` on the new machine. Enrolling an existing name replaces that ' +
            "node's credentials once the token is used.",
          body: z
            .object({
              name: z
                .string()
                .min(1)
                .max(63)
                .regex(/^[a-z][a-z0-9_-]{0,62}$/, 'a-z, 0-9, _ and -, starting with a letter')
                .describe("The node's name"),
            })
            .strict(),
          response: {
            201: z.object({ node_name: z.string().max(63), token: z.string().max(128), expires_at: isoTime }),
            ...errorResponses,
          },
        },
      },
      async (req, reply) => {
        const e = await deps.fleet.createEnrollment(requireUser(req), req.body.name, String(req.id));
        reply.code(201).header('cache-control', 'no-store');
        return { node_name: req.body.name, token: e.token, expires_at: e.expiresAt.toISOString() };
      },
    );

    for (const [verb, action] of [
      ['cordon', 'cordoned: no new database is placed on it'],
      ['uncordon', 'uncordoned: placement may choose it again'],
    ] as const) {
      app.post(
        `/v1/nodes/:id/${verb}`,
        {
          config: { action: 'nodes.cordon' },
          schema: {
            tags,
            summary: `Mark a node ${action} (platform admins; audited)`,
            description: 'Idempotent. Databases already on the node stay and keep working.',
            params: nodeParams,
            response: { 200: nodeSchema, ...errorResponses },
          },
        },
        async (req) => {
          const user = requireUser(req);
          const node =
            verb === 'cordon'
              ? await deps.fleet.cordon(user, req.params.id, String(req.id))
              : await deps.fleet.uncordon(user, req.params.id, String(req.id));
          return present(node);
        },
      );
    }

    app.post(
      '/v1/nodes/:id/decommission',
      {
        config: { action: 'nodes.decommission' },
        schema: {
          tags,
          summary: 'Retire a node that holds no databases, or revoke a lost one (platform admins; audited)',
          description:
            'Refused with 409 `conflict` (`details.databases`: how many) while hosted databases remain, ' +
            'unless `force` is true: a node that is lost or not trusted any more (it does not run its delete ' +
            'or move jobs) is revoked anyway, its hosted databases left on it, shown with `node_status: ' +
            'disabled` (their data is only on that host). Either way the node is disabled and cordoned, its ' +
            'agent token revoked (the agent is refused from now on), its pending enrollments deleted, its ' +
            'waiting jobs ended and its attached databases detached. Refused (409) while a move from or to it is in flight.',
          params: nodeParams,
          body: z
            .object({
              force: z
                .boolean()
                .default(false)
                .describe(
                  'Revoke the node even though hosted databases remain on it (a lost or untrusted node)',
                ),
            })
            .strict()
            .nullish(),
          response: {
            200: nodeSchema.extend({ jobs_ended: z.number().int().min(0) }),
            ...errorResponses,
          },
        },
      },
      async (req) => {
        const r = await deps.fleet.decommission(requireUser(req), req.params.id, String(req.id), {
          force: req.body?.force ?? false,
        });
        return { ...present(r.node), jobs_ended: r.jobsEnded };
      },
    );

    app.post(
      '/v1/nodes/:id/drift-check',
      {
        config: { action: 'nodes.drift' },
        schema: {
          tags,
          summary: 'Check a node for drift from the desired state (platform admins; audited)',
          description:
            'The same findings as the operator route `GET /v1/nodes/:id/drift`: queues a `node.drift` job ' +
            'and waits up to 15 s for the answer (503 otherwise). Read-only.',
          params: z.object({ id: z.uuid() }),
          response: { 200: driftReportSchema, ...errorResponses },
        },
      },
      async (req) => deps.nodesAdmin.driftCheck(requireUser(req), req.params.id, String(req.id)),
    );
  };
}
