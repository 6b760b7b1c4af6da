/**
 * AES-256-GCM envelope for secrets at rest (tenant database passwords, …).
 *
 * Sealed format, safe for a text column:
 *
 *   v1.<keyId>.<base64url(iv, 12 bytes)>.<base64url(ciphertext)>.<base64url(tag, 16 bytes)>
 *
 * The caller's context string (e.g. `database:<id>`) is bound as additional authenticated
 * data together with the version and key id, so a sealed value copied to another row (another
 * context) or relabelled with another key id fails to open. IVs are random; with 96-bit
 * random IVs a key must not seal more than ~2^32 values, far beyond our use (rotate anyway).
 *
 * Errors never contain key material, plaintext or the sealed value.
 */
import { createCipheriv, createDecipheriv, createSecretKey, type KeyObject, randomBytes } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { writeFileAtomic0600 } from '../../shared/atomic-file.ts';

export const SECRET_BOX_VERSION = 'v1';
export const KEY_ID_PATTERN = /^[a-z0-9-]{1,32}$/;
export const KEY_BYTES = 32;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const B64URL = /^[A-Za-z0-9_-]*$/;

export class SecretBoxError extends Error {
  override name = 'SecretBoxError';
}

export type Keyring = { activeKeyId: string; keys: Map<string, Buffer> };

export type SecretBox = {
  seal(plaintext: string, context: string): string;
  open(sealed: string, context: string): string;
  /** True when the value was sealed with a key other than the active one. Throws if malformed. */
  needsRotation(sealed: string): boolean;
  activeKeyId: string;
};

function checkKeyring(keyring: Keyring): void {
  if (!keyring || !(keyring.keys instanceof Map)) throw new SecretBoxError('keyring: keys must be a Map');
  for (const [id, key] of keyring.keys) {
    if (typeof id !== 'string' || !KEY_ID_PATTERN.test(id)) {
      throw new SecretBoxError(`keyring: invalid key id (must match ${KEY_ID_PATTERN})`);
    }
    if (!Buffer.isBuffer(key) || key.length !== KEY_BYTES) {
      throw new SecretBoxError(`keyring: key "${id}" must be exactly ${KEY_BYTES} bytes`);
    }
  }
  if (typeof keyring.activeKeyId !== 'string' || !keyring.keys.has(keyring.activeKeyId)) {
    throw new SecretBoxError('keyring: active key id is not in the keyring');
  }
}

function aad(keyId: string, context: string): Buffer {
  return Buffer.from(`bulwark-secret-box:${SECRET_BOX_VERSION}:${keyId}:${context}`, 'utf8');
}

function checkContext(context: string): void {
  if (typeof context !== 'string' || context.length === 0) {
    throw new SecretBoxError('secret-box: context must be a non-empty string');
  }
}

function decodePart(part: string, what: string, expectedLength?: number): Buffer {
  if (!B64URL.test(part)) throw new SecretBoxError(`secret-box: malformed sealed value (${what})`);
  const buf = Buffer.from(part, 'base64url');
  // Round-trip check: refuses non-canonical encodings (stray bits in the last char).
  if (buf.toString('base64url') !== part)
    throw new SecretBoxError(`secret-box: malformed sealed value (${what})`);
  if (expectedLength !== undefined && buf.length !== expectedLength) {
    throw new SecretBoxError(`secret-box: malformed sealed value (${what} length)`);
  }
  return buf;
}

type Parsed = { keyId: string; iv: Buffer; ciphertext: Buffer; tag: Buffer };

function parseHeader(sealed: string): { keyId: string; parts: string[] } {
  if (typeof sealed !== 'string') throw new SecretBoxError('secret-box: sealed value must be a string');
  const parts = sealed.split('.');
  if (parts.length !== 5 || parts[0] !== SECRET_BOX_VERSION) {
    throw new SecretBoxError(
      'secret-box: malformed sealed value (expected v1.<keyId>.<iv>.<ciphertext>.<tag>)',
    );
  }
  const keyId = parts[1]!;
  if (!KEY_ID_PATTERN.test(keyId)) throw new SecretBoxError('secret-box: malformed sealed value (key id)');
  return { keyId, parts };
}

function parse(sealed: string): Parsed {
  const { keyId, parts } = parseHeader(sealed);
  return {
    keyId,
    iv: decodePart(parts[2]!, 'iv', IV_BYTES),
    ciphertext: decodePart(parts[3]!, 'ciphertext'),
    tag: decodePart(parts[4]!, 'tag', TAG_BYTES),
  };
}

export function createSecretBox(keyring: Keyring): SecretBox {
  checkKeyring(keyring);
  // Copy into KeyObjects: later mutation of the caller's Map/Buffers has no effect.
  const keys = new Map<string, KeyObject>();
  for (const [id, key] of keyring.keys) keys.set(id, createSecretKey(Buffer.from(key)));
  const activeKeyId = keyring.activeKeyId;
  const activeKey = keys.get(activeKeyId)!;

  return Object.freeze({
    activeKeyId,

    seal(plaintext: string, context: string): string {
      if (typeof plaintext !== 'string') throw new SecretBoxError('secret-box: plaintext must be a string');
      if (!plaintext.isWellFormed())
        throw new SecretBoxError('secret-box: plaintext is not well-formed Unicode');
      checkContext(context);
      const iv = randomBytes(IV_BYTES);
      const cipher = createCipheriv('aes-256-gcm', activeKey, iv, { authTagLength: TAG_BYTES });
      cipher.setAAD(aad(activeKeyId, context));
      const ciphertext = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
      const tag = cipher.getAuthTag();
      return [
        SECRET_BOX_VERSION,
        activeKeyId,
        iv.toString('base64url'),
        ciphertext.toString('base64url'),
        tag.toString('base64url'),
      ].join('.');
    },

    open(sealed: string, context: string): string {
      checkContext(context);
      const p = parse(sealed);
      const key = keys.get(p.keyId);
      if (!key) throw new SecretBoxError(`secret-box: unknown key id "${p.keyId}"`);
      const decipher = createDecipheriv('aes-256-gcm', key, p.iv, { authTagLength: TAG_BYTES });
      decipher.setAAD(aad(p.keyId, context));
      decipher.setAuthTag(p.tag);
      let plain: Buffer;
      try {
        plain = Buffer.concat([decipher.update(p.ciphertext), decipher.final()]);
      } catch {
        throw new SecretBoxError(
          'secret-box: authentication failed (wrong key or context, or tampered value)',
        );
      }
      return plain.toString('utf8');
    },

    needsRotation(sealed: string): boolean {
      return parseHeader(sealed).keyId !== activeKeyId;
    },
  });
}

// ---------------------------------------------------------------------------------------------
// Keyring file: {"active": "k1", "keys": {"k1": "<base64 of 32 bytes>"}}, mode 0600.

type KeyringFileJson = { active: string; keys: Record<string, string> };

const B64 = /^[A-Za-z0-9+/]*={0,2}$/;

function decodeKey(id: string, value: unknown, path: string): Buffer {
  if (typeof value === 'string' && B64.test(value)) {
    const buf = Buffer.from(value, 'base64');
    if (buf.length === KEY_BYTES && buf.toString('base64') === value) return buf;
  }
  throw new SecretBoxError(
    `keyring file ${path}: key "${id}" must be the base64 of exactly ${KEY_BYTES} bytes`,
  );
}

/**
 * Reads a file after checking, on the open descriptor (no check-then-open race), that it is a
 * regular file with no group/other permission bits. Symlinks are followed (Kubernetes secret
 * mounts are symlinks); the check applies to the target.
 */
export function readPrivateFile(path: string, what: string): Buffer {
  const fd = openSync(path, constants.O_RDONLY);
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error(`${what} ${path} is not a regular file`);
    if ((st.mode & 0o077) !== 0) {
      const mode = (st.mode & 0o777).toString(8).padStart(4, '0');
      throw new Error(`${what} ${path} is accessible by group/others (mode ${mode}); run: chmod 600 ${path}`);
    }
    return readFileSync(fd);
  } finally {
    closeSync(fd);
  }
}

function parseKeyringJson(raw: Buffer, path: string): Keyring {
  let json: unknown;
  try {
    json = JSON.parse(raw.toString('utf8'));
  } catch {
    // The parser message can quote file content (= key material): never pass it on.
    throw new SecretBoxError(`keyring file ${path} is not valid JSON`);
  }
  const obj = json as Partial<KeyringFileJson> | null;
  if (
    !obj ||
    typeof obj !== 'object' ||
    typeof obj.active !== 'string' ||
    !obj.keys ||
    typeof obj.keys !== 'object'
  ) {
    throw new SecretBoxError(
      `keyring file ${path} must look like {"active": "<id>", "keys": {"<id>": "<base64>"}}`,
    );
  }
  const keys = new Map<string, Buffer>();
  for (const [id, value] of Object.entries(obj.keys)) {
    if (!KEY_ID_PATTERN.test(id)) {
      throw new SecretBoxError(`keyring file ${path}: invalid key id (must match ${KEY_ID_PATTERN})`);
    }
    keys.set(id, decodeKey(id, value, path));
  }
  if (!keys.has(obj.active)) throw new SecretBoxError(`keyring file ${path}: active key is not in "keys"`);
  return { activeKeyId: obj.active, keys };
}

function serializeKeyring(keyring: Keyring): string {
  const keys: Record<string, string> = {};
  for (const [id, key] of keyring.keys) keys[id] = key.toString('base64');
  return JSON.stringify({ active: keyring.activeKeyId, keys }, null, 2) + '\n';
}

export function loadKeyringFile(path: string): Keyring {
  const keyring = parseKeyringJson(readPrivateFile(path, 'keyring file'), path);
  checkKeyring(keyring);
  return keyring;
}

function nextKeyId(existing: Iterable<string>): string {
  const ids = new Set(existing);
  let n = 1;
  for (const id of ids) {
    const m = /^k(\d{1,9})$/.exec(id);
    if (m) n = Math.max(n, Number(m[1]) + 1);
  }
  while (ids.has(`k${n}`)) n++;
  return `k${n}`;
}

/** Creates a new keyring file (refuses to overwrite) with one fresh random key. */
export function createKeyringFile(path: string): Keyring {
  const keyring: Keyring = { activeKeyId: 'k1', keys: new Map([['k1', randomBytes(KEY_BYTES)]]) };
  writeFileSync(path, serializeKeyring(keyring), { mode: 0o600, flag: 'wx' });
  return keyring;
}

/**
 * Rotation: adds a fresh key, makes it active, keeps the old keys so existing values still
 * open. Re-seal values (needsRotation) and only then drop old keys by hand.
 */
export function addKeyToKeyringFile(path: string): { keyId: string; keyring: Keyring } {
  const current = loadKeyringFile(path);
  const keyId = nextKeyId(current.keys.keys());
  const keys = new Map(current.keys);
  keys.set(keyId, randomBytes(KEY_BYTES));
  const keyring: Keyring = { activeKeyId: keyId, keys };
  writeFileAtomic0600(path, serializeKeyring(keyring));
  return { keyId, keyring };
}
