/** Human tables for CLI output: fixed columns, padded, `-` for empty values. */
export function formatTable(
  rows: Record<string, unknown>[],
  columns: { key: string; title: string }[],
): string {
  const cell = (v: unknown) =>
    v === null || v === undefined || v === '' ? '-' : Array.isArray(v) ? v.join(',') : String(v);
  const widths = columns.map((c) => Math.max(c.title.length, ...rows.map((r) => cell(r[c.key]).length)));
  const line = (vals: string[]) =>
    vals
      .map((v, i) => v.padEnd(widths[i]!))
      .join('  ')
      .trimEnd();
  return [
    line(columns.map((c) => c.title.toUpperCase())),
    ...rows.map((r) => line(columns.map((c) => cell(r[c.key])))),
  ].join('\n');
}

/**
 * Text that cannot drive a terminal: control characters (C0, DEL, C1), format characters (bidi
 * overrides, zero-width ones), line/paragraph separators and lone surrogates become visible
 * escapes (`\n`, `\t`, `\x1b`, `\u202e`). For anything a database or a user wrote.
 */
export function terminalSafe(s: string): string {
  return s.replace(/[\p{Cc}\p{Cf}\p{Cs}\p{Zl}\p{Zp}]/gu, (c) => {
    if (c === '\n') return '\\n';
    if (c === '\r') return '\\r';
    if (c === '\t') return '\\t';
    const cp = c.codePointAt(0)!;
    return cp <= 0xff ? `\\x${cp.toString(16).padStart(2, '0')}` : `\\u${cp.toString(16).padStart(4, '0')}`;
  });
}

// Double-width characters (CJK, Hangul, full-width forms, most emoji) and zero-width combining marks:
// enough for the columns of a table to line up in a terminal.
const WIDE =
  /[\u1100-\u115f\u2e80-\u303e\u3041-\u33ff\u3400-\u4dbf\u4e00-\u9fff\ua000-\ua4cf\uac00-\ud7a3\uf900-\ufaff\ufe30-\ufe4f\uff00-\uff60\uffe0-\uffe6\u{1f300}-\u{1f64f}\u{1f900}-\u{1f9ff}\u{20000}-\u{3fffd}]/u;
const COMBINING = /[\p{Mn}\p{Me}]/u;
const charWidth = (c: string) => (COMBINING.test(c) ? 0 : WIDE.test(c) ? 2 : 1);

/** Columns a (terminal-safe) string takes on screen. */
export function displayWidth(s: string): number {
  let w = 0;
  for (const c of s) w += charWidth(c);
  return w;
}

/** At most `max` columns: a longer string is cut and ends with `…`. */
export function truncateToWidth(s: string, max: number): string {
  if (displayWidth(s) <= max) return s;
  let out = '';
  let w = 0;
  for (const c of s) {
    const cw = charWidth(c);
    if (w + cw > max - 1) break;
    out += c;
    w += cw;
  }
  return `${out}…`;
}

/**
 * An aligned grid of arbitrary text (query results): a header, a rule, one line per row; every
 * cell made terminal-safe and cut at `maxWidth` columns; `right[i]` right-aligns column i.
 */
export function formatGrid(
  header: string[],
  rows: string[][],
  opts: { maxWidth: number; right?: boolean[] },
): string {
  const fit = (v: string) => truncateToWidth(terminalSafe(v), opts.maxWidth);
  const head = header.map(fit);
  const body = rows.map((r) => header.map((_, i) => fit(r[i] ?? '')));
  const widths = head.map((h, i) => Math.max(displayWidth(h), ...body.map((r) => displayWidth(r[i]!))));
  const pad = (v: string, i: number, right: boolean) => {
    const fill = ' '.repeat(widths[i]! - displayWidth(v));
    return right ? fill + v : v + fill;
  };
  const line = (cells: string[]) =>
    cells
      .map((v, i) => pad(v, i, opts.right?.[i] ?? false))
      .join(' | ')
      .trimEnd();
  return [line(head), widths.map((w) => '-'.repeat(w)).join('-+-'), ...body.map(line)].join('\n');
}
