import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  addKeyToKeyringFile,
  createKeyringFile,
  createSecretBox,
  type Keyring,
  loadKeyringFile,
  SecretBoxError,
} from './secret-box.ts';

const dir = mkdtempSync(join(tmpdir(), 'bulwark-secret-box-'));
after(() => rmSync(dir, { recursive: true, force: true }));
let fileCounter = 0;
const tmpPath = (): string => join(dir, `keyring-${++fileCounter}.json`);

function keyring(active = 'k1', ids: string[] = ['k1']): Keyring {
  return { activeKeyId: active, keys: new Map(ids.map((id) => [id, randomBytes(32)])) };
}

/** Replaces the base64url segment `index` of a sealed value with a version that has one bit flipped. */
function flipBit(sealed: string, index: number, bit = 0): string {
  const parts = sealed.split('.');
  const buf = Buffer.from(parts[index]!, 'base64url');
  buf[0] = buf[0]! ^ (1 << bit);
  parts[index] = buf.toString('base64url');
  return parts.join('.');
}

const assertAuthFailure = (fn: () => unknown): void => {
  assert.throws(fn, { name: 'SecretBoxError', message: /authentication failed/ });
};

describe('secret box seal/open', () => {
  const box = createSecretBox(keyring());

  it('round-trips, including empty and non-ASCII plaintexts', () => {
    for (const p of ['', 'hunter2', 'pässwörd 🔑', 'quote\'"\\', 'x'.repeat(10_000)]) {
      const sealed = box.seal(p, 'database:42');
      assert.equal(box.open(sealed, 'database:42'), p);
    }
  });

  it('has the documented format and a fresh IV each time', () => {
    const a = box.seal('secret', 'database:1');
    const b = box.seal('secret', 'database:1');
    assert.notEqual(a, b);
    const m = /^v1\.k1\.([A-Za-z0-9_-]{16})\.([A-Za-z0-9_-]*)\.([A-Za-z0-9_-]{22})$/.exec(a);
    assert.ok(m, a);
    assert.equal(Buffer.from(m[1]!, 'base64url').length, 12);
    assert.equal(Buffer.from(m[2]!, 'base64url').length, 6);
    assert.equal(Buffer.from(m[3]!, 'base64url').length, 16);
    assert.ok(!a.includes('secret'));
  });

  it('fails to open with the wrong AAD context (value moved to another row)', () => {
    const sealed = box.seal('hunter2', 'database:1');
    assertAuthFailure(() => box.open(sealed, 'database:2'));
    assertAuthFailure(() => box.open(sealed, 'database:1 '));
    assert.throws(() => box.open(sealed, ''), /context/);
  });

  it('fails on a tampered tag, ciphertext or IV', () => {
    const sealed = box.seal('hunter2', 'database:1');
    for (let bit = 0; bit < 8; bit++) {
      assertAuthFailure(() => box.open(flipBit(sealed, 4, bit), 'database:1'));
      assertAuthFailure(() => box.open(flipBit(sealed, 3, bit), 'database:1'));
      assertAuthFailure(() => box.open(flipBit(sealed, 2, bit), 'database:1'));
    }
  });

  it('fails with another key, or when relabelled with another key id', () => {
    const other = createSecretBox(keyring());
    const sealed = box.seal('hunter2', 'database:1');
    assertAuthFailure(() => other.open(sealed, 'database:1'));
    const two = keyring('k2', ['k1', 'k2']);
    const box2 = createSecretBox(two);
    const s2 = box2.seal('hunter2', 'c');
    assertAuthFailure(() => box2.open(s2.replace('v1.k2.', 'v1.k1.'), 'c'));
  });

  it('refuses malformed sealed values with a clear error', () => {
    const sealed = box.seal('hunter2', 'c');
    const parts = sealed.split('.');
    const bad = [
      '',
      'garbage',
      sealed + '.x',
      sealed.replace(/^v1/, 'v2'),
      sealed.replace('.k1.', '.K1.'),
      sealed.replace('.k1.', '.k9.'), // unknown key
      [...parts.slice(0, 2), parts[2]!.slice(0, -1), ...parts.slice(3)].join('.'), // short iv
      [...parts.slice(0, 4), parts[4]!.slice(0, -2)].join('.'), // short tag
      [...parts.slice(0, 3), parts[3] + '+', parts[4]].join('.'), // not base64url
      [...parts.slice(0, 3), parts[3] + '=', parts[4]].join('.'),
    ];
    for (const b of bad) assert.throws(() => box.open(b, 'c'), SecretBoxError, b);
    assert.throws(() => box.open(sealed.replace('.k1.', '.k9.'), 'c'), /unknown key id "k9"/);
  });

  it('errors never contain key material or plaintext', () => {
    const ring = keyring();
    const key = ring.keys.get('k1')!;
    const b = createSecretBox(ring);
    const sealed = b.seal('my-very-secret-password', 'c');
    const messages: string[] = [];
    const capture = (fn: () => unknown): void => {
      try {
        fn();
      } catch (e) {
        messages.push(String((e as Error).message) + String((e as Error).stack));
      }
    };
    capture(() => b.open(sealed, 'wrong'));
    capture(() => b.open(flipBit(sealed, 3), 'c'));
    capture(() => b.open(sealed.slice(0, -3), 'c'));
    capture(() => b.seal('\ud800', 'c'));
    assert.equal(messages.length, 4);
    for (const m of messages) {
      assert.ok(!m.includes('my-very-secret-password'));
      assert.ok(!m.includes(key.toString('base64')) && !m.includes(key.toString('hex')));
      assert.ok(!m.includes(sealed.split('.')[3]!));
    }
  });

  it('needsRotation tells which values were sealed with a non-active key', () => {
    const ring = keyring('k1', ['k1']);
    const old = createSecretBox(ring);
    const s1 = old.seal('p', 'c');
    assert.equal(old.needsRotation(s1), false);
    ring.keys.set('k2', randomBytes(32));
    const rotated = createSecretBox({ activeKeyId: 'k2', keys: ring.keys });
    assert.equal(rotated.activeKeyId, 'k2');
    assert.equal(rotated.needsRotation(s1), true);
    assert.equal(rotated.open(s1, 'c'), 'p');
    const s2 = rotated.seal(rotated.open(s1, 'c'), 'c');
    assert.equal(rotated.needsRotation(s2), false);
    assert.throws(() => rotated.needsRotation('nope'), SecretBoxError);
  });

  it('is not affected by later mutation of the keyring passed in', () => {
    const ring = keyring();
    const b = createSecretBox(ring);
    const sealed = b.seal('p', 'c');
    ring.keys.get('k1')!.fill(0);
    ring.keys.clear();
    assert.equal(b.open(sealed, 'c'), 'p');
  });

  it('validates the keyring', () => {
    assert.throws(
      () => createSecretBox({ activeKeyId: 'k1', keys: new Map([['k1', randomBytes(16)]]) }),
      /32 bytes/,
    );
    assert.throws(
      () => createSecretBox({ activeKeyId: 'k1', keys: new Map([['K1', randomBytes(32)]]) }),
      /key id/,
    );
    assert.throws(() => createSecretBox({ activeKeyId: 'x'.repeat(33), keys: new Map() }), /active/);
    assert.throws(
      () => createSecretBox({ activeKeyId: 'k2', keys: new Map([['k1', randomBytes(32)]]) }),
      /active/,
    );
    assert.throws(
      () => createSecretBox({ activeKeyId: 'a.b', keys: new Map([['a.b', randomBytes(32)]]) }),
      /key id/,
    );
  });
});

describe('keyring file', () => {
  it('createKeyringFile writes a 0600 file that loads back and refuses to overwrite', () => {
    const path = tmpPath();
    const created = createKeyringFile(path);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const loaded = loadKeyringFile(path);
    assert.equal(loaded.activeKeyId, 'k1');
    assert.deepEqual(loaded.keys.get('k1'), created.keys.get('k1'));
    const json = JSON.parse(readFileSync(path, 'utf8'));
    assert.equal(Buffer.from(json.keys.k1, 'base64').length, 32);
    assert.throws(() => createKeyringFile(path), { code: 'EEXIST' });
    const box = createSecretBox(loaded);
    assert.equal(createSecretBox(loadKeyringFile(path)).open(box.seal('x', 'c'), 'c'), 'x');
  });

  it('refuses a key file readable by group or others', () => {
    const path = tmpPath();
    createKeyringFile(path);
    for (const mode of [0o644, 0o640, 0o604, 0o660, 0o606, 0o610]) {
      chmodSync(path, mode);
      assert.throws(
        () => loadKeyringFile(path),
        (e: Error) =>
          /accessible by group\/others/.test(e.message) &&
          e.message.includes(`mode 0${mode.toString(8)}`) &&
          e.message.includes('chmod 600'),
      );
    }
    chmodSync(path, 0o400);
    assert.equal(loadKeyringFile(path).activeKeyId, 'k1');
  });

  it('refuses malformed content without echoing it', () => {
    const cases: [string, RegExp][] = [
      ['not json SECRETSECRET', /not valid JSON/],
      ['[]', /must look like/],
      ['{"active":"k1","keys":{"k1":"' + randomBytes(16).toString('base64') + '"}}', /exactly 32 bytes/],
      ['{"active":"k1","keys":{"k1":"SECRETSECRET!!"}}', /exactly 32 bytes/],
      ['{"active":"k2","keys":{"k1":"' + randomBytes(32).toString('base64') + '"}}', /active key/],
      ['{"active":"K1","keys":{"K1":"' + randomBytes(32).toString('base64') + '"}}', /invalid key id/],
    ];
    for (const [content, re] of cases) {
      const path = tmpPath();
      writeFileSync(path, content, { mode: 0o600 });
      assert.throws(
        () => loadKeyringFile(path),
        (e: Error) => re.test(e.message) && !e.message.includes('SECRET'),
      );
    }
  });

  it('addKeyToKeyringFile rotates: new active key, old keys kept, 0600, no temp files left', () => {
    const sub = mkdtempSync(join(dir, 'rot-'));
    const path = join(sub, 'keyring.json');
    const first = createKeyringFile(path);
    const oldSealed = createSecretBox(first).seal('tenant-pw', 'database:7');

    const { keyId, keyring: second } = addKeyToKeyringFile(path);
    assert.equal(keyId, 'k2');
    assert.equal(second.activeKeyId, 'k2');
    assert.equal(statSync(path).mode & 0o777, 0o600);
    const reloaded = loadKeyringFile(path);
    assert.deepEqual([...reloaded.keys.keys()].sort(), ['k1', 'k2']);
    assert.deepEqual(reloaded.keys.get('k1'), first.keys.get('k1'));
    assert.notDeepEqual(reloaded.keys.get('k2'), first.keys.get('k1'));

    const box = createSecretBox(reloaded);
    assert.equal(box.activeKeyId, 'k2');
    assert.equal(box.needsRotation(oldSealed), true);
    assert.equal(box.open(oldSealed, 'database:7'), 'tenant-pw');
    assert.equal(addKeyToKeyringFile(path).keyId, 'k3');
    assert.deepEqual(readdirSync(sub), ['keyring.json']);
  });

  it('addKeyToKeyringFile refuses an insecure file', () => {
    const path = tmpPath();
    createKeyringFile(path);
    chmodSync(path, 0o644);
    assert.throws(() => addKeyToKeyringFile(path), /group\/others/);
  });
});
