/**
 * Allowlists used by the SQL explorer validator (explorer-validator.ts): functions, types, EXPLAIN
 * options, TABLESAMPLE methods and parse-tree node types.
 *
 * Functions: only side-effect-free built-ins that do not read settings, system state or
 * other catalog objects, and never run SQL given as a string. Names are the
 * parser's (already case-folded) spelling; a name may be written bare or as
 * `pg_catalog.<name>`. Anything not listed is refused: user-defined functions,
 * every `pg_*` function, sequences, large objects, advisory locks, file access,
 * dblink, *_to_xml, ts_stat/ts_rewrite, set_config/current_setting, version(),
 * txid_*, has_*_privilege, inet_server_*, ...
 */

const words = (s: string): string[] => s.trim().split(/\s+/);

const AGGREGATES = words(`
  count sum avg min max stddev stddev_pop stddev_samp variance var_pop var_samp array_agg string_agg
  json_agg jsonb_agg json_object_agg jsonb_object_agg bool_and bool_or every bit_and bit_or bit_xor
  percentile_cont percentile_disc mode corr covar_pop covar_samp regr_avgx regr_avgy regr_count
  regr_intercept regr_r2 regr_slope regr_sxx regr_sxy regr_syy range_agg range_intersect_agg
`);

const WINDOW = words(`
  row_number rank dense_rank percent_rank cume_dist ntile lag lead first_value last_value nth_value
`);

const MATH = words(`
  abs ceil ceiling floor round trunc sign sqrt cbrt power pow exp ln log log10 mod div pi degrees
  radians sin cos tan cot asin acos atan atan2 sind cosd tand cotd asind acosd atand atan2d sinh cosh
  tanh asinh acosh atanh factorial gcd lcm scale min_scale trim_scale width_bucket random num_nulls
  num_nonnulls
`);

const STRINGS = words(`
  lower upper initcap length char_length character_length octet_length bit_length substr substring
  position strpos replace translate trim btrim ltrim rtrim lpad rpad left right reverse repeat concat
  concat_ws split_part overlay regexp_replace regexp_match regexp_matches regexp_split_to_array
  regexp_split_to_table regexp_count regexp_instr regexp_like regexp_substr starts_with md5 sha224
  sha256 sha384 sha512 encode decode to_hex ascii chr format quote_ident quote_literal quote_nullable
  string_to_array string_to_table normalize is_normalized unistr convert_from convert_to get_bit
  get_byte set_bit set_byte bit_count like_escape similar_escape similar_to_escape
`);

const FORMATTING = ['to_char', 'to_number', 'to_date', 'to_timestamp'];

const DATETIME = words(`
  now clock_timestamp statement_timestamp transaction_timestamp timeofday date_trunc date_part extract
  age make_date make_time make_timestamp make_timestamptz make_interval justify_days justify_hours
  justify_interval isfinite date_bin timezone overlaps
`);

const SETS_AND_ARRAYS = words(`
  generate_series generate_subscripts unnest array_length array_lower array_upper array_ndims
  array_dims array_fill array_position array_positions array_remove array_replace array_to_string
  array_cat array_append array_prepend cardinality trim_array
`);

const JSON_FUNCS = words(`
  json_build_object jsonb_build_object json_build_array jsonb_build_array json_object jsonb_object
  to_json to_jsonb row_to_json array_to_json json_array_length jsonb_array_length json_each jsonb_each
  json_each_text jsonb_each_text json_array_elements jsonb_array_elements json_array_elements_text
  jsonb_array_elements_text json_object_keys jsonb_object_keys json_typeof jsonb_typeof jsonb_pretty
  jsonb_set jsonb_set_lax jsonb_insert json_strip_nulls jsonb_strip_nulls jsonb_path_query
  jsonb_path_query_array jsonb_path_query_first jsonb_path_exists jsonb_path_match jsonb_extract_path
  jsonb_extract_path_text json_extract_path json_extract_path_text json_populate_record
  jsonb_populate_record json_populate_recordset jsonb_populate_recordset json_to_record
  jsonb_to_record json_to_recordset jsonb_to_recordset
`);

const TEXT_SEARCH = words(`
  to_tsvector to_tsquery plainto_tsquery phraseto_tsquery websearch_to_tsquery ts_rank ts_rank_cd
  ts_headline setweight strip numnode
`);

const RANGES = words(`
  isempty lower_inc upper_inc lower_inf upper_inf range_merge int4range int8range numrange tsrange
  tstzrange daterange
`);

/** Function-call-style casts and other harmless type helpers. */
const TYPE_HELPERS = words(`
  gen_random_uuid int2 int4 int8 float4 float8 numeric text bool date time timestamp timestamptz
  interval host masklen network broadcast netmask family
`);

export const ALLOWED_FUNCTIONS: ReadonlySet<string> = new Set([
  ...AGGREGATES,
  ...WINDOW,
  ...MATH,
  ...STRINGS,
  ...FORMATTING,
  ...DATETIME,
  ...SETS_AND_ARRAYS,
  ...JSON_FUNCS,
  ...TEXT_SEARCH,
  ...RANGES,
  ...TYPE_HELPERS,
]);

/** SQLValueFunction ops (keyword "functions"): only the clock ones; not CURRENT_USER/CURRENT_SCHEMA/... */
export const ALLOWED_SQL_VALUE_FUNCTIONS: ReadonlySet<string> = new Set(
  words(`
    SVFOP_CURRENT_DATE SVFOP_CURRENT_TIME SVFOP_CURRENT_TIME_N SVFOP_CURRENT_TIMESTAMP
    SVFOP_CURRENT_TIMESTAMP_N SVFOP_LOCALTIME SVFOP_LOCALTIME_N SVFOP_LOCALTIMESTAMP
    SVFOP_LOCALTIMESTAMP_N
  `),
);

/**
 * Types whose input function looks objects up in the catalogs (or parses XML); also any `pg_*` type.
 * `aclitem` reads role names from pg_authid, cluster-wide: a cast would tell whether another
 * tenant's role (so its database) exists.
 */
export const DENIED_TYPES: ReadonlySet<string> = new Set(
  words(`
    regclass regproc regprocedure regoper regoperator regnamespace regrole regtype regconfig
    regdictionary regcollation xml txid_snapshot aclitem
  `),
);

export const ALLOWED_TABLESAMPLE_METHODS: ReadonlySet<string> = new Set(['bernoulli', 'system']);

/** EXPLAIN options accepted (ANALYZE only when explicitly false). SETTINGS is refused: it prints config. */
export const ALLOWED_EXPLAIN_OPTIONS: ReadonlySet<string> = new Set(
  words(`
    analyze verbose costs buffers wal timing summary format
  `),
);

/** Node types allowed anywhere below the top-level statement. */
export const ALLOWED_NODES: ReadonlySet<string> = new Set(
  words(`
    SelectStmt ResTarget ColumnRef A_Star A_Const A_Expr BoolExpr FuncCall TypeCast TypeName RangeVar
    JoinExpr RangeSubselect RangeFunction RangeTableSample SubLink CaseExpr CaseWhen CoalesceExpr
    MinMaxExpr NullTest BooleanTest SortBy WindowDef A_Indirection A_Indices A_ArrayExpr RowExpr
    CollateClause SQLValueFunction GroupingSet GroupingFunc CommonTableExpr WithClause CTESearchClause
    CTECycleClause ColumnDef Alias String Integer Float Boolean BitString List
  `),
);

/** Leaf nodes: nothing below them can hold a relation, function or statement. */
export const LEAF_NODES: ReadonlySet<string> = new Set(
  words(`
    A_Const A_Star String Integer Float Boolean BitString
  `),
);

/** Struct-typed (unwrapped) fields: parent node type -> field -> node type. */
export const BARE_FIELDS: Readonly<Record<string, Readonly<Record<string, string>>>> = {
  SelectStmt: { intoClause: 'IntoClause', withClause: 'WithClause', larg: 'SelectStmt', rarg: 'SelectStmt' },
  FuncCall: { over: 'WindowDef' },
  TypeCast: { typeName: 'TypeName' },
  ColumnDef: { typeName: 'TypeName', collClause: 'CollateClause' },
  RangeVar: { alias: 'Alias' },
  RangeSubselect: { alias: 'Alias' },
  RangeFunction: { alias: 'Alias' },
  JoinExpr: { alias: 'Alias', join_using_alias: 'Alias' },
  CommonTableExpr: { search_clause: 'CTESearchClause', cycle_clause: 'CTECycleClause' },
};

export const SPECIFIC_REFUSALS: Readonly<Record<string, [code: string, reason: string]>> = {
  IntoClause: ['select_into', 'SELECT INTO creates a table'],
  LockingClause: ['locking_clause', 'FOR UPDATE/SHARE locking clauses are not allowed'],
  XmlExpr: ['xml_not_allowed', 'XML functions are not allowed'],
  XmlSerialize: ['xml_not_allowed', 'XML functions are not allowed'],
  RangeTableFunc: ['xml_not_allowed', 'XMLTABLE is not allowed'],
  ParamRef: ['parameter_not_allowed', 'parameters ($1) are not supported'],
};
