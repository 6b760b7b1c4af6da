/**
 * The kinds and results of the backup jobs (issue 15). Kept apart from `backups.ts` (the
 * payloads, which build on `jobs.ts`) so that `jobs.ts` can list these results in
 * `jobResultSchemas` without an import cycle. Import from `backups.ts`, which re-exports all of this.
 */
import { z } from 'zod';

export const BACKUP_JOB_KINDS = {
  create: 'backup.create',
  restore: 'backup.restore',
  drill: 'backup.drill',
  delete: 'backup.delete',
  /** Sends the (still encrypted) archive to the server for a waiting download (ADR 0023). */
  download: 'backup.download',
} as const;

/** At most this many tables are listed in a backup's record (largest first); the rest are counted. */
export const MAX_BACKUP_TABLES = 1000;

const sha256Schema = z.string().regex(/^[0-9a-f]{64}$/);
const countSchema = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const identSchema = z.string().min(1).max(63);

/** One table of the backed-up database: exact rows in the dump's snapshot, and the planner's estimate. */
export const backupTableSchema = z.object({
  schema: identSchema,
  name: identSchema,
  /** Exact `count(*)` in the same snapshot pg_dump read (what a restore must reproduce). */
  rows: countSchema,
  /** `pg_class.reltuples` (−1 = never analysed, reported as null). */
  rows_estimate: countSchema.nullable(),
});
export type BackupTable = z.infer<typeof backupTableSchema>;

/** Counts of the tenant's objects in the dump's snapshot (system schemas excluded). */
export const backupObjectsSchema = z.object({
  schemas: countSchema,
  tables: countSchema,
  views: countSchema,
  materialized_views: countSchema,
  sequences: countSchema,
  indexes: countSchema,
  functions: countSchema,
  large_objects: countSchema,
});
export type BackupObjects = z.infer<typeof backupObjectsSchema>;

/** What a backup's record must hold so a restore or drill can be checked against it. */
export const backupManifestSchema = z.object({
  /** SHA-256 (hex) of the plain `pg_dump -Fc` archive inside (what a download yields). */
  sha256: sha256Schema,
  /** Every table when `tables_total` ≤ MAX_BACKUP_TABLES, else the largest ones. */
  tables: z.array(backupTableSchema).max(MAX_BACKUP_TABLES),
  tables_total: countSchema,
  objects: backupObjectsSchema,
});
export type BackupManifest = z.infer<typeof backupManifestSchema>;

/** `backup.create`: only reported once the whole archive was read back and verified. */
export const backupCreateResultSchema = backupManifestSchema.extend({
  backup_id: z.uuid(),
  /** The stored (encrypted) archive's size in bytes. */
  size_bytes: countSchema,
  /** Bytes pg_dump wrote (before compression). */
  dump_bytes: countSchema,
  duration_ms: z.number().min(0).max(1e9),
  /** `SHOW server_version` of the cluster dumped. */
  pg_version: z.string().min(1).max(200),
  server_version_num: z.number().int().min(0).max(9_999_999),
  /** The archive format (`backup-archive.ts` FORMAT_VERSION). */
  format_version: z.number().int().min(1).max(255),
  /** Always true: a backup whose read-back failed is a failed job, not a result. */
  verified: z.literal(true),
  /**
   * The object key of the off-site copy (S3; prefix + `<database id>/<backup id>.bulwark-backup`),
   * present when the agent has off-site copies configured: the copy was uploaded whole.
   */
  offsite_key: z
    .string()
    .min(1)
    .max(1100)
    .regex(/^[A-Za-z0-9._\-/]+$/)
    .optional(),
});
export type BackupCreateResult = z.infer<typeof backupCreateResultSchema>;

/** What a restore or drill checked in the restored database against the backup's record. */
export const restoreCheckSchema = z.object({
  tables_checked: countSchema,
  rows_checked: countSchema,
  objects: backupObjectsSchema,
});
export type RestoreCheck = z.infer<typeof restoreCheckSchema>;

export const backupRestoreResultSchema = restoreCheckSchema.extend({
  backup_id: z.uuid(),
  /** The database restored into. */
  database_id: z.uuid(),
  name: z.string().min(1).max(63),
  mode: z.enum(['new', 'in_place']),
  duration_ms: z.number().min(0).max(1e9),
  verified: z.literal(true),
});
export type BackupRestoreResult = z.infer<typeof backupRestoreResultSchema>;

export const backupDrillResultSchema = restoreCheckSchema.extend({
  backup_id: z.uuid(),
  verified_at: z.iso.datetime({ offset: true }),
  duration_ms: z.number().min(0).max(1e9),
  verified: z.literal(true),
  /**
   * With off-site copies configured: true when the object was read whole and verified against
   * the record too, false when the bucket has no copy of this backup (made before S3 was set).
   */
  offsite_verified: z.boolean().optional(),
});
export type BackupDrillResult = z.infer<typeof backupDrillResultSchema>;

export const backupDeleteResultSchema = z.object({
  /** False when there was no file (already gone): deletion is idempotent. */
  deleted: z.boolean(),
});

/** `backup.download`: completed by the server when the archive it relayed ended whole. */
export const backupDownloadResultSchema = z.object({ bytes: countSchema });
export type BackupDownloadResult = z.infer<typeof backupDownloadResultSchema>;
