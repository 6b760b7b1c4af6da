import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { requireAgent } from '../../http/auth.ts';
import { requireCaller } from '../../http/caller.ts';
import { errorResponses } from '../../http/errors.ts';
import {
  MAX_POINTS,
  MAX_SAMPLES_PER_REPORT,
  SAMPLE_WINDOWS,
  type SamplesService,
  type SampleWindow,
} from './databases.samples.ts';
import { nameParams } from './databases.schemas.ts';

const windows = Object.keys(SAMPLE_WINDOWS) as [SampleWindow, ...SampleWindow[]];

const reportBody = z
  .object({
    samples: z
      .array(
        z
          .object({
            database_id: z.uuid(),
            size_bytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
            connections: z.number().int().min(0).max(262_143),
          })
          .strict(),
      )
      .max(MAX_SAMPLES_PER_REPORT),
  })
  .strict();

const pointsResponse = z.object({
  window: z.enum(windows),
  bucket_seconds: z.number().int().describe("The width of one point's bucket"),
  points: z
    .array(
      z.object({
        at: z.string().max(40).describe('Start of the bucket'),
        size_bytes: z.number().int().min(0).describe('The largest size sampled in the bucket'),
        connections: z.number().int().min(0).describe('The most connections sampled in the bucket'),
      }),
    )
    .max(MAX_POINTS),
});

/** Size and connection samples: the agent's report, and a database's chart data. */
export function sampleRoutes(deps: { samples: SamplesService }): FastifyPluginAsyncZod {
  return async (app) => {
    app.post(
      '/v1/agent/samples',
      {
        config: { agentToken: true },
        schema: {
          tags: ['agent'],
          security: [{ agentToken: [] }],
          summary: "Report the size and tenant connections of this node's databases",
          description:
            `At most ${MAX_SAMPLES_PER_REPORT} samples per report; samples of databases that are not ` +
            "on the agent's node (or are deleted) are ignored. Stamped with the server's clock.",
          body: reportBody,
          response: { 200: z.object({ accepted: z.number().int().min(0) }), ...errorResponses },
        },
      },
      async (req) => {
        const agent = requireAgent(req);
        const accepted = await deps.samples.record(
          agent.nodeId,
          req.body.samples.map((s) => ({
            databaseId: s.database_id,
            sizeBytes: s.size_bytes,
            connections: s.connections,
          })),
        );
        return { accepted };
      },
    );

    app.get(
      '/v1/databases/:name/samples',
      {
        config: { action: 'databases.read' },
        schema: {
          tags: ['databases'],
          summary: 'Size and connections over time (for charts)',
          description:
            `Sampled by the node's agent (every 60 s by default) and kept for a bounded window; at most ` +
            `${MAX_POINTS} points, each the largest values of its bucket. Empty until the first sample.`,
          params: nameParams,
          querystring: z.object({ window: z.enum(windows).default('24h') }),
          response: { 200: pointsResponse, ...errorResponses },
        },
      },
      async (req) => deps.samples.points(requireCaller(req), req.params.name, req.query.window),
    );
  };
}
