import assert from 'node:assert/strict';
import { createHash, createPublicKey, generateKeyPairSync } from 'node:crypto';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import {
  keyIdOfPem,
  loadOrCreateSigningKey,
  loadPublicKeys,
  RETIRED_KEYS_FILE,
  rotateSigningKey,
  SIGNING_KEY_FILE,
  verifySignature,
} from './signing-key.ts';

const root = mkdtempSync(join(tmpdir(), 'bulwark-signing-key-'));
after(() => rmSync(root, { recursive: true, force: true }));
const freshDir = (): string => mkdtempSync(join(root, 'd-'));

describe('signing key', () => {
  it('creates a 0600 PKCS#8 PEM key on first use and loads the same key afterwards', () => {
    const dir = freshDir();
    const k = loadOrCreateSigningKey(dir);
    const path = join(dir, SIGNING_KEY_FILE);
    assert.equal(statSync(path).mode & 0o777, 0o600);
    assert.match(readFileSync(path, 'utf8'), /^-----BEGIN PRIVATE KEY-----\n/);
    assert.match(k.keyId, /^[0-9a-f]{16}$/);
    assert.match(k.publicKeyPem, /^-----BEGIN PUBLIC KEY-----\n/);
    const again = loadOrCreateSigningKey(dir);
    assert.equal(again.keyId, k.keyId);
    assert.equal(again.publicKeyPem, k.publicKeyPem);
  });

  it('creates the data dir (0700) when missing', () => {
    const dir = join(freshDir(), 'nested', 'data');
    loadOrCreateSigningKey(dir);
    assert.equal(statSync(dir).mode & 0o777, 0o700);
  });

  it('keyId is the first 16 hex of sha256(raw public key)', () => {
    const k = loadOrCreateSigningKey(freshDir());
    const spki = createPublicKey(k.publicKeyPem).export({ format: 'der', type: 'spki' });
    const raw = spki.subarray(spki.length - 32); // Ed25519 SPKI = 12-byte header + 32-byte key
    assert.equal(k.keyId, createHash('sha256').update(raw).digest('hex').slice(0, 16));
    assert.equal(keyIdOfPem(k.publicKeyPem), k.keyId);
  });

  it('signs and verifies; tampered data or signature fails', () => {
    const k = loadOrCreateSigningKey(freshDir());
    const data = Buffer.from('bulwark-audit-checkpoint:v1:1:00:2024');
    const sig = k.sign(data);
    assert.equal(sig.length, 64);
    assert.ok(verifySignature(k.publicKeyPem, data, sig));
    assert.equal(
      verifySignature(k.publicKeyPem, Buffer.from('bulwark-audit-checkpoint:v1:2:00:2024'), sig),
      false,
    );
    const bad = Buffer.from(sig);
    bad[10] = bad[10]! ^ 1;
    assert.equal(verifySignature(k.publicKeyPem, data, bad), false);
    assert.equal(verifySignature(k.publicKeyPem, data, sig.subarray(0, 63)), false);
    assert.equal(verifySignature('not a pem', data, sig), false);
    const other = loadOrCreateSigningKey(freshDir());
    assert.equal(verifySignature(other.publicKeyPem, data, sig), false);
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).publicKey.export({
      format: 'pem',
      type: 'spki',
    });
    assert.equal(verifySignature(rsa.toString(), data, sig), false);
  });

  it('never exposes the private key on the object', () => {
    const k = loadOrCreateSigningKey(freshDir());
    assert.deepEqual(Object.keys(k).sort(), ['keyId', 'publicKeyPem', 'sign']);
    const dump = JSON.stringify(k) + String(Object.values(k));
    assert.ok(!dump.includes('PRIVATE'));
    assert.ok(Object.isFrozen(k));
  });

  it('refuses a key file with group/other permission bits', () => {
    const dir = freshDir();
    loadOrCreateSigningKey(dir);
    const path = join(dir, SIGNING_KEY_FILE);
    for (const mode of [0o644, 0o640, 0o604]) {
      chmodSync(path, mode);
      assert.throws(() => loadOrCreateSigningKey(dir), /accessible by group\/others.*chmod 600/);
      assert.throws(() => rotateSigningKey(dir), /accessible by group\/others/);
    }
    chmodSync(path, 0o600);
    loadOrCreateSigningKey(dir);
  });

  it('refuses a file that is not an Ed25519 private key, without echoing it', () => {
    const dir = freshDir();
    writeFileSync(join(dir, SIGNING_KEY_FILE), 'garbage SECRET', { mode: 0o600 });
    assert.throws(
      () => loadOrCreateSigningKey(dir),
      (e: Error) => /not a valid PEM/.test(e.message) && !e.message.includes('SECRET'),
    );
    const rsa = generateKeyPairSync('rsa', { modulusLength: 1024 }).privateKey.export({
      format: 'pem',
      type: 'pkcs8',
    });
    writeFileSync(join(dir, SIGNING_KEY_FILE), rsa, { mode: 0o600 });
    assert.throws(() => loadOrCreateSigningKey(dir), /Ed25519/);
  });
});

describe('rotation', () => {
  it('rotates to a new key and keeps old public keys so old signatures verify', () => {
    const dir = freshDir();
    const k1 = loadOrCreateSigningKey(dir);
    const data = Buffer.from('checkpoint 1');
    const sig1 = k1.sign(data);

    const k2 = rotateSigningKey(dir, new Date('2025-01-02T03:04:05.000Z'));
    assert.notEqual(k2.keyId, k1.keyId);
    assert.equal(loadOrCreateSigningKey(dir).keyId, k2.keyId);
    assert.equal(statSync(join(dir, SIGNING_KEY_FILE)).mode & 0o777, 0o600);
    assert.equal(statSync(join(dir, RETIRED_KEYS_FILE)).mode & 0o777, 0o600);
    const retired = JSON.parse(readFileSync(join(dir, RETIRED_KEYS_FILE), 'utf8'));
    assert.deepEqual(retired, {
      [k1.keyId]: { publicKeyPem: k1.publicKeyPem, retiredAt: '2025-01-02T03:04:05.000Z' },
    });

    const k3 = rotateSigningKey(dir);
    const keys = loadPublicKeys(dir);
    assert.deepEqual([...keys.keys()].sort(), [k1.keyId, k2.keyId, k3.keyId].sort());
    assert.ok(verifySignature(keys.get(k1.keyId)!, data, sig1));
    const sig3 = k3.sign(data);
    assert.ok(verifySignature(keys.get(k3.keyId)!, data, sig3));
    assert.equal(verifySignature(keys.get(k2.keyId)!, data, sig3), false);
    assert.deepEqual(readdirSync(dir).sort(), [RETIRED_KEYS_FILE, SIGNING_KEY_FILE].sort()); // no temp files left
  });

  it('loadPublicKeys refuses a retired file whose entries do not match their key id', () => {
    const dir = freshDir();
    const k1 = loadOrCreateSigningKey(dir);
    rotateSigningKey(dir);
    const path = join(dir, RETIRED_KEYS_FILE);
    const retired = JSON.parse(readFileSync(path, 'utf8'));
    const other = loadOrCreateSigningKey(freshDir());
    retired[k1.keyId].publicKeyPem = other.publicKeyPem;
    writeFileSync(path, JSON.stringify(retired), { mode: 0o600 });
    assert.throws(() => loadPublicKeys(dir), /does not match/);
    chmodSync(path, 0o666);
    assert.throws(() => loadPublicKeys(dir), /group\/others/);
  });

  it('loadPublicKeys on an empty dir is empty', () => {
    assert.equal(loadPublicKeys(freshDir()).size, 0);
  });
});
