import assert from 'node:assert/strict';
import { test } from 'node:test';
import { sqlCaret } from './db-query.ts';

const caretAt = (out: string) => out.split('\n')[1]!.indexOf('^');

test('sqlCaret points at a 0-based position like psql: its line, a caret under it', () => {
  assert.equal(sqlCaret('select nope', 7), 'LINE 1: select nope\n               ^');
  const multi = sqlCaret('select id\r\n  from x\r\nwhere ?', 27);
  assert.equal(multi, 'LINE 3: where ?\n              ^');
  assert.equal(sqlCaret('select (', 99), 'LINE 1: select (\n                ^', 'past the end: at the end');
  assert.equal(sqlCaret('\nselect', 0), 'LINE 1: \n        ^');
});

test('sqlCaret: tabs as one space, control characters escaped, wide characters counted, long lines cut', () => {
  const tab = sqlCaret('\tselect nope', 8);
  assert.equal(tab.split('\n')[0], 'LINE 1:  select nope');
  assert.equal(caretAt(tab), 'LINE 1:  select '.length);
  const esc = sqlCaret("select '\x1b[2J', nope", 15);
  assert.ok(!esc.includes('\x1b'));
  assert.equal(caretAt(esc), "LINE 1: select '\\x1b[2J', ".length);
  assert.equal(caretAt(sqlCaret("select '東京', nope", 13)), "LINE 1: select '東京', ".length + 2);
  const long = `select ${'a, '.repeat(100)}nope`;
  const cut = sqlCaret(long, long.length - 4);
  assert.ok(cut.split('\n')[0]!.length < 140, cut);
  assert.match(cut, /^LINE 1: …(, a)+, nope\n +\^$/);
  assert.equal(caretAt(cut), cut.indexOf('nope'));
});
