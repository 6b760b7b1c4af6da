/**
 * The server's execution-token signing keys (issue 14; ADR 0019). A key of its own, apart from
 * the audit checkpoint key (signing-key.ts): a checkpoint signature can never pass for a token.
 *
 * Files in the server data dir, both 0600 (refused otherwise), written atomically:
 *   execution-key.pem            the active Ed25519 private key (PKCS#8 PEM)
 *   execution-keys-retired.json  {"<kid>": {"x": "<b64url public key>", "retiredAt": <epoch s>}}
 *
 * kid = the RFC 7638 JWK thumbprint of the public key. `rotate()` replaces the private key (the
 * old one can sign no more) and keeps the old public key published by `jwks()` until every
 * token it signed has expired: retiredAt + token lifetime + the agents' allowed skew.
 *
 * Endorsements (ADR 0021): before the old private key is replaced it signs the new key's kid
 * (`bulwark-execution-key-endorsement:<kid>`), kept in execution-keys-endorsements.json (0600):
 * an agent that pinned the old key accepts the new one only through that chain, never because
 * the server says so. The chain is kept whole (one entry per rotation), so an agent that missed
 * several rotations still reaches the active key.
 */
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  sign,
} from 'node:crypto';
import {
  closeSync,
  existsSync,
  fsyncSync,
  linkSync,
  mkdirSync,
  openSync,
  unlinkSync,
  writeSync,
} from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { writeFileAtomic0600 } from '../../shared/atomic-file.ts';
import {
  EXECUTION_TOKEN_TTL_SECONDS,
  type ExecutionClaims,
  type ExecutionSigner,
  jwkThumbprint,
  signExecutionToken,
} from '../../shared/execution-token.ts';
import { readPrivateFile } from './secret-box.ts';

export const EXECUTION_KEY_FILE = 'execution-key.pem';
export const EXECUTION_RETIRED_FILE = 'execution-keys-retired.json';
export const EXECUTION_ENDORSEMENTS_FILE = 'execution-keys-endorsements.json';

/** What an endorsement signs (the agent checks the same text: src/agent/execution/execution-keys.ts). */
const endorsementText = (kid: string) => `bulwark-execution-key-endorsement:${kid}`;

/** `by` (a kid) vouches for `kid` (the thumbprint of `x`): Ed25519 over endorsementText(kid). */
export type ExecutionKeyEndorsement = { kid: string; x: string; by: string; sig: string };

export type ExecutionJwk = { kty: 'OKP'; crv: 'Ed25519'; x: string; kid: string; use: 'sig'; alg: 'EdDSA' };

export type ExecutionKeyRingOptions = {
  dir: string;
  /** Epoch milliseconds. */
  now?: () => number;
  /** The agents' allowed clock skew: how long past a token's exp its key stays published. */
  skewSeconds?: number;
};

type Retired = Record<string, { x: string; retiredAt: number }>;

export function createExecutionKeyRing(opts: ExecutionKeyRingOptions) {
  const now = opts.now ?? Date.now;
  const keep = EXECUTION_TOKEN_TTL_SECONDS + (opts.skewSeconds ?? 30);
  const keyPath = join(opts.dir, EXECUTION_KEY_FILE);
  const retiredPath = join(opts.dir, EXECUTION_RETIRED_FILE);
  const endorsementsPath = join(opts.dir, EXECUTION_ENDORSEMENTS_FILE);
  const readEndorsements = (): ExecutionKeyEndorsement[] => {
    if (!existsSync(endorsementsPath)) return [];
    const json: unknown = JSON.parse(
      readPrivateFile(endorsementsPath, 'execution key endorsements file').toString('utf8'),
    );
    if (!Array.isArray(json)) throw new Error(`${endorsementsPath}: not an array`);
    return json.map((e: Partial<ExecutionKeyEndorsement>) => {
      if (
        typeof e?.kid !== 'string' ||
        typeof e.x !== 'string' ||
        typeof e.by !== 'string' ||
        typeof e.sig !== 'string' ||
        jwkThumbprint(e.x) !== e.kid
      )
        throw new Error(`${endorsementsPath}: a malformed endorsement`);
      return { kid: e.kid, x: e.x, by: e.by, sig: e.sig };
    });
  };
  if (!existsSync(opts.dir)) mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
  if (!existsSync(keyPath)) createOnce(keyPath, newPrivateKeyPem());
  let signer = readSigner(keyPath);

  const nowS = () => Math.floor(now() / 1000);
  const readRetired = (): Retired => {
    if (!existsSync(retiredPath)) return {};
    let json: unknown;
    try {
      json = JSON.parse(readPrivateFile(retiredPath, 'retired execution keys file').toString('utf8'));
    } catch (err) {
      if (err instanceof SyntaxError) throw new Error(`${retiredPath} is not valid JSON`);
      throw err;
    }
    if (!json || typeof json !== 'object' || Array.isArray(json))
      throw new Error(`${retiredPath}: not an object`);
    const out: Retired = {};
    for (const [kid, e] of Object.entries(json as Record<string, { x?: unknown; retiredAt?: unknown }>)) {
      if (typeof e?.x !== 'string' || !Number.isSafeInteger(e.retiredAt) || jwkThumbprint(e.x) !== kid)
        throw new Error(`${retiredPath}: entry ${kid} is malformed or does not match its key`);
      out[kid] = { x: e.x, retiredAt: e.retiredAt as number };
    }
    return out;
  };

  return {
    get kid(): string {
      return signer.kid;
    },
    /** Signs with the active key. */
    sign(claims: ExecutionClaims): string {
      return signExecutionToken(signer, claims);
    },
    /** A new active key; the old public key stays in jwks() until its tokens expired. */
    rotate(): string {
      const retired = readRetired();
      const t = nowS();
      for (const [kid, e] of Object.entries(retired)) if (e.retiredAt + keep < t) delete retired[kid];
      retired[signer.kid] = { x: signer.x, retiredAt: t };
      const nextPem = newPrivateKeyPem();
      const next = signerOf(createPrivateKey({ key: nextPem, format: 'pem' }), keyPath);
      // The old key vouches for the new one before it can sign no more (kept: the whole chain).
      const endorsements = readEndorsements().filter((e) => e.kid !== next.kid);
      endorsements.push({
        kid: next.kid,
        x: next.x,
        by: signer.kid,
        sig: sign(null, Buffer.from(endorsementText(next.kid), 'utf8'), signer.privateKey).toString(
          'base64url',
        ),
      });
      // Old public key and the endorsement recorded first: a crash between the writes leaves the
      // old key both active and retired, and an endorsement of a key never used (harmless).
      writeFileAtomic0600(retiredPath, `${JSON.stringify(retired, null, 2)}\n`);
      writeFileAtomic0600(endorsementsPath, `${JSON.stringify(endorsements, null, 2)}\n`);
      writeFileAtomic0600(keyPath, nextPem);
      signer = readSigner(keyPath);
      return signer.kid;
    },
    /** Every rotation's endorsement of its new key by the old one, oldest first. */
    endorsements(): ExecutionKeyEndorsement[] {
      return readEndorsements();
    },
    /** The active public key and every retired one that may still have unexpired tokens. */
    jwks(): { keys: ExecutionJwk[] } {
      const t = nowS();
      const jwk = (kid: string, x: string): ExecutionJwk => ({
        kty: 'OKP',
        crv: 'Ed25519',
        x,
        kid,
        use: 'sig',
        alg: 'EdDSA',
      });
      const keys = [jwk(signer.kid, signer.x)];
      for (const [kid, e] of Object.entries(readRetired()))
        if (kid !== signer.kid && e.retiredAt + keep >= t) keys.push(jwk(kid, e.x));
      return { keys };
    },
  };
}

export type ExecutionKeyRing = ReturnType<typeof createExecutionKeyRing>;

/** Writes a complete file at `path` unless one exists (another process's key wins: never overwritten). */
function createOnce(path: string, data: string): void {
  const tmp = join(dirname(path), `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fd = openSync(tmp, 'wx', 0o600);
  try {
    writeSync(fd, data);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(tmp, path); // atomic, and fails with EEXIST instead of replacing
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  } finally {
    unlinkSync(tmp);
  }
}

function newPrivateKeyPem(): string {
  return generateKeyPairSync('ed25519').privateKey.export({ format: 'pem', type: 'pkcs8' }).toString();
}

function readSigner(path: string): ExecutionSigner & { x: string } {
  const pem = readPrivateFile(path, 'execution signing key file');
  let privateKey: KeyObject;
  try {
    privateKey = createPrivateKey({ key: pem, format: 'pem' });
  } catch {
    throw new Error(`execution signing key file ${path} is not a valid PEM private key`);
  }
  return signerOf(privateKey, path);
}

function signerOf(privateKey: KeyObject, path: string): ExecutionSigner & { x: string } {
  if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error(`${path} does not hold an Ed25519 key`);
  const x = createPublicKey(privateKey).export({ format: 'jwk' }).x;
  if (typeof x !== 'string') throw new Error(`${path}: no public key`);
  return { kid: jwkThumbprint(x), privateKey, x };
}
