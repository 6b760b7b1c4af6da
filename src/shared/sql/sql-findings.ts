/**
 * Review findings of the governed-SQL classifier (ADR 0020): things a reviewer should see before
 * approving, each with a severity a database's policy may change (`warn`, `block`, or `off`).
 * `block` means the request cannot be approved as written.
 */
import {
  asObject,
  isSchemaChange,
  type JsonObject,
  type SqlClass,
  walkTree,
} from './sql-classifier-rules.ts';

export type FindingCode =
  | 'missing_where'
  | 'index_not_concurrent'
  | 'not_null_without_default'
  | 'lock_heavy_alter'
  | 'mixed_ddl_dml'
  | 'huge_in_list'
  | 'cascade'
  | 'concurrently_in_transaction';

export type Severity = 'warn' | 'block';

export type SqlFinding = {
  code: FindingCode;
  severity: Severity;
  message: string;
  statement_index: number;
  /** JS string index in the request text, when the parser gave one. */
  location?: number;
};

export type ReviewOptions = {
  severities?: Partial<Record<FindingCode, Severity | 'off'>>;
  /** Rows of a table, if known (e.g. from the agent's statistics); undefined when not. */
  tableRows?: (schema: string, table: string) => number | undefined;
  /** A table with more rows than this (or of unknown size) is large. Default 10,000. */
  largeTableRows?: number;
  /** An IN list or ARRAY[…] with more literal items than this is flagged. Default 1000. */
  maxInListItems?: number;
};

export const DEFAULT_SEVERITIES: Readonly<Record<FindingCode, Severity>> = {
  // Destructive already; block so intent is written down (`WHERE true`, or TRUNCATE).
  missing_where: 'block',
  index_not_concurrent: 'warn',
  not_null_without_default: 'warn',
  lock_heavy_alter: 'warn',
  mixed_ddl_dml: 'warn',
  huge_in_list: 'warn',
  cascade: 'warn',
  // CONCURRENTLY cannot run inside a transaction block, and a multi-statement request runs in one.
  concurrently_in_transaction: 'block',
};

type ReviewedStatement = { type: string; body: JsonObject; index: number; class: SqlClass };

type Relation = { schema: string; table: string; loc: number | null };

function relationOf(v: unknown): Relation | null {
  const o = asObject(v as JsonObject);
  const rv = asObject(o?.['RangeVar']) ?? o;
  if (!rv || typeof rv['relname'] !== 'string') return null;
  const schema = typeof rv['schemaname'] === 'string' ? rv['schemaname'] : 'public';
  return { schema, table: rv['relname'], loc: typeof rv['location'] === 'number' ? rv['location'] : null };
}

const LOCK_HEAVY: Readonly<Record<string, string>> = {
  AT_AlterColumnType: 'ALTER COLUMN TYPE rewrites the table under an ACCESS EXCLUSIVE lock',
  AT_SetNotNull: 'SET NOT NULL scans the table under an ACCESS EXCLUSIVE lock',
  AT_SetLogged: 'SET LOGGED rewrites the table under an ACCESS EXCLUSIVE lock',
  AT_SetUnLogged: 'SET UNLOGGED rewrites the table under an ACCESS EXCLUSIVE lock',
};

function has(list: unknown, pred: (c: JsonObject) => boolean): boolean {
  return (
    Array.isArray(list) &&
    list.some((c) => {
      const o = asObject(asObject(c as JsonObject)?.['Constraint']);
      return o !== null && pred(o);
    })
  );
}

function isLiteral(v: unknown): boolean {
  const o = asObject(v as JsonObject);
  if (!o) return false;
  if (o['A_Const']) return true;
  const cast = asObject(o['TypeCast']);
  return cast !== null && asObject(cast['arg'])?.['A_Const'] !== undefined;
}

/**
 * CONCURRENTLY forms that PostgreSQL refuses inside a transaction block: CREATE/DROP INDEX, REINDEX,
 * DETACH PARTITION (REFRESH MATERIALIZED VIEW CONCURRENTLY may run in one).
 */
function runsOutsideTransaction(s: ReviewedStatement): boolean {
  if (s.type === 'RefreshMatViewStmt') return false;
  if (s.type === 'ReindexStmt') {
    const params = Array.isArray(s.body['params']) ? s.body['params'] : [];
    return params.some((p) => asObject(asObject(p)?.['DefElem'])?.['defname'] === 'concurrently');
  }
  let found = false;
  walkTree({ [s.type]: s.body }, (_type, body) => {
    if (body['concurrent'] === true) found = true;
    return !found;
  });
  return found || s.body['concurrent'] === true;
}

/** Findings of one request, its statements in order. `toIndex` maps parser byte offsets to JS indices. */
export function reviewRequest(
  statements: ReviewedStatement[],
  toIndex: (byteOffset: number) => number,
  opts: ReviewOptions = {},
): SqlFinding[] {
  const out: SqlFinding[] = [];
  const large = opts.largeTableRows ?? 10_000;
  const maxIn = opts.maxInListItems ?? 1000;
  const created = new Set<string>();
  const add = (code: FindingCode, message: string, index: number, loc: number | null | undefined) => {
    const severity = opts.severities?.[code] ?? DEFAULT_SEVERITIES[code];
    if (severity === 'off') return;
    const f: SqlFinding = { code, severity, message, statement_index: index };
    if (typeof loc === 'number' && loc >= 0) f.location = toIndex(loc);
    out.push(f);
  };
  /** Large, or of unknown size; a table created by this request is empty. */
  const isLarge = (r: Relation): { large: boolean; rows: number | undefined } => {
    if (created.has(`${r.schema}.${r.table}`)) return { large: false, rows: 0 };
    const rows = opts.tableRows?.(r.schema, r.table);
    return { large: rows === undefined || rows > large, rows };
  };
  const size = (rows: number | undefined) => (rows === undefined ? 'of unknown size' : `of ${rows} rows`);

  let sawDdl = -1;
  let sawDml = -1;
  let mixedReported = false;
  for (const s of statements) {
    const i = s.index;
    if (s.type === 'CreateStmt' || s.type === 'CreateTableAsStmt') {
      const r = relationOf(s.body['relation'] ?? asObject(s.body['into'])?.['rel']);
      if (r) created.add(`${r.schema}.${r.table}`);
    }
    if (isSchemaChange(s.type)) sawDdl = sawDdl < 0 ? i : sawDdl;
    else if (s.class === 'write' || s.class === 'destructive') sawDml = sawDml < 0 ? i : sawDml;
    if (sawDdl >= 0 && sawDml >= 0 && !mixedReported) {
      mixedReported = true;
      add(
        'mixed_ddl_dml',
        'the request mixes schema changes and data changes; consider two requests',
        i,
        null,
      );
    }
    if (statements.length > 1 && runsOutsideTransaction(s)) {
      add(
        'concurrently_in_transaction',
        'CONCURRENTLY cannot run inside the request\u2019s transaction: send it alone',
        i,
        null,
      );
    }
    if (s.type === 'IndexStmt' && s.body['concurrent'] !== true) {
      const r = relationOf(s.body['relation']);
      const l = r ? isLarge(r) : { large: true, rows: undefined };
      if (r && l.large) {
        add(
          'index_not_concurrent',
          `CREATE INDEX without CONCURRENTLY blocks writes to ${r.table} (a table ${size(l.rows)}) while it builds`,
          i,
          r.loc,
        );
      }
    }
    if (s.type === 'AlterTableStmt') reviewAlterTable(s, isLarge, size, add);
    walkTree({ [s.type]: s.body }, (type, body) => {
      const loc = typeof body['location'] === 'number' ? body['location'] : null;
      if ((type === 'UpdateStmt' || type === 'DeleteStmt') && body['whereClause'] === undefined) {
        const r = relationOf(body['relation']);
        const verb = type === 'UpdateStmt' ? 'UPDATE' : 'DELETE';
        add(
          'missing_where',
          `${verb} of ${r?.table ?? 'a table'} has no WHERE: it affects every row`,
          i,
          r?.loc,
        );
      }
      if (body['behavior'] === 'DROP_CASCADE') {
        add('cascade', 'CASCADE also drops or empties every object that depends on this one', i, loc);
      }
      const items =
        type === 'A_Expr' && body['kind'] === 'AEXPR_IN'
          ? asObject(asObject(body['rexpr'])?.['List'])?.['items']
          : type === 'A_ArrayExpr'
            ? body['elements']
            : undefined;
      if (Array.isArray(items)) {
        const literals = items.filter(isLiteral).length;
        if (literals > maxIn)
          add(
            'huge_in_list',
            `a list of ${literals} literal values (more than ${maxIn}): use a join or a temporary table`,
            i,
            loc,
          );
      }
      return true;
    });
  }
  return out;
}

function reviewAlterTable(
  s: ReviewedStatement,
  isLarge: (r: Relation) => { large: boolean; rows: number | undefined },
  size: (rows: number | undefined) => string,
  add: (code: FindingCode, message: string, index: number, loc: number | null | undefined) => void,
): void {
  const r = relationOf(s.body['relation']);
  if (!r) return;
  const l = isLarge(r);
  if (!l.large) return;
  const on = `on ${r.table} (a table ${size(l.rows)})`;
  for (const item of Array.isArray(s.body['cmds']) ? s.body['cmds'] : []) {
    const cmd = asObject(asObject(item)?.['AlterTableCmd']);
    if (!cmd) continue;
    const sub = String(cmd['subtype']);
    const def = asObject(cmd['def']);
    const col = asObject(def?.['ColumnDef']);
    const loc = typeof col?.['location'] === 'number' ? col['location'] : r.loc;
    if (sub === 'AT_AddColumn' && col) {
      const c = col['constraints'];
      const notNull = has(c, (k) => k['contype'] === 'CONSTR_NOTNULL');
      const filled = has(c, (k) =>
        ['CONSTR_DEFAULT', 'CONSTR_IDENTITY', 'CONSTR_GENERATED'].includes(String(k['contype'])),
      );
      if (notNull && !filled) {
        add(
          'not_null_without_default',
          `ADD COLUMN ${String(col['colname'])} NOT NULL without a DEFAULT ${on}: it fails if the table has rows`,
          s.index,
          loc,
        );
      }
    }
    const why = LOCK_HEAVY[sub];
    if (why) add('lock_heavy_alter', `${why} ${on}`, s.index, loc);
    const con = asObject(def?.['Constraint']);
    if (sub === 'AT_AddConstraint' && con) {
      const t = String(con['contype']);
      if ((t === 'CONSTR_CHECK' || t === 'CONSTR_FOREIGN') && con['skip_validation'] !== true) {
        add(
          'lock_heavy_alter',
          `ADD CONSTRAINT without NOT VALID checks every row under a lock ${on}; add it NOT VALID, then VALIDATE CONSTRAINT`,
          s.index,
          con['location'] as number | null,
        );
      }
      if (
        (t === 'CONSTR_PRIMARY' || t === 'CONSTR_UNIQUE' || t === 'CONSTR_EXCLUSION') &&
        typeof con['indexname'] !== 'string'
      ) {
        add(
          'lock_heavy_alter',
          `ADD ${t.slice(7)} builds an index under an ACCESS EXCLUSIVE lock ${on}; build it CONCURRENTLY, then add it USING INDEX`,
          s.index,
          con['location'] as number | null,
        );
      }
    }
  }
}
