/**
 * Governance policy (issue 14, "Policy"): who may request what, how many approvals each class of
 * request needs, and how long requests and approvals live. An account has one active policy
 * (versioned; applied as code with `bulwark policy apply`), made of rule sets: the built-in
 * defaults, then its `environments.<label>` (a database's label comes from `databases.<name>.
 * environment`), then `databases.<name>` — each later level overrides field by field.
 *
 * `decide()` is the one place a request's requirements are computed; `bulwark policy explain`
 * and the request workflow both call it, so what explain says is what the workflow does.
 */
import type { FindingCode, Severity } from '../sql/sql-findings.ts';

export type MemberRole = 'owner' | 'admin' | 'member' | 'viewer';

/** A request's class for policy: the SQL classes, plus just-in-time access by capability. */
export const POLICY_CLASSES = ['read', 'write', 'ddl', 'destructive', 'access_read', 'access_write'] as const;
export type PolicyClass = (typeof POLICY_CLASSES)[number];

export type ClassRule = {
  /** Member roles that may create such a request (API keys act with their level's role: read → viewer, write → member, admin → admin). */
  requesters: MemberRole[];
  /** Distinct approvers needed (0: runs at once). */
  approvals: number;
  /** Of those, how many must be account owners or admins. */
  admin_approvals: number;
};

export type FindingSeverity = Severity | 'off';

export type RuleSet = {
  classes: Record<PolicyClass, ClassRule>;
  /** Seconds a pending request lives before it expires. */
  request_lifetime_s: number;
  /** Seconds an approved request stays executable after its last approval. */
  approval_lifetime_s: number;
  /** How many times an approved request may run. */
  max_executions: number;
  /** Longest just-in-time access, in seconds. */
  max_access_s: number;
  /** Review finding severities (unset: the finding's default). */
  findings: Partial<Record<FindingCode, FindingSeverity>>;
  /** Roles that may break glass (execute without approval, with a reason). Never an API key. */
  break_glass: MemberRole[];
};

/** A partial rule set, as written in a policy file at one level. */
export type RuleSetPatch = Partial<Omit<RuleSet, 'classes' | 'findings'>> & {
  classes?: Partial<Record<PolicyClass, Partial<ClassRule>>>;
  findings?: Partial<Record<FindingCode, FindingSeverity>>;
};

export type GovernancePolicy = {
  version: 1;
  defaults?: RuleSetPatch;
  environments?: Record<string, RuleSetPatch>;
  databases?: Record<string, RuleSetPatch & { environment?: string }>;
};

const ALL: MemberRole[] = ['owner', 'admin', 'member', 'viewer'];
const WRITERS: MemberRole[] = ['owner', 'admin', 'member'];

/** The built-in defaults the issue names: reads by members run at once, writes 1, DDL/destructive 2 incl. an admin. */
export const BUILTIN_RULES: RuleSet = {
  classes: {
    read: { requesters: ALL, approvals: 0, admin_approvals: 0 },
    write: { requesters: WRITERS, approvals: 1, admin_approvals: 0 },
    ddl: { requesters: WRITERS, approvals: 2, admin_approvals: 1 },
    destructive: { requesters: WRITERS, approvals: 2, admin_approvals: 1 },
    access_read: { requesters: WRITERS, approvals: 1, admin_approvals: 0 },
    access_write: { requesters: WRITERS, approvals: 2, admin_approvals: 1 },
  },
  request_lifetime_s: 7 * 24 * 3600,
  approval_lifetime_s: 24 * 3600,
  max_executions: 1,
  max_access_s: 8 * 3600,
  findings: {},
  break_glass: ['owner', 'admin'],
};

export type DecisionInput = {
  database: string;
  cls: PolicyClass;
  /** The requester's effective role (a key's level mapped to a role). */
  role: MemberRole;
};

export type Decision = {
  /** May this requester ask at all? */
  allowed: boolean;
  approvals: number;
  admin_approvals: number;
  /** The environment label the database has under this policy, if any. */
  environment: string | null;
  /** The policy path that set the deciding class rule: `builtin`, `defaults`, `environments.production`, `databases.shop`. */
  rule: string;
  /** One sentence a person can read: which rule decides and why. */
  why: string;
  rules: RuleSet;
};

/** `patch` over `base`, field by field (a class rule field by field too). */
export function mergeRules(base: RuleSet, patch: RuleSetPatch | undefined): RuleSet {
  if (!patch) return base;
  const classes = { ...base.classes };
  for (const [cls, rule] of Object.entries(patch.classes ?? {}) as [PolicyClass, Partial<ClassRule>][])
    classes[cls] = { ...classes[cls], ...rule };
  return {
    classes,
    request_lifetime_s: patch.request_lifetime_s ?? base.request_lifetime_s,
    approval_lifetime_s: patch.approval_lifetime_s ?? base.approval_lifetime_s,
    max_executions: patch.max_executions ?? base.max_executions,
    max_access_s: patch.max_access_s ?? base.max_access_s,
    findings: { ...base.findings, ...(patch.findings ?? {}) },
    break_glass: patch.break_glass ?? base.break_glass,
  };
}

/** The rule set that applies to one database, and the level that last set each class's rule. */
export function rulesFor(
  policy: GovernancePolicy | null,
  database: string,
): { rules: RuleSet; environment: string | null; origin: Record<PolicyClass, string> } {
  const origin = Object.fromEntries(POLICY_CLASSES.map((c) => [c, 'builtin'])) as Record<PolicyClass, string>;
  let rules = BUILTIN_RULES;
  if (!policy) return { rules, environment: null, origin };
  const db = Object.hasOwn(policy.databases ?? {}, database) ? policy.databases?.[database] : undefined;
  const environment = db?.environment ?? null;
  const env =
    environment !== null && Object.hasOwn(policy.environments ?? {}, environment)
      ? policy.environments?.[environment]
      : undefined;
  const levels: [string, RuleSetPatch | undefined][] = [
    ['defaults', policy.defaults],
    [`environments.${environment}`, env],
    [`databases.${database}`, db],
  ];
  for (const [name, patch] of levels) {
    if (!patch) continue;
    rules = mergeRules(rules, patch);
    for (const cls of Object.keys(patch.classes ?? {}) as PolicyClass[]) origin[cls] = name;
  }
  return { rules, environment, origin };
}

export function decide(policy: GovernancePolicy | null, input: DecisionInput): Decision {
  const { rules, environment, origin } = rulesFor(policy, input.database);
  const rule = rules.classes[input.cls];
  const where = origin[input.cls] === 'builtin' ? 'the built-in defaults' : `policy ${origin[input.cls]}`;
  const allowed = rule.requesters.includes(input.role);
  const why = !allowed
    ? `${where}: ${input.cls} requests may be made by ${rule.requesters.join(', ') || 'nobody'}, not by a ${input.role}`
    : rule.approvals === 0
      ? `${where}: ${input.cls} requests by a ${input.role} run without approval`
      : `${where}: ${input.cls} requests need ${rule.approvals} approval${rule.approvals === 1 ? '' : 's'}${
          rule.admin_approvals > 0 ? `, ${rule.admin_approvals} of them by an owner or admin` : ''
        } (never the requester's own)`;
  return {
    allowed,
    approvals: rule.approvals,
    admin_approvals: rule.admin_approvals,
    environment,
    rule: `${origin[input.cls]}${origin[input.cls] === 'builtin' ? '' : `.classes.${input.cls}`}`,
    why,
    rules,
  };
}
