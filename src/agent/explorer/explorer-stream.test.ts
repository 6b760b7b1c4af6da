import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Parser } from 'pg-protocol/dist/parser.js';
import { ExplorerSocket, ExplorerStreamError, FIELD_MAX, UNBUDGETED_MAX } from './explorer-stream.ts';

const msg = (code: string, body: Buffer) => {
  const head = Buffer.alloc(5);
  head.write(code, 0, 'latin1');
  head.writeUInt32BE(body.length + 4, 1);
  return Buffer.concat([head, body]);
};
const dataRow = (...cells: (string | null)[]) => {
  const parts = [Buffer.alloc(2)];
  parts[0]!.writeUInt16BE(cells.length);
  for (const c of cells) {
    const len = Buffer.alloc(4);
    if (c === null) len.writeInt32BE(-1);
    else len.writeInt32BE(Buffer.byteLength(c));
    parts.push(len);
    if (c !== null) parts.push(Buffer.from(c));
  }
  return msg('D', Buffer.concat(parts));
};
const ready = () => msg('Z', Buffer.from('T'));
const errorResponse = (fields: [string, string][]) =>
  msg(
    'E',
    Buffer.concat([
      ...fields.map(([t, v]) => Buffer.concat([Buffer.from(t), Buffer.from(v), Buffer.from([0])])),
      Buffer.from([0]),
    ]),
  );

/** Feeds `wire` to a filtered socket in chunks of `size` bytes; returns what pg's parser would see. */
function run(wire: Buffer, size: number, arm?: (s: ExplorerSocket) => void) {
  const s = new ExplorerSocket();
  arm?.(s);
  const out: Buffer[] = [];
  s.on('data', (b: Buffer) => out.push(Buffer.from(b)));
  for (let i = 0; i < wire.length; i += size) s.receive(wire.subarray(i, i + size));
  const delivered = Buffer.concat(out);
  const messages: { name: string; fields?: unknown[]; message?: string }[] = [];
  new Parser().parse(delivered, (m) => messages.push(m as (typeof messages)[number]));
  return { s, delivered, messages };
}

test('messages pass through unchanged, whatever the chunking', () => {
  const wire = Buffer.concat([ready(), dataRow('a', null, 'héllo'), dataRow(''), ready()]);
  for (const size of [1, 2, 3, 5, 7, 64, wire.length]) {
    assert.deepEqual(run(wire, size).delivered, wire, `chunks of ${size}`);
  }
});

test('rows of the armed statement pass while they fit the budget; the rest are skipped unread', () => {
  const prelude = Buffer.concat([ready(), dataRow('prelude row larger than the budget....'), ready()]);
  const rows = [dataRow('x'.repeat(10)), dataRow('y'.repeat(10)), dataRow('z'.repeat(100)), dataRow('w')];
  const wire = Buffer.concat([
    prelude,
    ...rows,
    msg('C', Buffer.from('SELECT 4\0')),
    ready(),
    dataRow('after'),
  ]);
  for (const size of [1, 4, 9, 1000]) {
    const { s, messages } = run(wire, size, (sock) => sock.limitRows(40, 2));
    const cells = messages.filter((m) => m.name === 'dataRow').map((m) => m.fields?.[0]);
    // The prelude's row (before 2 syncs) and the row after the statement are not budgeted.
    assert.deepEqual(
      cells,
      ['prelude row larger than the budget....', 'x'.repeat(10), 'y'.repeat(10), 'after'],
      `chunks of ${size}`,
    );
    assert.equal(s.rowsDropped(), true);
    assert.equal(messages.filter((m) => m.name === 'readyForQuery').length, 3);
  }
  assert.equal(run(wire, 7, (sock) => sock.limitRows(1_000, 2)).s.rowsDropped(), false);
});

test('a huge ErrorResponse reaches pg as a bounded, well-formed message cut on a UTF-8 boundary', () => {
  const big = `invalid input syntax for type integer: "${'é'.repeat(100_000)}"`;
  const wire = Buffer.concat([
    errorResponse([
      ['S', 'ERROR'],
      ['C', '22P02'],
      ['M', big],
      ['D', 'x'.repeat(50_000)],
    ]),
    ready(),
  ]);
  for (const size of [1, 3, 4096, wire.length]) {
    if (size === 1 && wire.length > 100_000) continue; // byte-at-a-time over 250 kB is slow, and covered below
    const { messages, delivered } = run(wire, size);
    const err = messages[0] as { name: string; message: string; code: string; detail: string };
    assert.equal(err.name, 'error');
    assert.equal(err.code, '22P02');
    assert.ok(err.message.startsWith('invalid input syntax for type integer: "éé'));
    assert.ok(err.message.endsWith('…'));
    assert.ok(!err.message.includes('\ufffd'), 'no broken UTF-8');
    assert.ok(Buffer.byteLength(err.message) <= FIELD_MAX + 3);
    assert.ok(delivered.length < 3 * FIELD_MAX);
    assert.equal(messages[1]?.name, 'readyForQuery');
  }
  const small = errorResponse([
    ['S', 'ERROR'],
    ['M', `${'é'.repeat(3_000)}`],
  ]);
  assert.ok(run(Buffer.concat([small, ready()]), 1).messages[0]?.message?.endsWith('…'));
});

test('an oversized message outside a budget destroys the connection instead of being buffered', async () => {
  const s = new ExplorerSocket();
  const got: Buffer[] = [];
  s.on('data', (b: Buffer) => got.push(b));
  const failed = new Promise<Error>((resolve) => s.once('error', resolve));
  const head = Buffer.alloc(5);
  head.write('T', 0, 'latin1');
  head.writeUInt32BE(UNBUDGETED_MAX + 100, 1);
  s.receive(Buffer.concat([ready(), head]));
  const err = await failed;
  assert.ok(err instanceof ExplorerStreamError);
  assert.ok(Buffer.concat(got).length <= ready().length, 'nothing of the oversized message reached pg');
});

test('an exception thrown by the data listener (pg) destroys the connection, never the process', async () => {
  const s = new ExplorerSocket();
  s.on('data', () => {
    throw new Error('Cannot create a string longer than 0x1fffffe8 characters');
  });
  const failed = new Promise<Error>((resolve) => s.once('error', resolve));
  s.receive(ready());
  assert.match((await failed).message, /string longer/);
  assert.equal(s.destroyed, true);
});

test('once rows were dropped, the statement is reported to the caller and its cancel ends the result', async () => {
  const cancel = errorResponse([
    ['S', 'ERROR'],
    ['C', '57014'],
    ['M', 'canceling statement due to user request'],
  ]);
  const wire = Buffer.concat([
    ready(),
    dataRow('small'),
    dataRow('x'.repeat(100)),
    dataRow('more'),
    cancel,
    msg('Z', Buffer.from('E')),
    cancel, // a later statement's cancel is an error again
    ready(),
  ]);
  let dropped = 0;
  const { messages } = run(wire, 3, (s) => s.limitRows(30, 1, () => dropped++));
  await new Promise((r) => setImmediate(r));
  assert.equal(dropped, 1, 'told once');
  assert.deepEqual(
    messages.map((m) => m.name),
    ['readyForQuery', 'dataRow', 'commandComplete', 'readyForQuery', 'error', 'readyForQuery'],
  );
});
