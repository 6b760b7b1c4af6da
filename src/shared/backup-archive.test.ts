import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { test } from 'node:test';
import {
  ArchiveError,
  createArchiveDecryptor,
  createArchiveEncryptor,
  HEADER_BYTES,
} from './backup-archive.ts';

const ids = { backupId: randomUUID(), databaseId: randomUUID() };
const key = randomBytes(32);

async function encrypt(data: Buffer, chunkSize: number, pieces = 3): Promise<Buffer> {
  const out: Buffer[] = [];
  const step = Math.ceil(data.length / pieces) || 1;
  const parts: Buffer[] = [];
  for (let i = 0; i < data.length; i += step) parts.push(data.subarray(i, i + step));
  await pipeline(
    Readable.from(parts),
    createArchiveEncryptor(key, ids, { chunkSize }),
    new Writable({
      write(c, _e, cb) {
        out.push(c);
        cb();
      },
    }),
  );
  return Buffer.concat(out);
}

/** Decrypts; returns what the decryptor emitted before it finished or failed. */
async function decrypt(
  archive: Buffer,
  opts: { key?: Buffer; ids?: typeof ids; feed?: number } = {},
): Promise<{ out: Buffer; err: unknown }> {
  const out: Buffer[] = [];
  const feed = opts.feed ?? 7919;
  const parts: Buffer[] = [];
  for (let i = 0; i < archive.length; i += feed) parts.push(archive.subarray(i, i + feed));
  let err: unknown = null;
  try {
    await pipeline(
      Readable.from(parts),
      createArchiveDecryptor(opts.key ?? key, opts.ids ?? ids),
      new Writable({
        write(c, _e, cb) {
          out.push(c);
          cb();
        },
      }),
    );
  } catch (e) {
    err = e;
  }
  return { out: Buffer.concat(out), err };
}

/** The frames after the header: [start, end) of each. */
function frames(archive: Buffer): [number, number][] {
  const list: [number, number][] = [];
  let at = HEADER_BYTES;
  while (at < archive.length) {
    const len = archive.readUInt32BE(at + 1);
    list.push([at, at + 5 + len + 16]);
    at += 5 + len + 16;
  }
  return list;
}

test('round trip at every size around the chunk boundary, fed in any piece size', async () => {
  for (const n of [0, 1, 63, 64, 65, 128, 1000]) {
    const data = randomBytes(n);
    const archive = await encrypt(data, 64);
    for (const feed of [1, 5, 64, 10_000]) {
      const { out, err } = await decrypt(archive, { feed });
      assert.equal(err, null, `size ${n}, feed ${feed}`);
      assert.ok(out.equals(data));
    }
    // One final chunk exactly: ceil(n / 64) chunks, at least one.
    assert.equal(frames(archive).length, Math.max(1, Math.ceil(n / 64)));
  }
});

test('a flipped bit anywhere, a dropped, reordered or duplicated chunk, a truncation or trailing bytes are refused', async () => {
  const data = randomBytes(64 * 6 + 10);
  const archive = await encrypt(data, 64);
  const f = frames(archive);
  assert.equal(f.length, 7);
  const cases: [string, Buffer, ArchiveError['code']][] = [];
  for (const at of [
    0,
    9,
    12,
    20,
    40,
    60,
    HEADER_BYTES,
    HEADER_BYTES + 3,
    HEADER_BYTES + 10,
    archive.length - 1,
  ]) {
    const b = Buffer.from(archive);
    b[at]! ^= 0x01;
    const expected =
      at < 16
        ? 'bad_header'
        : at < HEADER_BYTES
          ? at < 48
            ? 'wrong_archive'
            : 'tampered'
          : at > HEADER_BYTES && at < HEADER_BYTES + 5
            ? 'bad_frame'
            : 'tampered';
    cases.push([`flip at ${at}`, b, expected]);
  }
  const cut = (i: number) => Buffer.concat([archive.subarray(0, f[i]![0]), archive.subarray(f[i]![1])]);
  cases.push(['drop chunk 2', cut(2), 'tampered']);
  cases.push(['drop chunk 0', cut(0), 'tampered']);
  const swap = Buffer.concat([
    archive.subarray(0, f[1]![0]),
    archive.subarray(f[2]![0], f[2]![1]),
    archive.subarray(f[1]![0], f[1]![1]),
    archive.subarray(f[2]![1]),
  ]);
  cases.push(['swap chunks 1 and 2', swap, 'tampered']);
  const dup = Buffer.concat([archive.subarray(0, f[2]![1]), archive.subarray(f[2]![0])]);
  cases.push(['duplicate chunk 2', dup, 'tampered']);
  cases.push([
    'truncated at a chunk boundary (final chunk gone)',
    archive.subarray(0, f[6]![0]),
    'truncated',
  ]);
  cases.push(['truncated mid-chunk', archive.subarray(0, f[3]![0] + 30), 'truncated']);
  cases.push(['truncated in the header', archive.subarray(0, 40), 'truncated']);
  cases.push(['trailing bytes', Buffer.concat([archive, Buffer.from([0])]), 'trailing_data']);
  cases.push([
    'a second archive appended',
    Buffer.concat([archive, archive.subarray(HEADER_BYTES)]),
    'trailing_data',
  ]);
  for (const [name, bytes, code] of cases) {
    const { out, err } = await decrypt(bytes, { feed: 1000 });
    assert.ok(err instanceof ArchiveError, `${name}: refused`);
    assert.equal(err.code, code, name);
    // Whatever came out before the refusal is an authentic prefix, never altered bytes.
    assert.ok(data.subarray(0, out.length).equals(out), `${name}: only authentic bytes came out`);
  }
});

test('a wrong key or another backup’s ids are refused before any byte comes out', async () => {
  const archive = await encrypt(randomBytes(500), 64);
  for (const opts of [
    { key: randomBytes(32) },
    { ids: { ...ids, backupId: randomUUID() } },
    { ids: { ...ids, databaseId: randomUUID() } },
  ]) {
    const { out, err } = await decrypt(archive, opts);
    assert.ok(err instanceof ArchiveError);
    assert.equal(out.length, 0);
  }
  // An oversized length is refused before anything is buffered.
  const f = frames(archive);
  const b = Buffer.from(archive);
  b.writeUInt32BE(0xffffffff, f[0]![0] + 1);
  assert.equal(((await decrypt(b)).err as ArchiveError).code, 'bad_frame');
  // The flag is authenticated: a chunk marked final that was not fails its tag.
  const c = Buffer.from(archive);
  c[f[0]![0]] = 1;
  assert.equal(((await decrypt(c)).err as ArchiveError).code, 'tampered');
});
