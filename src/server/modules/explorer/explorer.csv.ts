import type { QueryOutput } from '../../../shared/contracts/explorer-channel.ts';

/** Text that a spreadsheet would run as a formula. */
const FORMULA = /^[=+\-@\t\r]/;
/**
 * A cell that is entirely a number (a sign, digits, a fraction, an exponent) is left alone; text that
 * only starts like one (`-1+HYPERLINK(…)`) is still a formula to a spreadsheet.
 */
const NUMBER = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

function cell(v: string | number | boolean | null): string {
  if (v === null) return '';
  let s = typeof v === 'string' ? v : String(v);
  // CSV injection: a text cell that starts like a formula is prefixed with a quote (OWASP).
  if (typeof v === 'string' && FORMULA.test(s) && !NUMBER.test(s)) s = `'${s}`;
  return /[",\r\n]|^\s|\s$/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}

/** RFC 4180 CSV (CRLF line ends): a header of column names, then the rows. NULL is an empty cell. */
export function toCsv(out: Pick<QueryOutput, 'columns' | 'rows'>): string {
  const lines = [out.columns.map((c) => cell(c.name)).join(',')];
  for (const row of out.rows) lines.push(row.map(cell).join(','));
  return `${lines.join('\r\n')}\r\n`;
}
