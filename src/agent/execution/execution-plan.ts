/**
 * How the agent cuts an approved request into statements (ADR 0021): with the real PostgreSQL
 * parser (libpg-query, loadExplorerParser() once) and the governed-SQL classifier, never by
 * splitting text. The agent's own gate, whatever the server approved:
 * - a statement the classifier refuses (transaction control, SET ROLE, session settings, COPY …
 *   PROGRAM, DO, prepared statements…) is refused: the executor owns the transaction and the
 *   session, and a `COMMIT` inside a dry run would otherwise make it stick;
 * - a statement that PostgreSQL runs only outside a transaction block (CREATE/DROP INDEX, REINDEX
 *   or DETACH PARTITION … CONCURRENTLY) must come alone, and is never dry-run (it cannot be
 *   rolled back).
 */
import { EXECUTION_LIMITS } from '../../shared/contracts/execution.ts';
import { parseOrRefuse } from '../../shared/sql/explorer-validator.ts';
import { classifySql } from '../../shared/sql/sql-classifier.ts';

export type PlannedStatement = {
  /** The statement's own text (the request's slice, without the trailing `;`). */
  text: string;
  /** Where it starts in the request (JS string index): error positions are shifted by it. */
  start: number;
  /** `EXPLAIN (FORMAT JSON)` applies (SELECT, INSERT, UPDATE, DELETE, MERGE). */
  explainable: boolean;
};

export type ExecutionPlan =
  | { ok: true; statements: PlannedStatement[]; outsideTransaction: boolean }
  | { ok: false; message: string };

const EXPLAINABLE = new Set(['SelectStmt', 'InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt']);

type Json = Record<string, unknown>;
const asObject = (v: unknown): Json | null =>
  typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Json) : null;

/** Whether the tree holds `concurrent: true` anywhere (bounded by the parser's own depth). */
function hasConcurrent(v: unknown, depth = 0): boolean {
  if (depth > 200) return true; // deeper than anything real: treat as the worst case
  if (Array.isArray(v)) return v.some((x) => hasConcurrent(x, depth + 1));
  const o = asObject(v);
  if (!o) return false;
  if (o['concurrent'] === true) return true;
  return Object.values(o).some((x) => hasConcurrent(x, depth + 1));
}

/** CONCURRENTLY forms PostgreSQL refuses inside a transaction block (REFRESH … CONCURRENTLY may run in one). */
function runsOutsideTransaction(type: string, body: Json): boolean {
  if (type === 'RefreshMatViewStmt') return false;
  if (type === 'ReindexStmt') {
    const params = Array.isArray(body['params']) ? body['params'] : [];
    return params.some((p) => asObject(asObject(p)?.['DefElem'])?.['defname'] === 'concurrently');
  }
  return hasConcurrent(body);
}

export function planExecution(sql: string, mode: 'execute' | 'dry_run'): ExecutionPlan {
  const c = classifySql(sql, { maxLength: EXECUTION_LIMITS.maxSqlLength });
  if (c.parse_error)
    return { ok: false, message: `the SQL does not parse: ${c.parse_error.message}`.slice(0, 500) };
  if (c.statements.length === 0) return { ok: false, message: 'the request has no statement' };
  if (c.statements.length > EXECUTION_LIMITS.maxStatements)
    return { ok: false, message: `more than ${EXECUTION_LIMITS.maxStatements} statements` };
  const refused = c.statements.findIndex((s) => s.class === 'refused');
  if (refused >= 0) {
    const why = c.statements[refused]?.reasons[0] ?? 'refused by the classifier';
    return { ok: false, message: `statement ${refused + 1} is refused: ${why}`.slice(0, 500) };
  }
  const parsed = parseOrRefuse(sql);
  if (!('stmts' in parsed) || parsed.stmts.length !== c.statements.length)
    return { ok: false, message: 'the SQL does not parse' };
  const statements: PlannedStatement[] = [];
  let outside = 0;
  for (const [i, s] of c.statements.entries()) {
    const stmt = asObject(parsed.stmts[i]?.['stmt']);
    const type = stmt ? (Object.keys(stmt)[0] ?? '') : '';
    const body = asObject(stmt?.[type]) ?? {};
    if (runsOutsideTransaction(type, body)) outside++;
    const text = sql.slice(s.text_span.start, s.text_span.end).replace(/;\s*$/, '');
    statements.push({ text, start: s.text_span.start, explainable: EXPLAINABLE.has(type) });
  }
  if (outside > 0 && statements.length > 1)
    return {
      ok: false,
      message: 'a CONCURRENTLY statement cannot run inside the request\u2019s transaction: send it alone',
    };
  if (outside > 0 && mode === 'dry_run')
    return { ok: false, message: 'a CONCURRENTLY statement cannot be dry-run: it cannot be rolled back' };
  return { ok: true, statements, outsideTransaction: outside > 0 };
}
