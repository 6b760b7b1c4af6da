/**
 * A request's SQL judged for the workflow (issue 14): its class with the real parser, review
 * findings at the severities of the database's rule set ('off' drops one), and the policy
 * decision. Refused SQL, unparseable SQL and a finding of severity `block` never become a request.
 */
import { EXECUTION_LIMITS } from '../../../shared/contracts/execution.ts';
import { AppError } from '../../../shared/errors.ts';
import {
  type Decision,
  decide,
  type GovernancePolicy,
  type MemberRole,
  type PolicyClass,
} from '../../../shared/policy/governance.ts';
import { classifySql, type SqlClass } from '../../../shared/sql/sql-classifier.ts';
import type { Caller } from '../../http/caller.ts';
import type { ClassificationView, FindingView, PolicyView } from './requests.schemas.ts';

export type Judged = {
  cls: SqlClass;
  classification: ClassificationView;
  findings: FindingView[];
};

/** The role a caller requests as: a member's role, or a key's level mapped (read → viewer, write → member, admin → admin). */
export function requesterRole(caller: Caller): MemberRole {
  if (caller.kind === 'user') return caller.role;
  return caller.level === 'admin' ? 'admin' : caller.level === 'write' ? 'member' : 'viewer';
}

export function judgeSql(sql: string, findings: Decision['rules']['findings']): Judged {
  const c = classifySql(sql, { maxLength: EXECUTION_LIMITS.maxSqlLength, severities: findings });
  const statements = c.statements.map((s) => ({
    class: s.class,
    command: s.kind.slice(0, 100),
    reasons: s.reasons,
  }));
  const reasons = [...new Set(c.statements.filter((s) => s.class === c.class).flatMap((s) => s.reasons))];
  return {
    cls: c.class,
    classification: {
      class: c.class,
      statements,
      reasons: c.parse_error ? [c.parse_error.message] : reasons,
      parse_error: c.parse_error
        ? { message: c.parse_error.message, position: c.parse_error.position }
        : null,
    },
    findings: c.findings.map((f) => ({
      code: f.code,
      severity: f.severity,
      message: f.message,
      statement_index: f.statement_index,
    })),
  };
}

/** Refuses what can never be approved: refused or unparseable SQL, a blocking finding. */
export function assertApprovable(j: Judged): void {
  if (j.cls === 'refused') {
    const why = j.classification.parse_error
      ? `the SQL could not be parsed: ${j.classification.parse_error.message}`
      : j.classification.reasons.join('; ');
    throw new AppError('query_refused', `This SQL cannot be requested: ${why}`.slice(0, 1000), {
      classification: j.classification,
    });
  }
  const blocking = j.findings.filter((f) => f.severity === 'block');
  if (blocking.length > 0)
    throw new AppError(
      'query_refused',
      `Blocked by review: ${blocking.map((f) => `${f.code} (${f.message})`).join('; ')}`.slice(0, 1000),
      { findings: blocking },
    );
}

export function policyView(version: number, d: Decision): PolicyView {
  return {
    version,
    rule: d.rule,
    why: d.why,
    environment: d.environment,
    approvals_required: d.approvals,
    admin_approvals_required: d.admin_approvals,
  };
}

/**
 * The policy class of SQL run with a capability: a read run as the migrator is decided as a write
 * (it runs in a read-write transaction with the migrator's rights: tenant views, functions and
 * operators it calls may write, and tables withheld from the reader are readable), so it needs the
 * write rule's approvals and requesters. Only a read as the reader is policy class `read`.
 */
export function policyClassOf(cls: PolicyClass, capability: 'reader' | 'migrator'): PolicyClass {
  return cls === 'read' && capability === 'migrator' ? 'write' : cls;
}

/** `decide()` for SQL of class `cls` run with `capability`; its `why` says when a read is decided as a write. */
export function decideFor(
  policy: GovernancePolicy | null,
  input: { database: string; cls: PolicyClass; capability: 'reader' | 'migrator'; role: MemberRole },
): Decision {
  const asCls = policyClassOf(input.cls, input.capability);
  const d = decide(policy, { database: input.database, cls: asCls, role: input.role });
  if (asCls === input.cls) return d;
  return {
    ...d,
    why: `a read run as the migrator is decided as a write (read-write, with the migrator's rights); ${d.why}`,
  };
}

/** The decision for a caller, or 403 policy_denied. */
export function decideOrDeny(
  policy: GovernancePolicy | null,
  input: { database: string; cls: PolicyClass; caller: Caller; capability?: 'reader' | 'migrator' },
): Decision {
  const d = decideFor(policy, {
    database: input.database,
    cls: input.cls,
    capability: input.capability ?? 'reader',
    role: requesterRole(input.caller),
  });
  if (!d.allowed) throw new AppError('policy_denied', d.why, { rule: d.rule, why: d.why });
  return d;
}

export const isDml = (cls: string) => cls === 'write' || cls === 'destructive';
