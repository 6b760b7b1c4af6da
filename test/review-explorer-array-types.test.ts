import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type pg from 'pg';
import type { ExplorerExecutor } from '../src/agent/explorer/explorer-executor.ts';
import {
  createExplorerValidator,
  type ExplorerValidator,
  loadExplorerParser,
} from '../src/shared/sql/explorer-validator.ts';
import { adminPool, createTenant, queryPayload, type Tenant, testExecutor } from './helpers/explorer.ts';

// Review of the derived allowlist (ADR 0012): the gate refused the catalog types by name
// (`regrole`, `aclitem`, `regclass`, `xml`, `pg_*` …) but not by the name PostgreSQL gives their
// array types, the element's name with a leading underscore. A read-only, database-scoped explorer
// key could again test whether any role of the cluster exists — another account's database owner —
// the oracle the second review closed for `aclitem` (seen on a running stack:
// `select '{victim_owner}'::_regrole` answered a row, `'{nosuchrole_x}'::_regrole` 42704), and
// reach what the explorer refuses (`_regclass` looks relations up, pg_catalog's included; `_xml`
// runs the XML parser; `_pg_snapshot`, `_txid_snapshot`).

let validator: ExplorerValidator;
let admin: pg.Pool;
let mine: Tenant;
let victim: Tenant;
let ex: ExplorerExecutor;

before(async () => {
  await loadExplorerParser();
  validator = createExplorerValidator({ cacheSize: 0 });
  admin = adminPool();
  [mine, victim] = await Promise.all([createTenant(admin, 'rvarr'), createTenant(admin, 'rvvic')]);
  ex = testExecutor(admin, { maxConnections: 1 });
});

after(async () => {
  await ex?.close();
  await mine?.drop();
  await victim?.drop();
  await admin?.end();
});

const PROBES = [
  "select '{victim_owner}'::_regrole",
  "select cast('{victim_owner}' as _regrole)",
  "select '{victim_owner}'::pg_catalog._regrole",
  'select \'{victim_owner}\'::"_regrole"',
  "select '{victim_owner=r/victim_owner}'::_aclitem",
  "select '{pg_authid}'::_regclass",
  "select '{pg_catalog.pg_authid}'::_regclass::text",
  "select '{victim}'::_regnamespace",
  "select '{now}'::_regproc",
  'select \'{"now()"}\'::_regprocedure',
  "select '{int4}'::_regtype",
  "select '{+}'::_regoper",
  "select '{simple}'::_regdictionary",
  "select '{C}'::_regcollation",
  'select \'{"<a/>"}\'::_xml',
  'select \'{"10:20:"}\'::_pg_snapshot',
  'select \'{"10:20:"}\'::_txid_snapshot',
  "select '{}'::_refcursor",
  'select * from json_to_record(\'{"a": ["victim_owner"]}\') as x(a _regrole)',
];

for (const sql of PROBES) {
  test(`the gate refuses a catalog type by its array name: ${sql}`, () => {
    const v = validator.validate(sql);
    assert.equal(v.ok, false, `accepted: ${sql}`);
    if (!v.ok) assert.equal(v.code, 'type_not_allowed', `${sql}: ${v.code} ${v.reason}`);
  });
}

test('harmless array types by their underscore names still pass', () => {
  for (const sql of ["select '{1,2}'::_int4", "select '{a}'::_text", "select '{english}'::_regconfig"]) {
    const v = validator.validate(sql);
    assert.equal(v.ok, true, `${sql}: ${JSON.stringify(v)}`);
  }
});

test("a read-only explorer key cannot tell whether another account's role exists through _regrole", async () => {
  const ask = async (role: string) =>
    ex.runQuery(queryPayload(mine, `select '{${role}}'::_regrole`), new AbortController().signal);
  for (const role of [victim.roles.owner, 'nosuchrole_x']) {
    const out = await ask(role);
    assert.equal(out.kind, 'error', `${role}: ${JSON.stringify(out)}`);
    if (out.kind === 'error') assert.equal(out.error.refused, true, `${role}: ${JSON.stringify(out)}`);
    assert.ok(!JSON.stringify(out).includes(victim.roles.owner), `${role}: the victim's role name came back`);
  }
});
