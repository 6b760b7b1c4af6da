/**
 * The effective rules of a policy, level by level, for the read-only policy page. The merge is the
 * server's (src/shared/policy/governance.ts: built-in defaults, then `defaults`, then the
 * database's environment, then the database, each field by field); the dashboard is built from
 * web/ alone, so the built-in values are repeated here — keep them in step with BUILTIN_RULES.
 */
import type { Policy } from './types.ts';

type Patch = NonNullable<NonNullable<Policy['policy']>['defaults']>;
type Role = 'owner' | 'admin' | 'member' | 'viewer';

export const CLASSES = ['read', 'write', 'ddl', 'destructive', 'access_read', 'access_write'] as const;
type Class = (typeof CLASSES)[number];
type ClassRule = { requesters: Role[]; approvals: number; admin_approvals: number };

export type Rules = {
  classes: Record<Class, ClassRule>;
  request_lifetime_s: number;
  approval_lifetime_s: number;
  max_executions: number;
  max_access_s: number;
  break_glass: Role[];
  findings: Record<string, string>;
};

const ALL: Role[] = ['owner', 'admin', 'member', 'viewer'];
const WRITERS: Role[] = ['owner', 'admin', 'member'];

const BUILTIN: Rules = {
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
  break_glass: ['owner', 'admin'],
  findings: {},
};

function merge(base: Rules, patch: Patch | undefined): Rules {
  if (!patch) return base;
  const classes = { ...base.classes };
  for (const cls of CLASSES) {
    const p = patch.classes?.[cls];
    if (p) classes[cls] = { ...classes[cls], ...p };
  }
  const findings = { ...base.findings };
  for (const [code, severity] of Object.entries(patch.findings ?? {}))
    if (severity) findings[code] = severity;
  return {
    classes,
    request_lifetime_s: patch.request_lifetime_s ?? base.request_lifetime_s,
    approval_lifetime_s: patch.approval_lifetime_s ?? base.approval_lifetime_s,
    max_executions: patch.max_executions ?? base.max_executions,
    max_access_s: patch.max_access_s ?? base.max_access_s,
    break_glass: patch.break_glass ?? base.break_glass,
    findings,
  };
}

/** Every level the policy names, with the rules in force there: defaults, each environment, each database. */
export function effectiveRules(policy: Policy['policy']): { scope: string; rules: Rules }[] {
  const defaults = merge(BUILTIN, policy?.defaults);
  const out = [{ scope: policy?.defaults ? 'defaults' : 'built-in defaults', rules: defaults }];
  if (!policy) return out;
  const envs = policy.environments ?? {};
  for (const [name, patch] of Object.entries(envs))
    out.push({ scope: `environments.${name}`, rules: merge(defaults, patch) });
  for (const [name, patch] of Object.entries(policy.databases ?? {})) {
    const env =
      patch.environment && Object.hasOwn(envs, patch.environment) ? envs[patch.environment] : undefined;
    out.push({
      scope: `databases.${name}${patch.environment ? ` (${patch.environment})` : ''}`,
      rules: merge(merge(defaults, env), patch),
    });
  }
  return out;
}
