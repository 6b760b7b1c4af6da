/**
 * The result an execution answers (ADR 0021): the last row-returning statement's rows, cut to the
 * request's `row_limit` and `byte_limit`, each value typed for JSON (booleans, safe integers and
 * floats as numbers, everything else as PostgreSQL's text).
 */
import type { ExecutePayload } from '../../shared/contracts/execution.ts';
import type { QueryOutput } from '../../shared/contracts/explorer-channel.ts';
import type { ExecutionSession, RawRow, StatementResult } from './execution-session.ts';

const INT_TYPES = new Set([20, 21, 23, 26]);
const FLOAT_TYPES = new Set([700, 701]);

/** The wire budget for a byte cap (as the explorer's: a DataRow costs at most 4/3 of rowBytes). */
export const wireBudget = (byteLimit: number) => Math.ceil((byteLimit * 4) / 3) + 64;

function rowBytes(row: (string | null)[]): number {
  let n = 2;
  for (const v of row) n += v === null ? 5 : Buffer.byteLength(v, 'utf8') + 3;
  return n;
}

function toCell(v: string | null, typeId: number): string | number | boolean | null {
  if (v === null) return null;
  if (typeId === 16) return v === 't';
  if (INT_TYPES.has(typeId) || FLOAT_TYPES.has(typeId)) {
    const n = Number(v);
    if (Number.isFinite(n) && (!INT_TYPES.has(typeId) || Number.isSafeInteger(n))) return n;
  }
  return v;
}

/** The statement's rows as the outcome's result, under the request's caps. */
export async function resultOf(
  p: ExecutePayload,
  session: ExecutionSession,
  r: StatementResult,
  elapsed: () => number,
): Promise<QueryOutput> {
  const rows: RawRow[] = [];
  let bytes = 0;
  let truncatedBy: 'rows' | 'bytes' | null = null;
  for (const row of r.rows) {
    const size = rowBytes(row);
    if (rows.length >= p.row_limit) truncatedBy = 'rows';
    else if (bytes + size > p.byte_limit) truncatedBy = 'bytes';
    if (truncatedBy) break;
    rows.push(row);
    bytes += size;
  }
  if (!truncatedBy && r.cut) truncatedBy = 'bytes';
  const types = await session.columnTypes(r.fields);
  const ids = r.fields.map((f) => f.dataTypeID);
  return {
    columns: r.fields.map((f, i) => ({
      name: f.name.slice(0, 128),
      type: (types[i] ?? 'unknown').slice(0, 256),
    })),
    rows: rows.map((row) => row.map((v, i) => toCell(v, ids[i] ?? 0))),
    row_count: rows.length,
    truncated: truncatedBy !== null,
    truncated_by: truncatedBy,
    duration_ms: elapsed(),
  };
}
