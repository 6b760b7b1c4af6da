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
