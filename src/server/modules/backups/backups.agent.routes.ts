import type { Readable } from 'node:stream';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import {
  BACKUP_JOB_KINDS,
  BACKUP_KEY_KINDS,
  backupKeyResponseSchema,
  backupProgressSchema,
  STREAM_TOKEN_HEADER,
} from '../../../shared/contracts/backups.ts';
import { jobSecretRequestSchema } from '../../../shared/contracts/jobs.ts';
import { AppError, notFound } from '../../../shared/errors.ts';
import type { Db } from '../../db/pool.ts';
import { requireAgent } from '../../http/auth.ts';
import { errorResponses } from '../../http/errors.ts';
import { completeJob, findLeasedJob, recordProgress } from '../jobs/jobs.repo.ts';
import type { BackupDownloads } from './backups.download.ts';
import type { BackupJobs } from './backups.jobs.ts';

const jobParams = z.object({ id: z.coerce.number().int().positive().max(Number.MAX_SAFE_INTEGER) });
const security = [{ agentToken: [] }];

/**
 * The agent's side of backups: the data key of a leased backup job (src/shared/contracts/backups.ts),
 * the progress of a running backup/restore/drill, and the archive a `backup.download` job sends to
 * its waiting download (ADR 0023).
 */
export function backupAgentRoutes(deps: {
  db: Db;
  jobs: Pick<BackupJobs, 'backupKey'>;
  downloads: Pick<BackupDownloads, 'endJob' | 'relay'>;
}): FastifyPluginAsyncZod {
  return async (app) => {
    // The archive arrives as a stream: handed on as it comes, never buffered (this plugin only).
    app.addContentTypeParser('application/octet-stream', (_req, payload, done) => done(null, payload));

    app.post(
      '/v1/agent/jobs/:id/backup-key',
      {
        config: { agentToken: true },
        schema: {
          tags: ['agent'],
          security,
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

    app.post(
      '/v1/agent/jobs/:id/progress',
      {
        config: { agentToken: true },
        schema: {
          tags: ['agent'],
          security,
          summary: 'How far a leased backup.create / restore / drill job is (phase and bytes)',
          params: jobParams,
          body: backupProgressSchema,
          response: { 200: z.object({ recorded: z.literal(true) }), ...errorResponses },
        },
      },
      async (req) => {
        const agent = requireAgent(req);
        const { attempt, ...progress } = req.body;
        const job = await findLeasedJob(deps.db, req.params.id, agent.nodeId, attempt);
        if (!job || !BACKUP_KEY_KINDS.has(job.kind)) throw notFound('Job lease');
        const ok = await recordProgress(deps.db, job.id, agent.nodeId, attempt, {
          ...progress,
          at: new Date().toISOString(),
        });
        if (!ok) throw notFound('Job lease');
        return { recorded: true as const };
      },
    );

    app.post(
      '/v1/agent/jobs/:id/archive',
      {
        config: { agentToken: true },
        schema: {
          tags: ['agent'],
          security,
          summary: 'The archive of a leased backup.download job, streamed to the download waiting for it',
          description:
            'The body is the archive as stored (encrypted), `application/octet-stream`; the header ' +
            "`x-bulwark-stream-token` carries the job payload's single-use token. Answered when the download " +
            'ended: 200 when the archive went through whole and authentic (the job is then completed), 404 for ' +
            'a wrong, used or expired token or no lease, 409 when the download failed (the client left, or the ' +
            'archive failed its authenticity check; the job is then dead).',
          params: jobParams,
          querystring: z.object({ attempt: z.coerce.number().int().min(1).max(1000) }),
          headers: z.object({
            [STREAM_TOKEN_HEADER]: z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'base64url, 32 bytes'),
          }),
          response: { 200: z.object({ bytes: z.number().int().min(0) }), ...errorResponses },
        },
      },
      async (req) => {
        const agent = requireAgent(req);
        const { id } = req.params;
        const { attempt } = req.query;
        const job = await findLeasedJob(deps.db, id, agent.nodeId, attempt);
        if (!job || job.kind !== BACKUP_JOB_KINDS.download) throw notFound('Job lease');
        const body = req.body as Readable | undefined;
        if (!body || typeof (body as Readable).pipe !== 'function')
          throw new AppError('bad_request', 'The archive must be sent as application/octet-stream');
        const relayed = deps.downloads.relay.take(req.headers[STREAM_TOKEN_HEADER] as string, job.id, body);
        if (!relayed) throw notFound('Job lease');
        try {
          const bytes = await relayed;
          await completeJob(deps.db, job.id, agent.nodeId, attempt, { bytes });
          await deps.db.query(`UPDATE jobs SET payload = payload - 'stream_token' WHERE id = $1`, [job.id]);
          return { bytes };
        } catch (err) {
          const reason = `download ended: ${(err as Error).message}`.slice(0, 500);
          await deps.downloads.endJob(job.id, reason);
          // The agent may still be sending: the body is not read any more.
          body.destroy();
          throw new AppError('conflict', reason);
        }
      },
    );
  };
}
