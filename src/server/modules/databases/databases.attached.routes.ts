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
import { errorResponses } from '../../http/errors.ts';
import type { AttachedService } from './databases.attached.ts';

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
  };
}
