/**
 * The account's active governance policy, as the request workflow reads it (version 0 and null:
 * the built-in rules): the highest applied version (policies.repo.ts), read at each decision so
 * every replica decides with the same version.
 */
import type { GovernancePolicy } from '../../../shared/policy/governance.ts';
import type { Queryable } from '../../db/pool.ts';
import { activePolicy } from '../policies/policies.repo.ts';

export type ActivePolicy = { version: number; policy: GovernancePolicy | null };

export const activePolicyOf = (db: Queryable, accountId: string): Promise<ActivePolicy> =>
  activePolicy(db, accountId);
