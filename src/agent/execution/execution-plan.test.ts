import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { loadExplorerParser } from '../../shared/sql/explorer-validator.ts';
import { planExecution } from './execution-plan.ts';
import { tagVerb } from './execution-session.ts';

before(async () => {
  await loadExplorerParser();
});

const ok = (sql: string, mode: 'execute' | 'dry_run' = 'execute') => {
  const p = planExecution(sql, mode);
  if (!p.ok) assert.fail(`${sql}: ${p.message}`);
  return p;
};
const refused = (sql: string, mode: 'execute' | 'dry_run' = 'execute') => {
  const p = planExecution(sql, mode);
  assert.equal(p.ok, false, sql);
  return p.ok ? '' : p.message;
};

test('statements are the parser’s: semicolons in strings, dollar quotes and comments do not split', () => {
  const sql =
    "UPDATE t SET a = 'x;y' WHERE id = 1; -- one;\nCREATE FUNCTION f() RETURNS int LANGUAGE sql AS $$ SELECT 1; $$;\nSELECT 2";
  const p = ok(sql);
  assert.equal(p.statements.length, 3);
  assert.equal(p.statements[0]?.text, "UPDATE t SET a = 'x;y' WHERE id = 1");
  assert.ok(p.statements[1]?.text.endsWith('$$ SELECT 1; $$'));
  assert.equal(p.statements[2]?.start, sql.indexOf('SELECT 2'));
  assert.deepEqual(
    p.statements.map((s) => s.explainable),
    [true, false, true],
  );
  assert.equal(p.outsideTransaction, false);
  // Positions are JS string indices, also after non-ASCII text.
  const u = ok("UPDATE t SET a = 'žluťoučký'; SELECT 3");
  assert.equal(u.statements[1]?.start, "UPDATE t SET a = 'žluťoučký'; ".length);
});

test('what the executor owns or cannot undo is refused', () => {
  assert.match(refused('UPDATE t SET a = 1 WHERE id = 1; COMMIT'), /statement 2 is refused/);
  refused('BEGIN; UPDATE t SET a = 1 WHERE id = 1');
  refused('SET statement_timeout = 0');
  refused("SELECT set_config('role', 'x', true)");
  refused('SELECT 1 +');
  refused('   ');
  refused('-- only a comment');
});

test('CONCURRENTLY: alone outside a transaction, never mixed, never dry-run', () => {
  for (const sql of [
    'CREATE INDEX CONCURRENTLY i ON t (a)',
    'DROP INDEX CONCURRENTLY i',
    'REINDEX (CONCURRENTLY) INDEX i',
    'ALTER TABLE p DETACH PARTITION c CONCURRENTLY',
  ]) {
    assert.equal(ok(sql).outsideTransaction, true, sql);
    assert.match(refused(`${sql}; SELECT 1`), /send it alone/, sql);
    assert.match(refused(sql, 'dry_run'), /cannot be dry-run/, sql);
  }
  // REFRESH … CONCURRENTLY may run in a transaction.
  assert.equal(ok('REFRESH MATERIALIZED VIEW CONCURRENTLY mv; SELECT 1').outsideTransaction, false);
});

test('command tag verbs', () => {
  assert.equal(tagVerb('INSERT 0 5'), 'INSERT');
  assert.equal(tagVerb('UPDATE 3'), 'UPDATE');
  assert.equal(tagVerb('CREATE TABLE'), 'CREATE TABLE');
  assert.equal(tagVerb('SELECT 10'), 'SELECT');
  assert.equal(tagVerb('MERGE 2'), 'MERGE');
});
