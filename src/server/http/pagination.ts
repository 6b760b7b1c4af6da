/**
 * Cursor pagination, one shape on every list: `{ items: [...], next_cursor: string | null }`.
 *
 * The cursor is opaque to clients: base64url of `[created_at in µs since the epoch, id]`,
 * the position of the last item of a page in a newest-first keyset scan over
 * (created_at, id). In SQL, compare with
 *   `(created_at, id) < (timestamptz 'epoch' + $ts::bigint * interval '1 microsecond', $id)`
 * and select `(extract(epoch FROM created_at) * 1000000)::bigint AS created_us` so the cursor
 * is exact (a JS Date only keeps milliseconds).
 */
import { z } from 'zod';
import { badRequest } from '../../shared/errors.ts';

export type PageCursor = { ts: number; id: string };

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** Row ids are UUIDs, or positive bigints (jobs) written as decimal strings. */
const BIGINT_ID = /^[1-9][0-9]{0,17}$/;

export const DEFAULT_PAGE_SIZE = 50;
export const MAX_PAGE_SIZE = 100;
/** Longest cursor the server writes or reads (`decodeCursor` refuses longer ones). */
const MAX_CURSOR_LENGTH = 200;

/** Query schema for list routes: `?limit=1..100` (default 50) and `?cursor=…`. Spread or extend it. */
export const pageQuery = z.object({
  limit: z.coerce
    .number()
    .int()
    .min(1)
    .max(MAX_PAGE_SIZE)
    .default(DEFAULT_PAGE_SIZE)
    .describe(`Items per page, 1-${MAX_PAGE_SIZE}`),
  cursor: cursorSchema(MAX_CURSOR_LENGTH).optional(),
});

/**
 * A cursor in a query string: opaque, the `next_cursor` of the previous page, never built by hand
 * (any other value is a 400). The description starts with "Opaque" on purpose: clients and the
 * OpenAPI fuzz read it as "do not invent one".
 */
export function cursorSchema(maxLength: number) {
  return z
    .string()
    .min(1)
    .max(maxLength)
    .regex(/^[A-Za-z0-9_-]+$/)
    .describe(
      `Opaque: the \`next_cursor\` of the previous page (base64url, at most ${maxLength} characters); any other value is a 400`,
    );
}

/** Response schema of a list route. */
export function pageSchema<T extends z.ZodType>(item: T) {
  return z.object({
    items: z.array(item).max(MAX_PAGE_SIZE),
    next_cursor: z
      .string()
      .max(MAX_CURSOR_LENGTH)
      .nullable()
      .describe('Opaque; pass it as `cursor` for the next page; null on the last page'),
  });
}

export function encodeCursor(c: PageCursor): string {
  return Buffer.from(JSON.stringify([c.ts, c.id]), 'utf8').toString('base64url');
}

/** Decodes a client-supplied cursor; anything that we did not produce is a 400. */
export function decodeCursor(raw: string | undefined): PageCursor | null {
  if (raw === undefined) return null;
  const invalid = () => badRequest('Invalid cursor');
  if (raw.length > MAX_CURSOR_LENGTH || !/^[A-Za-z0-9_-]+$/.test(raw)) throw invalid();
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(raw, 'base64url').toString('utf8'));
  } catch {
    throw invalid();
  }
  if (!Array.isArray(parsed) || parsed.length !== 2) throw invalid();
  const [ts, id] = parsed as unknown[];
  if (typeof ts !== 'number' || !Number.isSafeInteger(ts) || ts < 0) throw invalid();
  if (typeof id !== 'string' || !(UUID.test(id) || BIGINT_ID.test(id))) throw invalid();
  return { ts, id };
}

/**
 * Turns `limit + 1` fetched rows into a page: the extra row only says there is more.
 * Repositories fetch `limit + 1`; `position` gives a row's cursor position.
 */
export function toPage<Row, Item>(
  rows: readonly Row[],
  limit: number,
  position: (row: Row) => PageCursor,
  present: (row: Row) => Item,
): { items: Item[]; next_cursor: string | null } {
  const pageRows = rows.slice(0, limit);
  const last = pageRows.at(-1);
  return {
    items: pageRows.map(present),
    next_cursor: rows.length > limit && last !== undefined ? encodeCursor(position(last)) : null,
  };
}
