/**
 * The governance policy routes' shapes: what leaves the server about a policy (the compiled
 * rules are an allowlist too: every field the parser can produce, nothing else).
 */
import { z } from 'zod';
import { POLICY_CLASSES } from '../../../shared/policy/governance.ts';
import { FINDING_CODES, MAX_POLICY_BYTES } from '../../../shared/policy/policy-file.ts';

const role = z.enum(['owner', 'admin', 'member', 'viewer']);
const roles = z.array(role).max(4);

const classRule = z.object({
  requesters: roles.optional(),
  approvals: z.number().int().min(0).max(10).optional(),
  admin_approvals: z.number().int().min(0).max(10).optional(),
});

const ruleSetPatch = z.object({
  classes: z.partialRecord(z.enum(POLICY_CLASSES), classRule).optional(),
  request_lifetime_s: z.number().int().optional(),
  approval_lifetime_s: z.number().int().optional(),
  max_executions: z.number().int().optional(),
  max_access_s: z.number().int().optional(),
  findings: z.partialRecord(z.enum(FINDING_CODES), z.enum(['warn', 'block', 'off'])).optional(),
  break_glass: roles.optional(),
});

const label = z.string().max(63);

export const governancePolicySchema = z
  .object({
    version: z.literal(1),
    defaults: ruleSetPatch.optional(),
    environments: z.record(label, ruleSetPatch).optional(),
    databases: z
      .record(label, ruleSetPatch.extend({ environment: z.string().max(32).optional() }))
      .optional(),
  })
  .describe('The validated policy as the workflow reads it (durations in seconds)');

const appliedBy = z
  .object({ kind: z.enum(['user', 'key']), id: z.uuid(), name: z.string().max(100) })
  .nullable()
  .describe('Who applied it (null: removed since, or not shown to this caller)');

export const policySchema = z.object({
  version: z.number().int().min(0).describe('0: no policy applied; the built-in rules decide'),
  source: z
    .string()
    .max(MAX_POLICY_BYTES)
    .nullable()
    .describe('The YAML file as applied (null: none, or a database-scoped caller)'),
  source_sha256: z.string().max(64).nullable(),
  applied_at: z.string().max(40).nullable(),
  applied_by: appliedBy,
  policy: governancePolicySchema.nullable(),
});

const policyVersionSchema = z.object({
  version: z.number().int().min(1),
  source_sha256: z.string().max(64),
  applied_at: z.string().max(40),
  applied_by: appliedBy,
});

export const POLICY_VERSIONS_MAX = 100;

export const policyVersionsQuery = z.object({
  limit: z.coerce.number().int().min(1).max(POLICY_VERSIONS_MAX).default(20).describe('At most 100'),
  before: z.coerce
    .number()
    .int()
    .min(2)
    .max(2_147_483_647)
    .optional()
    .describe('Versions older than this one'),
});

export const policyVersionsSchema = z.object({
  items: z.array(policyVersionSchema).max(POLICY_VERSIONS_MAX),
});

export const applyPolicyBody = z
  .object({
    source: z
      .string()
      .min(1)
      .max(MAX_POLICY_BYTES)
      .describe(`The policy file (YAML, at most ${MAX_POLICY_BYTES} bytes); see docs/examples/policy.yaml`),
  })
  .strict();
