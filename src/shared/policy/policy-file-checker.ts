/**
 * The YAML walker behind policy-file.ts: reads one document's nodes by the policy's schema and
 * collects every error with its line, column and dotted field.
 */
import { isAlias, isMap, isScalar, isSeq, type LineCounter, type Node, type parseDocument } from 'yaml';
import type { MemberRole } from './governance.ts';
import { formatDuration, parseDuration } from './policy-duration.ts';

/** Errors reported for one file: enough to fix a file, bounded for the API's response. */
export const MAX_POLICY_ERRORS = 50;

export const MEMBER_ROLES: readonly MemberRole[] = ['owner', 'admin', 'member', 'viewer'];

export type PolicyFileError = { line: number; column: number; field: string; message: string };

export type Entry = { key: string; keyAt: number; value: Node | null; at: number };

/** One pass over one document: collects errors with positions, and where each field was set. */
export class Checker {
  readonly errors: PolicyFileError[] = [];
  /** Offset of every field read, by dotted path (for errors found after reading). */
  readonly marks = new Map<string, number>();
  private readonly doc: ReturnType<typeof parseDocument>;
  private readonly lines: LineCounter;

  constructor(doc: ReturnType<typeof parseDocument>, lines: LineCounter) {
    this.doc = doc;
    this.lines = lines;
  }

  fail(at: number, field: string, message: string): void {
    if (this.errors.length >= MAX_POLICY_ERRORS) return;
    const { line, col } = this.lines.linePos(at);
    // A key may be long: the report stays readable and bounded.
    const cut = (text: string, max: number) => (text.length > max ? `${text.slice(0, max - 1)}…` : text);
    this.errors.push({ line, column: col, field: cut(field, 200), message: cut(message, 400) });
  }

  /** An alias is read as what it names; a null scalar (`key:` with nothing after it) is null. */
  resolve(node: unknown): Node | null {
    const n = isAlias(node) ? node.resolve(this.doc) : node;
    if (!n || (isScalar(n) && n.value === null)) return null;
    return n as Node;
  }

  /**
   * The entries of a mapping. `keys` is the allowed list, or a check returning an error message
   * for a bad key (free-form names); unknown or bad keys are reported and left out.
   */
  entries(
    node: Node | null,
    at: number,
    field: string,
    keys: readonly string[] | ((key: string) => string | null),
  ): Entry[] | null {
    if (!isMap(node)) {
      this.fail(node?.range?.[0] ?? at, field, 'must be a mapping of keys to values');
      return null;
    }
    const out: Entry[] = [];
    for (const pair of node.items) {
      const keyNode = pair.key as Node | null;
      const keyAt = keyNode?.range?.[0] ?? node.range?.[0] ?? at;
      if (!isScalar(keyNode) || typeof keyNode.value !== 'string') {
        this.fail(keyAt, field, 'keys must be plain names');
        continue;
      }
      const key = keyNode.value;
      const path = field ? `${field}.${key}` : key;
      const problem =
        key === '<<'
          ? 'merge keys (<<) are not supported: repeat the fields, or use an alias (*name) for the whole value'
          : typeof keys === 'function'
            ? keys(key)
            : keys.includes(key)
              ? null
              : `unknown key "${key}"; expected one of: ${keys.join(', ')}`;
      if (problem) {
        this.fail(keyAt, path, problem);
        continue;
      }
      const value = this.resolve(pair.value);
      const valueAt = (isAlias(pair.value) ? pair.value.range?.[0] : value?.range?.[0]) ?? keyAt;
      this.marks.set(path, valueAt);
      out.push({ key, keyAt, value, at: valueAt });
    }
    return out;
  }

  int(e: Entry, field: string, min: number, max: number): number | undefined {
    const v = isScalar(e.value) ? e.value.value : undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      this.fail(e.at, field, `must be a whole number from ${min} to ${max}`);
      return undefined;
    }
    return v;
  }

  duration(e: Entry, field: string, min: number, max: number): number | undefined {
    const v = isScalar(e.value) ? e.value.value : undefined;
    const seconds = typeof v === 'string' ? parseDuration(v) : null;
    if (seconds === null) {
      this.fail(
        e.at,
        field,
        'must be a duration: a whole number and one unit (s, m, h, d), e.g. 30m, 24h, 7d',
      );
      return undefined;
    }
    if (seconds < min || seconds > max) {
      this.fail(e.at, field, `must be from ${formatDuration(min)} to ${formatDuration(max)}`);
      return undefined;
    }
    return seconds;
  }

  roles(e: Entry, field: string): MemberRole[] | undefined {
    if (!isSeq(e.value)) {
      this.fail(e.at, field, `must be a list of roles (${MEMBER_ROLES.join(', ')}), e.g. [owner, admin]`);
      return undefined;
    }
    const roles: MemberRole[] = [];
    let ok = true;
    e.value.items.forEach((item, i) => {
      const n = this.resolve(item);
      const v = isScalar(n) ? n.value : undefined;
      const at = n?.range?.[0] ?? e.at;
      if (typeof v !== 'string' || !(MEMBER_ROLES as readonly string[]).includes(v)) {
        this.fail(at, `${field}.${i}`, `must be one of: ${MEMBER_ROLES.join(', ')}`);
        ok = false;
      } else if (roles.includes(v as MemberRole)) {
        this.fail(at, `${field}.${i}`, `"${v}" is listed twice`);
        ok = false;
      } else roles.push(v as MemberRole);
    });
    return ok ? roles : undefined;
  }

  oneOf<T extends string>(e: Entry, field: string, allowed: readonly T[]): T | undefined {
    const v = isScalar(e.value) ? e.value.value : undefined;
    if (typeof v !== 'string' || !(allowed as readonly string[]).includes(v)) {
      this.fail(e.at, field, `must be one of: ${allowed.join(', ')}`);
      return undefined;
    }
    return v as T;
  }
}

/** Deeper than any policy needs, far below where the YAML parser's recursion gives out. */
const MAX_FLOW_DEPTH = 64;
const MAX_INDENT = 128;

/**
 * A file nested absurdly deep (`[[[[…`, `- - - …`, thousands of indented levels), refused before it
 * is parsed: the parser would recurse until the stack gives out, spending seconds on the way.
 * Counts brackets everywhere (quotes and comments included: a false alarm needs 64 unclosed
 * brackets, which no policy has) and the leading run of indentation and indicators of each line.
 */
export function nestingProblem(source: string): PolicyFileError | null {
  let depth = 0;
  let line = 1;
  let column = 0;
  let leading = true;
  let indent = 0;
  const problem = (message: string): PolicyFileError => ({ line, column, field: '', message });
  for (const ch of source) {
    column++;
    if (ch === '\n') {
      line++;
      column = 0;
      leading = true;
      indent = 0;
      continue;
    }
    if (leading && (ch === ' ' || ch === '\t' || ch === '-' || ch === '?' || ch === ':')) {
      if (++indent > MAX_INDENT) return problem(`indented more than ${MAX_INDENT} columns deep`);
      continue;
    }
    leading = false;
    if (ch === '[' || ch === '{') {
      if (++depth > MAX_FLOW_DEPTH) return problem(`brackets nested more than ${MAX_FLOW_DEPTH} deep`);
    } else if ((ch === ']' || ch === '}') && depth > 0) depth--;
  }
  return null;
}
