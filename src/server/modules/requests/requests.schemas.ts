/**
 * The governed request API's shapes (issue 14): bodies, queries and the Request object every
 * route answers with (the response schema is the allowlist of what leaves the server).
 */
import { z } from 'zod';
import { EXECUTION_LIMITS } from '../../../shared/contracts/execution.ts';
import { queryOutputSchema } from '../../../shared/contracts/explorer-channel.ts';
import { EXECUTION_CAPABILITIES } from '../../../shared/execution-token.ts';
import { pageQuery } from '../../http/pagination.ts';
import { nameParams } from '../databases/databases.schemas.ts';

export const REQUEST_STATUSES = [
  'pending',
  'approved',
  'rejected',
  'cancelled',
  'expired',
  'executing',
  'executed',
  'failed',
] as const;
export type RequestStatus = (typeof REQUEST_STATUSES)[number];

/** Text a person writes (a reason, a comment): lines allowed, other control characters and NUL not. */
const prose = (min: number, max: number) =>
  z
    .string()
    .min(min)
    .max(max)
    .regex(
      /^[^\p{Cs}\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f]*$/u,
      'must not contain control characters',
    );

const sqlText = z
  .string()
  .min(1)
  .max(EXECUTION_LIMITS.maxSqlLength)
  .describe(
    `The SQL to run (one or more statements, run in one transaction), at most ${EXECUTION_LIMITS.maxSqlLength} characters`,
  );
const capability = z
  .enum(EXECUTION_CAPABILITIES)
  .describe(
    'The database role it runs as: reader, or migrator (default: reader for reads, migrator otherwise)',
  );

export const requestParams = nameParams.extend({ id: z.uuid() });

const reasonField = prose(1, 2000).describe('Why: shown to approvers, kept in the audit log');
/** Run SQL, or (`access`) be given a time-boxed login: exactly one of the two. */
export const createRequestBody = z.union([
  z.object({ sql: sqlText, reason: reasonField, capability: capability.optional() }).strict(),
  z
    .object({
      access: z
        .object({
          role: z.enum(EXECUTION_CAPABILITIES),
          duration_s: z.number().int().min(60).max(31_536_000),
        })
        .strict()
        .describe('Just-in-time access: a temporary login with this role for duration_s seconds'),
      reason: reasonField,
    })
    .strict(),
]);
export type CreateRequestBody = {
  sql?: string | undefined;
  reason: string;
  capability?: 'reader' | 'migrator' | undefined;
  access?: { role: 'reader' | 'migrator'; duration_s: number } | undefined;
};

export const editRequestBody = z.object({ sql: sqlText, reason: prose(1, 2000).optional() }).strict();

export const approveBody = z.object({ comment: prose(0, 2000).optional() }).strict();
export const rejectBody = z.object({ comment: prose(1, 2000) }).strict();
export const executeBody = z
  .object({
    break_glass: z
      .object({
        reason: prose(10, 2000).describe(
          'Why approval is skipped (10-2000 characters): audited and notified',
        ),
      })
      .strict()
      .optional(),
  })
  .strict();

export const preflightBody = z
  .object({ sql: sqlText, capability: capability.optional(), dry_run: z.boolean().optional() })
  .strict();

const requesterFilter = z
  .string()
  .max(100)
  .regex(/^(me|(user|key):[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/)
  .optional()
  .describe('`me`, `user:<id>` or `key:<id>`');
export const listQuery = pageQuery.extend({
  status: z.enum(REQUEST_STATUSES).optional(),
  requester: requesterFilter,
});
export const inboxQuery = pageQuery.extend({
  status: z.enum(REQUEST_STATUSES).optional(),
  awaiting: z.literal('me').optional().describe('`me`: pending requests you may still approve'),
  requester: requesterFilter,
});

const sqlstate = z.string().max(5);
const errorShape = z.object({ sqlstate, message: z.string().max(2000) });
const statementOutcome = z.object({
  command: z.string().max(64),
  row_count: z.number().int().nullable(),
  plan: z.string().max(EXECUTION_LIMITS.maxPlanChars).nullable(),
});
const dryRunSchema = z.object({
  affected_rows: z.number().int(),
  statements: z.array(statementOutcome).max(EXECUTION_LIMITS.maxStatements),
  ran_at: z.string().max(40),
});

export const classificationSchema = z.object({
  class: z.enum(['read', 'write', 'ddl', 'destructive', 'refused']),
  statements: z
    .array(
      z.object({
        class: z.enum(['read', 'write', 'ddl', 'destructive', 'refused']),
        command: z.string().max(100).optional(),
        reasons: z.array(z.string().max(1000)).max(100),
      }),
    )
    .max(EXECUTION_LIMITS.maxStatements),
  reasons: z.array(z.string().max(1000)).max(500),
  parse_error: z.object({ message: z.string().max(1000), position: z.number().int().nullable() }).nullable(),
});
export type ClassificationView = z.infer<typeof classificationSchema>;

export const findingSchema = z.object({
  code: z.string().max(64),
  severity: z.enum(['warn', 'block']),
  message: z.string().max(1000),
  statement_index: z.number().int(),
});
export type FindingView = z.infer<typeof findingSchema>;

export const policyViewSchema = z.object({
  version: z.number().int(),
  rule: z.string().max(200),
  why: z.string().max(1000),
  environment: z.string().max(100).nullable(),
  approvals_required: z.number().int(),
  admin_approvals_required: z.number().int(),
});
export type PolicyView = z.infer<typeof policyViewSchema>;

const at = z.string().max(40);

export const requestSchema = z.object({
  id: z.uuid(),
  database: z.string().max(63),
  status: z.enum(REQUEST_STATUSES),
  kind: z.enum(['sql', 'access']),
  sql: z.string().max(EXECUTION_LIMITS.maxSqlLength).nullable(),
  sql_sha256: z.string().max(64).nullable(),
  reason: z.string().max(2000),
  capability: z.enum(EXECUTION_CAPABILITIES),
  access: z.object({ role: z.enum(EXECUTION_CAPABILITIES), duration_s: z.number().int() }).nullable(),
  classification: classificationSchema,
  findings: z.array(findingSchema).max(1000),
  requester: z.object({
    kind: z.enum(['user', 'key']),
    id: z.string().max(36).nullable(),
    name: z.string().max(200),
  }),
  policy: policyViewSchema,
  approvals: z
    .array(
      z.object({
        user_id: z.uuid(),
        name: z.string().max(200),
        role: z.string().max(20).nullable(),
        comment: z.string().max(2000).nullable(),
        created_at: at,
        counts: z.boolean(),
      }),
    )
    .max(1000),
  rejection: z
    .object({
      user_id: z.string().max(36),
      name: z.string().max(200),
      comment: z.string().max(2000),
      created_at: at,
    })
    .nullable(),
  approvals_counted: z.number().int(),
  admin_approvals_counted: z.number().int(),
  dry_run: dryRunSchema.nullable(),
  dry_run_error: errorShape.nullable(),
  approved_rows: z.number().int().nullable(),
  executions: z.object({ count: z.number().int(), max: z.number().int() }),
  break_glass: z
    .object({ user_id: z.string().max(36), name: z.string().max(200), reason: z.string().max(2000), at })
    .nullable(),
  last_execution: z
    .object({
      status: z.enum(['executed', 'failed', 'refused']),
      affected_rows: z.number().int().nullable(),
      error: errorShape.nullable(),
      mismatch: z.object({ approved_rows: z.number().int(), affected_rows: z.number().int() }).nullable(),
      at,
    })
    .nullable(),
  result_available: z.boolean(),
  result_expires_at: at.nullable(),
  expires_at: at,
  approval_expires_at: at.nullable(),
  created_at: at,
  updated_at: at,
});
export type RequestView = z.infer<typeof requestSchema>;

export const executeResponseSchema = requestSchema.extend({
  credentials: z
    .object({
      login: z.string().max(63),
      password: z.string().max(256),
      connection_string: z.string().max(1000),
      valid_until: at,
    })
    .optional()
    .describe('Access requests only, shown once'),
});

export const resultSchema = z.object({
  columns: queryOutputSchema.shape.columns,
  rows: queryOutputSchema.shape.rows,
  row_count: z.number().int(),
  truncated: z.boolean(),
  statements: z.array(statementOutcome).max(EXECUTION_LIMITS.maxStatements),
  affected_rows: z.number().int(),
  executed_at: at,
  expires_at: at,
});
export type RequestResult = z.infer<typeof resultSchema>;

export const preflightResponseSchema = z.object({
  classification: classificationSchema,
  findings: z.array(findingSchema).max(1000),
  policy: policyViewSchema.extend({ allowed: z.boolean() }),
  dry_run: dryRunSchema.nullable(),
  dry_run_error: errorShape.nullable(),
});
