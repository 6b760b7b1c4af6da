import { useState } from 'react';
import type { ApiError } from '../../api/errors.ts';
import { ErrorNotice } from '../../components/error-notice.tsx';
import { Loading } from '../../components/page.tsx';

type Table = { name: string; kind: string; columns: { name: string; type: string; nullable: boolean }[] };

/** The public tables and their columns; a table's name opens its columns, "Query" fills the editor. */
export function SchemaBrowser(props: {
  loading: boolean;
  error: ApiError | null;
  data: { tables: Table[]; truncated: boolean } | undefined;
  onQuery: (table: string) => void;
}) {
  const [open, setOpen] = useState<Set<string>>(new Set());
  const toggle = (t: string) =>
    setOpen((s) => {
      const n = new Set(s);
      if (n.has(t)) n.delete(t);
      else n.add(t);
      return n;
    });
  const tables = props.data?.tables ?? [];
  return (
    <aside className="schema" aria-labelledby="tables-h">
      <h3 id="tables-h">Tables</h3>
      <ErrorNotice error={props.error} title="Could not read the tables" />
      {props.loading && !props.data ? <Loading what="tables" /> : null}
      {props.data && tables.length === 0 ? (
        <p className="muted">
          No tables in the public schema yet. Create some with your application or psql (Connect tab), then
          look here.
        </p>
      ) : null}
      <ul className="tree">
        {tables.map((t) => (
          <li key={t.name}>
            <button
              type="button"
              className="link"
              aria-expanded={open.has(t.name)}
              onClick={() => toggle(t.name)}
            >
              <bdi>{t.name}</bdi>
            </button>
            {t.kind !== 'table' ? <span className="muted small"> {t.kind.replace('_', ' ')}</span> : null}
            {open.has(t.name) ? (
              <>
                <ul>
                  {t.columns.map((c) => (
                    <li key={c.name}>
                      <span className="mono">{c.name}</span> <span className="type">{c.type}</span>
                      {c.nullable ? null : <span className="muted small"> not null</span>}
                    </li>
                  ))}
                </ul>
                <button type="button" className="secondary small" onClick={() => props.onQuery(t.name)}>
                  Query <bdi>{t.name}</bdi>
                </button>
              </>
            ) : null}
          </li>
        ))}
      </ul>
      {props.data?.truncated ? <p className="muted small">Only the first tables are listed.</p> : null}
    </aside>
  );
}
