import { TableWrap } from './table-wrap.tsx';

type Cell = string | number | boolean | null;

function cell(v: Cell): string {
  return v === null ? 'NULL' : String(v);
}

/** Typed result columns and rows as a grid (the explorer's and an executed request's). */
export function RowsTable({
  label,
  columns,
  rows,
}: {
  label: string;
  columns: { name: string; type: string }[];
  rows: Cell[][];
}) {
  return (
    <TableWrap label={label} className="results-wrap">
      <table className="grid">
        <caption className="sr-only">{label}</caption>
        <thead>
          <tr>
            {columns.map((c, i) => (
              // biome-ignore lint/suspicious/noArrayIndexKey: columns may share a name
              <th scope="col" key={i}>
                <bdi>{c.name}</bdi> <span className="type">{c.type}</span>
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {rows.map((r, i) => (
            // biome-ignore lint/suspicious/noArrayIndexKey: rows have no identity
            <tr key={i}>
              {r.map((v, j) => (
                // biome-ignore lint/suspicious/noArrayIndexKey: positional cells
                <td key={j} className={v === null ? 'null' : typeof v === 'number' ? 'num' : undefined}>
                  {cell(v)}
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </TableWrap>
  );
}
