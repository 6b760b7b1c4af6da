/**
 * The explorer attack corpus (issue 6). Each entry: [sql, expectation, sqlstate?]
 *   refused  — the parser gate refuses it (on the server and again on the agent)
 *   fails    — the gate accepts it, the run-time layers stop it (a PostgreSQL error)
 *   capped   — accepted, runs, and the row/byte caps cut it (truncated)
 *   runs     — accepted and harmless (it must still change nothing)
 * The fixture (test/explorer-attacks.test.ts) gives the tenant database: canary, orders,
 * customers, a sequence `seq`, owner functions evil(canary) (INSERTs), evil_definer(canary)
 * (SECURITY DEFINER, INSERTs), an operator `===` and a domain `dom_evil` whose functions INSERT,
 * and a view v_evil calling evil.
 */
export type Expect = 'refused' | 'fails' | 'capped' | 'runs';
export type CorpusEntry = readonly [sql: string, expect: Expect, sqlstate?: string];

export const ATTACKS: readonly CorpusEntry[] = [
  // Transaction escapes via several statements (and comment / quoting tricks to hide them)
  ['select 1; commit', 'refused'],
  ['commit; insert into canary values (100, $$x$$)', 'refused'],
  ['select 1; set transaction read write; insert into canary values (100, $$x$$)', 'refused'],
  ['select 1 /* ; */ ; delete from canary', 'refused'],
  ['select 1 --\n; delete from canary', 'refused'],
  ['select $$ a $$; delete from canary', 'refused'],
  ['select $x$;$x$; drop table canary', 'refused'],
  ["select E'\\';'; delete from canary", 'refused'],
  ["select 'a'';'; truncate canary", 'refused'],
  ['select 1 /* nested /* comment */ ; still comment */; delete from canary', 'refused'],
  ['rollback', 'refused'],
  ['begin', 'refused'],
  // SET / set_config of read-only and search_path, roles
  ['set transaction read write', 'refused'],
  ['set session characteristics as transaction read write', 'refused'],
  ["select set_config('default_transaction_read_only', 'off', false)", 'refused'],
  ["select set_config('transaction_read_only', 'off', true)", 'refused'],
  ["select set_config('search_path', 'pg_temp, public', false)", 'refused'],
  ['set search_path = pg_temp', 'refused'],
  ['set role postgres', 'refused'],
  ['reset role', 'refused'],
  ['set session authorization postgres', 'refused'],
  ["select set_config('role', 'postgres', false)", 'refused'],
  // Writable CTEs, MERGE, SELECT INTO, CREATE … AS, EXPLAIN ANALYZE of writes
  ['with x as (delete from canary returning *) select * from x', 'refused'],
  ['with x as (insert into canary values (100, $$x$$) returning *) select * from x', 'refused'],
  ['with x as (update canary set secret = $$x$$ returning *) select * from x', 'refused'],
  ['select * from (with y as (delete from canary returning *) select * from y) s', 'refused'],
  ['select (with c as (delete from canary returning 1) select * from c)', 'refused'],
  ['merge into canary c using orders o on c.id = o.id when matched then delete', 'refused'],
  ['select * into pwn_copy from canary', 'refused'],
  ['create table pwn_t as select * from canary', 'refused'],
  ['create materialized view pwn_mv as select 1', 'refused'],
  ['explain analyze delete from canary', 'refused'],
  ['explain (analyze true) select * from canary', 'refused'],
  ['explain delete from canary', 'refused'],
  // User functions, CALL, DO, PREPARE / EXECUTE
  ['select evil(c) from canary c', 'refused'],
  ['select public.evil(c) from canary c', 'refused'],
  ['call pwn_proc()', 'refused'],
  ['do $$ begin insert into canary values (100, $x$x$x$); end $$', 'refused'],
  ['prepare pwn as insert into canary values (100, $$x$$)', 'refused'],
  ['execute pwn', 'refused'],
  // Functions that run SQL from a string
  ["select query_to_xml('insert into canary values (100, ''x'') returning 1', true, false, '')", 'refused'],
  ["select ts_stat('select to_tsvector(secret) from canary')", 'refused'],
  ["select ts_rewrite('a'::tsquery, 'select ''a''::tsquery, ''b''::tsquery')", 'refused'],
  ["select cursor_to_xml('c', 1, true, false, '')", 'refused'],
  ["select xpath('/a', query_to_xml('select 1', true, false, ''))", 'refused'],
  // Unicode-identifier and escape tricks
  ['select * from U&"\\0070g_authid"', 'refused'],
  ['select * from "PG_AUTHID"', 'refused'],
  ["select U&'\\0027; delete from canary'", 'runs'],
  ["select E'\\x27; drop table canary; --'", 'runs'],
  // Locking clauses and LOCK; advisory locks
  ['select * from canary for update', 'refused'],
  ['select * from canary for share skip locked', 'refused'],
  ['lock table canary in access exclusive mode', 'refused'],
  ['select pg_advisory_lock(42)', 'refused'],
  ['select pg_try_advisory_lock(42)', 'refused'],
  ['select pg_advisory_xact_lock(42)', 'refused'],
  // Sequences, large objects
  ["select nextval('seq')", 'refused'],
  ["select setval('seq', 1000)", 'refused'],
  ["select lo_from_bytea(0, 'pwn')", 'refused'],
  ['select lo_create(0)', 'refused'],
  ["select lo_import('/etc/passwd')", 'refused'],
  // File and program access
  ["select pg_read_file('/etc/passwd')", 'refused'],
  ["select pg_read_binary_file('postgresql.conf')", 'refused'],
  ["select pg_ls_dir('.')", 'refused'],
  ["copy canary to program 'id'", 'refused'],
  ["copy canary from '/etc/passwd'", 'refused'],
  // dblink, backend signalling, logical messages
  ["select dblink_exec('dbname=postgres', 'drop table canary')", 'refused'],
  ["select * from dblink('dbname=postgres', 'select 1') as t(a int)", 'refused'],
  ['select pg_terminate_backend(1)', 'refused'],
  ['select pg_cancel_backend(1)', 'refused'],
  ['select pg_reload_conf()', 'refused'],
  ["select pg_logical_emit_message(true, 'pwn', 'x')", 'refused'],
  ["select pg_notify('pwn', 'x')", 'refused'],
  ['listen pwn', 'refused'],
  // Catalogs of other databases and roles
  ['select datname from pg_database', 'refused'],
  ['select rolname, rolpassword from pg_authid', 'refused'],
  ['select * from pg_catalog.pg_roles', 'refused'],
  ['select * from information_schema.tables', 'refused'],
  ['select * from pg_stat_activity', 'refused'],
  ['select * from other_db.public.secrets', 'refused'],
  ['select * from private.secrets', 'refused'],
  ['select * from other_secret', 'fails', '42P01'],
  ['select version()', 'runs'],
  ["select current_setting('data_directory')", 'refused'],
  ['select current_user', 'refused'],
  // Stable or immutable in the catalog, yet beyond the tenant's data: the deny list (issue 19)
  ['select * from pg_stat_get_activity(null)', 'refused'],
  ['select pg_stat_get_backend_pid(s) from pg_stat_get_backend_idset() s', 'refused'],
  ['select pg_stat_get_db_numbackends(1)', 'refused'],
  ['select pg_backend_pid()', 'refused'],
  ["select has_database_privilege('postgres', 'connect')", 'refused'],
  ["select pg_has_role('postgres', 'member')", 'refused'],
  ['select txid_current()', 'refused'],
  ['select pg_current_xact_id()', 'refused'],
  ['select * from pg_available_extensions()', 'refused'],
  ['select * from pg_config()', 'refused'],
  ['select * from pg_show_all_settings()', 'refused'],
  ["select current_setting('hba_file')", 'refused'],
  ['select inet_server_addr(), inet_client_addr()', 'refused'],
  ['select * from pg_cursor()', 'refused'],
  ['select pg_postmaster_start_time()', 'refused'],
  ["select mxid_age('1'::xid)", 'refused'],
  ["select pg_replication_origin_oid('x')", 'refused'],
  ['select satisfies_hash_partition(1, 1, 0, 1)', 'refused'],
  ["select pg_get_serial_sequence('canary', 'id')", 'refused'],
  ['select "session_user"()', 'refused'],
  // Not of the safe kind (volatile, catalog lookups, sessions): outside the derived allowlist
  ["select pg_relation_size('canary')", 'refused'],
  ["select to_regrole('postgres')", 'refused'],
  ['select * from pg_ls_waldir()', 'refused'],
  ['select * from pg_ls_tmpdir()', 'refused'],
  ["select pg_stat_file('postgresql.conf')", 'refused'],
  ['select lo_get(1)', 'refused'],
  ['select lo_unlink(1)', 'refused'],
  ["select lo_import('/etc/hostname')", 'refused'],
  ['select pg_advisory_lock_shared(7)', 'refused'],
  ['select pg_try_advisory_xact_lock(7)', 'refused'],
  ['select currval(1)', 'refused'],
  ['select lastval()', 'refused'],
  ['select setseed(0.5)', 'refused'],
  ["select database_to_xml(true, true, '')", 'refused'],
  ["select ts_rewrite('a'::tsquery, 'select ''a''::tsquery, ''b''::tsquery')", 'refused'],
  ['select pg_notification_queue_usage()', 'refused'],
  ['select * from pg_get_backend_memory_contexts()', 'refused'],
  ['select pg_export_snapshot()', 'refused'],
  ["select 'english_stem'::regdictionary", 'refused'],
  // Harmless functions the derived allowlist accepts (issue 19): they run and change nothing
  ['select numeric_uminus(1.5), int4or(1, 2), int8and(6, 3), int4shl(1, 3)', 'runs'],
  ["select int4range(1, 3), int4multirange(int4range(1, 3)), daterange('2026-01-01', null)", 'runs'],
  ['select point(1, 2), box(point(0, 0), point(1, 1)), circle(point(0, 0), 2)', 'runs'],
  [
    "select bpchar('x'), current_database(), current_schema(), current_catalog, getdatabaseencoding()",
    'runs',
  ],
  ["select to_tsvector('english', secret) @@ to_tsquery('english', 'alpha') from canary", 'runs'],
  ["select to_tsvector('no_such_config', 'x')", 'fails', '42704'],
  ["select quote_ident(secret), quote_literal(secret), format('%I = %L', secret, id) from canary", 'runs'],
  ['select pg_column_size(c.*), age(c.xmin), pg_size_pretty(1024::bigint) from canary c', 'runs'],
  ['select * from pg_get_keywords() limit 1', 'runs'],
  ["select * from ts_parse('default', 'a b')", 'runs'],
  ['select clock_timestamp() >= now(), random() < 2, gen_random_uuid() is not null', 'runs'],
  // Sleeps
  ['select pg_sleep(10)', 'refused'],
  ["select pg_sleep_for('10 seconds')", 'refused'],
  // Accepted by the gate, stopped at run time: hidden user code
  ['select c.evil from canary c', 'fails', '42501'],
  ['select c.evil_definer from canary c', 'fails', '42501'],
  ['select (c).evil from canary c', 'fails', '42501'],
  ['select * from v_evil', 'fails', '42501'],
  ['select 1 === 1', 'fails', '42501'],
  ["select 'x'::dom_evil", 'fails', '42501'],
  ["select 'x'::public.dom_evil", 'fails', '42501'],
  // Accepted, bounded by timeouts and caps
  ['select count(*) from generate_series(1, 1e9)', 'fails', '57014'],
  [
    'with recursive r(n) as (select 1 union all select n + 1 from r) select count(*) from r',
    'fails',
    '57014',
  ],
  ['select count(*) from generate_series(1, 1e5) a, generate_series(1, 1e5) b', 'fails', '57014'],
  ['select generate_series(1, 1e9)', 'capped'],
  ['select * from generate_series(1, 1e9)', 'fails', '57014'],
  ["select repeat('x', 1000000) from generate_series(1, 200)", 'capped'],
  ["select string_agg(repeat('y', 1000), ',') from generate_series(1, 100)", 'runs'],
  // Harmless but suspicious-looking
  ['select * from canary where secret = $$; delete from canary; --$$', 'runs'],
  ['select c.xmin, c.ctid from canary c', 'runs'],
  ['table canary', 'runs'],
  ['values (1), (2)', 'runs'],
  ['explain select * from canary join orders on orders.id = canary.id', 'runs'],
];

/** Legitimate analytical queries: [sql, expected rows (as JSON cells)]. */
export const LEGIT: readonly (readonly [string, unknown[][]])[] = [
  [
    'select id, secret from canary order by id',
    [
      [1, 'alpha'],
      [2, 'beta'],
      [3, 'gamma'],
    ],
  ],
  [
    'select c.name, count(o.id) as n, sum(o.amount) as total from customers c left join orders o on o.customer_id = c.id group by c.name order by c.name',
    [
      ['ann', 2, '30.50'],
      ['bob', 1, '7.25'],
      ['cy', 0, null],
    ],
  ],
  [
    'select id, amount, sum(amount) over (order by id) as running, rank() over (order by amount desc) from orders order by id',
    [
      [1, '10.00', '10.00', 2],
      [2, '20.50', '30.50', 1],
      [3, '7.25', '37.75', 3],
    ],
  ],
  [
    'with big as (select * from orders where amount > 8) select count(*), max(amount) from big',
    [[2, '20.50']],
  ],
  [
    "select 'delete from canary; drop table orders' as s, 'insert' || ' into' as t",
    [['delete from canary; drop table orders', 'insert into']],
  ],
  ['select /* outer /* nested */ still */ 42 as answer -- trailing comment', [[42]]],
  [
    "select date_trunc('day', timestamp '2026-01-02 03:04:05')::text, upper('x'), length('héllo'), 1.5::float8, true",
    [['2026-01-02 00:00:00', 'X', 5, 1.5, true]],
  ],
  ['select name from customers where id in (select customer_id from orders) order by 1', [['ann'], ['bob']]],
  [
    "select jsonb_build_object('k', 1)::text, array_agg(id order by id)::text from canary",
    [['{"k": 1}', '{1,2,3}']],
  ],
];
