/**
 * Governance policies as code (issue 14): read the account's active policy, apply a new version
 * (validated by the same parser as `bulwark policy apply`), list the versions. Who may is the
 * policy table's (policy.read, policy.write); a user applying one also needs step-up, so a stolen
 * session cannot quietly lower the approvals every later request needs.
 */
import { createHash } from 'node:crypto';
import { AppError } from '../../../shared/errors.ts';
import type { GovernancePolicy } from '../../../shared/policy/governance.ts';
import { parsePolicyFile } from '../../../shared/policy/policy-file.ts';
import { type Db, withTx } from '../../db/pool.ts';
import type { Caller } from '../../http/caller.ts';
import { type AuditService, auditFromCaller } from '../audit/audit.service.ts';
import type { RequireStepUp } from '../sessions/step-up.ts';
import * as repo from './policies.repo.ts';

export type PolicyView = {
  version: number;
  source: string | null;
  source_sha256: string | null;
  applied_at: string | null;
  applied_by: repo.PolicyAuthor;
  policy: GovernancePolicy | null;
};

export type PolicyVersionView = {
  version: number;
  source_sha256: string;
  applied_at: string;
  applied_by: repo.PolicyAuthor;
};

export type PoliciesDeps = {
  db: Db;
  audit: Pick<AuditService, 'record'>;
  stepUp: RequireStepUp;
};

/** Owners, admins and admin keys of the whole account: they see the file and who applied it. */
function seesEverything(c: Caller): boolean {
  if (c.databases !== null) return false;
  return c.kind === 'key' ? c.level === 'admin' : c.role === 'owner' || c.role === 'admin';
}

/**
 * What a database-scoped caller may see of the policy: the defaults, its own databases' entries and
 * their environments — never other databases' names, nor the file that names them.
 */
function scopedTo(policy: GovernancePolicy, databases: readonly string[]): GovernancePolicy {
  const out: GovernancePolicy = { version: 1 };
  if (policy.defaults) out.defaults = policy.defaults;
  const dbs: NonNullable<GovernancePolicy['databases']> = {};
  const envs: NonNullable<GovernancePolicy['environments']> = {};
  for (const name of databases) {
    const db = Object.hasOwn(policy.databases ?? {}, name) ? policy.databases?.[name] : undefined;
    if (!db) continue;
    dbs[name] = db;
    const env = db.environment;
    if (env !== undefined && Object.hasOwn(policy.environments ?? {}, env)) {
      const rules = policy.environments?.[env];
      if (rules) envs[env] = rules;
    }
  }
  if (Object.keys(dbs).length > 0) out.databases = dbs;
  if (Object.keys(envs).length > 0) out.environments = envs;
  return out;
}

const hex = (b: Buffer) => b.toString('hex');

export function createPoliciesService(deps: PoliciesDeps) {
  const { db } = deps;

  function present(c: Caller, row: repo.PolicyVersionRow | null): PolicyView {
    if (!row)
      return {
        version: 0,
        source: null,
        source_sha256: null,
        applied_at: null,
        applied_by: null,
        policy: null,
      };
    const all = seesEverything(c);
    return {
      version: row.version,
      source: c.databases === null ? row.source : null,
      source_sha256: hex(row.source_sha256),
      applied_at: row.created_at.toISOString(),
      applied_by: all ? row.applied_by : null,
      policy: c.databases === null ? row.compiled : scopedTo(row.compiled, c.databases),
    };
  }

  return {
    async current(caller: Caller): Promise<PolicyView> {
      return present(caller, await repo.policyRow(db, caller.accountId));
    },

    /** Validates and stores the next version (audited `policy.applied`); 400 policy_invalid with every error. */
    async apply(caller: Caller, source: string, requestId: string): Promise<PolicyView> {
      const parsed = parsePolicyFile(source);
      if (!parsed.ok) {
        const n = parsed.errors.length;
        throw new AppError('policy_invalid', `The policy file has ${n} error${n === 1 ? '' : 's'}`, {
          errors: parsed.errors,
        });
      }
      if (caller.kind === 'user')
        await deps.stepUp(
          { userId: caller.userId, sessionId: caller.sessionId },
          'apply a governance policy',
        );
      const sha = createHash('sha256').update(source, 'utf8').digest();
      const version = await withTx(db, async (tx) => {
        const v = await repo.insertPolicyVersion(tx, {
          accountId: caller.accountId,
          source,
          sourceSha256: sha,
          compiled: parsed.policy,
          createdByUserId: caller.kind === 'user' ? caller.userId : null,
          createdByKeyId: caller.kind === 'key' ? caller.keyId : null,
        });
        await deps.audit.record(
          tx,
          auditFromCaller(
            caller,
            {
              action: 'policy.applied',
              targetType: 'policy',
              targetId: String(v),
              details: { version: v, source_sha256: hex(sha), bytes: Buffer.byteLength(source, 'utf8') },
            },
            requestId,
          ),
        );
        return v;
      });
      return present(caller, await repo.policyRow(db, caller.accountId, version));
    },

    async versions(
      caller: Caller,
      opts: { limit: number; before?: number | undefined },
    ): Promise<PolicyVersionView[]> {
      const all = seesEverything(caller);
      const rows = await repo.listPolicyVersions(db, caller.accountId, opts.limit, opts.before ?? null);
      return rows.map((r) => ({
        version: r.version,
        source_sha256: hex(r.source_sha256),
        applied_at: r.created_at.toISOString(),
        applied_by: all ? r.applied_by : null,
      }));
    },
  };
}

export type PoliciesService = ReturnType<typeof createPoliciesService>;
