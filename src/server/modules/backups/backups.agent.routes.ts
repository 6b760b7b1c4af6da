import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { backupKeyResponseSchema } from '../../../shared/contracts/backups.ts';
import { jobSecretRequestSchema } from '../../../shared/contracts/jobs.ts';
import { requireAgent } from '../../http/auth.ts';
import { errorResponses } from '../../http/errors.ts';
import type { BackupJobs } from './backups.jobs.ts';

const jobParams = z.object({ id: z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER) });

/** The agent's side of backups: the data key of a leased backup job (src/shared/contracts/backups.ts). */
export function backupAgentRoutes(deps: { jobs: Pick<BackupJobs, 'backupKey'> }): FastifyPluginAsyncZod {
  return async (app) => {
    app.post(
      '/v1/agent/jobs/:id/backup-key',
      {
        config: { agentToken: true },
        schema: {
          tags: ['agent'],
          security: [{ agentToken: [] }],
          summary: 'The data key of the backup a leased backup.create / restore / drill job names',
          params: jobParams,
          body: jobSecretRequestSchema,
          response: { 200: backupKeyResponseSchema, ...errorResponses },
        },
      },
      async (req, reply) => {
        const agent = requireAgent(req);
        reply.header('cache-control', 'no-store');
        return { data_key: await deps.jobs.backupKey(agent.nodeId, req.params.id, req.body.attempt) };
      },
    );
  };
}
