import { useMemo, useRef, useState } from 'react';
import { api, call, download } from '../../api/client.ts';
import { ApiError } from '../../api/errors.ts';
import { ErrorNotice } from '../../components/error-notice.tsx';
import { Loading } from '../../components/page.tsx';
import { useAction, useApi } from '../../lib/use-api.ts';
import type { TabProps } from './detail.tsx';
import { SchemaBrowser } from './schema-browser.tsx';
import { SqlEditor, type SqlEditorHandle } from './sql-editor.tsx';
import './explorer.css';
import { RowsTable } from '../../components/rows-table.tsx';

type Result = {
  columns: { name: string; type: string }[];
  rows: (string | number | boolean | null)[][];
  row_count: number;
  truncated: boolean;
  truncated_by: 'rows' | 'bytes' | null;
  duration_ms: number;
};

/** The line of `sql` holding code point `position`, and a caret line under it. */
function caretLines(sql: string, position: number): { line: number; text: string; caret: string } {
  const chars = Array.from(sql);
  const before = chars.slice(0, position).join('');
  const lineNo = before.split('\n').length;
  const lineStart = before.lastIndexOf('\n') + 1;
  const text = sql.slice(lineStart).split('\n')[0] ?? '';
  const col = Array.from(before.slice(lineStart)).length;
  return { line: lineNo, text, caret: `${' '.repeat(col)}^` };
}

function positionOf(err: ApiError | null): number | null {
  if (!err || (err.code !== 'query_refused' && err.code !== 'query_failed')) return null;
  const p = (err.details as { position?: unknown } | undefined)?.position;
  return typeof p === 'number' && Number.isInteger(p) && p >= 0 ? p : null;
}

export default function ExplorerTab({ db }: TabProps) {
  const name = db.name;
  const editor = useRef<SqlEditorHandle>(null);
  const [ranSql, setRanSql] = useState('');
  const [result, setResult] = useState<Result | null>(null);
  const schema = useApi(
    () => call(api.GET('/v1/databases/{name}/explorer/schema', { params: { path: { name } } })),
    `${name}|${db.status}`,
  );
  const completion = useMemo(
    () => Object.fromEntries((schema.data?.tables ?? []).map((t) => [t.name, t.columns.map((c) => c.name)])),
    [schema.data],
  );
  const run = useAction(async () => {
    const text = editor.current?.value().trim() ?? '';
    if (!text) throw new ApiError(0, 'empty', 'Write a SELECT statement first.', null);
    setRanSql(text);
    try {
      const out = await call(
        api.POST('/v1/databases/{name}/explorer/query', { params: { path: { name } }, body: { sql: text } }),
      );
      setResult(out as Result);
    } catch (err) {
      setResult(null);
      const pos = positionOf(err instanceof ApiError ? err : null);
      if (pos !== null) editor.current?.caretAt(pos);
      throw err;
    }
  });
  const csv = useAction(async () => {
    const text = editor.current?.value().trim() ?? '';
    if (!text) throw new ApiError(0, 'empty', 'Write a SELECT statement first.', null);
    await download(
      `/v1/databases/${encodeURIComponent(name)}/explorer/query?format=csv`,
      {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ sql: text }),
      },
      `${name}-query.csv`,
    );
  });
  const pos = positionOf(run.error);
  const caret = pos !== null ? caretLines(ranSql, pos) : null;

  if (db.status !== 'ready')
    return (
      <section aria-labelledby="tab-h">
        <h2 id="tab-h">Explorer</h2>
        <p>The explorer opens once the database is ready (now: {db.status}).</p>
      </section>
    );
  return (
    <section aria-labelledby="tab-h" className="explorer">
      <h2 id="tab-h">Explorer</h2>
      <p className="muted">
        Read-only: one SELECT over the public schema, run with a time limit and row and size caps. Every query
        is audited.
      </p>
      <div className="explorer-grid">
        <div className="explorer-main">
          <SqlEditor
            ref={editor}
            initial={'SELECT 1 AS one;'}
            schema={completion}
            onRun={() => void run.run()}
          />
          <div className="actions">
            <button type="button" className="primary" disabled={run.busy} onClick={() => void run.run()}>
              Run query
            </button>
            <button type="button" className="secondary" disabled={csv.busy} onClick={() => void csv.run()}>
              Download CSV
            </button>
            <span className="muted small">Ctrl+Enter runs the query.</span>
          </div>
          {run.error ? (
            <div className="notice notice-error" role="alert">
              <span className="msg">{run.error.message}</span>{' '}
              <span className="muted">({run.error.code})</span>
              {caret ? (
                <pre className="caret">
                  {`LINE ${caret.line}: ${caret.text}\n${' '.repeat(`LINE ${caret.line}: `.length)}${caret.caret}`}
                </pre>
              ) : null}
              {run.error.requestId ? (
                <div className="muted small">
                  Request ID: <code>{run.error.requestId}</code>
                </div>
              ) : null}
            </div>
          ) : null}
          <ErrorNotice error={csv.error} title="CSV download failed" />
          {run.busy ? <Loading what="results" /> : null}
          {result && !run.busy ? <Results result={result} /> : null}
        </div>
        <SchemaBrowser
          loading={schema.loading}
          error={schema.error}
          data={schema.data}
          onQuery={(table) =>
            editor.current?.setValue(`SELECT * FROM "${table.replaceAll('"', '""')}" LIMIT 100;`)
          }
        />
      </div>
    </section>
  );
}

function Results({ result }: { result: Result }) {
  return (
    <div className="results">
      <p role="status">
        {result.row_count} {result.row_count === 1 ? 'row' : 'rows'} in {result.duration_ms.toFixed(1)} ms
        {result.truncated
          ? `. Truncated: only the first ${result.row_count} rows are shown (the ${
              result.truncated_by === 'bytes' ? 'size' : 'row'
            } cap was reached); add a LIMIT or a narrower WHERE.`
          : ''}
      </p>
      {result.columns.length > 0 ? (
        <RowsTable label="Query results" columns={result.columns} rows={result.rows} />
      ) : null}
    </div>
  );
}
