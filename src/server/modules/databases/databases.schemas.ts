import { z } from 'zod';
import { cidrSchema, limitsSchema, MAX_ALLOWLIST_ENTRIES } from '../../../shared/contracts/jobs.ts';
import type { DatabaseRow, StoredAllowlistEntry } from './databases.repo.ts';

/** Length-bounded only: the service checks the pattern first and answers with a clear 400. */
export const nameParams = z.object({ name: z.string().min(1).max(200) });

export const createBody = z
  .object({
    name: z.string().min(1).max(200),
    node: z
      .string()
      .max(63)
      .regex(/^[a-z][a-z0-9_-]{0,62}$/)
      .optional(),
  })
  .strict();

export const deleteBody = z.object({ confirm: z.string().max(200) }).strict();

/**
 * The outcome of the latest credentials rotation (null: never rotated). `pending` and `restoring`
 * are on the way; `succeeded`, `failed_restored` (the rotation failed and the previous password
 * was put back: it did not take effect) and `failed` (the previous password could not be
 * re-applied either) are final. `requested_at` identifies the request; `at` is when the status
 * last changed.
 */
export const lastRotationSchema = z
  .object({
    status: z.enum(['pending', 'restoring', 'succeeded', 'failed_restored', 'failed']),
    reason: z.string().max(1000).nullable(),
    requested_at: z.string().max(40),
    at: z.string().max(40),
  })
  .nullable();

export const databaseSchema = z.object({
  id: z.uuid(),
  name: z.string(),
  status: z.enum(['provisioning', 'ready', 'failed', 'deleting', 'deleted']),
  node: z.string(),
  failure_reason: z.string().nullable(),
  password_version: z.number().int(),
  rotation_pending: z.boolean(),
  created_at: z.string(),
  ready_at: z.string().nullable(),
  rotated_at: z.string().nullable(),
  updated_at: z.string(),
  last_rotation: lastRotationSchema,
});

export function presentDatabase(row: DatabaseRow): z.infer<typeof databaseSchema> {
  return {
    id: row.id,
    name: row.name,
    status: row.status,
    node: row.node_name,
    failure_reason: row.failure_reason,
    password_version: row.password_version,
    rotation_pending: row.rotation_pending,
    created_at: row.created_at.toISOString(),
    ready_at: row.ready_at?.toISOString() ?? null,
    rotated_at: row.rotated_at?.toISOString() ?? null,
    updated_at: row.updated_at.toISOString(),
    last_rotation:
      row.last_rotation_status && row.last_rotation_requested_at && row.last_rotation_at
        ? {
            status: row.last_rotation_status,
            reason: row.last_rotation_reason,
            requested_at: row.last_rotation_requested_at.toISOString(),
            at: row.last_rotation_at.toISOString(),
          }
        : null,
  };
}

const allowlistEntryIn = z
  .object({
    cidr: cidrSchema,
    expires_at: z.iso.datetime({ offset: true }).optional(),
    note: z.string().max(200).optional(),
  })
  .strict();

/** One entry, for the per-entry add: the same shape and bounds as an entry of the whole list. */
export const allowlistEntryBody = allowlistEntryIn;

/** A CIDR in the path (URL-encoded: `203.0.113.7%2F32`), validated like an entry's. */
export const allowlistEntryParams = nameParams.extend({ cidr: cidrSchema });

export const allowlistBody = z
  .object({ entries: z.array(allowlistEntryIn).max(MAX_ALLOWLIST_ENTRIES) })
  .strict();

export const allowlistResponse = z.object({
  entries: z.array(
    z.object({ cidr: z.string(), expires_at: z.string().nullable(), note: z.string().nullable() }),
  ),
});

export const presentAllowlist = (entries: StoredAllowlistEntry[]) => ({
  entries: entries.map((e) => ({ cidr: e.cidr, expires_at: e.expires_at, note: e.note })),
});

export const limitsBody = limitsSchema.strict();

export const connectionSchema = z.object({
  host: z.string(),
  port: z.number().int(),
  user: z.string(),
  database: z.string(),
  sslmode: z.string(),
  uri: z.string(),
});

export const passwordSchema = z.object({ password: z.string() });
