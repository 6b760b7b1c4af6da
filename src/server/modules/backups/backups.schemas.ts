import { z } from 'zod';
import { BACKUP_PHASES } from '../../../shared/contracts/backups.ts';
import { NAME_PATTERN, NEW_DATABASE_NAME_PATTERN } from '../../../shared/identifiers.ts';
import { pageQuery } from '../../http/pagination.ts';
import type { BackupRow } from './backups.repo.ts';
import type { Freshness } from './backups.service.ts';
import type { RestoreRow } from './restores.repo.ts';

const databaseName = z
  .string()
  .min(1)
  .max(63)
  .regex(NAME_PATTERN, 'must be 1-63 characters a-z, 0-9 and _, starting with a letter (a-z)')
  .describe('A database name: 1-63 characters a-z, 0-9 and _, starting with a letter');

const uuid = z.uuid().max(36);

export const nameParams = z.object({ name: databaseName });
export const backupParams = nameParams.extend({ id: uuid.describe('The backup id') });
export const restoreParams = nameParams.extend({ id: uuid.describe('The restore id') });

const status = z.enum(['pending', 'running', 'completed', 'failed']);
const iso = z.string().max(40);

export const backupListQuery = pageQuery.extend({
  status: status.optional().describe('Only backups in this status'),
});

/** How far a running backup, restore or drill is, as its agent last reported (null: not running). */
export const progressSchema = z
  .object({
    phase: z.enum(BACKUP_PHASES),
    done_bytes: z
      .number()
      .int()
      .min(0)
      .describe('Archive bytes written (dump) or read (verify, restore) in this phase'),
    total_bytes: z
      .number()
      .int()
      .min(0)
      .nullable()
      .describe("The archive's size (null while it is being written)"),
    updated_at: iso,
  })
  .nullable()
  .describe('While running: the phase and bytes its agent last reported (about once a second)');

export const backupSchema = z.object({
  id: z.uuid(),
  database: z.string().max(63).describe('The database the backup was taken of (its name then)'),
  status: status.describe('pending (queued) → running (the agent holds it) → completed | failed'),
  trigger: z.enum(['scheduled', 'manual', 'safety', 'drill']),
  size_bytes: z.number().int().min(0).nullable().describe('Size of the stored, encrypted archive'),
  sha256: z
    .string()
    .max(64)
    .nullable()
    .describe('SHA-256 (hex) of the plain pg_dump archive inside: what a download yields'),
  started_at: iso.nullable(),
  completed_at: iso.nullable(),
  verified_at: iso.nullable().describe('When a restore drill last restored and checked this archive'),
  failure_reason: z.string().max(1000).nullable(),
  verify_failure: z.string().max(1000).nullable().describe("The last failed drill's reason (null: none)"),
  created_at: iso,
  expires_at: iso.nullable().describe('When retention deletes it'),
  pg_version: z.string().max(200).nullable(),
  duration_ms: z.number().int().min(0).nullable(),
  attempts: z.number().int().min(0).nullable().describe('Attempts of its job so far (failures are retried)'),
  tables_total: z.number().int().min(0).nullable().describe('Tables in the dump'),
  offsite_copy: z.boolean().describe('An off-site copy (S3-compatible storage) was made of this archive'),
  offsite_verified_at: iso
    .nullable()
    .describe('When a restore drill last read the off-site copy whole and verified it'),
  progress: progressSchema,
});

const num = (v: string | null) => (v === null ? null : Number(v));

/** The stored progress of a running job, shown only when it is well formed. */
export function presentProgress(p: Record<string, unknown> | null): z.infer<typeof progressSchema> {
  if (!p) return null;
  const bytes = (v: unknown) => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : null);
  const phase = BACKUP_PHASES.find((x) => x === p.phase);
  const done = bytes(p.done_bytes);
  if (!phase || done === null || typeof p.at !== 'string') return null;
  return { phase, done_bytes: done, total_bytes: bytes(p.total_bytes), updated_at: p.at.slice(0, 40) };
}

export function presentBackup(b: BackupRow): z.infer<typeof backupSchema> {
  return {
    id: b.id,
    database: b.database_name,
    status: b.status,
    trigger: b.trigger,
    size_bytes: num(b.size_bytes),
    sha256: b.sha256,
    started_at: b.started_at?.toISOString() ?? null,
    completed_at: b.completed_at?.toISOString() ?? null,
    verified_at: b.verified_at?.toISOString() ?? null,
    failure_reason: b.failure_reason,
    verify_failure: b.verify_failure,
    created_at: b.created_at.toISOString(),
    expires_at: b.expires_at?.toISOString() ?? null,
    pg_version: b.pg_version,
    duration_ms: num(b.duration_ms),
    attempts: b.attempts,
    tables_total: b.manifest?.tables_total ?? null,
    offsite_copy: b.offsite_key !== null,
    offsite_verified_at: b.offsite_verified_at?.toISOString() ?? null,
    progress: b.status === 'running' ? presentProgress(b.progress) : null,
  };
}

export const deletedSchema = z.object({ id: z.uuid(), deleted: z.literal(true) });

const backupIdIn = uuid.describe('A completed backup of this database');

/** Into a new database (the default), or in place: a union, so each shape's rules are in the document. */
export const restoreBody = z.union([
  z
    .object({
      backup_id: backupIdIn,
      target: z.literal('new').optional().describe('new (the default, safe): a new database'),
      new_name: z
        .string()
        .min(1)
        .max(63)
        .regex(
          NEW_DATABASE_NAME_PATTERN,
          'must be 1-63 characters a-z, 0-9 and _, starting with a letter (a-z), and not a reserved name',
        )
        .optional()
        .describe(
          'The new database, a name as for POST /v1/databases (default: <name>_restored_<6 hex>, cut to 63 characters)',
        ),
    })
    .strict(),
  z
    .object({
      backup_id: backupIdIn,
      target: z.literal('in_place').describe('in_place: this database, after an automatic safety backup'),
    })
    .strict(),
]);

export const restoreSchema = z.object({
  id: z.uuid(),
  status: status.describe('pending → running → completed | failed'),
  target: z.enum(['new', 'in_place', 'drill']),
  backup_id: z.uuid(),
  database: z.string().max(63).nullable().describe('The database restored into'),
  safety_backup_id: z.uuid().nullable().describe('In place: the backup taken first'),
  failure_reason: z.string().max(1000).nullable(),
  created_at: iso,
  started_at: iso.nullable(),
  completed_at: iso.nullable(),
  tables_checked: z.number().int().min(0).nullable(),
  rows_checked: z.number().int().min(0).nullable(),
  progress: progressSchema,
});

export function presentRestore(r: RestoreRow): z.infer<typeof restoreSchema> {
  const count = (k: string) => {
    const v = r.result?.[k];
    return typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : null;
  };
  return {
    id: r.id,
    status: r.status,
    target: r.target,
    backup_id: r.backup_id,
    database: r.target_database_name,
    safety_backup_id: r.safety_backup_id,
    failure_reason: r.failure_reason,
    created_at: r.created_at.toISOString(),
    started_at: r.started_at?.toISOString() ?? null,
    completed_at: r.completed_at?.toISOString() ?? null,
    tables_checked: count('tables_checked'),
    rows_checked: count('rows_checked'),
    progress: r.status === 'running' ? presentProgress(r.progress) : null,
  };
}

export const downloadLinkSchema = z.object({
  url: z.string().max(2048).describe('A path on this server, valid for you and this backup only'),
  expires_at: iso,
});

/** Optional in the schema so that a link without them is the same 403 as a wrong one (after the 404s). */
export const downloadQuery = z
  .object({
    expires: z.coerce
      .number()
      .int()
      .min(0)
      .max(1e11)
      .optional()
      .describe('Unix time the link expires (from the link)'),
    sig: z.string().min(1).max(100).optional().describe('The signature (from the link)'),
  })
  .strict();

const hhmm = z.string().regex(/^([01][0-9]|2[0-3]):[0-5][0-9]$/, 'must be HH:MM (UTC)');

export const settingsBody = z
  .object({
    enabled: z.boolean().nullable().optional().describe('Daily backups and drills on (null: inherit)'),
    schedule_time: hhmm.nullable().optional().describe('The daily backup time, HH:MM UTC (null: inherit)'),
    retention_days: z.number().int().min(1).max(3650).nullable().optional().describe('Days a backup is kept'),
    rpo_hours: z
      .number()
      .int()
      .min(1)
      .max(8760)
      .nullable()
      .optional()
      .describe('Older than this since the last good backup: a backup.stale alert'),
    drill_interval_days: z
      .number()
      .int()
      .min(1)
      .max(365)
      .nullable()
      .optional()
      .describe('Days between restore drills'),
  })
  .strict();

const settingsShape = z.object({
  enabled: z.boolean().nullable(),
  schedule_time: z.string().max(5).nullable(),
  retention_days: z.number().int().nullable(),
  rpo_hours: z.number().int().nullable(),
  drill_interval_days: z.number().int().nullable(),
});

export const settingsSchema = z.object({
  settings: settingsShape.describe('What this level sets (null: inherited)'),
  effective: z
    .object({
      enabled: z.boolean(),
      schedule_time: z.string().max(5),
      retention_days: z.number().int(),
      rpo_hours: z.number().int(),
      drill_interval_days: z.number().int(),
    })
    .describe('What applies: the database, else the account, else the server default'),
});

/** Freshness of a database (in GET /v1/databases/:name). */
export const freshnessSchema = z
  .object({
    last_good_at: iso.nullable().describe('When the latest completed backup finished (null: none)'),
    age_seconds: z.number().int().min(0).nullable(),
    rpo_hours: z.number().int(),
    stale: z.boolean().describe('Older than the RPO, or no backup at all'),
  })
  .describe("The database's last good backup");

export const presentFreshness = (f: Freshness): z.infer<typeof freshnessSchema> => ({
  last_good_at: f.last_good_at?.toISOString() ?? null,
  age_seconds: f.age_seconds,
  rpo_hours: f.rpo_hours,
  stale: f.stale,
});
