/**
 * Governed execution between the server and the agent (issue 14): what the server sends when a
 * request runs (or is dry-run at preflight), what the agent answers, and the jobs of
 * just-in-time credentials. Both sides import these schemas; the agent re-checks everything
 * against the signed execution token (src/shared/execution-token.ts) before it touches a database.
 *
 * Delivery: an `execute` frame on the agent's existing WebSocket channel (ADR 0009) when the
 * server process holds one for the node, else a `request.execute` job with the same payload
 * (the agent completes the job with the same outcome). Access grants are always jobs (durable:
 * a grant must be revocable even when no channel is open).
 */
import { z } from 'zod';
import { EXECUTION_CAPABILITIES } from '../execution-token.ts';
import { accessLoginSchema } from './access-results.ts';
// explorer-channel.ts imports this file (its frames carry executions): only a lazy reference back.
import * as explorer from './explorer-channel.ts';
import { databaseNameSchema, registerExecutionOutcomeSchema } from './jobs.ts';

export const EXECUTION_LIMITS = {
  /** A governed request's SQL (a migration may be long; the classifier's own bound is 1,000,000). */
  maxSqlLength: 200_000,
  maxStatements: 500,
  defaultStatementTimeoutMs: 60_000,
  maxStatementTimeoutMs: 3_600_000,
  defaultLockTimeoutMs: 5_000,
  maxLockTimeoutMs: 60_000,
  defaultRows: 1_000,
  /** The explorer's caps (EXPLORER_LIMITS): a result passes the same channel. */
  maxRows: 10_000,
  defaultBytes: 1024 * 1024,
  maxBytes: 10 * 1024 * 1024,
  /** The EXPLAIN (FORMAT JSON) plan of one statement, as text: longer plans are cut. */
  maxPlanChars: 200_000,
} as const;

export const EXECUTION_JOB_KINDS = {
  /** Fallback delivery of an `execute` frame when no channel is open. */
  execute: 'request.execute',
  /** Create a time-boxed login (just-in-time credentials). */
  grantAccess: 'access.grant',
  /** Remove it: terminate its sessions, drop it from PgBouncer, drop the role. */
  revokeAccess: 'access.revoke',
} as const;

const capabilitySchema = z.enum(EXECUTION_CAPABILITIES);
const tokenSchema = z.string().min(1).max(2048);

/** Server → agent: run (or dry-run) one approved request. */
export const executePayloadSchema = z
  .object({
    database_id: z.uuid(),
    name: databaseNameSchema,
    request_id: z.uuid(),
    /** The execution token (mode `execute` or `dry_run`); the agent trusts nothing here that it does not bind. */
    token: tokenSchema,
    sql: z.string().min(1).max(EXECUTION_LIMITS.maxSqlLength),
    mode: z.enum(['execute', 'dry_run']),
    capability: capabilitySchema,
    statement_timeout_ms: z.number().int().min(100).max(EXECUTION_LIMITS.maxStatementTimeoutMs),
    lock_timeout_ms: z.number().int().min(100).max(EXECUTION_LIMITS.maxLockTimeoutMs),
    row_limit: z.number().int().min(1).max(EXECUTION_LIMITS.maxRows),
    byte_limit: z.number().int().min(1024).max(EXECUTION_LIMITS.maxBytes),
    /** Dry run only: also return each explainable statement's EXPLAIN (FORMAT JSON) plan. */
    explain: z.boolean(),
  })
  .strict();
export type ExecutePayload = z.infer<typeof executePayloadSchema>;

export const statementOutcomeSchema = z.object({
  /** PostgreSQL's command tag verb: `UPDATE`, `CREATE TABLE`… */
  command: z.string().max(64),
  /** Rows the statement affected or returned (null for a command without a count). */
  row_count: z.number().int().min(0).nullable(),
  /** EXPLAIN (FORMAT JSON) of the statement, as text (dry run with `explain`), else null. */
  plan: z.string().max(EXECUTION_LIMITS.maxPlanChars).nullable(),
});
export type StatementOutcome = z.infer<typeof statementOutcomeSchema>;

/**
 * Why the agent would not run a request at all (nothing was executed). `token` reasons are the
 * verifier's RefusalReason codes; `config` is the agent's own capability/mode config; `sql` is
 * its own parse of the text (e.g. CONCURRENTLY mixed with other statements).
 */
export const executionRefusalSchema = z.object({
  reason: z.string().min(1).max(64),
  message: z.string().max(1_000),
});

export const executionOutcomeSchema = z.discriminatedUnion('kind', [
  z.object({
    kind: z.literal('executed'),
    /** `execute`: true once committed. `dry_run`: always false (rolled back). */
    committed: z.boolean(),
    statements: z.array(statementOutcomeSchema).max(EXECUTION_LIMITS.maxStatements),
    /** The sum of the row counts of INSERT/UPDATE/DELETE/MERGE statements (what approvals bind). */
    affected_rows: z.number().int().min(0),
    /** Rows of the last statement that returned rows (capped), or null. */
    result: z.lazy(() => explorer.queryOutputSchema).nullable(),
    duration_ms: z.number().min(0),
  }),
  z.object({
    kind: z.literal('failed'),
    /** A PostgreSQL error (or `P0M01` for a row-count mismatch: both counts in `mismatch`). */
    error: z.object({
      sqlstate: z.string().regex(/^[0-9A-Z]{5}$/),
      message: z.string().max(2_000),
      /** 0-based index of the statement that failed, when known. */
      statement_index: z.number().int().min(0).nullable(),
      position: z.number().int().min(0).nullable(),
    }),
    mismatch: z
      .object({ approved_rows: z.number().int().min(0), affected_rows: z.number().int().min(0) })
      .nullable(),
    /** Always true: a failed request leaves nothing behind (CONCURRENTLY alone runs outside a transaction). */
    rolled_back: z.boolean(),
    duration_ms: z.number().min(0),
  }),
  z.object({ kind: z.literal('refused'), refusal: executionRefusalSchema }),
]);
export type ExecutionOutcome = z.infer<typeof executionOutcomeSchema>;
// The `request.execute` job completes with an outcome (jobs.ts lists it without importing this file).
registerExecutionOutcomeSchema(executionOutcomeSchema);

/** SQLSTATE of a row-count mismatch at execution (class P0: our own, never PostgreSQL's). */
export const ROW_COUNT_MISMATCH_SQLSTATE = 'P0M01';

// --- Just-in-time credentials (jobs) ------------------------------------------------------------

/** A JIT login's name: `<db>_jit_<8 hex>` shape is chosen by the server; validated as an identifier. */
const loginSchema = accessLoginSchema;

export const grantAccessPayloadSchema = z
  .object({
    database_id: z.uuid(),
    name: databaseNameSchema,
    grant_id: z.uuid(),
    /** Execution token of mode `access`, binding accessGrantText() of this payload. */
    token: tokenSchema,
    login: loginSchema,
    capability: capabilitySchema,
    /** SCRAM verifier of the password the requester is shown once (the agent never sees the password). */
    verifier: z.string().min(1).max(512),
    valid_until: z.iso.datetime({ offset: true }),
  })
  .strict();
export type GrantAccessPayload = z.infer<typeof grantAccessPayloadSchema>;

export { grantAccessResultSchema, revokeAccessResultSchema } from './access-results.ts';

export const revokeAccessPayloadSchema = z
  .object({ database_id: z.uuid(), name: databaseNameSchema, grant_id: z.uuid(), login: loginSchema })
  .strict();

/**
 * The canonical text an access token's `sql_sha256` binds: the agent recomputes it from the job's
 * own fields, so the server cannot sign one grant and send another.
 */
export function accessGrantText(
  p: Pick<GrantAccessPayload, 'name' | 'login' | 'capability' | 'valid_until'>,
): string {
  return `bulwark-access:${p.name}:${p.login}:${p.capability}:${new Date(p.valid_until).toISOString()}`;
}
