/**
 * Moving a database between nodes (issue 17, ADR 0031): the payloads of the move jobs. Kinds and
 * results are in `move-results.ts` (re-exported here).
 *
 * Secrets: no payload carries a key or a password. The move's archive is sealed under a data key
 * of its own (the server keeps it sealed in the move's row) that the source and the target fetch
 * with `POST /v1/agent/jobs/:id/backup-key` while they hold the job's lease; the target's proving
 * login fetches the owner's password with `POST /v1/agent/jobs/:id/secret` as a create does.
 */
import { z } from 'zod';
import { backupManifestSchema } from './backup-results.ts';
import { createPayloadSchema, databaseNameSchema } from './jobs.ts';

export * from './move-results.ts';

const ident = { move_id: z.uuid(), database_id: z.uuid(), name: databaseNameSchema };

export const moveOutPayloadSchema = z.object({
  ...ident,
  /** Dump without freezing, and report the change fingerprint (the freeze comes later). */
  precopy: z.boolean().optional(),
});
export type MoveOutPayload = z.infer<typeof moveOutPayloadSchema>;

export const moveInPayloadSchema = z
  .object({
    ...ident,
    /** What the source's dump held (checked after the restore). */
    expected: backupManifestSchema,
    /** How to create the target: the same id, name, verifier, allowlist and limits as the source. */
    create: createPayloadSchema,
  })
  .refine((p) => p.create.database_id === p.database_id && p.create.name === p.name, {
    message: 'create must describe the moved database',
    path: ['create'],
  });
export type MoveInPayload = z.infer<typeof moveInPayloadSchema>;

export const moveFreezePayloadSchema = z.object(ident);
export const moveThawPayloadSchema = z.object(ident);
export const moveCleanupPayloadSchema = z.object(ident);

/**
 * Where a move's target fetches the archive when its own backup store does not hold it (nodes on
 * different hosts, each with its own store): the server asks the source's agent to send the
 * archive as stored (a `backup.download` job) and relays the bytes, still encrypted under the
 * move's key, to the target — `GET` with the agent token, for the holder of the `move_in` lease.
 */
export const moveArchivePath = (jobId: number, attempt: number) =>
  `/v1/agent/jobs/${jobId}/move-archive?attempt=${attempt}`;
