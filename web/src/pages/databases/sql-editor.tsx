import { closeCompletion } from '@codemirror/autocomplete';
import { PostgreSQL, sql } from '@codemirror/lang-sql';
import { Compartment, EditorState, Prec } from '@codemirror/state';
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
  /** The editor's accessible name (default "SQL query"). */
  label?: string;
  /** Shown, selectable, not editable (a request's SQL under review). */
  readOnly?: boolean;
};

/**
 * The editor's own look. CodeMirror injects its styles at run time: into a document it would add a
 * <style> element, which the CSP (style-src 'self') refuses; into a shadow root it uses a
 * constructed stylesheet (adoptedStyleSheets), which the CSP allows. So the editor lives in an open
 * shadow root (still reachable by assistive technology and by role-based test locators).
 */
const look = EditorView.theme({
  '&': { minHeight: '8rem', maxHeight: '24rem', fontSize: '0.9rem', backgroundColor: 'var(--bg, #fff)' },
  '&.cm-focused': { outline: '2px solid var(--focus, #f59e0b)', outlineOffset: '1px' },
  '.cm-scroller': { fontFamily: 'var(--mono, ui-monospace, monospace)', minHeight: '8rem' },
  '.cm-gutters': {
    backgroundColor: 'var(--bg-soft, #f5f7fa)',
    color: 'var(--muted, #5b6475)',
    border: 'none',
  },
});

/**
 * Typing over a selection that spans lines lets Chromium's native editing merge the lines, and it
 * marks the merged line with a style attribute, which the CSP refuses (a console error, no harm).
 * The editor makes that replacement itself instead.
 */
const typeOverSelection = EditorView.domEventHandlers({
  beforeinput(event, view) {
    const sel = view.state.selection.main;
    if (event.inputType !== 'insertText' || event.data === null || sel.empty || view.composing) return false;
    event.preventDefault();
    view.dispatch(view.state.replaceSelection(event.data), { userEvent: 'input.type', scrollIntoView: true });
    return true;
  },
});

/** CodeMirror 6 with PostgreSQL highlighting and completion; Ctrl/Cmd+Enter runs the query. */
export const SqlEditor = forwardRef<SqlEditorHandle, Props>(function SqlEditor(
  { initial, schema, onRun, label = 'SQL query', readOnly = false },
  ref,
) {
  const host = useRef<HTMLDivElement>(null);
  const view = useRef<EditorView | null>(null);
  const language = useRef(new Compartment());
  const runRef = useRef(onRun);
  runRef.current = onRun;

  // biome-ignore lint/correctness/useExhaustiveDependencies: created once; schema updates go through the compartment
  useEffect(() => {
    const el = host.current;
    if (!el) return;
    const shadow = el.shadowRoot ?? el.attachShadow({ mode: 'open' });
    const parent = document.createElement('div');
    shadow.replaceChildren(parent);
    const v = new EditorView({
      parent,
      root: shadow,
      doc: initial,
      extensions: [
        basicSetup,
        look,
        typeOverSelection,
        language.current.of(sql({ dialect: PostgreSQL, upperCaseKeywords: true })),
        Prec.highest(
          keymap.of([
            {
              key: 'Mod-Enter',
              run: (v) => {
                closeCompletion(v);
                runRef.current();
                return true;
              },
            },
          ]),
        ),
        EditorView.lineWrapping,
        EditorView.contentAttributes.of({
          'aria-label': label,
          'aria-multiline': 'true',
          ...(readOnly ? { 'aria-readonly': 'true' } : {}),
        }),
        ...(readOnly ? [EditorState.readOnly.of(true), EditorView.editable.of(false)] : []),
      ],
    });
    view.current = v;
    return () => {
      v.destroy();
      shadow.replaceChildren();
      view.current = null;
    };
  }, []);

  useEffect(() => {
    view.current?.dispatch({
      effects: language.current.reconfigure(sql({ dialect: PostgreSQL, upperCaseKeywords: true, schema })),
    });
  }, [schema]);

  useImperativeHandle(ref, () => ({
    value: () => {
      if (view.current) closeCompletion(view.current);
      return view.current?.state.doc.toString() ?? '';
    },
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
