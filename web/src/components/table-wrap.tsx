import type { ReactNode } from 'react';

/**
 * A table that may be wider than the window scrolls inside this region; the region takes focus so
 * a keyboard can scroll it, and is named like its table.
 */
export function TableWrap(props: { label: string; className?: string; children: ReactNode }) {
  const className = props.className ? `table-wrap ${props.className}` : 'table-wrap';
  return (
    <section className={className} aria-label={`${props.label} (scrollable)`}>
      {/* biome-ignore lint/a11y/noNoninteractiveTabindex: a scrollable region must be reachable by keyboard */}
      <div tabIndex={0} className="table-scroll">
        {props.children}
      </div>
    </section>
  );
}
