import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import {
  ATTACHED_REPORT_PATH,
  attachedFindingSchema,
  attachedReportAnswerSchema,
  attachedReportEntrySchema,
  MAX_ATTACHED,
} from '../../../shared/contracts/attached.ts';
import { requireAgent } from '../../http/auth.ts';
import { requireCaller } from '../../http/caller.ts';
import { errorResponses } from '../../http/errors.ts';
import type { AttachedService } from './databases.attached.ts';
import { databaseSchema, nameParams, presentDatabase } from './databases.schemas.ts';

/** The contract's report, with no field beyond it accepted (a credential has no place in it). */
const strictReport = z
  .object({
    databases: z
      .array(
        attachedReportEntrySchema
          .extend({ findings: z.array(attachedFindingSchema.strict()).max(200) })
          .strict(),
      )
      .max(MAX_ATTACHED),
  })
  .strict();

/** The agent's report of the databases its own config file attaches (databases.attached.ts). */
export function attachedRoutes(deps: { attached: AttachedService }): FastifyPluginAsyncZod {
  return async (app) => {
    app.post(
      ATTACHED_REPORT_PATH,
      {
        config: { agentToken: true },
        schema: {
          tags: ['agent'],
          security: [{ agentToken: [] }],
          summary: "Report the attached databases of this agent's config file (the whole list)",
          description:
            "Each entry becomes or stays a database of kind `attached` on the agent's node (`ready` when " +
            'its role checks passed, `failed` otherwise); one the node listed before and no longer does is ' +
            'detached. A name taken in the account or on the node, or an unknown account, is refused for ' +
            'that entry. No credential is ever sent.',
          body: strictReport,
          response: { 200: attachedReportAnswerSchema, ...errorResponses },
        },
      },
      async (req) => {
        const agent = requireAgent(req);
        return deps.attached.report(agent.nodeId, req.body);
      },
    );

    app.post(
      '/v1/databases/:name/attachment/accept',
      {
        config: { action: 'databases.attach' },
        schema: {
          tags: ['databases'],
          security: [{ apiKey: [] }],
          summary: 'Accept an attached database its node offered to this account',
          description:
            'Until accepted, an attached database waits (`provisioning`, `attached.accepted_at` null): the ' +
            "explorer and governed SQL do not run on it. Accepted, it is `ready` (or `failed` when its agent's " +
            'checks refused it). 409 for a hosted database. Audited `database.attach_accepted`.',
          params: nameParams,
          response: { 200: databaseSchema, ...errorResponses },
        },
      },
      async (req) => presentDatabase(await deps.attached.accept(requireCaller(req), req.params.name)),
    );

    app.post(
      '/v1/databases/:name/attachment/reject',
      {
        config: { action: 'databases.attach' },
        schema: {
          tags: ['databases'],
          security: [{ apiKey: [] }],
          summary:
            'Reject (or drop) an attached database: gone from the account, never offered again by its node',
          description:
            'The database itself is not touched. Its node may not offer that name to this account again. 409 for ' +
            'a hosted database. Audited `database.attach_rejected`.',
          params: nameParams,
          body: z
            .object({ confirm: z.string().min(1).max(63).describe('The database name, repeated') })
            .strict(),
          response: { 204: z.null(), ...errorResponses },
        },
      },
      async (req, reply) => {
        await deps.attached.reject(requireCaller(req), req.params.name, req.body.confirm);
        return reply.code(204).send(null);
      },
    );
  };
}
