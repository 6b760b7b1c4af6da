import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import {
  createExplorerValidator,
  type ExplorerValidator,
  loadExplorerParser,
} from '../src/shared/sql/explorer-validator.ts';

// Outside review (second round): the explorer's gate refuses types "whose input function looks
// objects up in the catalogs" (reg*, xml, pg_*), but not `aclitem`, whose input function looks
// every role name up in pg_authid (cluster-wide). A read-only, database-scoped explorer key of
// one account can therefore test whether any role of the cluster exists — other accounts'
// database names (`<name>_owner`), the platform's roles — through the explorer (seen on a running
// stack: `select 'victim2_owner=r/victim2_owner'::aclitem` answered a row for another account's
// database, `'nosuchrole_x=r/nosuchrole_x'::aclitem` answered 42704 "role does not exist").
// The gate is meant to keep other tenants' names out of explorer answers (security.md).

let validator: ExplorerValidator;

before(async () => {
  await loadExplorerParser();
  validator = createExplorerValidator({ cacheSize: 0 });
});

const PROBES = [
  "select 'victim_owner=r/victim_owner'::aclitem",
  "select cast('victim_owner=r/victim_owner' as aclitem)",
  "select 'victim_owner=r/victim_owner'::pg_catalog.aclitem",
  "select array['victim_owner=r/victim_owner']::aclitem[]",
  'select \'victim_owner=r/victim_owner\'::"aclitem"',
  "select aclitem 'victim_owner=r/victim_owner'",
  // The same oracle through functions that take or return a role: outside the derived allowlist.
  "select aclitemeq('victim_owner=r/victim_owner', 'victim_owner=r/victim_owner')",
  "select makeaclitem(to_regrole('victim_owner'), to_regrole('victim_owner'), 'select', false)",
  "select * from aclexplode(acldefault('r', 10))",
  "select pg_has_role('victim_owner', 'member')",
  "select has_table_privilege('victim_owner', 't', 'select')",
  "select 'victim_owner'::regrole",
];

for (const sql of PROBES) {
  test(`the explorer refuses a role-name oracle: ${sql}`, () => {
    const v = validator.validate(sql);
    assert.equal(v.ok, false, `accepted: ${sql}`);
  });
}
