import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { requireUser } from '../../http/caller.ts';
import { errorResponses } from '../../http/errors.ts';
import { driftReportSchema } from '../drift/drift.routes.ts';
import { MAX_NODES_LISTED, type NodesAdmin } from './nodes.admin.ts';

const tags = ['nodes'];

const nodeSchema = z.object({
  id: z.uuid(),
  name: z.string().max(63),
  status: z.enum(['active', 'disabled']),
  last_heartbeat_at: z.string().max(40).nullable(),
  heartbeat_age_seconds: z
    .number()
    .int()
    .nullable()
    .describe('Seconds since the last heartbeat, by the server clock (null: none yet)'),
  database_count: z.number().int().min(0).describe('Databases on the node (deleted ones left out)'),
  agent_version: z.string().max(64).nullable(),
});

/** The nodes admin page: signed-in platform admins only (policy actions nodes.read, nodes.drift). */
export function nodesAdminRoutes(deps: { nodesAdmin: NodesAdmin }): FastifyPluginAsyncZod {
  return async (app) => {
    app.get(
      '/v1/nodes',
      {
        config: { action: 'nodes.read' },
        schema: {
          tags,
          summary: 'Every node with its heartbeat age and database count (platform admins)',
          response: {
            200: z.object({ items: z.array(nodeSchema).max(MAX_NODES_LISTED) }),
            ...errorResponses,
          },
        },
      },
      async () => {
        const rows = await deps.nodesAdmin.list();
        return {
          items: rows.map((n) => ({
            id: n.id,
            name: n.name,
            status: n.status,
            last_heartbeat_at: n.last_heartbeat_at?.toISOString() ?? null,
            heartbeat_age_seconds:
              n.heartbeat_age_seconds === null ? null : Math.max(0, n.heartbeat_age_seconds),
            database_count: n.database_count,
            agent_version: n.agent_version === null ? null : n.agent_version.slice(0, 64),
          })),
        };
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
