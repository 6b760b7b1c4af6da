/**
 * Allowlists used by the SQL explorer validator (explorer-validator.ts): functions, types, EXPLAIN
 * options, TABLESAMPLE methods and parse-tree node types.
 *
 * Functions are not listed by hand: explorer-functions.generated.ts is derived from a real
 * PostgreSQL's pg_proc by the rules of explorer-function-policy.ts (ADR 0012), which also holds the
 * deny list of the exceptions the catalog cannot know. Names are the parser's (already case-folded)
 * spelling; a name may be written bare or as `pg_catalog.<name>`. Anything else is refused:
 * user-defined functions, other schemas, volatile functions (sequences, large objects, advisory
 * locks, settings, files, signals), catalog lookups, other sessions' statistics.
 */
import { CATALOG_TYPES } from './explorer-function-policy.ts';
import { DERIVED_FUNCTION_NAMES } from './explorer-functions.generated.ts';

const words = (s: string): string[] => s.trim().split(/\s+/);

export const ALLOWED_FUNCTIONS: ReadonlySet<string> = new Set(words(DERIVED_FUNCTION_NAMES));

/**
 * SQLValueFunction ops (keyword "functions"): the clock, and CURRENT_SCHEMA / CURRENT_CATALOG (the
 * tenant's own schema and database); not CURRENT_USER/SESSION_USER/CURRENT_ROLE/USER (the
 * platform's login role, denied as functions too).
 */
export const ALLOWED_SQL_VALUE_FUNCTIONS: ReadonlySet<string> = new Set(
  words(`
    SVFOP_CURRENT_DATE SVFOP_CURRENT_TIME SVFOP_CURRENT_TIME_N SVFOP_CURRENT_TIMESTAMP
    SVFOP_CURRENT_TIMESTAMP_N SVFOP_LOCALTIME SVFOP_LOCALTIME_N SVFOP_LOCALTIMESTAMP
    SVFOP_LOCALTIMESTAMP_N SVFOP_CURRENT_SCHEMA SVFOP_CURRENT_CATALOG
  `),
);

/**
 * Types whose input function looks objects up in the catalogs (or parses XML): the policy's
 * CATALOG_TYPES, the same that refuse a function taking or returning one; also any `pg_*` type, and
 * the array types of all of them by their underscore names (`_regrole`, `_aclitem`, `_xml`).
 * `aclitem` reads role names from pg_authid, cluster-wide: a cast would tell whether another
 * tenant's role (so its database) exists. `regconfig` is allowed: a text-search configuration of the
 * tenant's own database (`to_tsvector('english', body)`, `'simple'::regconfig`).
 */
export const DENIED_TYPES: ReadonlySet<string> = new Set(Object.keys(CATALOG_TYPES));

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
