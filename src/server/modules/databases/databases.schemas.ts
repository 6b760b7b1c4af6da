import { z } from 'zod';
import { CIDR_PATTERN } from '../../../shared/cidr-pattern.ts';
import { cidrSchema, limitsSchema, MAX_ALLOWLIST_ENTRIES } from '../../../shared/contracts/jobs.ts';
import { NAME_PATTERN, NEW_DATABASE_NAME_PATTERN } from '../../../shared/identifiers.ts';
import { pageQuery } from '../../http/pagination.ts';
import { plainText } from '../../http/text.schemas.ts';
import { freshnessSchema, presentFreshness } from '../backups/backups.schemas.ts';
import type { Freshness } from '../backups/backups.service.ts';
import { liveEntries } from './databases.allowlist.ts';
import type { DatabaseRow, SampleColumns, StoredAllowlistEntry } from './databases.repo.ts';

/**
 * A database name as the server checks it, published as is in the API document: 1–63 characters
 * a-z, 0-9 and _, starting with a letter (`NAME_PATTERN`).
 */
const databaseName = z
  .string()
  .min(1)
  .max(63)
  .regex(NAME_PATTERN, 'must be 1-63 characters a-z, 0-9 and _, starting with a letter (a-z)')
  .describe('A database name: 1-63 characters a-z, 0-9 and _, starting with a letter');

export const nameParams = z.object({ name: databaseName });

export const createBody = z
  .object({
    name: z
      .string()
      .min(1)
      .max(63)
      .regex(
        NEW_DATABASE_NAME_PATTERN,
        'must be 1-63 characters a-z, 0-9 and _, starting with a letter (a-z), and not a reserved name',
      )
      .describe(
        'A database name (1-63 characters a-z, 0-9 and _, starting with a letter) that is not reserved: ' +
          'not postgres, template0, template1, pgbouncer, bulwark or bulwark_control, and not starting with pg_ or bulwark_',
      ),
    node: z
      .string()
      .max(63)
      .regex(/^(?:[a-z][a-z0-9_-]{0,62}|[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/)
      .optional()
      .describe(
        'The node to place it on, by name or id. A node that cannot take it (unknown, disabled, cordoned, ' +
          'unhealthy, the name taken, no room) is one 409 answer; platform admins get 404 unknown or 409 why. ' +
          'Default: among healthy, uncordoned nodes, the one with the most free tenant connections',
      ),
    wait_ms: z
      .number()
      .int()
      .min(0)
      .max(60_000)
      .default(0)
      .describe(
        'Wait up to this many ms for the database to be ready or failed before answering (201 with the ' +
          'database as it is then: `status` says whether it is ready; still `provisioning` when the wait ran out). ' +
          'Default 0: answer at once (202)',
      ),
    reveal: z
      .boolean()
      .default(false)
      .describe(
        "With `wait_ms`: once ready, the answer carries the owner's password and where to connect (`credentials`). " +
          'Checked like `POST /v1/databases/{name}/credentials/reveal` before anything is created (write level; a ' +
          "signed-in user within an open step-up window) and recorded in the create's audit event",
      ),
  })
  .strict()
  .refine((b) => !b.reveal || b.wait_ms > 0, {
    message: '"reveal" needs "wait_ms" (how long to wait for the database)',
    path: ['reveal'],
  });

export const deleteBody = z
  .object({ confirm: z.string().min(1).max(63).describe('The database name again (it must match)') })
  .strict();

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
  name: z.string().max(63),
  status: z.enum(['provisioning', 'ready', 'failed', 'deleting', 'deleted', 'moving']),
  node: z.string().max(63),
  node_status: z
    .enum(['healthy', 'unhealthy', 'disabled'])
    .describe("The node's health: unhealthy while its agent does not report (alerted as node.unhealthy)"),
  failure_reason: z.string().max(8000).nullable(),
  password_version: z.number().int(),
  rotation_pending: z.boolean(),
  created_at: z.string().max(40),
  ready_at: z.string().max(40).nullable(),
  rotated_at: z.string().max(40).nullable(),
  updated_at: z.string().max(40),
  last_rotation: lastRotationSchema,
  kind: z
    .enum(['hosted', 'attached'])
    .describe(
      "hosted: made and managed by Bulwark; attached: an existing database listed by its agent's own configuration — explorer, governed SQL and audit only (managing routes answer 409)",
    ),
  attached: z
    .object({
      accepted_at: z
        .string()
        .max(40)
        .nullable()
        .describe(
          'When an admin of the account accepted it; null: it waits (status provisioning) and nothing runs on it',
        ),
      checked_at: z.string().max(40),
      server_version: z.string().max(256).nullable(),
      findings: z
        .array(
          z.object({
            role: z.string().max(16),
            severity: z.string().max(16),
            kind: z.string().max(64),
            object: z.string().max(200),
            detail: z.string().max(1000),
          }),
        )
        .max(200),
    })
    .nullable()
    .describe("An attached database's last role check by its agent (null when hosted)"),
});

export function presentDatabase(row: DatabaseRow): z.infer<typeof databaseSchema> {
  return {
    id: row.id,
    name: row.name,
    status: row.status,
    node: row.node_name,
    node_status: row.node_status,
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
    kind: row.kind,
    attached: row.attached
      ? {
          accepted_at: row.attached_accepted_at?.toISOString() ?? null,
          checked_at: row.attached.checked_at,
          server_version: row.attached.server_version,
          findings: row.attached.findings,
        }
      : null,
  };
}

/** `GET /v1/databases`: paging, a name search and a status filter (the cursor keeps its filters). */
export const listQuery = pageQuery.extend({
  q: plainText(63)
    .min(1)
    .optional()
    .describe(
      'A part of the name, 1-63 characters, matched case-insensitively and literally (% _ and \\ are plain characters)',
    ),
  status: z
    .enum(['provisioning', 'ready', 'failed', 'deleting', 'moving'])
    .optional()
    .describe('Only databases in this status'),
});

/** A database with what the list and the detail view show beside it: its latest sample, its allowlist size. */
export const databaseItemSchema = databaseSchema.extend({
  size_bytes: z
    .number()
    .int()
    .min(0)
    .nullable()
    .describe("pg_database_size at the latest sample (null until the node's agent has sampled it)"),
  connections: z
    .number()
    .int()
    .min(0)
    .nullable()
    .describe("The database's own connections at the latest sample (the platform's are not counted)"),
  sampled_at: z.string().max(40).nullable().describe('When the latest sample was taken (null: never)'),
  allowlist_count: z.number().int().min(0).describe('Allowlist entries in force (expired ones left out)'),
});

export function presentDatabaseItem(row: DatabaseRow & SampleColumns): z.infer<typeof databaseItemSchema> {
  return {
    ...presentDatabase(row),
    size_bytes: row.sample_size_bytes === null ? null : Number(row.sample_size_bytes),
    connections: row.sample_connections,
    sampled_at: row.sampled_at?.toISOString() ?? null,
    allowlist_count: liveEntries(row.allowlist).length,
  };
}

/** The detail view: the list's item and the database's last good backup (null: not known here). */
export const databaseDetailSchema = databaseItemSchema.extend({ backup: freshnessSchema.nullable() });

export function presentDatabaseDetail(
  row: DatabaseRow & SampleColumns & { backup: Freshness | null },
): z.infer<typeof databaseDetailSchema> {
  return { ...presentDatabaseItem(row), backup: row.backup ? presentFreshness(row.backup) : null };
}

/** A CIDR as the server parses it, with its format in the document (`CIDR_PATTERN`). */
const cidrIn = cidrSchema
  .regex(CIDR_PATTERN, 'must be an IPv4 or IPv6 CIDR such as 203.0.113.7/32')
  .describe('An IPv4 or IPv6 CIDR such as 203.0.113.7/32 or 2001:db8::/32 (host bits are cleared)');

const allowlistEntryIn = z
  .object({
    cidr: cidrIn,
    expires_at: z.iso.datetime({ offset: true }).max(40).optional().meta({
      description: 'ISO 8601 with an offset; must be in the future (omitted: does not expire)',
      'x-after-now': true,
    }),
    // PostgreSQL's jsonb holds neither U+0000 nor a lone UTF-16 surrogate: refused here, not there.
    note: plainText(200).optional().describe('Free text, at most 200 characters, without control characters'),
  })
  .strict();

/** One entry, for the per-entry add: the same shape and bounds as an entry of the whole list. */
export const allowlistEntryBody = allowlistEntryIn;

/** A CIDR in the path (URL-encoded: `203.0.113.7%2F32`), validated like an entry's. */
export const allowlistEntryParams = nameParams.extend({ cidr: cidrIn });

export const allowlistBody = z
  .object({ entries: z.array(allowlistEntryIn).max(MAX_ALLOWLIST_ENTRIES) })
  .strict();

export const allowlistResponse = z.object({
  entries: z.array(
    z.object({
      cidr: z.string().max(64),
      expires_at: z.string().max(40).nullable(),
      note: z.string().max(200).nullable(),
    }),
  ),
});

export const presentAllowlist = (entries: StoredAllowlistEntry[]) => ({
  entries: entries.map((e) => ({ cidr: e.cidr, expires_at: e.expires_at, note: e.note })),
});

export const limitsBody = limitsSchema.strict();

export const connectionSchema = z.object({
  host: z.string().max(255),
  port: z.number().int(),
  user: z.string().max(63),
  database: z.string().max(63),
  sslmode: z.string().max(20),
  uri: z.string().max(1024),
});

export const passwordSchema = z.object({ password: z.string().max(256) });

/**
 * What a signed-in user re-enters to reveal a password: their password, or a TOTP code when they
 * have TOTP (recovery codes are for signing in, not spent here). API keys send nothing; the body
 * may be absent.
 */
export const revealBody = z
  .object({
    password: z.string().min(1).max(1024).optional().describe("The signed-in local user's password"),
    totp_code: z
      .string()
      .min(1)
      .max(32)
      .optional()
      .describe('A current 6-digit TOTP code (users with TOTP, instead of the password)'),
  })
  .strict()
  // No body at all (API keys, the old clients) reaches the validator as null.
  .nullish();

/**
 * What `POST /v1/databases` answers: the database, and with `reveal` once it is ready its
 * credentials — the password as the reveal route gives it, and the connection info.
 */
export const createdDatabaseSchema = databaseSchema.extend({
  credentials: passwordSchema
    .extend({ connection: connectionSchema })
    .optional()
    .describe("The owner's password and where to connect (only with `reveal`, once the database is ready)"),
});
