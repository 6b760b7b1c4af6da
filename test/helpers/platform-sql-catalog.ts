/**
 * Every catalog function and operator name the platform's own SQL uses, generated from the source
 * (so a new call is covered by the shadow-attack test without anyone updating a list).
 *
 * Method: the TypeScript compiler API walks every non-test `.ts` file of the parts of the platform
 * that send SQL into a tenant database or the cluster (the agent, drift, `doctor`, the embedded
 * data plane) and collects each string literal, template literal and `+` chain of them that looks
 * like SQL. `${…}` interpolations are replaced by a placeholder that keeps the text parseable (an
 * identifier, a number, a literal, nothing — the first that parses). The text is parsed with the
 * real PostgreSQL parser (libpg-query, WASM) and the tree walked generically: every FuncCall name
 * (qualified or not), every A_Expr operator name (including `= ANY`, IN, LIKE, DISTINCT, NULLIF),
 * every SubLink operator, every type name in a cast. Text that no placeholder makes parseable
 * falls back to regexes for `name(` and operator tokens, which the caller cross-checks against
 * `pg_proc` and `pg_operator`.
 */
import fs from 'node:fs';
import path from 'node:path';
import { loadModule, parseSync } from 'libpg-query';
import ts from 'typescript';

/** Directories and files (relative to the repo root) whose SQL reaches a tenant database or the cluster. */
export const PLATFORM_SQL_SOURCES = [
  'src/agent',
  'src/server/modules/drift',
  'src/cli/commands/doctor.ts',
  'src/embedded',
] as const;

/** Where a name was seen: `file:line` (and whether that call was written schema-qualified). */
export type Site = {
  file: string;
  line: number;
  qualified: string | null;
  via: 'parser' | 'regex';
  /** Functions: how many arguments the call passes (null: unknown, e.g. found by the regex). */
  arity: number | null;
};

export type PlatformSqlCatalog = {
  /** Function name → where the platform's SQL calls it. */
  functions: Map<string, Site[]>;
  /** Operator name (`=`, `<>`, `!~`, `~~`, …) → where it is used. */
  operators: Map<string, Site[]>;
  /** Type names in casts (`::text`, `::regrole`) → where. Reported, not planted. */
  types: Map<string, Site[]>;
  /** How many SQL texts were parsed, and which could only be scanned with the regex. */
  parsed: number;
  unparsed: { file: string; line: number; text: string }[];
  /** Every SQL text found, whitespace collapsed, `${…}` as `…` (to map a logged statement back). */
  texts: { file: string; line: number; text: string }[];
  files: string[];
};

const collapse = (s: string) => s.replace(/\s+/g, ' ').trim();

/** Where in the source a statement (as PostgreSQL logged it) was written: `file:line`, or null. */
export function siteOf(cat: PlatformSqlCatalog, statement: string): string | null {
  const logged = collapse(statement);
  let best: { site: string; len: number } | null = null;
  for (const t of cat.texts) {
    // The longest literal run before the first interpolation must open the logged statement.
    const head = t.text.split('…')[0]!.trim();
    if (head.length >= 12 && logged.startsWith(head) && (!best || head.length > best.len))
      best = { site: `${t.file}:${t.line}`, len: head.length };
  }
  return best?.site ?? null;
}

const SQL_START =
  /^\s*(SELECT|WITH|INSERT|UPDATE|DELETE|ALTER|CREATE|GRANT|REVOKE|DROP|COMMENT|BEGIN|SET|DECLARE|FETCH|DISCARD|ROLLBACK|COMMIT|COPY|REASSIGN|TRUNCATE|LISTEN|UNLISTEN|NOTIFY|VALUES|EXPLAIN|SHOW|RESET|LOCK|ANALYZE|VACUUM|CHECKPOINT)\b/i;

/** What an interpolation may stand for: an identifier, a number, a literal, nothing, a list. */
const PLACEHOLDERS = ['bulwark_ph', '1', "'x'", '', "('x')"];

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

function listFiles(root: string): string[] {
  const out: string[] = [];
  for (const rel of PLATFORM_SQL_SOURCES) {
    const abs = path.join(root, rel);
    if (!fs.existsSync(abs)) continue;
    if (fs.statSync(abs).isFile()) {
      out.push(abs);
      continue;
    }
    const walk = (dir: string) => {
      for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) walk(p);
        else if (e.name.endsWith('.ts') && !e.name.endsWith('.test.ts')) out.push(p);
      }
    };
    walk(abs);
  }
  return out.sort();
}

/** A string-ish expression as text segments, `null` standing for an interpolation. */
function segments(node: ts.Node): (string | null)[] | null {
  if (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) return [node.text];
  if (ts.isTemplateExpression(node)) {
    const out: (string | null)[] = [node.head.text];
    for (const span of node.templateSpans) out.push(null, span.literal.text);
    return out;
  }
  if (ts.isParenthesizedExpression(node)) return segments(node.expression);
  if (ts.isBinaryExpression(node) && node.operatorToken.kind === ts.SyntaxKind.PlusToken) {
    const l = segments(node.left);
    const r = segments(node.right);
    if (!l && !r) return null;
    return [...(l ?? [null]), ...(r ?? [null])];
  }
  return null;
}

const str = (v: Json | undefined): string | null => {
  if (v && typeof v === 'object' && !Array.isArray(v)) {
    const s = (v as { String?: { sval?: Json } }).String;
    if (s && typeof s.sval === 'string') return s.sval;
  }
  return null;
};

const nameList = (v: Json | undefined): string[] =>
  Array.isArray(v) ? v.map((x) => str(x)).filter((x): x is string => x !== null) : [];

/** Collects FuncCall, A_Expr, SubLink operator and cast type names from a parse tree. */
function walk(
  node: Json,
  found: { fn: [string, string | null, number][]; op: string[]; type: [string, string | null][] },
): void {
  if (Array.isArray(node)) {
    for (const x of node) walk(x, found);
    return;
  }
  if (node === null || typeof node !== 'object') return;
  for (const [key, value] of Object.entries(node)) {
    if (value && typeof value === 'object' && !Array.isArray(value)) {
      const body = value as Record<string, Json>;
      if (key === 'FuncCall') {
        const n = nameList(body.funcname);
        const name = n.at(-1);
        const arity = Array.isArray(body.args) ? body.args.length : 0;
        if (name) found.fn.push([name, n.length > 1 ? (n.at(-2) ?? null) : null, arity]);
      } else if (key === 'A_Expr') {
        const n = nameList(body.name);
        const name = n.at(-1);
        const kind = String(body.kind ?? '');
        if (name) found.op.push(name);
        else if (kind === 'AEXPR_IN' || kind === 'AEXPR_NULLIF' || kind === 'AEXPR_DISTINCT')
          found.op.push('=');
        if (kind === 'AEXPR_BETWEEN' || kind === 'AEXPR_NOT_BETWEEN') found.op.push('>=', '<=');
      } else if (key === 'SubLink') {
        const kind = String(body.subLinkType ?? '');
        const n = nameList(body.operName);
        if (n.length) found.op.push(n.at(-1)!);
        else if (kind === 'ANY_SUBLINK') found.op.push('=');
      } else if (key === 'TypeCast') {
        const t = body.typeName as Record<string, Json> | undefined;
        const n = nameList(t?.names);
        const name = n.at(-1);
        if (name) found.type.push([name, n.length > 1 ? (n.at(-2) ?? null) : null]);
      }
    }
    walk(value as Json, found);
  }
}

/** The texts to try: one placeholder everywhere first, then (≤ 256) per-interpolation mixes. */
function* fillings(segs: (string | null)[]): Generator<string> {
  const slots = segs.filter((s) => s === null).length;
  for (const ph of PLACEHOLDERS) yield segs.map((s) => (s === null ? ph : s)).join('');
  if (slots < 2 || PLACEHOLDERS.length ** slots > 625) return;
  for (let combo = 0; combo < PLACEHOLDERS.length ** slots; combo++) {
    let k = combo;
    yield segs
      .map((s) => {
        if (s !== null) return s;
        const ph = PLACEHOLDERS[k % PLACEHOLDERS.length]!;
        k = Math.floor(k / PLACEHOLDERS.length);
        return ph;
      })
      .join('');
  }
}

let parserLoaded: Promise<void> | null = null;

/** Scans the platform's source (repo root `root`) and returns every name its SQL uses. */
export async function platformSqlCatalog(root: string): Promise<PlatformSqlCatalog> {
  parserLoaded ??= loadModule();
  await parserLoaded;
  const files = listFiles(root);
  const out: PlatformSqlCatalog = {
    functions: new Map(),
    operators: new Map(),
    types: new Map(),
    parsed: 0,
    unparsed: [],
    texts: [],
    files: files.map((f) => path.relative(root, f)),
  };
  const add = (map: Map<string, Site[]>, name: string, site: Site) => {
    const list = map.get(name) ?? [];
    if (
      !list.some(
        (s) =>
          s.file === site.file &&
          s.line === site.line &&
          s.qualified === site.qualified &&
          s.arity === site.arity,
      )
    )
      list.push(site);
    map.set(name, list);
  };
  const seen = new Set<string>();
  for (const file of files) {
    const rel = path.relative(root, file);
    const source = ts.createSourceFile(file, fs.readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, true);
    const visit = (node: ts.Node) => {
      const segs = segments(node);
      if (segs) {
        const line = source.getLineAndCharacterOfPosition(node.getStart(source)).line + 1;
        const firstText = segs.find((s) => s !== null && s.trim() !== '') ?? '';
        const key = `${rel}:${line}:${segs.join('\u0000')}`;
        if (SQL_START.test(firstText) && !seen.has(key)) {
          seen.add(key);
          scan(rel, line, segs);
        }
      }
      ts.forEachChild(node, visit);
    };
    visit(source);
  }
  return out;

  function scan(file: string, line: number, segs: (string | null)[]): void {
    out.texts.push({ file, line, text: collapse(segs.map((x) => x ?? '…').join('')) });
    for (const text of fillings(segs)) {
      let tree: Json;
      try {
        tree = parseSync(text) as Json;
      } catch {
        continue;
      }
      out.parsed++;
      const found = {
        fn: [] as [string, string | null, number][],
        op: [] as string[],
        type: [] as [string, string | null][],
      };
      walk(tree, found);
      for (const [name, schema, arity] of found.fn)
        add(out.functions, name, { file, line, qualified: schema, via: 'parser', arity });
      for (const name of found.op)
        add(out.operators, name, { file, line, qualified: null, via: 'parser', arity: null });
      for (const [name, schema] of found.type)
        add(out.types, name, { file, line, qualified: schema, via: 'parser', arity: null });
      return;
    }
    // No placeholder makes it parse (a fragment, or console SQL of PgBouncer): `name(` tokens.
    const text = segs.map((s) => s ?? ' ').join('');
    out.unparsed.push({ file, line, text: text.slice(0, 200) });
    for (const m of text.matchAll(/(?:\b(pg_catalog)\s*\.\s*)?\b([a-z_][a-z0-9_]*)\s*\(/gi)) {
      const name = m[2]!.toLowerCase();
      add(out.functions, name, {
        file,
        line,
        qualified: m[1] ? 'pg_catalog' : null,
        via: 'regex',
        arity: null,
      });
    }
    // Operator tokens outside string literals (the caller keeps those that exist in pg_operator).
    const bare = text.replace(/'(?:[^']|'')*'/g, ' ').replaceAll('::', ' ');
    for (const m of bare.matchAll(/[<>=!~*+\-/%^|&#@?]+/g)) {
      if (!m[0].includes('--') && !m[0].includes('/*'))
        add(out.operators, m[0], { file, line, qualified: null, via: 'regex', arity: null });
    }
  }
}
