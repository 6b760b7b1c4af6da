import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { requireCaller, requireUser } from '../../http/caller.ts';
import { errorResponses, errorResponsesWith } from '../../http/errors.ts';
import { nameParams } from '../databases/databases.schemas.ts';
import type { Moves } from './nodes.move.ts';

const moveSchema = z.object({
  id: z.uuid(),
  database: z.string().max(63),
  from_node: z.string().max(63),
  to_node: z.string().max(63),
  status: z
    .enum(['copying', 'restoring', 'freezing', 'switched', 'failed'])
    .describe(
      'copying: the source is dumped (while it serves, or frozen for a second copy); restoring: the ' +
        'target restores and proves a login; freezing: writes stopped at the source, which is checked ' +
        'for changes since the copy; switched: the database is on the target; failed: the source serves again',
    ),
  error: z.string().max(1000).nullable(),
  copies: z
    .number()
    .int()
    .min(1)
    .max(2)
    .describe('How many times the data was copied: 2 when it changed during the first (unfrozen) copy'),
  size_bytes: z.number().int().min(0).nullable(),
  freeze_ms: z
    .number()
    .int()
    .min(0)
    .nullable()
    .describe('How long writes were refused: from the freeze at the source to the switch (or failure)'),
  duration_ms: z.number().int().min(0).nullable(),
  frozen_at: z.string().max(40).nullable(),
  created_at: z.string().max(40),
  finished_at: z.string().max(40).nullable(),
});

const drainSchema = z.object({
  id: z.uuid(),
  status: z.enum(['running', 'completed', 'failed']),
  error: z.string().max(1000).nullable(),
  created_at: z.string().max(40),
  finished_at: z.string().max(40).nullable(),
  moves: z.array(moveSchema).max(10_000),
});

const nodeParams = z.object({ id: z.uuid() });

/** Moving a database to another node, and draining a node (ADR 0031). */
export function moveRoutes(deps: { moves: Moves }): FastifyPluginAsyncZod {
  return async (app) => {
    app.post(
      '/v1/databases/:name/move',
      {
        config: { action: 'databases.move' },
        schema: {
          tags: ['databases'],
          security: [{ apiKey: [] }],
          summary: 'Move a database to another node (writes frozen during the copy; same credentials)',
          params: nameParams,
          body: z.object({
            node: z
              .string()
              .max(63)
              .regex(/^[a-z][a-z0-9_-]{0,62}$/)
              .describe('The target node’s name (a-z, 0-9, _ and -, starting with a letter)'),
          }),
          response: { 202: moveSchema, ...errorResponsesWith('capacity_exceeded') },
        },
      },
      async (req, reply) => {
        const move = await deps.moves.move(requireCaller(req), req.params.name, req.body.node);
        return reply.code(202).send(move);
      },
    );

    app.get(
      '/v1/databases/:name/move',
      {
        config: { action: 'databases.read' },
        schema: {
          tags: ['databases'],
          security: [{ apiKey: [] }],
          summary: 'The latest move of a database and where it is',
          params: nameParams,
          response: { 200: moveSchema, ...errorResponses },
        },
      },
      async (req) => deps.moves.status(requireCaller(req), req.params.name),
    );

    app.post(
      '/v1/nodes/:id/drain',
      {
        config: { action: 'nodes.drain' },
        schema: {
          tags: ['nodes'],
          summary: 'Move every ready database off a node, one at a time (platform admins; audited)',
          params: nodeParams,
          response: { 202: drainSchema, ...errorResponsesWith('capacity_exceeded') },
        },
      },
      async (req, reply) => reply.code(202).send(await deps.moves.drain(requireUser(req), req.params.id)),
    );

    app.get(
      '/v1/nodes/:id/drain',
      {
        config: { action: 'nodes.read' },
        schema: {
          tags: ['nodes'],
          summary: 'The latest drain of a node and its moves (platform admins)',
          params: nodeParams,
          response: { 200: drainSchema, ...errorResponses },
        },
      },
      async (req) => deps.moves.drainStatus(req.params.id),
    );
  };
}
