import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { loadExplorerParser, validateExplorerSql } from '../src/shared/sql/explorer-validator.ts';

// Outside review (second round): the explorer's gate refuses types "whose input function looks
// objects up in the catalogs" (reg*, xml, pg_*), but not `aclitem`, whose input function looks
// every role name up in pg_authid (cluster-wide). A read-only, database-scoped explorer key of
// one account can therefore test whether any role of the cluster exists — other accounts'
// database names (`<name>_owner`), the platform's roles — through the explorer (seen on a running
// stack: `select 'victim2_owner=r/victim2_owner'::aclitem` answered a row for another account's
// database, `'nosuchrole_x=r/nosuchrole_x'::aclitem` answered 42704 "role does not exist").
// The gate is meant to keep other tenants' names out of explorer answers (security.md).

before(async () => {
  await loadExplorerParser();
});

const PROBES = [
  "select 'victim_owner=r/victim_owner'::aclitem",
  "select cast('victim_owner=r/victim_owner' as aclitem)",
  "select 'victim_owner=r/victim_owner'::pg_catalog.aclitem",
  "select array['victim_owner=r/victim_owner']::aclitem[]",
  'select \'victim_owner=r/victim_owner\'::"aclitem"',
  "select aclitem 'victim_owner=r/victim_owner'",
];

for (const sql of PROBES) {
  test(`the explorer refuses a role-name oracle: ${sql}`, () => {
    const v = validateExplorerSql(sql);
    assert.equal(v.ok, false, `accepted: ${sql}`);
  });
}
