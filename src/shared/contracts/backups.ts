/**
 * The backup contract (issue 15) between the server (records, schedule, retention, keys) and the
 * agent (pg_dump, archive, restore). Payloads here; kinds and results in `backup-results.ts`
 * (re-exported), which `jobs.ts` lists in `jobResultSchemas`.
 *
 * Keys. The agent never sees the master key. The server makes a fresh 32-byte data key for each
 * backup when it creates the backup's record and stores it only sealed by the master key
 * (`box.seal(key, backupKeyContext(backup_id))`). No payload carries a key: a job that reads or
 * writes an archive fetches the key of the backup named by its payload's `backup_id` with
 *   POST /v1/agent/jobs/:id/backup-key   body `jobSecretRequestSchema` → 200 `backupKeyResponseSchema`
 * which the server answers (cache-control: no-store) only for the agent holding the job's current
 * lease, and only for `backup.create`, `backup.restore` and `backup.drill` jobs; anything else is
 * the same 404 as the password secret. The key lives in the agent's memory for the job only.
 *
 * Files. An archive lives at `<backup dir>/<backupStorageKey(database_id, backup_id)>` — built
 * from the two uuids only (no name), resolved and checked to lie inside the backup dir; it is
 * written as `….partial`, fsynced, renamed, its directory fsynced. An object store uses the same
 * key. The format is in `src/shared/backup-archive.ts` (ADR 0022), so the server can decrypt a
 * download with the same key.
 *
 * Restore into a new database: the server creates the target's database record (as for a create)
 * and enqueues `backup.restore` with `create` — the same payload `database.create` takes, for the
 * target. The agent creates the database exactly as `database.create` does (roles, database,
 * grants, schema, pooler entry, the owner's proving login through PgBouncer — so the server's
 * `POST /v1/agent/jobs/:id/secret` must answer a `backup.restore` job that carries `create` with the
 * target's owner password, as for `database.create`), then restores into it. On success the
 * target is ready; on failure the server decides (mark failed; a delete job cleans up).
 * In place (`mode: in_place`, no `create`): the server makes a safety backup first; the agent
 * verifies the archive, terminates the database's sessions, pauses it in PgBouncer, restores
 * (dropping the tenant's objects first), resumes.
 *
 * Checks. `expected` is the backup's recorded manifest (the `backup.create` result's `sha256`,
 * `tables`, `tables_total`, `objects`); the agent authenticates the whole archive before pg_restore
 * gets a byte, refuses one whose decrypted dump does not hash to `sha256` before pg_restore gets
 * the dump's end (so nothing is committed), and after the restore compares object counts and exact
 * row counts with it.
 */
import { z } from 'zod';
import { BACKUP_JOB_KINDS, backupManifestSchema } from './backup-results.ts';
import { createPayloadSchema, databaseNameSchema } from './jobs.ts';

export * from './backup-results.ts';

/** The storage key (relative path / object key) of an archive: ids only, never a name. */
export function backupStorageKey(databaseId: string, backupId: string): string {
  const db = z.uuid().parse(databaseId);
  const id = z.uuid().parse(backupId);
  return `${db.toLowerCase()}/${id.toLowerCase()}.bulwark-backup`;
}

/** The sealing context of a backup's data key (binds the sealed key to its backup). */
export function backupKeyContext(backupId: string): string {
  return `backup-key:${z.uuid().parse(backupId).toLowerCase()}`;
}

/** A data key: 32 bytes, base64url without padding. */
export const dataKeySchema = z.string().regex(/^[A-Za-z0-9_-]{43}$/);
export const backupKeyResponseSchema = z.object({ data_key: dataKeySchema });

/** The database a backup was made of. */
const sourceSchema = z.object({ database_id: z.uuid(), name: databaseNameSchema });

/** `backup.create`: dump `name` into the archive of `backup_id`. */
export const backupCreatePayloadSchema = z.object({
  backup_id: z.uuid(),
  database_id: z.uuid(),
  name: databaseNameSchema,
});
export type BackupCreatePayload = z.infer<typeof backupCreatePayloadSchema>;

/**
 * `backup.restore`: `database_id`/`name` are the TARGET (restored into); `source` is the
 * database the backup was made of (its archive's path and the role names inside the dump).
 */
export const backupRestorePayloadSchema = z
  .object({
    backup_id: z.uuid(),
    database_id: z.uuid(),
    name: databaseNameSchema,
    mode: z.enum(['new', 'in_place']),
    source: sourceSchema,
    expected: backupManifestSchema,
    /** mode `new` only: how to create the target (the `database.create` payload). */
    create: createPayloadSchema.optional(),
  })
  .refine((p) => (p.mode === 'new') === (p.create !== undefined), {
    message: 'create is required for mode new and refused for in_place',
    path: ['create'],
  })
  .refine((p) => !p.create || (p.create.database_id === p.database_id && p.create.name === p.name), {
    message: 'create must describe the target',
    path: ['create'],
  })
  .refine((p) => p.mode === 'new' || (p.database_id === p.source.database_id && p.name === p.source.name), {
    message: 'an in-place restore targets the database the backup was made of',
    path: ['database_id'],
  });
export type BackupRestorePayload = z.infer<typeof backupRestorePayloadSchema>;

/**
 * `backup.drill`: restore `backup_id` (of `database_id`/`name`) into a scratch database the agent
 * names and drops itself (`bulwark_drill_<hex>`, never in PgBouncer), check it against `expected`.
 */
export const backupDrillPayloadSchema = z.object({
  backup_id: z.uuid(),
  database_id: z.uuid(),
  name: databaseNameSchema,
  expected: backupManifestSchema,
});
export type BackupDrillPayload = z.infer<typeof backupDrillPayloadSchema>;

/** `backup.delete`: remove the archive (and any leftover `.partial`) of `backup_id`. */
export const backupDeletePayloadSchema = z.object({ backup_id: z.uuid(), database_id: z.uuid() });
export type BackupDeletePayload = z.infer<typeof backupDeletePayloadSchema>;

/** The kinds that may fetch a data key (`/backup-key`). */
export const BACKUP_KEY_KINDS: ReadonlySet<string> = new Set([
  BACKUP_JOB_KINDS.create,
  BACKUP_JOB_KINDS.restore,
  BACKUP_JOB_KINDS.drill,
]);

/**
 * `backup.download` (ADR 0023): stream the archive of `backup_id` as stored (encrypted) to
 *   POST /v1/agent/jobs/:id/archive?attempt=<n>   header `x-bulwark-stream-token: <stream_token>`
 * where a download waits for it. The token is single-use and short-lived: it opens the one waiting
 * download of this server process, and only together with the node's agent token and the lease.
 */
export const backupDownloadPayloadSchema = z.object({
  backup_id: z.uuid(),
  database_id: z.uuid(),
  stream_token: z.string().regex(/^[A-Za-z0-9_-]{43}$/),
});
export type BackupDownloadPayload = z.infer<typeof backupDownloadPayloadSchema>;

export const STREAM_TOKEN_HEADER = 'x-bulwark-stream-token';
export const archiveStreamPath = (jobId: number, attempt: number) =>
  `/v1/agent/jobs/${jobId}/archive?attempt=${attempt}`;

/** Where a running backup, restore or drill is (`POST /v1/agent/jobs/:id/progress`). */
export const BACKUP_PHASES = [
  'snapshot',
  'dump',
  'commit',
  'verify',
  'offsite',
  'verify_offsite',
  'target',
  'restore',
  'check',
  'swap',
  'drop',
] as const;
export const backupProgressSchema = z.object({
  attempt: z.number().int().min(1).max(1000),
  phase: z.enum(BACKUP_PHASES),
  /** Bytes of the archive written (dump) or read (verify, restore) so far in this phase. */
  done_bytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER),
  /** The archive's size when known (every phase but the dump). */
  total_bytes: z.number().int().min(0).max(Number.MAX_SAFE_INTEGER).nullable(),
});
export type BackupProgress = z.infer<typeof backupProgressSchema>;
