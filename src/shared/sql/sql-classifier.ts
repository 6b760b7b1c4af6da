/**
 * Classifier for governed SQL requests (issue #14, ADR 0020): with the explorer's PostgreSQL 15 parser
 * (libpg-query, WASM; await loadExplorerParser() once first), says whether a request reads, writes,
 * changes the schema, destroys data, or is refused, statement by statement, with review findings.
 *
 * The whole parse tree is walked, not only the top statement: a DELETE inside a CTE, a volatile
 * function called by a SELECT, an EXPLAIN ANALYZE of an UPDATE each raise the class. The worst node
 * decides a statement; the worst statement decides the request (read < write < ddl < destructive <
 * refused). The class is judged from the text alone: the executor must still run `read` requests in a
 * READ ONLY transaction, as the least-privileged role, with timeouts (a view or a trigger can do what
 * the text does not show).
 */
import { byteOffsetToIndex, parseOrRefuse } from './explorer-validator.ts';
import { type JsonObject, judgeNode, type SqlClass, walkTree } from './sql-classifier-rules.ts';
import { type FindingCode, type ReviewOptions, reviewRequest, type SqlFinding } from './sql-findings.ts';

export type { SqlClass } from './sql-classifier-rules.ts';

export type ClassifiedStatement = {
  class: SqlClass;
  /** The top-level node type of the parse tree (`UpdateStmt`, `CreateStmt` …). */
  kind: string;
  /** [start, end) in JS string indices of the request text. */
  text_span: { start: number; end: number };
  /** Why the statement has its class: one line per node that set it (deduplicated). */
  reasons: string[];
};

export type SqlClassification = {
  class: SqlClass;
  statements: ClassifiedStatement[];
  findings: SqlFinding[];
  parse_error?: { message: string; position: number | null };
};

export type ClassifyOptions = ReviewOptions & {
  /** Longest request accepted, in characters (default 1,000,000). */
  maxLength?: number;
};

export type { FindingCode };

export const CLASS_ORDER: readonly SqlClass[] = ['read', 'write', 'ddl', 'destructive', 'refused'];

/** The worse of two classes. */
function worseClass(a: SqlClass, b: SqlClass): SqlClass {
  return CLASS_ORDER.indexOf(a) >= CLASS_ORDER.indexOf(b) ? a : b;
}

function classifyStatement(type: string, body: JsonObject): { cls: SqlClass; reasons: string[] } {
  let cls: SqlClass = 'read';
  const reasons: string[] = [];
  let judged = false;
  const judgeTree = (root: unknown, refusalsOnly: boolean): void =>
    walkTree(root, (t, b) => {
      const { judgement, descend } = judgeNode(t, b);
      // A stored SET clause (`CREATE FUNCTION … SET search_path = …`) does not change this session.
      const stored = refusalsOnly && (judgement?.cls !== 'refused' || t === 'VariableSetStmt');
      if (judgement && !stored) {
        judged = true;
        const before = cls;
        cls = worseClass(cls, judgement.cls);
        // Keep the reasons of the class that decides (and of equals), in tree order.
        if (cls !== before) reasons.length = 0;
        if (judgement.cls === cls && !reasons.includes(judgement.reason)) reasons.push(judgement.reason);
      }
      if (descend === 'refusals' && !refusalsOnly) {
        for (const k in b) judgeTree(b[k], true);
        return false;
      }
      return refusalsOnly || descend === true;
    });
  judgeTree({ [type]: body }, false);
  if (!judged) return { cls: 'refused', reasons: [`${type} is not known to the classifier`] };
  return { cls, reasons };
}

function refusedParse(message: string, position: number | null): SqlClassification {
  return { class: 'refused', statements: [], findings: [], parse_error: { message, position } };
}

/**
 * Classifies a request's SQL (one or more statements). Synchronous; needs loadExplorerParser() to
 * have completed. Unparseable, empty or oversized SQL is `refused` with `parse_error`.
 */
export function classifySql(sql: string, opts: ClassifyOptions = {}): SqlClassification {
  const maxLength = opts.maxLength ?? 1_000_000;
  if (typeof sql !== 'string' || sql.trim() === '') return refusedParse('the request has no SQL', null);
  if (sql.length > maxLength) return refusedParse(`the SQL is longer than ${maxLength} characters`, null);
  const nul = sql.indexOf('\0');
  if (nul >= 0) return refusedParse('the SQL contains a NUL character', nul);
  if (!sql.isWellFormed()) return refusedParse('the SQL contains invalid Unicode', null);
  let parsed: ReturnType<typeof parseOrRefuse>;
  try {
    parsed = parseOrRefuse(sql);
  } catch (err) {
    if (err instanceof RangeError) return refusedParse('the SQL is nested too deeply', null);
    throw err;
  }
  if (!('stmts' in parsed)) {
    return parsed.ok ? refusedParse('parse error', null) : refusedParse(parsed.reason, parsed.position);
  }
  if (parsed.stmts.length === 0) return refusedParse('the request has no statement', null);
  const statements: ClassifiedStatement[] = [];
  const trees: { type: string; body: JsonObject; offset: number }[] = [];
  for (const raw of parsed.stmts) {
    const stmt = raw['stmt'];
    const type = stmt && typeof stmt === 'object' && !Array.isArray(stmt) ? (Object.keys(stmt)[0] ?? '') : '';
    const body = type && stmt && typeof stmt === 'object' && !Array.isArray(stmt) ? stmt[type] : null;
    const loc = typeof raw['stmt_location'] === 'number' ? raw['stmt_location'] : 0;
    const len = typeof raw['stmt_len'] === 'number' ? raw['stmt_len'] : 0;
    let start = byteOffsetToIndex(sql, loc);
    const end = len === 0 ? sql.length : byteOffsetToIndex(sql, loc + len);
    start += Math.max(0, sql.slice(start, end).search(/\S/));
    if (!body || typeof body !== 'object' || Array.isArray(body)) {
      statements.push({
        class: 'refused',
        kind: type || 'unknown',
        text_span: { start, end },
        reasons: ['malformed parse tree'],
      });
      continue;
    }
    let judged: { cls: SqlClass; reasons: string[] };
    try {
      judged = classifyStatement(type, body);
    } catch (err) {
      if (!(err instanceof RangeError)) throw err;
      judged = { cls: 'refused', reasons: ['the statement is nested too deeply'] };
    }
    statements.push({ class: judged.cls, kind: type, text_span: { start, end }, reasons: judged.reasons });
    trees.push({ type, body, offset: statements.length - 1 });
  }
  const cls = statements.reduce<SqlClass>((acc, s) => worseClass(acc, s.class), 'read');
  const toIndex = (byteOffset: number) => byteOffsetToIndex(sql, byteOffset);
  let findings: SqlFinding[];
  try {
    findings = reviewRequest(
      trees.map((t) => ({
        type: t.type,
        body: t.body,
        index: t.offset,
        class: statements[t.offset]?.class ?? 'refused',
      })),
      toIndex,
      opts,
    );
  } catch (err) {
    if (!(err instanceof RangeError)) throw err;
    return { ...refusedParse('the SQL is nested too deeply', null), statements };
  }
  return { class: cls, statements, findings };
}
