/**
 * The account's active governance policy, as the request workflow reads it (version 0 and null:
 * the built-in rules). Kept behind this one function so the workflow has a single source.
 */
import type { GovernancePolicy } from '../../../shared/policy/governance.ts';
import type { Queryable } from '../../db/pool.ts';

export type ActivePolicy = { version: number; policy: GovernancePolicy | null };

export async function activePolicyOf(_db: Queryable, _accountId: string): Promise<ActivePolicy> {
  return { version: 0, policy: null };
}
