import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, test } from 'node:test';
import { createZstdCompress } from 'node:zlib';
import { ArchiveError, createArchiveEncryptor, HEADER_BYTES } from '../../shared/backup-archive.ts';
import { authenticateArchive, hashingTap, heldUntilChecked } from './archive-io.ts';
import { createLocalStorage } from './backup-storage.ts';

let dir: string;
let storage: ReturnType<typeof createLocalStorage>;
const key = randomBytes(32);
const plain = Buffer.from(randomBytes(12_000).toString('hex'));

before(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'archive-io-'));
  storage = createLocalStorage(dir);
});
after(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

/** Writes an archive of `plain` as backup.create does; returns its ref and the stored bytes' hash. */
async function write() {
  const ref = { databaseId: randomUUID(), backupId: randomUUID() };
  const pending = await storage.create(ref);
  const stored = hashingTap();
  await pipeline(
    Readable.from([plain]),
    createZstdCompress(),
    createArchiveEncryptor(key, ref, { chunkSize: 1024 }),
    stored.tap,
    pending.stream,
  );
  await pending.commit();
  return { ref, file: storage.pathOf(ref), sha: stored.digest(), size: stored.bytes() };
}

test('the read-back authenticates every stored byte and compares them with what was written', async () => {
  const a = await write();
  const ok = await authenticateArchive(storage, a.ref, key, { expectedArchiveSha256: a.sha });
  assert.equal(ok.archiveSha256, a.sha);
  assert.equal(ok.sizeBytes, a.size);
  assert.ok(ok.chunks > 1);

  // Another archive of the same backup under the same key (an earlier attempt): authentic, but
  // not what was written.
  const good = await fs.readFile(a.file);
  await assert.rejects(
    authenticateArchive(storage, a.ref, key, {
      expectedArchiveSha256: createHash('sha256').update('x').digest('hex'),
    }),
    (err: ArchiveError) => err instanceof ArchiveError && err.code === 'wrong_archive',
  );
  // A flipped bit in the middle, an archive cut after its first chunk, a wrong key: refused.
  const flipped = Buffer.from(good);
  flipped[HEADER_BYTES + 2000]! ^= 1;
  await fs.writeFile(a.file, flipped);
  await assert.rejects(
    authenticateArchive(storage, a.ref, key),
    (err: ArchiveError) => err.code === 'tampered',
  );
  await fs.writeFile(a.file, good.subarray(0, HEADER_BYTES + 5 + 1024 + 16));
  await assert.rejects(
    authenticateArchive(storage, a.ref, key),
    (err: ArchiveError) => err.code === 'truncated',
  );
  await fs.writeFile(a.file, good);
  await assert.rejects(
    authenticateArchive(storage, a.ref, randomBytes(32)),
    (err: ArchiveError) => err.code === 'tampered',
  );
});

test('a dump that does not hash to the record never gets its last piece through; one that does passes whole', async () => {
  const pieces = [Buffer.from('first '), Buffer.from('middle '), Buffer.from('last')];
  const whole = Buffer.concat(pieces);
  const run = async (expected: string) => {
    const got: Buffer[] = [];
    const done = pipeline(
      Readable.from(pieces),
      heldUntilChecked(expected),
      new Writable({
        write(c, _e, cb) {
          got.push(c);
          cb();
        },
      }),
    );
    return { done, got };
  };
  const ok = await run(createHash('sha256').update(whole).digest('hex'));
  await ok.done;
  assert.deepEqual(Buffer.concat(ok.got), whole);

  const bad = await run(createHash('sha256').update('something else').digest('hex'));
  await assert.rejects(bad.done, (err: ArchiveError) => err.code === 'wrong_archive');
  assert.ok(!Buffer.concat(bad.got).toString().includes('last'), 'the last piece was held back');
});
