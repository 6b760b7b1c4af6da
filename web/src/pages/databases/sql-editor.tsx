import { PostgreSQL, sql } from '@codemirror/lang-sql';
import { Compartment, Prec } from '@codemirror/state';
import { keymap } from '@codemirror/view';
import { basicSetup, EditorView } from 'codemirror';
import { forwardRef, useEffect, useImperativeHandle, useRef } from 'react';

export type SqlEditorHandle = {
  value: () => string;
  setValue: (text: string) => void;
  /** Puts the caret at a 0-based character (code point) position and focuses the editor. */
  caretAt: (position: number) => void;
};

type Props = {
  initial: string;
  /** Table → columns, for completion. */
  schema: Record<string, string[]>;
  onRun: () => void;
};

/** CodeMirror 6 with PostgreSQL highlighting and completion; Ctrl/Cmd+Enter runs the query. */
export const SqlEditor = forwardRef<SqlEditorHandle, Props>(function SqlEditor(
  { initial, schema, onRun },
  ref,
) {
  const host = useRef<HTMLDivElement>(null);
  const view = useRef<EditorView | null>(null);
  const language = useRef(new Compartment());
  const runRef = useRef(onRun);
  runRef.current = onRun;

  // biome-ignore lint/correctness/useExhaustiveDependencies: created once; schema updates go through the compartment
  useEffect(() => {
    if (!host.current) return;
    const v = new EditorView({
      parent: host.current,
      doc: initial,
      extensions: [
        basicSetup,
        language.current.of(sql({ dialect: PostgreSQL, upperCaseKeywords: true })),
        Prec.highest(
          keymap.of([
            {
              key: 'Mod-Enter',
              run: () => {
                runRef.current();
                return true;
              },
            },
          ]),
        ),
        EditorView.lineWrapping,
        EditorView.contentAttributes.of({ 'aria-label': 'SQL query', 'aria-multiline': 'true' }),
      ],
    });
    view.current = v;
    return () => {
      v.destroy();
      view.current = null;
    };
  }, []);

  useEffect(() => {
    view.current?.dispatch({
      effects: language.current.reconfigure(sql({ dialect: PostgreSQL, upperCaseKeywords: true, schema })),
    });
  }, [schema]);

  useImperativeHandle(ref, () => ({
    value: () => view.current?.state.doc.toString() ?? '',
    setValue: (text) => {
      const v = view.current;
      if (!v) return;
      v.dispatch({
        changes: { from: 0, to: v.state.doc.length, insert: text },
        selection: { anchor: text.length },
      });
      v.focus();
    },
    caretAt: (position) => {
      const v = view.current;
      if (!v) return;
      const text = v.state.doc.toString();
      const offset = Math.min(Array.from(text).slice(0, position).join('').length, v.state.doc.length);
      v.dispatch({ selection: { anchor: offset }, scrollIntoView: true });
      v.focus();
    },
  }));

  return <div ref={host} className="editor" />;
});
