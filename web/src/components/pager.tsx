import { useMemo, useState } from 'react';

/**
 * Cursor paging as the API does it (`next_cursor`): the stack of cursors that led to the page on
 * screen, so "Previous page" goes back without the server keeping any state.
 */
export function useCursorPages() {
  const [cursors, setCursors] = useState<(string | null)[]>([null]);
  // Stable across renders, so effects may depend on them.
  const moves = useMemo(
    () => ({
      back: () => setCursors((c) => (c.length > 1 ? c.slice(0, -1) : c)),
      forward: (next: string) => setCursors((c) => [...c, next]),
      /** Back to the first page (the filters changed). */
      reset: () => setCursors([null]),
    }),
    [],
  );
  return {
    /** The cursor of the page on screen (null: the first page). */
    cursor: cursors[cursors.length - 1] ?? null,
    page: cursors.length,
    ...moves,
  };
}

export type CursorPages = ReturnType<typeof useCursorPages>;

/** "Previous page" / "Next page" for a cursor-paged list. */
export function Pager(props: {
  pages: CursorPages;
  next: string | null | undefined;
  busy?: boolean;
  showPage?: boolean;
}) {
  const { pages, next, busy = false } = props;
  return (
    <div className="pager">
      <button type="button" className="secondary" disabled={pages.page < 2 || busy} onClick={pages.back}>
        Previous page
      </button>
      {props.showPage ? <span className="muted small">Page {pages.page}</span> : null}
      <button
        type="button"
        className="secondary"
        disabled={!next || busy}
        onClick={() => {
          if (next) pages.forward(next);
        }}
      >
        Next page
      </button>
    </div>
  );
}
