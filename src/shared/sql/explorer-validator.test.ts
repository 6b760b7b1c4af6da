import assert from 'node:assert/strict';
import { before, describe, test } from 'node:test';
import { DENIED_FUNCTIONS } from './explorer-function-policy.ts';
import {
  createExplorerValidator,
  EXPLORER_MAX_SQL_LENGTH,
  type ExplorerValidator,
  loadExplorerParser,
  redactSql,
  UNPARSEABLE_SQL,
} from './explorer-validator.ts';

/** Built in before(): the parser must be loaded first. Cache off, so every case is really judged. */
let validator: ExplorerValidator;
const validateExplorerSql = (sql: string) => validator.validate(sql);

/** [sql, expected refusal code] */
const REFUSED: ReadonlyArray<readonly [string, string]> = [
  // transaction escapes / multiple statements
  ['select 1; commit', 'multiple_statements'],
  ['commit; select 1', 'multiple_statements'],
  ['select 1; select 2', 'multiple_statements'],
  ['rollback', 'not_select'],
  ['begin', 'not_select'],
  ['select 1 /* ; */ ; delete from t', 'multiple_statements'],
  ['select 1 --\n; delete from t', 'multiple_statements'],
  ['select $$ a $$; delete from t', 'multiple_statements'],
  ['select $x$;$x$; drop table t', 'multiple_statements'],
  ["select E'\\';'; delete from t", 'multiple_statements'],
  ["select 'a'';'; truncate t", 'multiple_statements'],
  // settings and roles
  ['set statement_timeout = 0', 'not_select'],
  ['SET TRANSACTION READ WRITE', 'not_select'],
  ['set session characteristics as transaction read write', 'not_select'],
  ["select set_config('default_transaction_read_only', 'off', false)", 'function_not_allowed'],
  ["select current_setting('data_directory')", 'function_not_allowed'],
  ['show all', 'not_select'],
  ['reset all', 'not_select'],
  ['set role postgres', 'not_select'],
  ['reset role', 'not_select'],
  ['set session authorization postgres', 'not_select'],
  ['select current_user', 'function_not_allowed'],
  // writes
  ['with x as (delete from t returning *) select * from x', 'data_modifying_cte'],
  ['with x as (insert into t values (1) returning *) select * from x', 'data_modifying_cte'],
  ['with x as (update t set a = 1 returning *) select * from x', 'data_modifying_cte'],
  ['select * from (with y as (delete from t returning *) select * from y) s', 'data_modifying_cte'],
  [
    'with a as (select 1), b as (with c as (delete from t returning 1) select * from c) select 1',
    'data_modifying_cte',
  ],
  ['select (with c as (delete from t returning 1) select * from c)', 'data_modifying_cte'],
  ['merge into t using u on t.id = u.id when matched then delete', 'not_select'],
  ['insert into t select * from u', 'not_select'],
  ['update t set a = 1', 'not_select'],
  ['delete from t', 'not_select'],
  ['truncate t', 'not_select'],
  ['select * into newt from t', 'select_into'],
  ['select 1 as a into temp x', 'select_into'],
  ['create table x as select 1', 'not_select'],
  ['create materialized view v as select 1', 'not_select'],
  ['explain analyze delete from t', 'explain_analyze'],
  ['explain analyze select 1', 'explain_analyze'],
  ['explain (analyze) select 1', 'explain_analyze'],
  ['explain (analyze true) select 1', 'explain_analyze'],
  ['explain (analyze 1) select 1', 'explain_analyze'],
  ["explain (analyze 'yes') select 1", 'explain_analyze'],
  ['explain (format json, analyze on) select 1', 'explain_analyze'],
  ['explain delete from t', 'not_select'],
  ['explain create table x as select 1', 'not_select'],
  ['explain (settings) select 1', 'explain_option'],
  // procedural / utility
  ['call p()', 'not_select'],
  ['do $$ begin perform 1; end $$', 'not_select'],
  ['prepare p as select 1', 'not_select'],
  ['execute p', 'not_select'],
  ['deallocate all', 'not_select'],
  ['lock table t', 'not_select'],
  ['declare c cursor for select 1', 'not_select'],
  ['fetch next from c', 'not_select'],
  ['vacuum', 'not_select'],
  ['analyze t', 'not_select'],
  ['checkpoint', 'not_select'],
  ['discard all', 'not_select'],
  ['grant all on t to public', 'not_select'],
  ["alter system set log_statement = 'none'", 'not_select'],
  ['listen ch', 'not_select'],
  ["notify ch, 'x'", 'not_select'],
  ["select pg_notify('ch', 'x')", 'function_not_allowed'],
  ["copy t to program 'id'", 'not_select'],
  ["copy t to '/tmp/x'", 'not_select'],
  ['copy (select 1) to stdout', 'not_select'],
  ['create function f() returns int language sql as $$ select 1 $$', 'not_select'],
  ["load 'plpgsql'", 'not_select'],
  // functions
  ['select my_func()', 'function_not_allowed'],
  ['select public.lower(a) from t', 'function_not_allowed'],
  ['select pg_sleep(10)', 'function_not_allowed'],
  ["select pg_sleep_for('1 minute')", 'function_not_allowed'],
  ['select pg_advisory_lock(1)', 'function_not_allowed'],
  ['select pg_try_advisory_xact_lock(1)', 'function_not_allowed'],
  ["select nextval('s')", 'function_not_allowed'],
  ["select setval('s', 1)", 'function_not_allowed'],
  ["values ((select nextval('s')))", 'function_not_allowed'],
  ["select lo_import('/etc/passwd')", 'function_not_allowed'],
  ["select lo_from_bytea(0, 'x')", 'function_not_allowed'],
  ['select lo_get(1)', 'function_not_allowed'],
  ['select lo_unlink(1)', 'function_not_allowed'],
  ["select pg_read_file('/etc/passwd')", 'function_not_allowed'],
  ["select pg_catalog.pg_read_binary_file('x')", 'function_not_allowed'],
  ["select * from pg_ls_dir('.')", 'function_not_allowed'],
  ["select pg_stat_file('x')", 'function_not_allowed'],
  ["select * from dblink('host=x', 'delete from t') as r(a int)", 'function_not_allowed'],
  ['select pg_terminate_backend(1)', 'function_not_allowed'],
  ['select pg_cancel_backend(1)', 'function_not_allowed'],
  ['select pg_reload_conf()', 'function_not_allowed'],
  ["select pg_logical_emit_message(true, 'p', 'x')", 'function_not_allowed'],
  // stable or immutable, yet beyond the tenant's data (the deny list)
  ['select * from pg_stat_get_activity(null)', 'function_not_allowed'],
  ['select pg_stat_get_backend_activity(1)', 'function_not_allowed'],
  ['select pg_backend_pid()', 'function_not_allowed'],
  ["select pg_has_role('bulwark_other_owner', 'member')", 'function_not_allowed'],
  ["select has_database_privilege('other_tenant', 'connect')", 'function_not_allowed'],
  ['select txid_current_if_assigned()', 'function_not_allowed'],
  ['select * from pg_cursor()', 'function_not_allowed'],
  ['select * from pg_available_extensions()', 'function_not_allowed'],
  ['select * from pg_config()', 'function_not_allowed'],
  ['select * from pg_show_all_settings()', 'function_not_allowed'],
  ['select "current_user"()', 'function_not_allowed'],
  ['select session_user', 'function_not_allowed'],
  ["select pg_get_serial_sequence('t', 'id')", 'function_not_allowed'],
  ["select xml_is_well_formed('<a/>')", 'function_not_allowed'],
  // volatile, or a catalog lookup: not of the safe kind
  ["select ts_rewrite('a'::tsquery, 'select 1')", 'function_not_allowed'],
  ["select pg_relation_size('t')", 'function_not_allowed'],
  ["select to_regrole('bulwark_other_owner')", 'function_not_allowed'],
  ['select pg_typeof(1)', 'function_not_allowed'],
  ['select setseed(0.5)', 'function_not_allowed'],
  ['select pg_notification_queue_usage()', 'function_not_allowed'],
  ["select ts_lexize('english_stem', 'x')", 'function_not_allowed'],
  ["select 'english_stem'::regdictionary", 'type_not_allowed'],
  ['select pg_catalog.constructor()', 'function_not_allowed'],
  ['select __proto__()', 'function_not_allowed'],
  ['select txid_current()', 'function_not_allowed'],
  ['select pg_current_xact_id()', 'function_not_allowed'],
  ["select query_to_xml('delete from t', true, true, '')", 'function_not_allowed'],
  ["select table_to_xml('t', true, true, '')", 'function_not_allowed'],
  ["select database_to_xml(true, true, '')", 'function_not_allowed'],
  ["select cursor_to_xml('c', 1, true, true, '')", 'function_not_allowed'],
  ["select * from ts_stat('select v from t')", 'function_not_allowed'],
  ["select xpath('/a', '<a/>')", 'function_not_allowed'],
  ["select xmlparse(document '<a/>')", 'xml_not_allowed'],
  ["select * from xmltable('/a' passing '<a/>' columns a int)", 'xml_not_allowed'],
  ["select has_table_privilege('t', 'select')", 'function_not_allowed'],
  ['select inet_server_addr()', 'function_not_allowed'],
  ['select U&"pg\\005fsleep"(1)', 'function_not_allowed'],
  ['select "PG_SLEEP"(1)', 'function_not_allowed'],
  ['select pg_catalog.lower(a) from public.t, other.lower(b)', 'function_not_allowed'],
  // nested functions
  ['select a from t order by pg_sleep(1)', 'function_not_allowed'],
  ['select a from t limit evil()', 'function_not_allowed'],
  ['select 1 from t join u on evil(t.a)', 'function_not_allowed'],
  ['select sum(a) over (order by evil()) from t', 'function_not_allowed'],
  ['select sum(a) over w from t window w as (partition by evil())', 'function_not_allowed'],
  ['select * from t, lateral (select evil(t.a)) s', 'function_not_allowed'],
  ['with x as (select pg_sleep(1)) select * from x', 'function_not_allowed'],
  ['select count(*) filter (where evil()) from t', 'function_not_allowed'],
  ['select a from t group by a having evil()', 'function_not_allowed'],
  ['select coalesce(a, evil()) from t', 'function_not_allowed'],
  ['select case when true then evil() end', 'function_not_allowed'],
  ['select array[evil()]', 'function_not_allowed'],
  ["select '1'::int + evil()::int", 'function_not_allowed'],
  ['select * from rows from (generate_series(1, 2), evil())', 'function_not_allowed'],
  ["select 'a'::mytype(evil())", 'function_not_allowed'],
  ['select * from t where a = any (select pg_sleep(1))', 'function_not_allowed'],
  ['select x is document from t', 'xml_not_allowed'],
  // locking
  ['select * from t for update', 'locking_clause'],
  ['select * from t for share', 'locking_clause'],
  ['select * from (select * from t for no key update) s', 'locking_clause'],
  ['select * from t where exists (select 1 from u for key share skip locked)', 'locking_clause'],
  ['with x as (select * from t for update) select * from x', 'locking_clause'],
  // relations
  ['select * from pg_authid', 'system_catalog'],
  ['select * from pg_database', 'system_catalog'],
  ['select * from pg_roles', 'system_catalog'],
  ['select * from pg_stat_activity', 'system_catalog'],
  ['select * from pg_catalog.pg_stat_activity', 'system_catalog'],
  ['table pg_shadow', 'system_catalog'],
  ['select * from information_schema.tables', 'system_catalog'],
  ['select * from pg_temp.x', 'system_catalog'],
  ['select * from pg_toast.pg_toast_1', 'system_catalog'],
  ['select * from secret.x', 'non_public_relation'],
  ['select * from otherdb.public.t', 'non_public_relation'],
  ['select * from U&"pg\\005fcatalog".pg_class', 'system_catalog'],
  ['select * from "PG_CATALOG".pg_class', 'system_catalog'],
  ['select * from "pg_catalog"."pg_class"', 'system_catalog'],
  ['select * from "Public".t', 'non_public_relation'],
  ['select * from t where a in (select oid from pg_class)', 'system_catalog'],
  ['select * from t join pg_namespace n on true', 'system_catalog'],
  // casts and types
  ["select 'pg_authid'::regclass", 'type_not_allowed'],
  ["select 'pg_authid'::regclass::oid", 'type_not_allowed'],
  ["select cast('now' as pg_catalog.regproc)", 'type_not_allowed'],
  ["select regrole 'postgres'", 'type_not_allowed'],
  ["select 'a'::regnamespace[]", 'type_not_allowed'],
  ["select '0/0'::pg_lsn", 'type_not_allowed'],
  ["select '<a/>'::xml", 'type_not_allowed'],
  ["select 'x'::secret.mytype", 'type_not_allowed'],
  // operators, tablesample, parameters, misc
  ['select 1 operator(secret.+) 2', 'operator_not_allowed'],
  ['select * from t tablesample system_rows(10)', 'tablesample_method'],
  ['select * from t tablesample system_time(1000)', 'tablesample_method'],
  ['select $1', 'parameter_not_allowed'],
  ['values (default)', 'unsupported_syntax'],
  ['selectt 1', 'syntax_error'],
  ["select 'unterminated", 'syntax_error'],
  ['', 'empty'],
  ['   \n\t ', 'empty'],
  ['-- only a comment', 'empty'],
  ['/* only */ /* comments */', 'empty'],
  [';', 'empty'],
  ['select 1\u0000; delete from t', 'invalid_character'],
  ['select 1 \ud800', 'invalid_character'],
];

const ACCEPTED: readonly string[] = [
  'select 1',
  'select 1;',
  'select a.id, b.name from a join b on a.id = b.a_id left join c using (id) where a.x > 10',
  'select region, count(*), sum(total), avg(total)::numeric(10, 2) from orders group by region having count(*) > 5',
  'select id, sum(v) over (partition by g order by ts rows between 3 preceding and current row) from t',
  'select rank() over w, lag(v, 1) over w, ntile(4) over w from t window w as (partition by g order by v desc)',
  "with recent as (select * from orders where ts > now() - interval '7 days') select count(*) from recent",
  'with recursive n(i) as (select 1 union all select i + 1 from n where i < 10) select * from n',
  'select a from t union select a from u intersect select a from v except select a from w',
  "values (1, 'a'), (2, 'b')",
  'table t',
  'select * from public.t',
  'select * from "public"."T"',
  'explain select * from t where a = 1',
  'explain (format json) select 1',
  'explain (verbose, costs off, analyze false) select 1',
  "select 'drop table x; commit'",
  'select 1 /* a /* b */ c */',
  "select $$ ; delete from t $$, $q$ it's $$ fine $q$",
  "select case when a > 0 then 'pos' when a < 0 then 'neg' else 'zero' end from t",
  "select a::int, b::text, c::numeric, d::timestamptz, e::jsonb, f::date, '1 day'::interval, g::uuid from t",
  "select doc->'a'->>'b', doc #> '{a,b}', doc @> '{\"k\": 1}'::jsonb, doc ? 'k' from t",
  'select * from t, lateral (select * from u where u.t_id = t.id order by u.ts desc limit 3) s',
  'select distinct on (user_id) user_id, ts from events order by user_id, ts desc',
  "select count(*) filter (where status = 'ok'), percentile_cont(0.5) within group (order by ms) from req",
  "select * from t where name ilike '%x%' or name similar to '(a|b)%' or name ~* '^z'",
  'select * from t where id in (select t_id from u) and exists (select 1 from v where v.id = t.id)',
  'select * from generate_series(1, 10) g(i)',
  "select g::date from generate_series('2024-01-01'::date, '2024-02-01', interval '1 day') g",
  "select date_trunc('month', ts), extract(year from ts), to_char(ts, 'YYYY-MM') from t",
  'select coalesce(a, 0), nullif(b, 0), greatest(a, b), least(a, b) from t',
  "select string_agg(name, ', ' order by name), array_agg(distinct id), jsonb_agg(t) from t",
  "select jsonb_build_object('a', 1), jsonb_path_query(doc, '$.a') from t",
  'select current_date, current_timestamp, localtimestamp(3)',
  'select pg_catalog.lower(name) collate "C" from t order by 1 using <',
  'select * from t tablesample bernoulli (10) repeatable (42)',
  'select grouping(a), a, b, count(*) from t group by rollup (a, b)',
  "select substring(s from 2 for 3), position('x' in s), trim(both ' ' from s), s at time zone 'utc' from t",
  'select * from jsonb_to_recordset(\'[{"a":1}]\') as r(a int, b text)',
  'select x from unnest(array[1, 2, 3]) with ordinality as u(x, n)',
  'select * from t fetch first 10 rows only',
  "select U&'d\\0061t\\+000061'",
  "select E'tab\\tnewline\\n'",
  'select * from users_pg_lookalike',
  "select 'a' operator(pg_catalog.||) 'b', x::public.my_enum from t order by x using >",
  // the comment hides nothing: this parses as `select 1 as delete from t`
  'select 1 -- c\r\ndelete from t',
  "select random(), gen_random_uuid(), md5(name), format('%s-%s', a, b) from t",
  // harmless SQL the derived allowlist accepts (issue 19)
  'select numeric_uminus(1.5), int4or(1, 2), int8and(6, 3), int4shl(1, 3), int2not(1::int2)',
  "select int4range(1, 10), numrange(1.5, 2.5, '[]'), daterange(current_date, null), tstzrange(now(), null)",
  'select int4multirange(int4range(1, 3), int4range(5, 7)), datemultirange()',
  'select point(1, 2), box(point(0, 0), point(1, 1)), circle(point(0, 0), 2), lseg(point(0, 0), point(1, 1))',
  "select bpchar('x'), 'x'::bpchar, length(bpchar('ab  '))",
  'select current_database(), current_schema(), current_schema, current_catalog, version(), getdatabaseencoding()',
  "select to_tsvector('english', body) @@ to_tsquery('english', 'cat & dog') from t",
  "select 'simple'::regconfig, ts_rank(to_tsvector('simple', body), plainto_tsquery('simple', 'x')) from t",
  "select quote_ident(name), quote_literal(name), quote_nullable(null), format('%I.%L', a, b) from t",
  'select pg_catalog.pg_size_pretty(1024::bigint), pg_column_size(t.*) from t',
  'select max(xmin::text), age(now()), text(1), int8(1), min(2) from t',
];

describe('explorer validator', () => {
  before(async () => {
    await loadExplorerParser();
    await loadExplorerParser(); // idempotent
    validator = createExplorerValidator({ cacheSize: 0 });
  });

  test('corpus sizes', () => {
    assert.ok(REFUSED.length >= 90, `attack corpus has ${REFUSED.length} entries`);
    assert.ok(ACCEPTED.length >= 25);
  });

  for (const [sql, code] of REFUSED) {
    test(`refuses [${code}] ${JSON.stringify(sql).slice(0, 80)}`, () => {
      const v = validateExplorerSql(sql);
      assert.equal(v.ok, false, `expected refusal for ${sql}`);
      if (!v.ok) {
        assert.equal(v.code, code, `${sql}: ${v.reason}`);
        assert.ok(v.reason.length > 0);
        if (v.position !== null) assert.ok(v.position >= 0 && v.position <= sql.length);
      }
    });
  }

  for (const sql of ACCEPTED) {
    test(`accepts ${JSON.stringify(sql).slice(0, 80)}`, () => {
      const v = validateExplorerSql(sql);
      assert.deepEqual(v.ok ? 'ok' : v, 'ok');
    });
  }

  test('kind is select or explain', () => {
    assert.deepEqual(validateExplorerSql('explain select 1'), {
      ok: true,
      kind: 'explain',
      redacted: 'explain select ?',
    });
    const v = validateExplorerSql('select 1');
    assert.equal(v.ok && v.kind, 'select');
  });

  test('refuses input longer than the maximum before parsing', () => {
    const sql = 'select 1' + ' '.repeat(EXPLORER_MAX_SQL_LENGTH);
    assert.deepEqual(validateExplorerSql(sql), {
      ok: false,
      code: 'too_long',
      reason: `the query is longer than ${EXPLORER_MAX_SQL_LENGTH} characters`,
      position: null,
    });
    const atLimit = 'select 1' + ' '.repeat(EXPLORER_MAX_SQL_LENGTH - 8);
    assert.equal(validateExplorerSql(atLimit).ok, true);
  });

  test('a deeply nested expression within the length bound is refused, never thrown (no 500)', () => {
    const sql = `select 1${'+1'.repeat(9_000)}`;
    assert.ok(sql.length <= EXPLORER_MAX_SQL_LENGTH);
    assert.deepEqual(validateExplorerSql(sql), {
      ok: false,
      code: 'too_complex',
      reason: 'the query is nested too deeply',
      position: null,
    });
    // The audit redaction of the same text never throws and never keeps a literal: redacted, or
    // the unparseable placeholder when the parser itself runs out of stack (it depends on how
    // much stack the JIT leaves; seen under load).
    const redacted = redactSql(sql);
    assert.ok(redacted === UNPARSEABLE_SQL || /^select \?\+\?/.test(redacted), redacted.slice(0, 40));
    assert.doesNotMatch(redacted, /1/);
  });

  test('position points at the refused function name', () => {
    const sql = 'select a,\n  lower(b), pg_sleep(1) from t';
    const v = validateExplorerSql(sql);
    assert.equal(v.ok, false);
    if (!v.ok) assert.equal(v.position, sql.indexOf('pg_sleep'));
  });

  test('position is a character offset with multi-byte text before it', () => {
    const sql = "select 'héllo 😀', evil() from t";
    const v = validateExplorerSql(sql);
    if (v.ok) assert.fail('expected refusal');
    assert.equal(v.position, sql.indexOf('evil'));
    const r = validateExplorerSql("select 'é' from pg_authid");
    if (r.ok) assert.fail('expected refusal');
    assert.equal(r.position, "select 'é' from ".length);
  });

  test('position of relations, syntax errors and second statements', () => {
    const v = validateExplorerSql('select * from t join secret.x on true');
    assert.equal(!v.ok && v.position, 'select * from t join '.length);
    const bad = "select 'é' from from";
    const s = validateExplorerSql(bad);
    assert.equal(!s.ok && s.code === 'syntax_error' && s.position, bad.lastIndexOf('from'));
    const m = validateExplorerSql('select 1;  commit');
    assert.equal(!m.ok && m.position, 'select 1;  '.length);
  });

  test('redactSql removes literals', () => {
    const r = redactSql("select * from t where a = 'secret' and b = 42");
    assert.equal(r, 'select * from t where a = ? and b = ?');
    assert.ok(!r.includes('secret') && !r.includes('42'));
  });

  test('redactSql handles every literal form and comments', () => {
    const sql =
      "select E'x\\'y', $t$z$t$, $$w$$, b'01', x'ff', N'n', U&'d\\0061t', 1.5e3, .5, -7, \"Col1\", $1 " +
      '/* pw /* nested */ still */ -- trailing secret\n';
    const r = redactSql(sql);
    for (const secret of [
      'x',
      'y',
      'z',
      'w',
      '01',
      'ff',
      "'n'",
      'd\\0061t',
      '1.5',
      '.5',
      '7',
      'pw',
      'secret',
    ]) {
      assert.ok(!r.includes(secret), `${secret} leaked in ${r}`);
    }
    assert.ok(r.includes('"Col1"') && r.includes('$1'));
  });

  test('redactSql redacts refused statements too (audit log)', () => {
    assert.equal(redactSql("alter role x password 'hunter2'"), 'alter role x password ?');
    assert.equal(redactSql('select t1.a2 from t1 limit 10'), 'select t1.a2 from t1 limit ?');
  });

  test('redactSql falls back for unparseable or oversized input', () => {
    assert.equal(redactSql("select 'secret"), UNPARSEABLE_SQL);
    assert.equal(redactSql("selec 'secret'"), UNPARSEABLE_SQL);
    assert.equal(redactSql('select 1' + ' '.repeat(EXPLORER_MAX_SQL_LENGTH)), UNPARSEABLE_SQL);
  });

  test('a deny-listed function is refused with its reason', () => {
    const v = validateExplorerSql("select current_setting('data_directory')");
    assert.equal(!v.ok && v.reason.endsWith(DENIED_FUNCTIONS['current_setting'] ?? '?'), true);
  });

  test('each validator keeps its own verdict cache, bounded; the verdict is the same with or without it', () => {
    const a = createExplorerValidator({ cacheSize: 2 });
    const b = createExplorerValidator({ cacheSize: 2 });
    const first = a.validate('select 1');
    assert.equal(a.validate('select 1'), first, 'a repeated query is served from the cache');
    assert.notEqual(b.validate('select 1'), first, 'another validator does not share it');
    assert.deepEqual(b.validate('select 1'), first);
    a.validate('select 2');
    a.validate('select 3'); // evicts 'select 1' (oldest first)
    assert.notEqual(a.validate('select 1'), first);
    assert.notEqual(validator.validate('select 1'), validator.validate('select 1'), 'cacheSize 0: no cache');
    assert.throws(() => createExplorerValidator({ cacheSize: -1 }), RangeError);
  });

  test('accepted verdict carries the redacted SQL', () => {
    const v = validateExplorerSql("select * from t where name = 'alice' limit 5");
    assert.deepEqual(v, { ok: true, kind: 'select', redacted: 'select * from t where name = ? limit ?' });
  });
});
