import assert from 'node:assert/strict';
import { test } from 'node:test';
import { displayWidth, formatGrid, terminalSafe, truncateToWidth } from './output.ts';

test('terminalSafe: control, format and separator characters become visible escapes', () => {
  assert.equal(terminalSafe('\x1b[31mred\x1b[0m'), '\\x1b[31mred\\x1b[0m');
  assert.equal(terminalSafe('a\nb\rc\td\x00\x7f\x9b'), 'a\\nb\\rc\\td\\x00\\x7f\\x9b');
  assert.equal(terminalSafe('abc\u202edcba\u2028\u200b'), 'abc\\u202edcba\\u2028\\u200b', 'bidi override');
  assert.equal(terminalSafe('\ud800x'), '\\ud800x', 'a lone surrogate');
  assert.equal(terminalSafe('plain é 東京 🙂 C:\\x'), 'plain é 東京 🙂 C:\\x');
});

test('widths: wide characters take two columns, combining marks none; cuts end with …', () => {
  assert.equal(displayWidth('abc'), 3);
  assert.equal(displayWidth('東京'), 4);
  assert.equal(displayWidth('e\u0301'), 1);
  assert.equal(truncateToWidth('abcdef', 6), 'abcdef');
  assert.equal(truncateToWidth('abcdefg', 6), 'abcde…');
  assert.equal(truncateToWidth('東京都庁', 6), '東京…');
  assert.equal(displayWidth(truncateToWidth('東京都庁', 6)), 5);
});

test('formatGrid: aligned under a header and a rule, cells cut and made safe, numbers to the right', () => {
  const out = formatGrid(
    ['n', 'name'],
    [
      ['1', 'ann'],
      ['200', '東京\x1b]0;pwned\x07'],
      ['3', 'x'.repeat(30)],
    ],
    { maxWidth: 12, right: [true, false] },
  );
  assert.equal(
    out,
    ['  n | name', '----+-------------', '  1 | ann', '200 | 東京\\x1b]0;…', '  3 | xxxxxxxxxxx…'].join('\n'),
  );
});
