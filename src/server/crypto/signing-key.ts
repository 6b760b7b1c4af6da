/**
 * Ed25519 server signing key (audit checkpoints, later execution tokens).
 *
 * Files in the server data dir:
 *   signing-key.pem             active private key, PKCS#8 PEM, mode 0600 (refused otherwise)
 *   signing-keys-retired.json   {"<keyId>": {"publicKeyPem": "...", "retiredAt": "<ISO>"}}, 0600
 *
 * keyId = first 16 hex chars of SHA-256 of the raw 32-byte public key. Rotation replaces the
 * private key (the old one is gone, so it can no longer sign) and keeps its public key in the
 * retired file so that signatures made before the rotation still verify.
 */
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign,
  verify,
} from 'node:crypto';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic0600 } from '../../shared/atomic-file.ts';
import { readPrivateFile } from './secret-box.ts';

export const SIGNING_KEY_FILE = 'signing-key.pem';
export const RETIRED_KEYS_FILE = 'signing-keys-retired.json';
const KEY_ID_RE = /^[0-9a-f]{16}$/;

export type SigningKey = {
  readonly keyId: string;
  readonly publicKeyPem: string;
  sign(data: Buffer): Buffer;
};

export type RetiredKeys = Record<string, { publicKeyPem: string; retiredAt: string }>;

function rawPublicKey(key: KeyObject): Buffer {
  const jwk = key.export({ format: 'jwk' });
  if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.x !== 'string') {
    throw new Error('signing key: not an Ed25519 key');
  }
  return Buffer.from(jwk.x, 'base64url');
}

/** keyId of a public (or private) Ed25519 key. */
export function keyIdOf(key: KeyObject): string {
  return createHash('sha256').update(rawPublicKey(key)).digest('hex').slice(0, 16);
}

export function keyIdOfPem(publicKeyPem: string): string {
  return keyIdOf(createPublicKey(publicKeyPem));
}

function toSigningKey(privateKey: KeyObject): SigningKey {
  if (privateKey.type !== 'private' || privateKey.asymmetricKeyType !== 'ed25519') {
    throw new Error('signing key: file does not hold an Ed25519 private key');
  }
  const publicKey = createPublicKey(privateKey);
  const publicKeyPem = publicKey.export({ format: 'pem', type: 'spki' }).toString();
  const keyId = keyIdOf(publicKey);
  // The private KeyObject lives only in this closure; nothing on the returned object exposes it.
  return Object.freeze({
    keyId,
    publicKeyPem,
    sign(data: Buffer): Buffer {
      return sign(null, data, privateKey);
    },
  });
}

function readSigningKeyFile(path: string): SigningKey {
  const pem = readPrivateFile(path, 'signing key file');
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: pem, format: 'pem' });
  } catch {
    throw new Error(`signing key file ${path} is not a valid PEM private key`);
  }
  return toSigningKey(privateKey);
}

function newPrivateKeyPem(): string {
  const { privateKey } = generateKeyPairSync('ed25519');
  return privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
}

function ensureDir(dir: string): void {
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o700 });
}

/** Loads the active signing key, creating one (0600, never overwriting) if there is none. */
export function loadOrCreateSigningKey(dir: string): SigningKey {
  const path = join(dir, SIGNING_KEY_FILE);
  if (!existsSync(path)) {
    ensureDir(dir);
    try {
      writeFileSync(path, newPrivateKeyPem(), { mode: 0o600, flag: 'wx' });
    } catch (err) {
      // Another process created it first: use theirs.
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
  }
  return readSigningKeyFile(path);
}

function readRetired(dir: string): RetiredKeys {
  const path = join(dir, RETIRED_KEYS_FILE);
  if (!existsSync(path)) return {};
  // Public keys are not secret, but whoever can write this file can add trusted keys: same rule.
  const raw = readPrivateFile(path, 'retired signing keys file');
  let json: unknown;
  try {
    json = JSON.parse(raw.toString('utf8'));
  } catch {
    throw new Error(`retired signing keys file ${path} is not valid JSON`);
  }
  if (!json || typeof json !== 'object' || Array.isArray(json)) {
    throw new Error(`retired signing keys file ${path} must be a JSON object`);
  }
  const out: RetiredKeys = {};
  for (const [keyId, entry] of Object.entries(json as Record<string, unknown>)) {
    const e = entry as { publicKeyPem?: unknown; retiredAt?: unknown } | null;
    if (
      !KEY_ID_RE.test(keyId) ||
      !e ||
      typeof e.publicKeyPem !== 'string' ||
      typeof e.retiredAt !== 'string'
    ) {
      throw new Error(`retired signing keys file ${path}: malformed entry`);
    }
    let actual: string;
    try {
      actual = keyIdOfPem(e.publicKeyPem);
    } catch {
      throw new Error(`retired signing keys file ${path}: entry ${keyId} is not an Ed25519 public key`);
    }
    if (actual !== keyId)
      throw new Error(`retired signing keys file ${path}: entry ${keyId} does not match its key`);
    out[keyId] = { publicKeyPem: e.publicKeyPem, retiredAt: e.retiredAt };
  }
  return out;
}

/**
 * Generates a new active key. The previous public key is recorded in the retired file first,
 * then the new private key atomically replaces the old one; a crash in between leaves the old
 * key active and also listed as retired, which is harmless.
 */
export function rotateSigningKey(dir: string, now: Date = new Date()): SigningKey {
  const current = loadOrCreateSigningKey(dir);
  const retired = readRetired(dir);
  retired[current.keyId] = { publicKeyPem: current.publicKeyPem, retiredAt: now.toISOString() };
  writeFileAtomic0600(join(dir, RETIRED_KEYS_FILE), JSON.stringify(retired, null, 2) + '\n');
  writeFileAtomic0600(join(dir, SIGNING_KEY_FILE), newPrivateKeyPem());
  return readSigningKeyFile(join(dir, SIGNING_KEY_FILE));
}

/** Ed25519 verification; false (never an exception) on a bad key, signature or type. */
export function verifySignature(publicKeyPem: string, data: Buffer, sig: Buffer): boolean {
  try {
    const key = createPublicKey(publicKeyPem);
    if (key.asymmetricKeyType !== 'ed25519') return false;
    if (!Buffer.isBuffer(sig) || sig.length !== 64) return false;
    return verify(null, data, key, sig);
  } catch {
    return false;
  }
}

/** keyId → public PEM for the active key (if any) and every retired key. */
export function loadPublicKeys(dir: string): Map<string, string> {
  const keys = new Map<string, string>();
  for (const [keyId, e] of Object.entries(readRetired(dir))) keys.set(keyId, e.publicKeyPem);
  const path = join(dir, SIGNING_KEY_FILE);
  if (existsSync(path)) {
    const active = readSigningKeyFile(path);
    keys.set(active.keyId, active.publicKeyPem);
  }
  return keys;
}
