/**
 * Validator for the guarded SQL explorer: decides, with the real PostgreSQL 15
 * parser (libpg-query, WASM), whether a statement is a single read-only query.
 *
 * Fail-closed design: the whole parse tree is walked generically. Every node
 * must be of an allowlisted type (ALLOWED_NODES); bare (unwrapped) structs are
 * only accepted at the fields listed in BARE_FIELDS; any other shape is refused.
 * Functions, relations, types, operators and TABLESAMPLE methods get specific
 * checks on top. This is defense in depth: execution must still happen in a
 * READ ONLY transaction, as a role without EXECUTE on user-defined functions,
 * with statement timeouts and row/byte caps (see the report / module docs).
 */
import { createHash } from 'node:crypto';
import { loadModule, parseSync } from 'libpg-query';
import { deniedReason } from './explorer-function-policy.ts';
import {
  ALLOWED_EXPLAIN_OPTIONS,
  ALLOWED_FUNCTIONS,
  ALLOWED_NODES,
  ALLOWED_SQL_VALUE_FUNCTIONS,
  ALLOWED_TABLESAMPLE_METHODS,
  BARE_FIELDS,
  DENIED_TYPES,
  LEAF_NODES,
  SPECIFIC_REFUSALS,
} from './explorer-functions.ts';

export type ExplorerVerdict =
  | { ok: true; kind: 'select' | 'explain'; redacted: string }
  | { ok: false; code: string; reason: string; position: number | null };

export const EXPLORER_MAX_SQL_LENGTH = 20000;
export const UNPARSEABLE_SQL = '<unparseable sql>';

type Json = null | boolean | number | string | Json[] | JsonObject;
type JsonObject = { [key: string]: Json };

/**
 * Loads the WASM parser (libpg-query keeps it; loading again is a no-op). Await it once at start-up,
 * before createExplorerValidator() is used or redactSql() is called.
 */
export async function loadExplorerParser(): Promise<void> {
  await loadModule();
}

/** Internal: thrown by the walker, turned into a verdict. `loc` is a parser byte offset. */
class Refusal extends Error {
  readonly code: string;
  readonly loc: number | null;
  constructor(code: string, reason: string, loc: number | null) {
    super(reason);
    this.code = code;
    this.loc = loc;
  }
}

const SYSTEM_SCHEMAS: ReadonlySet<string> = new Set(['pg_catalog', 'information_schema', 'pg_toast']);

function isNodeTypeKey(key: string): boolean {
  const c = key.charCodeAt(0);
  return c >= 65 && c <= 90; // node type names start with an upper-case letter; fields never do
}

function locOf(body: JsonObject, inherited: number | null): number | null {
  const l = body['location'];
  return typeof l === 'number' && l >= 0 ? l : inherited;
}

/** Reads a list of String nodes (`[{String: {sval}}]`) as plain strings; non-strings become ''. */
function names(list: Json | undefined): string[] {
  if (!Array.isArray(list)) return [];
  return list.map((item) => {
    const s = item !== null && typeof item === 'object' && !Array.isArray(item) ? item['String'] : undefined;
    const v = s !== null && typeof s === 'object' && !Array.isArray(s) ? s['sval'] : undefined;
    return typeof v === 'string' ? v : '';
  });
}

/** `name` or `pg_catalog.name`. */
function n1OrPgCatalog(n: string[]): boolean {
  return n.length === 1 || (n.length === 2 && n[0] === 'pg_catalog');
}

function checkFunction(body: JsonObject, loc: number | null): void {
  const n = names(body['funcname']);
  const name = n[n.length - 1] ?? '';
  const denied = n1OrPgCatalog(n) ? deniedReason(name) : null;
  if (denied !== null) {
    throw new Refusal('function_not_allowed', `function ${n.join('.')}() is not allowed: ${denied}`, loc);
  }
  if (!n1OrPgCatalog(n) || !ALLOWED_FUNCTIONS.has(name)) {
    throw new Refusal(
      'function_not_allowed',
      `function ${n.join('.')}() is not allowed in the explorer`,
      loc,
    );
  }
}

function checkRelation(body: JsonObject, loc: number | null): void {
  const catalog = body['catalogname'];
  const schema = body['schemaname'];
  const rel = body['relname'];
  const relName = typeof rel === 'string' ? rel : '';
  if (typeof catalog === 'string' && catalog !== '') {
    throw new Refusal('non_public_relation', 'cross-database references are not allowed', loc);
  }
  if (typeof schema === 'string' && schema !== '') {
    if (schema === 'public') return;
    if (SYSTEM_SCHEMAS.has(schema) || schema.toLowerCase().startsWith('pg_')) {
      throw new Refusal('system_catalog', `system schema ${schema} is not accessible`, loc);
    }
    throw new Refusal('non_public_relation', `only schema public is allowed (got ${schema})`, loc);
  }
  if (relName.toLowerCase().startsWith('pg_')) {
    throw new Refusal('system_catalog', `system catalog ${relName} is not accessible`, loc);
  }
}

function checkType(body: JsonObject, loc: number | null): void {
  const n = names(body['names']);
  // An array type is also named by its element type's name with a leading underscore
  // (`_regrole` is `regrole[]`, whose input looks every element up): judged as its element type.
  const type = (n[n.length - 1] ?? '').toLowerCase().replace(/^_+/, '');
  const schemaOk = n.length === 1 || (n.length === 2 && (n[0] === 'pg_catalog' || n[0] === 'public'));
  if (!schemaOk || DENIED_TYPES.has(type) || type.startsWith('pg_') || body['pct_type'] === true) {
    throw new Refusal('type_not_allowed', `type ${n.join('.')} is not allowed in the explorer`, loc);
  }
}

function checkOperator(list: Json | undefined, loc: number | null): void {
  const n = names(list);
  if (n.length > 0 && !n1OrPgCatalog(n)) {
    throw new Refusal('operator_not_allowed', `operator ${n.join('.')} is not allowed`, loc);
  }
}

function walkNode(type: string, body: JsonObject, parentType: string, inherited: number | null): void {
  const loc = locOf(body, inherited);
  if (!ALLOWED_NODES.has(type)) {
    const specific = SPECIFIC_REFUSALS[type];
    if (specific) throw new Refusal(specific[0], specific[1], locOf(asObject(body['rel']) ?? body, loc));
    if (type.endsWith('Stmt')) {
      if (parentType === 'CommonTableExpr') {
        throw new Refusal('data_modifying_cte', `WITH queries must be SELECTs (got ${type})`, loc);
      }
      throw new Refusal('not_select', `${type} is not allowed inside a query`, loc);
    }
    throw new Refusal('unsupported_syntax', `${type} is not supported in the explorer`, loc);
  }
  if (LEAF_NODES.has(type)) return;
  switch (type) {
    case 'FuncCall':
      checkFunction(body, loc);
      break;
    case 'RangeVar':
      checkRelation(body, loc);
      break;
    case 'TypeName':
      checkType(body, loc);
      break;
    case 'A_Expr':
      checkOperator(body['name'], loc);
      break;
    case 'SubLink':
      checkOperator(body['operName'], loc);
      break;
    case 'SortBy':
      checkOperator(body['useOp'], loc);
      break;
    case 'SQLValueFunction':
      if (!ALLOWED_SQL_VALUE_FUNCTIONS.has(String(body['op']))) {
        throw new Refusal(
          'function_not_allowed',
          'of the SQL value functions only the clock, CURRENT_SCHEMA and CURRENT_CATALOG are allowed',
          loc,
        );
      }
      break;
    case 'RangeTableSample': {
      const m = names(body['method']);
      const ok = n1OrPgCatalog(m) && ALLOWED_TABLESAMPLE_METHODS.has(m[m.length - 1] ?? '');
      if (!ok) throw new Refusal('tablesample_method', 'only TABLESAMPLE BERNOULLI/SYSTEM are allowed', loc);
      break;
    }
  }
  for (const key in body) walkValue(type, key, body[key] ?? null, loc);
}

function walkValue(parentType: string, field: string, value: Json, loc: number | null): void {
  if (value === null || typeof value !== 'object') return;
  if (Array.isArray(value)) {
    for (const item of value) walkValue(parentType, field, item, loc);
    return;
  }
  let onlyKey: string | undefined;
  let count = 0;
  for (const key in value) {
    onlyKey = key;
    if (++count > 1) break;
  }
  if (count === 0) return; // empty struct = NULL pointer placeholder
  if (count === 1 && onlyKey !== undefined && isNodeTypeKey(onlyKey)) {
    const inner = value[onlyKey];
    if (inner === null || typeof inner !== 'object' || Array.isArray(inner)) {
      throw new Refusal('unsupported_syntax', `malformed ${onlyKey} node`, loc);
    }
    walkNode(onlyKey, inner, parentType, loc);
    return;
  }
  const bareType = BARE_FIELDS[parentType]?.[field];
  if (bareType === undefined) {
    throw new Refusal('unsupported_syntax', `unexpected structure at ${parentType}.${field}`, loc);
  }
  walkNode(bareType, value, parentType, loc);
}

function asObject(v: Json | undefined): JsonObject | null {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? v : null;
}

/** true when an EXPLAIN boolean option value is explicitly false (defGetBoolean semantics). */
function isExplicitFalse(arg: Json | undefined): boolean {
  const a = asObject(arg);
  if (!a) return false; // bare option (e.g. ANALYZE) means true
  const s = asObject(a['String'])?.['sval'];
  if (typeof s === 'string') return s.toLowerCase() === 'false' || s.toLowerCase() === 'off';
  const i = asObject(a['Integer']);
  if (i) return (i['ival'] ?? 0) === 0;
  const b = asObject(a['Boolean']);
  if (b) return (b['boolval'] ?? false) === false;
  return false;
}

function checkExplainOptions(options: Json | undefined): void {
  if (options === undefined) return;
  if (!Array.isArray(options)) throw new Refusal('unsupported_syntax', 'malformed EXPLAIN options', null);
  for (const item of options) {
    const def = asObject(asObject(item)?.['DefElem']);
    if (!def) throw new Refusal('unsupported_syntax', 'malformed EXPLAIN option', null);
    const name = String(def['defname']);
    const loc = locOf(def, null);
    if (!ALLOWED_EXPLAIN_OPTIONS.has(name)) {
      throw new Refusal('explain_option', `EXPLAIN option ${name} is not allowed`, loc);
    }
    if (name === 'analyze' && !isExplicitFalse(def['arg'])) {
      throw new Refusal('explain_analyze', 'EXPLAIN ANALYZE executes the statement and is not allowed', loc);
    }
  }
}

function checkTopLevel(stmt: JsonObject, stmtLoc: number): 'select' | 'explain' {
  const keys = Object.keys(stmt);
  const type = keys.length === 1 ? (keys[0] ?? '') : '';
  const body = asObject(stmt[type]);
  if (type === 'SelectStmt' && body) {
    walkNode('SelectStmt', body, '', stmtLoc);
    return 'select';
  }
  if (type === 'ExplainStmt' && body) {
    checkExplainOptions(body['options']);
    const query = asObject(body['query']);
    const inner = asObject(query?.['SelectStmt']);
    if (!query || !inner || Object.keys(query).length !== 1) {
      const innerType = query ? (Object.keys(query)[0] ?? 'statement') : 'statement';
      throw new Refusal('not_select', `only EXPLAIN of a SELECT is allowed (got ${innerType})`, stmtLoc);
    }
    walkNode('SelectStmt', inner, 'ExplainStmt', stmtLoc);
    return 'explain';
  }
  throw new Refusal('not_select', `only SELECT queries are allowed (got ${type || 'unknown'})`, stmtLoc);
}

/** Converts a UTF-8 byte offset (parser node locations) to a JS string index. Also used by sql-classifier.ts. */
export function byteOffsetToIndex(sql: string, byteOffset: number): number {
  let bytes = 0;
  let i = 0;
  while (i < sql.length && bytes < byteOffset) {
    const cp = sql.codePointAt(i) ?? 0;
    bytes += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    i += cp >= 0x10000 ? 2 : 1;
  }
  return i;
}

/** Converts a code point count (parser error cursor) to a JS string index. */
function codePointOffsetToIndex(sql: string, codePoints: number): number {
  let i = 0;
  for (let n = 0; n < codePoints && i < sql.length; n++) i += (sql.codePointAt(i) ?? 0) >= 0x10000 ? 2 : 1;
  return i;
}

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (s.charCodeAt(i) > 0x7f) return false;
  return true;
}

function refuse(code: string, reason: string, position: number | null): ExplorerVerdict {
  return { ok: false, code, reason, position };
}

/** Checks emptiness, size and characters the C parser would not see the same way as the server. */
function precheck(sql: string): ExplorerVerdict | null {
  if (typeof sql !== 'string' || sql.trim() === '') return refuse('empty', 'the query is empty', null);
  if (sql.length > EXPLORER_MAX_SQL_LENGTH) {
    return refuse('too_long', `the query is longer than ${EXPLORER_MAX_SQL_LENGTH} characters`, null);
  }
  const nul = sql.indexOf('\0');
  if (nul >= 0) return refuse('invalid_character', 'the query contains a NUL character', nul);
  if (!sql.isWellFormed()) return refuse('invalid_character', 'the query contains invalid Unicode', null);
  return null;
}

/** Parses with the PostgreSQL 15 grammar; a refusal carries the error position. Also used by sql-classifier.ts. */
export function parseOrRefuse(sql: string): { stmts: JsonObject[] } | ExplorerVerdict {
  let tree: { stmts?: JsonObject[] };
  try {
    tree = parseSync(sql) as { stmts?: JsonObject[] };
  } catch (err) {
    // The parser can run out of stack on deep nesting (how deep depends on the JIT): refused alike.
    if (err instanceof RangeError) return refuse('too_complex', 'the query is nested too deeply', null);
    // Not a verdict on the SQL but a bug of the caller (libpg-query says so only in its message).
    if (err instanceof Error && err.message.startsWith('WASM module not initialized')) throw err;
    const details = (err as { sqlDetails?: { cursorPosition?: number } }).sqlDetails;
    const cursor = typeof details?.cursorPosition === 'number' ? details.cursorPosition : null;
    const message = err instanceof Error ? err.message : 'parse error';
    return refuse('syntax_error', message, cursor === null ? null : codePointOffsetToIndex(sql, cursor));
  }
  return { stmts: Array.isArray(tree.stmts) ? tree.stmts : [] };
}

export type ExplorerValidatorOptions = {
  /**
   * Verdicts kept by SHA-256 of the exact SQL text (oldest out first); 0 turns the cache off.
   * Default 512. Only the digest and the verdict (its SQL redacted) are kept, never the SQL itself.
   */
  cacheSize?: number;
};

export type ExplorerValidator = {
  /** Validates one explorer statement. Synchronous; needs loadExplorerParser() to have completed. */
  validate(sql: string): ExplorerVerdict;
};

/**
 * A validator with its own verdict cache; built once at each process's wiring point and passed to
 * what validates. A verdict is a pure function of the text (the allowlists are constants), so a
 * repeated query skips the parse and the walk, on the server and again on the agent.
 */
export function createExplorerValidator(opts: ExplorerValidatorOptions = {}): ExplorerValidator {
  const cacheSize = opts.cacheSize ?? 512;
  if (!Number.isInteger(cacheSize) || cacheSize < 0)
    throw new RangeError('cacheSize must be an integer >= 0');
  const verdicts = new Map<string, ExplorerVerdict>();
  return {
    validate(sql: string): ExplorerVerdict {
      const pre = precheck(sql);
      if (pre) return pre;
      if (cacheSize === 0) return judgeSafely(sql);
      const key = createHash('sha256').update(sql).digest('base64');
      const hit = verdicts.get(key);
      if (hit) return hit;
      const verdict = judgeSafely(sql);
      if (verdicts.size >= cacheSize) verdicts.delete(verdicts.keys().next().value as string);
      verdicts.set(key, verdict);
      return verdict;
    },
  };
}

function judgeSafely(sql: string): ExplorerVerdict {
  try {
    return Object.freeze(judge(sql));
  } catch (err) {
    // A deeply nested expression within the length bound can exhaust the stack of the parser or of
    // the walk: the query is refused, never a 500.
    if (!(err instanceof RangeError)) throw err;
    return Object.freeze(refuse('too_complex', 'the query is nested too deeply', null));
  }
}

function judge(sql: string): ExplorerVerdict {
  const parsed = parseOrRefuse(sql);
  if (!('stmts' in parsed)) return parsed;
  const { stmts } = parsed;
  if (stmts.length === 0) return refuse('empty', 'the query contains no statement', null);
  if (stmts.length > 1) {
    const second = stmts[1]?.['stmt_location'];
    const after = typeof second === 'number' ? byteOffsetToIndex(sql, second) : null;
    const pos = after === null ? null : after + Math.max(0, sql.slice(after).search(/\S/));
    return refuse('multiple_statements', 'exactly one statement is allowed', pos);
  }
  const raw = stmts[0] ?? {};
  const stmt = asObject(raw['stmt']);
  const stmtLoc = typeof raw['stmt_location'] === 'number' ? raw['stmt_location'] : 0;
  try {
    if (!stmt) throw new Refusal('unsupported_syntax', 'malformed parse tree', null);
    const kind = checkTopLevel(stmt, stmtLoc);
    const redacted = redactTokens(sql);
    return { ok: true, kind, redacted: redacted ?? UNPARSEABLE_SQL };
  } catch (err) {
    if (!(err instanceof Refusal)) throw err;
    const pos = err.loc === null ? null : isAscii(sql) ? err.loc : byteOffsetToIndex(sql, err.loc);
    return refuse(err.code, err.message, pos);
  }
}

/**
 * Replaces every literal (strings of all kinds, numbers, bit strings) with `?` and every comment with a
 * space; identifiers, keywords, operators and `$n` parameters are kept. Returns UNPARSEABLE_SQL when the
 * input does not parse (or is empty/too long). Used by the audit log; keeps nothing. Throws if
 * loadExplorerParser() has not completed.
 */
export function redactSql(sql: string): string {
  if (precheck(sql)) return UNPARSEABLE_SQL;
  let parses: boolean;
  try {
    parses = 'stmts' in parseOrRefuse(sql);
  } catch (err) {
    if (err instanceof RangeError) return UNPARSEABLE_SQL;
    throw err;
  }
  if (!parses) return UNPARSEABLE_SQL;
  return redactTokens(sql) ?? UNPARSEABLE_SQL;
}

/**
 * One SQL token per match (sticky). Groups: 1 line comment, 2 block comment start, 3 string literal
 * (plain, E'', B'', X'', N'', U&''), 4 quoted identifier, 5 parameter $n, 6 dollar-quote tag,
 * 7 number, 8 identifier/keyword; anything else is a single operator/punctuation/space character.
 */
const TOKEN =
  /(--[^\n\r]*)|(\/\*)|([eE]'(?:[^'\\]|\\[\s\S]|'')*'|(?:[bBxXnN]|[uU]&)?'(?:[^']|'')*')|((?:[uU]&)?"(?:[^"]|"")*")|(\$\d+)|(\$(?:[A-Za-z_\x80-\uffff][\w\x80-\uffff]*)?\$)|((?:\d+(?:\.(?!\.)\d*)?|\.\d+)(?:[eE][+-]?\d+)?)|([A-Za-z_\x80-\uffff][\w$\x80-\uffff]*)|[\s\S]/y;

/** End (exclusive) of a nested block comment starting at `start`, or -1 if unterminated. */
function endOfBlockComment(sql: string, start: number): number {
  let depth = 0;
  let i = start;
  while (i < sql.length) {
    if (sql.startsWith('/*', i)) {
      depth++;
      i += 2;
    } else if (sql.startsWith('*/', i)) {
      i += 2;
      if (--depth === 0) return i;
    } else i++;
  }
  return -1;
}

/** Lexer-based redaction of SQL that the parser accepted. null if the lexer gets lost (fail closed). */
function redactTokens(sql: string): string | null {
  let out = '';
  let copied = 0;
  let i = 0;
  while (i < sql.length) {
    TOKEN.lastIndex = i;
    const m = TOKEN.exec(sql);
    if (!m) return null;
    let end = i + m[0].length;
    let by: string | null = null;
    if (m[1] !== undefined) by = ' ';
    else if (m[2] !== undefined) {
      end = endOfBlockComment(sql, i);
      by = ' ';
    } else if (m[3] !== undefined || m[7] !== undefined) by = '?';
    else if (m[6] !== undefined) {
      const close = sql.indexOf(m[6], end);
      end = close < 0 ? -1 : close + m[6].length;
      by = '?';
    } else if (m[0] === "'" || m[0] === '"' || m[0] === '$') return null; // unterminated or unknown
    if (end < 0) return null;
    if (by !== null) {
      out += sql.slice(copied, i) + by;
      copied = end;
    }
    i = end;
  }
  return out + sql.slice(copied);
}
