import { type ReactNode, useEffect, useRef } from 'react';

/**
 * A page: its h1 and the document title. After a client-side navigation the focus would be left on
 * a link that no longer exists; it moves to the new page's heading instead (screen readers read it),
 * unless something on the page already took it.
 */
export function Page({
  title,
  actions,
  children,
}: {
  title: string;
  actions?: ReactNode;
  children: ReactNode;
}) {
  const heading = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    document.title = `${title} · Bulwark`;
    const active = document.activeElement;
    if (!active || active === document.body || !active.isConnected)
      heading.current?.focus({ preventScroll: true });
  }, [title]);
  return (
    <>
      <div className="page-head">
        <h1 ref={heading} tabIndex={-1}>
          {title}
        </h1>
        {actions ? <div className="page-actions">{actions}</div> : null}
      </div>
      {children}
    </>
  );
}
export function Loading({ what }: { what: string }) {
  return (
    <p role="status" className="muted">
      Loading {what}…
    </p>
  );
}

export function Empty({ children }: { children: ReactNode }) {
  return <div className="empty">{children}</div>;
}
