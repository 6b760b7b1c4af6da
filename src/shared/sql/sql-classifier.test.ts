import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { loadExplorerParser, redactSql } from './explorer-validator.ts';
import { CORPUS } from './sql-classifier.corpus.ts';
import { CLASS_ORDER, classifySql, type SqlClass } from './sql-classifier.ts';
import { DEFAULT_SEVERITIES } from './sql-findings.ts';

before(async () => {
  await loadExplorerParser();
});

const rank = (c: SqlClass) => CLASS_ORDER.indexOf(c);

describe('sql classifier corpus', () => {
  test('holds at least 120 statements and every class', () => {
    assert.ok(CORPUS.length >= 120, `${CORPUS.length} cases`);
    for (const cls of CLASS_ORDER)
      assert.ok(
        CORPUS.some((c) => c[1] === cls),
        cls,
      );
  });

  test('each statement gets its expected class and findings', () => {
    const wrong: string[] = [];
    for (const [sql, cls, codes] of CORPUS) {
      const got = classifySql(sql);
      if (got.class !== cls) wrong.push(`${JSON.stringify(sql)}: ${got.class}, expected ${cls}`);
      const have = new Set(got.findings.map((f) => f.code));
      for (const code of codes ?? []) if (!have.has(code)) wrong.push(`${JSON.stringify(sql)}: no ${code}`);
    }
    assert.deepEqual(wrong, []);
  });
});

describe('sql classifier properties', () => {
  /** Computed in the tests: the parser is loaded by before(). */
  let cached: typeof CORPUS | undefined;
  const parseable = (): typeof CORPUS =>
    (cached ??= CORPUS.filter(([sql]) => classifySql(sql).parse_error === undefined));

  test('appending a statement never lowers the class', () => {
    for (const [sql] of parseable()) {
      const alone = classifySql(sql).class;
      for (const tail of ['; select 1', ';\nselect 1 -- x', '; insert into t values (1)']) {
        const more = classifySql(sql + tail).class;
        assert.ok(rank(more) >= rank(alone), `${sql}${tail}: ${more} < ${alone}`);
      }
      const front = classifySql(`select 1; ${sql}`).class;
      assert.ok(rank(front) >= rank(alone), `select 1; ${sql}: ${front} < ${alone}`);
    }
  });

  test('a data-modifying statement keeps its class inside a CTE', () => {
    const dml = parseable().filter(([sql]) => /^(insert|update|delete|merge)\b/i.test(sql) && !/;/.test(sql));
    assert.ok(dml.length >= 10);
    for (const [sql, cls] of dml) {
      if (/^merge/i.test(sql)) continue; // MERGE is not allowed in a WITH query (PostgreSQL 15)
      const wrapped = classifySql(
        `with x as (${sql}${/returning/i.test(sql) ? '' : ' returning 1'}) select * from x`,
      );
      assert.equal(wrapped.class, cls, sql);
    }
  });

  test('a SELECT keeps its class inside a CTE, a subquery and EXPLAIN ANALYZE', () => {
    const selects = parseable().filter(([sql]) => /^select\b/i.test(sql) && !/;|for |into /i.test(sql));
    for (const [sql, cls] of selects) {
      assert.equal(classifySql(`with x as (${sql}) select * from x`).class, cls, sql);
      assert.equal(classifySql(`select * from (${sql}) s`).class, cls, sql);
      assert.equal(classifySql(`explain analyze ${sql}`).class, cls, sql);
    }
  });

  test('comments and whitespace do not change the class', () => {
    for (const [sql, cls] of parseable()) {
      if (classifySql(sql).statements.length === 0) continue;
      assert.equal(classifySql(`/* c */\n  ${sql}\n-- end`).class, cls, sql);
    }
  });

  test('the request class is the worst statement class', () => {
    for (const [sql] of parseable()) {
      const r = classifySql(sql);
      const worst = r.statements.reduce(
        (a, s) => (rank(s.class) > rank(a) ? s.class : a),
        'read' as SqlClass,
      );
      assert.equal(r.class, worst, sql);
    }
  });
});

describe('sql classifier details', () => {
  test('statements carry their kind, span and reasons', () => {
    const sql = '  select 1;\n  delete from orders where id = 2 ;';
    const r = classifySql(sql);
    assert.equal(r.statements.length, 2);
    const [a, b] = r.statements;
    assert.equal(a?.kind, 'SelectStmt');
    assert.equal(sql.slice(a?.text_span.start, a?.text_span.end), 'select 1');
    assert.equal(b?.kind, 'DeleteStmt');
    assert.equal(sql.slice(b?.text_span.start, b?.text_span.end), 'delete from orders where id = 2 ');
    assert.deepEqual(b?.reasons, ['DELETE changes data']);
  });

  test('spans and finding locations are string indices with multibyte text', () => {
    const sql = "select 'héllo✓'; delete from t";
    const r = classifySql(sql);
    const del = r.statements[1];
    assert.equal(sql.slice(del?.text_span.start, del?.text_span.end), 'delete from t');
    const f = r.findings.find((x) => x.code === 'missing_where');
    assert.equal(f?.statement_index, 1);
    assert.equal(sql.slice(f?.location, (f?.location ?? 0) + 1), 't');
  });

  test('a parse error is refused with a position', () => {
    const r = classifySql('select 1;\nselec 2');
    assert.equal(r.class, 'refused');
    assert.equal(r.statements.length, 0);
    assert.equal(r.parse_error?.position, 10);
  });

  test('a NUL character, an oversized request and deep nesting are refused', () => {
    assert.equal(classifySql('select 1\0').parse_error?.position, 8);
    assert.match(classifySql('select 1', { maxLength: 3 }).parse_error?.message ?? '', /longer than 3/);
    // Deep nesting is refused or classified, never thrown (the parser's depth limit is the JIT's).
    for (const depth of [5000, 200_000]) {
      const deep = `select ${'('.repeat(depth)}1${')'.repeat(depth)}`;
      assert.ok(['read', 'refused'].includes(classifySql(deep).class));
    }
    for (const n of [1000, 10_000, 50_000]) {
      const r = classifySql(`select ${'1+'.repeat(n)}1`);
      assert.ok(
        n > 1000 ? r.class === 'refused' || r.class === 'read' : r.class === 'read',
        `${n}: ${r.class}`,
      );
    }
    assert.deepEqual(
      classifySql('truncate t; insert into t values (1)').findings.map((f) => f.code),
      [],
    );
  });

  test('refusals name their reason', () => {
    assert.match(classifySql('set role postgres').statements[0]?.reasons[0] ?? '', /SET ROLE/);
    assert.match(classifySql("copy t to program 'x'").statements[0]?.reasons[0] ?? '', /PROGRAM/);
    assert.match(classifySql('select nextval($$s$$)').statements[0]?.reasons[0] ?? '', /nextval\(\)/);
  });
});

describe('sql review findings', () => {
  const codes = (sql: string, opts = {}) => classifySql(sql, opts).findings.map((f) => f.code);

  test('every finding code of the corpus has a default severity', () => {
    const seen = new Set(CORPUS.flatMap(([sql]) => classifySql(sql).findings.map((f) => f.code)));
    for (const code of seen) assert.ok(Object.hasOwn(DEFAULT_SEVERITIES, code), code);
    assert.deepEqual([...seen].sort(), Object.keys(DEFAULT_SEVERITIES).sort());
  });

  test('severities have defaults and can be changed or turned off', () => {
    const sql = 'delete from t';
    assert.equal(classifySql(sql).findings[0]?.severity, 'block');
    assert.equal(classifySql(sql, { severities: { missing_where: 'warn' } }).findings[0]?.severity, 'warn');
    assert.deepEqual(codes(sql, { severities: { missing_where: 'off' } }), []);
    assert.equal(classifySql('drop table t cascade').findings[0]?.severity, 'warn');
  });

  test('table size decides the lock and NOT NULL findings', () => {
    const sql = 'alter table s.big add column n int not null';
    const seen: string[] = [];
    const tableRows = (schema: string, table: string) => {
      seen.push(`${schema}.${table}`);
      return table === 'big' ? 5 : undefined;
    };
    assert.deepEqual(codes(sql, { tableRows }), []);
    assert.deepEqual(seen, ['s.big']);
    assert.deepEqual(codes(sql, { tableRows, largeTableRows: 1 }), ['not_null_without_default']);
    assert.deepEqual(codes(sql), ['not_null_without_default']);
    assert.deepEqual(codes('create index on t (a)', { tableRows: () => 10 }), []);
    assert.deepEqual(codes('create index on t (a)', { tableRows: () => 10_001 }), ['index_not_concurrent']);
  });

  test('a table created by the same request is small', () => {
    assert.deepEqual(codes('create table n (a int); alter table n alter column a set not null'), []);
  });

  test('huge IN lists and arrays of literals', () => {
    const list = Array.from({ length: 1001 }, (_, i) => i).join(', ');
    assert.deepEqual(codes(`select * from t where id in (${list})`), ['huge_in_list']);
    assert.deepEqual(codes(`select * from t where id = any(array[${list}])`), ['huge_in_list']);
    assert.deepEqual(codes(`select * from t where id in (${list})`, { maxInListItems: 2000 }), []);
    assert.deepEqual(codes('select * from t where id in (1, 2, 3)', { maxInListItems: 2 }), ['huge_in_list']);
  });

  test('mixed DDL and DML is reported once', () => {
    const r = classifySql('create table a (x int); insert into a values (1); alter table a add column y int');
    assert.deepEqual(
      r.findings.filter((f) => f.code === 'mixed_ddl_dml').map((f) => f.statement_index),
      [1],
    );
    assert.deepEqual(codes('insert into a values (1); update a set x = 2 where x = 1'), []);
  });

  test('ALTER … ADD UNIQUE builds an index unless USING INDEX', () => {
    assert.deepEqual(codes('alter table t add constraint u unique (a)'), ['lock_heavy_alter']);
    assert.deepEqual(codes('alter table t add constraint u unique using index i'), []);
  });
});

describe('redaction for audit and notifications', () => {
  test('the explorer redactSql also redacts multi-statement requests', () => {
    const sql = "update t set pw = 'secret' where id = 42; delete from x where n = $$s$$";
    assert.equal(redactSql(sql), 'update t set pw = ? where id = ?; delete from x where n = ?');
  });
});
