import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { conflict, forbidden } from '../../../shared/errors.ts';
import { requireCaller } from '../../http/caller.ts';
import { errorResponses } from '../../http/errors.ts';
import { idempotencyHeaders as headers } from '../../http/idempotency.schemas.ts';
import type { WithIdempotency } from '../../http/idempotency.ts';
import { decodeCursor, pageQuery, pageSchema } from '../../http/pagination.ts';
import type { AuditService } from '../audit/audit.service.ts';
import { auditFromCaller } from '../audit/audit.service.ts';
import type { BackupDownloads } from './backups.download.ts';
import {
  backupListQuery,
  backupParams,
  backupSchema,
  deletedSchema,
  downloadLinkSchema,
  downloadQuery,
  nameParams,
  presentBackup,
  presentRestore,
  restoreBody,
  restoreParams,
  restoreSchema,
  settingsBody,
  settingsSchema,
} from './backups.schemas.ts';
import type { BackupsService } from './backups.service.ts';
import type { RestoresService } from './restores.service.ts';

const tags = ['backups'];
const security = [{ apiKey: [] }];

/** Backups and restores of a database, download links, schedule and retention settings. */
export function backupRoutes(deps: {
  backups: BackupsService;
  restores: RestoresService;
  downloads: BackupDownloads;
  audit: Pick<AuditService, 'recordNow'>;
  withIdempotency: WithIdempotency;
}): FastifyPluginAsyncZod {
  const svc = deps.backups;
  return async (app) => {
    app.post(
      '/v1/databases/:name/backups',
      {
        config: { action: 'backups.create' },
        schema: {
          tags,
          security,
          summary: 'Back up a database now (the agent of its node makes the archive)',
          description: 'Answers at once with the pending backup; `GET …/backups/:id` shows its progress.',
          headers,
          params: nameParams,
          response: { 202: backupSchema, ...errorResponses },
        },
      },
      async (req, reply) => {
        const caller = requireCaller(req);
        return deps.withIdempotency(
          req,
          reply,
          async () => presentBackup(await svc.create(caller, req.params.name)),
          { status: 202 },
        );
      },
    );

    app.get(
      '/v1/databases/:name/backups',
      {
        config: { action: 'backups.read' },
        schema: {
          tags,
          security,
          summary: "A database's backups, newest first",
          params: nameParams,
          querystring: backupListQuery,
          response: { 200: pageSchema(backupSchema), ...errorResponses },
        },
      },
      async (req) => {
        const page = await svc.list(requireCaller(req), req.params.name, {
          after: decodeCursor(req.query.cursor),
          limit: req.query.limit,
          status: req.query.status,
        });
        return { items: page.items.map(presentBackup), next_cursor: page.next_cursor };
      },
    );

    app.get(
      '/v1/databases/:name/backups/:id',
      {
        config: { action: 'backups.read' },
        schema: {
          tags,
          security,
          summary: 'Show a backup (status, size, checksum, times, failure reason)',
          params: backupParams,
          response: { 200: backupSchema, ...errorResponses },
        },
      },
      async (req) => presentBackup(await svc.get(requireCaller(req), req.params.name, req.params.id)),
    );

    app.delete(
      '/v1/databases/:name/backups/:id',
      {
        config: { action: 'backups.delete' },
        schema: {
          tags,
          security,
          summary: 'Delete a finished backup (its file is removed by the agent)',
          params: backupParams,
          response: { 202: deletedSchema, ...errorResponses },
        },
      },
      async (req, reply) => {
        await svc.remove(requireCaller(req), req.params.name, req.params.id);
        return reply.status(202).send({ id: req.params.id, deleted: true as const });
      },
    );

    app.post(
      '/v1/databases/:name/backups/:id/download-link',
      {
        config: { action: 'backups.download' },
        schema: {
          tags,
          security,
          summary: 'A download link for a completed backup, valid 10 minutes for you and this backup only',
          description:
            'GET the link with the same credentials: it streams the plain `pg_dump -Fc` archive (for `pg_restore`), ' +
            "decrypted on the fly; check it against the backup's `sha256`.",
          params: backupParams,
          response: { 200: downloadLinkSchema, ...errorResponses },
        },
      },
      async (req, reply) => {
        const caller = requireCaller(req);
        const backup = await svc.get(caller, req.params.name, req.params.id);
        if (backup.status !== 'completed') throw conflict('Only a completed backup can be downloaded');
        const link = await deps.downloads.sign(caller, backup.id);
        await deps.audit.recordNow(
          auditFromCaller(
            caller,
            {
              action: 'backup.download_link',
              targetType: 'backup',
              targetId: backup.id,
              details: {
                database: backup.database_name,
                expires_at: new Date(link.expires * 1000).toISOString(),
              },
            },
            String(req.id),
          ),
        );
        reply.header('cache-control', 'no-store');
        const q = new URLSearchParams({ expires: String(link.expires), sig: link.sig });
        return {
          url: `/v1/databases/${req.params.name}/backups/${backup.id}/download?${q}`,
          expires_at: new Date(link.expires * 1000).toISOString(),
        };
      },
    );

    app.get(
      '/v1/databases/:name/backups/:id/download',
      {
        config: { action: 'backups.download' },
        schema: {
          tags,
          security,
          summary: 'Download a backup through its signed link (the plain pg_dump archive)',
          description:
            'Only with the link from `POST …/download-link`, before it expires, by the caller it was made for; ' +
            "anything else is 403. The backup's agent sends the archive (ADR 0023): 503 when it does not start " +
            'within 30 s, 409 when the archive fails its authenticity check before a byte was sent, or while an ' +
            'earlier download through the same link still runs; 429 when the account already has 2 downloads running. ' +
            'A transfer with no byte moved for 30 s (a client that stopped reading) or longer than 30 min is cut. A damaged ' +
            'archive (or the agent lost) later cuts the transfer: it never completes, so check it against `sha256`.',
          params: backupParams,
          querystring: downloadQuery,
          response: {
            200: {
              description: 'The plain pg_dump custom-format archive',
              content: { 'application/octet-stream': { schema: z.string().max(2 ** 30) } },
            },
            ...errorResponses,
          },
        },
      },
      async (req, reply) => {
        const caller = requireCaller(req);
        // Another account's (or an out-of-scope) backup is a 404 before the link is even looked at.
        const backup = await svc.get(caller, req.params.name, req.params.id);
        const { expires, sig } = req.query;
        if (
          expires === undefined ||
          sig === undefined ||
          !(await deps.downloads.verify(caller, backup.id, expires, sig))
        )
          throw forbidden('This download link is invalid, expired, or not yours');
        if (backup.status !== 'completed') throw conflict('Only a completed backup can be downloaded');
        // The client leaving while its agent is awaited ends the wait (and the job).
        const gone = new AbortController();
        reply.raw.once('close', () => {
          if (!reply.raw.writableEnded) gone.abort();
        });
        const body = await deps.downloads.open(backup, gone.signal, sig);
        return (
          reply
            .type('application/octet-stream')
            .header('cache-control', 'no-store')
            .header('x-backup-sha256', backup.sha256 ?? '')
            .header('content-disposition', `attachment; filename="${backup.database_name}-${backup.id}.dump"`)
            // A stream bypasses the serializer; the schema above only documents the body type.
            .send(body as unknown as string)
        );
      },
    );

    app.post(
      '/v1/databases/:name/restore',
      {
        config: { action: 'backups.restore' },
        schema: {
          tags,
          security,
          summary: 'Restore a backup into a new database (default) or in place after a safety backup',
          description:
            'new: a new database named `new_name` appears in `GET /v1/databases` and becomes ready once restored and ' +
            'checked. in_place: a safety backup of this database is taken first, then its connections are ended ' +
            'and the backup restored. `GET …/restores/:id` shows progress.',
          headers,
          params: nameParams,
          body: restoreBody,
          response: { 202: restoreSchema, ...errorResponses },
        },
      },
      async (req, reply) => {
        const caller = requireCaller(req);
        return deps.withIdempotency(
          req,
          reply,
          async () => presentRestore(await deps.restores.restore(caller, req.params.name, req.body)),
          { status: 202 },
        );
      },
    );

    app.get(
      '/v1/databases/:name/restores',
      {
        config: { action: 'backups.read' },
        schema: {
          tags,
          security,
          summary: 'Restores and restore drills of a database, newest first',
          params: nameParams,
          querystring: pageQuery,
          response: { 200: pageSchema(restoreSchema), ...errorResponses },
        },
      },
      async (req) => {
        const page = await deps.restores.list(requireCaller(req), req.params.name, {
          after: decodeCursor(req.query.cursor),
          limit: req.query.limit,
        });
        return { items: page.items.map(presentRestore), next_cursor: page.next_cursor };
      },
    );

    app.get(
      '/v1/databases/:name/restores/:id',
      {
        config: { action: 'backups.read' },
        schema: {
          tags,
          security,
          summary: 'Show a restore (its progress and checks)',
          params: restoreParams,
          response: { 200: restoreSchema, ...errorResponses },
        },
      },
      async (req) =>
        presentRestore(await deps.restores.get(requireCaller(req), req.params.name, req.params.id)),
    );

    app.get(
      '/v1/backup-settings',
      {
        config: { action: 'backups.read' },
        schema: {
          tags,
          security,
          summary: "The account's backup schedule, retention, RPO and drill settings",
          response: { 200: settingsSchema, ...errorResponses },
        },
      },
      async (req) => svc.getSettings(requireCaller(req), null),
    );

    app.put(
      '/v1/backup-settings',
      {
        config: { action: 'backups.account_settings' },
        schema: {
          tags,
          security,
          summary: "Replace the account's backup settings (a null or absent field uses the server default)",
          body: settingsBody,
          response: { 200: settingsSchema, ...errorResponses },
        },
      },
      async (req) => svc.putSettings(requireCaller(req), null, req.body),
    );

    app.get(
      '/v1/databases/:name/backup-settings',
      {
        config: { action: 'backups.read' },
        schema: {
          tags,
          security,
          summary: "A database's backup settings and what applies to it",
          params: nameParams,
          response: { 200: settingsSchema, ...errorResponses },
        },
      },
      async (req) => svc.getSettings(requireCaller(req), req.params.name),
    );

    app.put(
      '/v1/databases/:name/backup-settings',
      {
        config: { action: 'backups.settings' },
        schema: {
          tags,
          security,
          summary: "Replace a database's backup settings (a null or absent field uses the account's)",
          params: nameParams,
          body: settingsBody,
          response: { 200: settingsSchema, ...errorResponses },
        },
      },
      async (req) => svc.putSettings(requireCaller(req), req.params.name, req.body),
    );
  };
}
