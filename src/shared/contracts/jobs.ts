/**
 * The job contract between the server (which enqueues) and the agent (which runs): the
 * payload and result of every database job, as zod schemas both sides import.
 *
 * Changes to this contract are listed here, newest first:
 *   - added (compatible): `database.create` payloads carry `generated_name` (the name was generated
 *     for this create: a spare's own name may replace it; ADR 0039). An older agent ignores it and
 *     makes the database under the name given, never from a spare. A `physical_name` other than
 *     the payload's `name` must be a spare's (`SPARE_NAME_PATTERN`), or the server refuses it.
 *   - added (compatible): `database.create` results carry `physical_name` (the database's name in
 *     PostgreSQL, a spare's generated one on the warm path) and `owner_password` (set by the agent
 *     on the warm path; sealed by the server, never stored in the job). Every later job of that
 *     database names it by `physical_name` (ADR 0034).
 *   - added (compatible): move kind `database.move_freeze` (`moveFreezeResultSchema`); `move_out`
 *     takes `precopy` (dump while serving, report `fingerprint` instead of `frozen_at`). A server
 *     asks for a pre-copy only from a source that offers `database.move_freeze`.
 *   - added (compatible): drift finding kind `spare_tampered` (a warm-pool spare changed since the
 *     agent made it; it is not handed out but destroyed and replaced, ADR 0028).
 *   - added (compatible): move kinds `database.move_out|move_in|move_thaw|move_cleanup` (payloads
 *     in `moves.ts`, results in `move-results.ts`); they fetch keys and secrets like backup jobs.
 *   - added (compatible): results of `access.grant` / `access.revoke` (just-in-time credentials;
 *     payloads in `execution.ts`, results in `access-results.ts`).
 *   - added (compatible): backup kinds `backup.create|restore|drill|delete` (payloads in
 *     `backups.ts`, results in `backup-results.ts`) and their data keys via
 *     `POST /v1/agent/jobs/:id/backup-key` (`backupKeyResponseSchema`).
 *   - added (compatible): drift finding kind `range_function` (a range type whose subtype_diff or
 *     canonical function a tenant role owns: the planner calls it without an EXECUTE check).
 *   - changed (stricter): every job kind's result is checked against `jobResultSchemas` on both
 *     sides — by the agent before it calls `complete`, and by the server, which refuses a result
 *     that does not match (422 `invalid_job_result`) and fails the job for good. Unknown keys are
 *     dropped, never stored; a kind with no result schema here (explorer jobs report on their own
 *     route) cannot be completed. `node.ping` has a result schema (`pingResultSchema`).
 *   - added (compatible): drift finding kinds `repair_failed` (`node.drift_fix`: one step of one
 *     database's repair failed, e.g. behind a tenant's lock; the others were still repaired),
 *     `extension_in_catalog` (a tenant's extension in pg_catalog or another system schema) and
 *     `tenant_guard` (the template's event trigger that refuses those is missing).
 *   - added (compatible): `node.drift` / `node.drift_fix` payloads carry optional `databases`
 *     (id, name, limits of each known database: drift compares role settings with the limits
 *     and derives the steward's login from the id); finding kinds `database_owner`,
 *     `database_setting`, `role_setting`, `owner_password`, `shadow_routine`,
 *     `catalog_visibility`, `steward_unreachable`. `known_databases` stays the list of names.
 *   - added (compatible): `database.create` results carry optional `steps_ms` (profiling);
 *     drift finding kind `missing_grant` (a privilege of one of our roles is gone).
 *   - added (compatible): `node.drift` / `node.drift_fix` schemas below; `node.drift_fix`
 *     returns `{fixed: [names], findings}` — the findings left after the repair.
 *
 * Secrets: no payload carries a clear password. A job that must log in as the owner (to prove
 * the database works through PgBouncer) fetches it with
 *   POST /v1/agent/jobs/:id/secret   body `jobSecretRequestSchema`  → 200 `jobSecretResponseSchema`
 * which the server answers only for the agent that holds the job's current lease.
 */
import { z } from 'zod';
import { parseCidr } from '../cidr.ts';
import { NAME_PATTERN } from '../identifiers.ts';
import { SCRAM_VERIFIER_PATTERN } from '../scram.ts';
import { grantAccessResultSchema, revokeAccessResultSchema } from './access-results.ts';
import {
  BACKUP_JOB_KINDS,
  backupCreateResultSchema,
  backupDeleteResultSchema,
  backupDownloadResultSchema,
  backupDrillResultSchema,
  backupRestoreResultSchema,
} from './backup-results.ts';
import {
  MOVE_JOB_KINDS,
  moveCleanupResultSchema,
  moveFreezeResultSchema,
  moveInResultSchema,
  moveOutResultSchema,
  moveThawResultSchema,
} from './move-results.ts';

export const JOB_KINDS = {
  ping: 'node.ping',
  create: 'database.create',
  delete: 'database.delete',
  rotate: 'database.rotate',
  allowlist: 'database.allowlist',
  limits: 'database.limits',
  drift: 'node.drift',
  driftFix: 'node.drift_fix',
} as const;

export const MAX_ALLOWLIST_ENTRIES = 100;

export const databaseNameSchema = z.string().min(1).max(63).regex(NAME_PATTERN);

/** The owner's password as PostgreSQL stores it (`SCRAM-SHA-256$…`), never the password. */
export const verifierSchema = z.string().max(512).regex(SCRAM_VERIFIER_PATTERN);

export const cidrSchema = z
  .string()
  .min(3)
  .max(64)
  .refine((v) => {
    try {
      parseCidr(v);
      return true;
    } catch {
      return false;
    }
  }, 'must be an IPv4 or IPv6 CIDR such as 203.0.113.7/32');

export const allowlistEntrySchema = z.object({
  cidr: cidrSchema,
  /** ISO-8601; null = does not expire. Expired entries are dropped by the agent on its own. */
  expires_at: z.iso.datetime({ offset: true }).nullable(),
});
export type AllowlistEntry = z.infer<typeof allowlistEntrySchema>;

export const allowlistSchema = z.array(allowlistEntrySchema).max(MAX_ALLOWLIST_ENTRIES);

export const limitsSchema = z.object({
  /** CONNECTION LIMIT of `<db>_owner` (the application's login). */
  owner_connection_limit: z.number().int().min(1).max(10_000),
  /** CONNECTION LIMIT of `<db>_reader`. */
  reader_connection_limit: z.number().int().min(1).max(10_000),
  /** statement_timeout of owner and reader, in ms; 0 = none. The migrator has none. */
  statement_timeout_ms: z.number().int().min(0).max(86_400_000),
  /** idle_in_transaction_session_timeout of owner, reader and migrator, in ms; 0 = none. */
  idle_in_transaction_timeout_ms: z.number().int().min(0).max(86_400_000),
});
export type DatabaseLimits = z.infer<typeof limitsSchema>;

/**
 * Sane defaults a server may use when the caller gives none. Owner + reader (22) is what a new
 * database commits against its node's tenant connection budget (server nodes.capacity.ts): the
 * embedded node (max_connections 1000, 3 superuser slots, a platform reserve of 100) holds 40 of them.
 * The owner's 20 equals PgBouncer's default_pool_size, so a full pool never meets the role's limit.
 */
export const DEFAULT_LIMITS: Readonly<DatabaseLimits> = {
  owner_connection_limit: 20,
  reader_connection_limit: 2,
  statement_timeout_ms: 60_000,
  idle_in_transaction_timeout_ms: 300_000,
};

const ident = { database_id: z.uuid(), name: databaseNameSchema };

export const createPayloadSchema = z.object({
  ...ident,
  verifier: verifierSchema,
  allowlist: allowlistSchema,
  limits: limitsSchema,
  /**
   * `name` was generated for this create (ADR 0039): any opaque name serves, so a warm-pool spare
   * under its own name may be handed out instead. Absent: the database is made under `name` (a
   * move's, or an older server's create).
   */
  generated_name: z.boolean().optional(),
});
export type CreatePayload = z.infer<typeof createPayloadSchema>;

const roleNameSchema = z.string().min(1).max(63);
export const roleNamesSchema = z.object({
  owner: roleNameSchema,
  reader: roleNameSchema,
  migrator: roleNameSchema,
  explorer: roleNameSchema,
});

/**
 * A warm-pool spare's name (`bulwark_db_<agent tag: 6 hex>_<10 hex>`, ADR 0028): the only name a
 * create's result may report as `physical_name` other than the one its job gave.
 */
export const SPARE_NAME_PATTERN = /^bulwark_db_[0-9a-f]{6}_[0-9a-f]{10}$/;

export const createResultSchema = z.object({
  /** The database's name in the API (the payload's `name`). */
  name: databaseNameSchema,
  /** The roles in PostgreSQL (of `physical_name`). */
  roles: roleNamesSchema,
  /**
   * The database's name in PostgreSQL and PgBouncer: the payload's `name` on the cold path, the
   * spare's own generated name when a warm-pool spare was handed out (ADR 0034). Absent from
   * agents before it: the payload's `name`.
   */
  physical_name: databaseNameSchema.optional(),
  /**
   * The owner's password when the agent set it (a spare's, made with its pooler entry ahead of
   * time; ADR 0034): the server seals it as the database's password and never stores it in the
   * job's result. Absent: the password the server sent the verifier of is the owner's.
   */
  owner_password: z.string().min(32).max(128).optional(),
  /** Time of the proving login through PgBouncer as the owner. */
  pooler_probe_ms: z.number().min(0),
  /** Where the job's time went (ms per step; steps overlap, see database-create.ts). */
  steps_ms: z
    .record(z.string().max(40), z.number().min(0))
    .refine((r) => Object.keys(r).length <= 64, 'at most 64 steps')
    .optional(),
});
export type CreateResult = z.infer<typeof createResultSchema>;

export const deletePayloadSchema = z.object(ident);
export const deleteResultSchema = z.object({ dropped: z.boolean() });

export const rotatePayloadSchema = z.object({ ...ident, verifier: verifierSchema });
export const rotateResultSchema = z.object({
  rotated_at: z.iso.datetime({ offset: true }),
  /** Backends of the owner role terminated on PostgreSQL (PgBouncer's are closed as well). */
  terminated_sessions: z.number().int().min(0),
});

export const allowlistPayloadSchema = z.object({ ...ident, allowlist: allowlistSchema });
export const allowlistResultSchema = z.object({ entries: allowlistSchema });

export const limitsPayloadSchema = z.object({ ...ident, limits: limitsSchema });
export const limitsResultSchema = z.object({ limits: limitsSchema });

export const jobSecretRequestSchema = z.object({ attempt: z.number().int().min(1).max(1000) });
export const jobSecretResponseSchema = z.object({ password: z.string().min(1).max(256) });

export const driftDatabaseSchema = z.object({
  id: z.uuid(),
  name: databaseNameSchema,
  /** The limits the control plane set (null when its record holds none valid). */
  limits: limitsSchema.nullable(),
});
export type DriftDatabase = z.infer<typeof driftDatabaseSchema>;

export const driftPayloadSchema = z.object({
  /** Every tenant database the control plane places on this node. */
  known_databases: z.array(databaseNameSchema).max(100_000),
  /** The same databases with their ids and limits (servers before this field send names only). */
  databases: z.array(driftDatabaseSchema).max(100_000).optional(),
});
export const driftFindingSchema = z.object({
  kind: z.enum([
    'unknown_database',
    'missing_database',
    'unexpected_role',
    'unexpected_superuser',
    'foreign_role',
    'public_database_privilege',
    'public_schema_privilege',
    'unexpected_grant',
    'missing_grant',
    'database_owner',
    'database_setting',
    'role_setting',
    'owner_password',
    'shadow_routine',
    'catalog_visibility',
    'steward_unreachable',
    'repair_failed',
    'extension_in_catalog',
    'tenant_guard',
    'range_function',
    'spare_tampered',
  ]),
  object: z.string().max(200),
  detail: z.string().max(1000),
});
/** The agent bounds its findings (per group and in size, drift.ts `boundFindings`); this is a backstop. */
const driftFindingsSchema = z.array(driftFindingSchema).max(10_000);
export const driftResultSchema = z.object({ findings: driftFindingsSchema });
export const driftFixResultSchema = z.object({
  fixed: z.array(databaseNameSchema).max(100_000),
  findings: driftFindingsSchema,
});

/** `node.ping`: the cluster's version and clock, proving the round trip. */
export const pingResultSchema = z.object({
  pg_version: z.string().min(1).max(1024),
  server_version_num: z.number().int().min(0).max(9_999_999),
  checked_at: z.iso.datetime({ offset: true }),
});

/**
 * The result schema of every job kind an agent completes with `POST /v1/agent/jobs/:id/complete`.
 * Explorer kinds are absent on purpose: their result goes to `/explorer-result` and the server
 * completes those jobs itself.
 */
/**
 * Result schemas defined by contract modules that import this one (execution.ts): they register
 * here when they load, so this file imports none of them (no import cycle).
 */
const lateResultSchemas: { executionOutcome?: z.ZodType<Record<string, unknown>> } = {};
export function registerExecutionOutcomeSchema(schema: z.ZodType<Record<string, unknown>>): void {
  lateResultSchemas.executionOutcome = schema;
}

export const jobResultSchemas: Readonly<Record<string, z.ZodType<Record<string, unknown>>>> = Object.freeze({
  [JOB_KINDS.ping]: pingResultSchema,
  [JOB_KINDS.create]: createResultSchema,
  [JOB_KINDS.delete]: deleteResultSchema,
  [JOB_KINDS.rotate]: rotateResultSchema,
  [JOB_KINDS.allowlist]: allowlistResultSchema,
  [JOB_KINDS.limits]: limitsResultSchema,
  [JOB_KINDS.drift]: driftResultSchema,
  [JOB_KINDS.driftFix]: driftFixResultSchema,
  [BACKUP_JOB_KINDS.create]: backupCreateResultSchema,
  [BACKUP_JOB_KINDS.restore]: backupRestoreResultSchema,
  [BACKUP_JOB_KINDS.drill]: backupDrillResultSchema,
  [BACKUP_JOB_KINDS.delete]: backupDeleteResultSchema,
  [BACKUP_JOB_KINDS.download]: backupDownloadResultSchema,
  // Moving a database between nodes (moves.ts, ADR 0031).
  [MOVE_JOB_KINDS.out]: moveOutResultSchema,
  [MOVE_JOB_KINDS.in]: moveInResultSchema,
  [MOVE_JOB_KINDS.freeze]: moveFreezeResultSchema,
  [MOVE_JOB_KINDS.thaw]: moveThawResultSchema,
  [MOVE_JOB_KINDS.cleanup]: moveCleanupResultSchema,
  // Fallback delivery of a governed execution: the job completes with the ExecutionOutcome
  // (registered by execution.ts, which imports this file; until then no result passes).
  'request.execute': z.lazy(() => lateResultSchemas.executionOutcome ?? z.never()),
  // Just-in-time credentials (EXECUTION_JOB_KINDS in execution.ts, which imports this file).
  'access.grant': grantAccessResultSchema,
  'access.revoke': revokeAccessResultSchema,
});

export type JobResultCheck =
  | { ok: true; result: Record<string, unknown> }
  | { ok: false; reason: string; issues: { path: string; message: string }[] };

/**
 * Checks a job's result against its kind's schema; on success the parsed result (unknown keys
 * dropped) is what may be sent and stored. The reason is safe to show and store (paths and
 * zod messages only, never the offending values), bounded in length.
 */
export function checkJobResult(kind: string, result: unknown): JobResultCheck {
  const schema = Object.hasOwn(jobResultSchemas, kind) ? jobResultSchemas[kind] : undefined;
  if (!schema) {
    const reason = `the job contract has no result for kind ${JSON.stringify(kind.slice(0, 100))}`;
    return { ok: false, reason, issues: [] };
  }
  const parsed = schema.safeParse(result);
  if (parsed.success) return { ok: true, result: parsed.data };
  const issues = parsed.error.issues.slice(0, 20).map((i) => ({
    path: ['result', ...i.path.map(String)].join('.').slice(0, 200),
    message: i.message.slice(0, 200),
  }));
  const listed = issues.map((i) => `${i.path}: ${i.message}`).join('; ');
  return {
    ok: false,
    reason: `the result of ${kind} does not match its schema (${listed})`.slice(0, 1000),
    issues,
  };
}
