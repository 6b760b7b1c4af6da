/**
 * Execution tokens (issue 14, "Signed execution"; ADR 0019): what the server signs when an
 * approved request runs, and what the agent verifies before it touches the database.
 *
 * Format: a compact JWS (RFC 7515) — `b64url(header).b64url(payload).b64url(signature)` — with
 * header exactly `{"alg":"EdDSA","typ":"bulwark-exec+jwt","kid":…}` and an Ed25519 signature,
 * so any JOSE library can read it. We sign and verify it with node:crypto directly rather than
 * through jose: same bytes, but jose's async path ran at 0.21–0.40× raw Ed25519 for signing and
 * 0.44–0.59× for verifying, ours at 0.81–0.95× and 0.85–0.94× (bench/execution-token.bench.ts). The algorithm is pinned: the header's `alg` must be `EdDSA`
 * and the key comes only from the agent's pinned map by `kid`; the header never names a key.
 *
 * Verification order: shape → header (alg, typ, kid) → signature → claims shape → time →
 * database, node, mode, SQL hash, capability → replay cache. Nothing in the payload is read before
 * the signature holds, and the jti is recorded only once every other check passed.
 */
import { createHash, createPublicKey, type KeyObject, sign, timingSafeEqual, verify } from 'node:crypto';

export const EXECUTION_TOKEN_TYPE = 'bulwark-exec+jwt';
export const EXECUTION_TOKEN_TTL_SECONDS = 300;
export const EXECUTION_CAPABILITIES = ['reader', 'migrator'] as const;
export type ExecutionCapability = (typeof EXECUTION_CAPABILITIES)[number];
/**
 * What the token lets the agent do: run the SQL and commit (`execute`), run it and always roll
 * back (`dry_run`: a preflight's row count and plan), or create a time-boxed login
 * (`access`: just-in-time credentials; the hash is then of the grant's canonical text).
 */
export const EXECUTION_MODES = ['execute', 'dry_run', 'access'] as const;
export type ExecutionMode = (typeof EXECUTION_MODES)[number];

export type ExecutionClaims = {
  request_id: string;
  database: string;
  node: string;
  capability: ExecutionCapability;
  mode: ExecutionMode;
  /** Lower-case hex SHA-256 of the exact SQL text (UTF-8). */
  sql_sha256: string;
  /** The row count the dry run recorded and the approval binds; null when none applies. */
  approved_rows: number | null;
  jti: string;
  iat: number;
  exp: number;
};

export type RefusalReason =
  | 'malformed'
  | 'alg'
  | 'unknown_kid'
  | 'bad_signature'
  | 'expired'
  | 'not_yet_valid'
  | 'wrong_database'
  | 'wrong_node'
  | 'wrong_mode'
  | 'sql_mismatch'
  | 'capability_forbidden'
  | 'replayed'
  | 'replay_cache_full';

export type VerifyResult =
  | { ok: true; kid: string; claims: ExecutionClaims }
  | { ok: false; reason: RefusalReason };

/** Where seen jtis are kept (createReplayCache in src/agent/execution/replay-cache.ts). */
export type ReplayGuard = {
  /** Records `jti` until `exp` (epoch seconds); 'replayed' if seen, 'full' if it cannot be kept. */
  admit(jti: string, exp: number): 'ok' | 'replayed' | 'full';
};

export type VerifyOptions = {
  /** Pinned Ed25519 public keys by kid (pinnedKeysFromJwks). */
  keys: ReadonlyMap<string, KeyObject>;
  /** Epoch milliseconds. */
  now: number;
  maxSkewSeconds?: number;
  expect: { database: string; node: string; mode: ExecutionMode } & ({ sqlSha256: string } | { sql: string });
  allowedCapabilities: ReadonlySet<ExecutionCapability> | readonly ExecutionCapability[];
  /** Omit only where the caller records the jti itself (the benchmark's no-I/O variant). */
  replay: ReplayGuard | null;
};

const MAX_TOKEN_LENGTH = 2048;
const B64URL = /^[A-Za-z0-9_-]+$/;
const KID = /^[A-Za-z0-9_-]{8,64}$/;
const HEX64 = /^[0-9a-f]{64}$/;
const ID = /^[A-Za-z0-9_.:-]{1,128}$/;
const NAME = /^[a-z][a-z0-9_]{0,62}$/;
const NODE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;
const DEFAULT_SKEW = 30;

export function sqlSha256(sql: string): string {
  return createHash('sha256').update(sql, 'utf8').digest('hex');
}

/** The signing half: a private Ed25519 key and its kid (the server's key ring holds one). */
export type ExecutionSigner = { kid: string; privateKey: KeyObject };

/** Signs the claims as a compact JWS; validates them first (a bad claim is a bug, thrown). */
export function signExecutionToken(signer: ExecutionSigner, claims: ExecutionClaims): string {
  if (!KID.test(signer.kid)) throw new Error('execution token: bad kid');
  if (!claimsValid(claims)) throw new Error('execution token: invalid claims');
  // Fixed key order: the payload is canonical for a given set of claims.
  const payload = {
    request_id: claims.request_id,
    database: claims.database,
    node: claims.node,
    capability: claims.capability,
    mode: claims.mode,
    sql_sha256: claims.sql_sha256,
    approved_rows: claims.approved_rows,
    jti: claims.jti,
    iat: claims.iat,
    exp: claims.exp,
  };
  const input = `${encodedHeader(signer.kid)}.${b64(JSON.stringify(payload))}`;
  const sig = sign(null, Buffer.from(input, 'latin1'), signer.privateKey);
  return `${input}.${sig.toString('base64url')}`;
}

export function verifyExecutionToken(token: string, opts: VerifyOptions): VerifyResult {
  const refuse = (reason: RefusalReason): VerifyResult => ({ ok: false, reason });
  if (typeof token !== 'string' || token.length > MAX_TOKEN_LENGTH) return refuse('malformed');
  const parts = token.split('.');
  if (parts.length !== 3) return refuse('malformed');
  const [h, p, s] = parts as [string, string, string];
  if (!B64URL.test(h) || !B64URL.test(p) || !B64URL.test(s)) return refuse('malformed');

  const header = parseJson(h);
  if (!isPlainObject(header)) return refuse('malformed');
  // Only these three members: `crit`, `jwk`, `jku`, `x5u`, `b64`… are refused, not ignored.
  const names = Object.keys(header);
  if (names.length !== 3 || !('alg' in header) || !('typ' in header) || !('kid' in header))
    return refuse(header.alg !== undefined && header.alg !== 'EdDSA' ? 'alg' : 'malformed');
  if (header.alg !== 'EdDSA') return refuse('alg');
  if (header.typ !== EXECUTION_TOKEN_TYPE) return refuse('malformed');
  const kid = header.kid;
  if (typeof kid !== 'string' || !KID.test(kid)) return refuse('malformed');
  const key = opts.keys.get(kid);
  if (!key) return refuse('unknown_kid');

  const sig = Buffer.from(s, 'base64url');
  if (sig.length !== 64 || sig.toString('base64url') !== s) return refuse('bad_signature');
  let good = false;
  try {
    good = verify(null, Buffer.from(`${h}.${p}`, 'latin1'), key, sig);
  } catch {
    good = false;
  }
  if (!good) return refuse('bad_signature');

  // Signed by a pinned key from here on; still checked in full before anything is used.
  const claims = parseJson(p);
  if (!claimsValid(claims)) return refuse('malformed');
  const skew = opts.maxSkewSeconds ?? DEFAULT_SKEW;
  // A NaN clock would pass every time comparison below: a caller's bug, refused loudly.
  if (!Number.isFinite(opts.now) || !Number.isFinite(skew) || skew < 0 || skew > 300)
    throw new Error('verifyExecutionToken: now and maxSkewSeconds (0–300) must be finite numbers');
  const nowS = opts.now / 1000;
  if (nowS > claims.exp + skew) return refuse('expired');
  if (claims.iat > nowS + skew) return refuse('not_yet_valid');
  if (claims.database !== opts.expect.database) return refuse('wrong_database');
  if (claims.node !== opts.expect.node) return refuse('wrong_node');
  if (claims.mode !== opts.expect.mode) return refuse('wrong_mode');
  const want = 'sql' in opts.expect ? sqlSha256(opts.expect.sql) : opts.expect.sqlSha256;
  if (!HEX64.test(want)) throw new Error('verifyExecutionToken: expect.sqlSha256 is not a hex SHA-256');
  if (!timingSafeEqual(Buffer.from(claims.sql_sha256, 'hex'), Buffer.from(want, 'hex')))
    return refuse('sql_mismatch');
  const allowed = opts.allowedCapabilities;
  const permitted = Array.isArray(allowed)
    ? allowed.includes(claims.capability)
    : (allowed as ReadonlySet<ExecutionCapability>).has(claims.capability);
  if (!permitted) return refuse('capability_forbidden');
  if (opts.replay) {
    const seen = opts.replay.admit(claims.jti, claims.exp);
    if (seen === 'replayed') return refuse('replayed');
    if (seen === 'full') return refuse('replay_cache_full');
  }
  return { ok: true, kid, claims };
}

/** kid → KeyObject from a JWKS; every key must be an Ed25519 signing key for EdDSA (else thrown). */
export function pinnedKeysFromJwks(jwks: unknown): Map<string, KeyObject> {
  const keys = isPlainObject(jwks) ? jwks.keys : undefined;
  if (!Array.isArray(keys)) throw new Error('execution keys: not a JWKS ({"keys": [...]})');
  const out = new Map<string, KeyObject>();
  for (const jwk of keys) {
    if (
      !isPlainObject(jwk) ||
      jwk.kty !== 'OKP' ||
      jwk.crv !== 'Ed25519' ||
      typeof jwk.x !== 'string' ||
      typeof jwk.kid !== 'string' ||
      !KID.test(jwk.kid) ||
      (jwk.alg !== undefined && jwk.alg !== 'EdDSA') ||
      (jwk.use !== undefined && jwk.use !== 'sig') ||
      'd' in jwk
    )
      throw new Error('execution keys: each key must be a public Ed25519 JWK with a kid');
    if (out.has(jwk.kid)) throw new Error(`execution keys: duplicate kid ${jwk.kid}`);
    const key = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: jwk.x }, format: 'jwk' });
    if (jwkThumbprint(jwk.x) !== jwk.kid)
      throw new Error(`execution keys: kid ${jwk.kid} does not match its key`);
    out.set(jwk.kid, key);
  }
  return out;
}

/** RFC 7638 thumbprint of an Ed25519 public key (its base64url `x`): the kid we use. */
export function jwkThumbprint(x: string): string {
  return createHash('sha256').update(`{"crv":"Ed25519","kty":"OKP","x":"${x}"}`).digest('base64url');
}

function claimsValid(c: unknown): c is ExecutionClaims {
  if (!isPlainObject(c)) return false;
  if (Object.keys(c).length !== 10) return false;
  const { request_id, database, node, capability, mode, sql_sha256, approved_rows, jti, iat, exp } =
    c as Record<string, unknown>;
  return (
    typeof request_id === 'string' &&
    ID.test(request_id) &&
    typeof database === 'string' &&
    NAME.test(database) &&
    typeof node === 'string' &&
    NODE.test(node) &&
    (capability === 'reader' || capability === 'migrator') &&
    (mode === 'execute' || mode === 'dry_run' || mode === 'access') &&
    typeof sql_sha256 === 'string' &&
    HEX64.test(sql_sha256) &&
    (approved_rows === null ||
      (typeof approved_rows === 'number' && Number.isSafeInteger(approved_rows) && approved_rows >= 0)) &&
    typeof jti === 'string' &&
    ID.test(jti) &&
    Number.isSafeInteger(iat) &&
    Number.isSafeInteger(exp) &&
    (exp as number) > (iat as number) &&
    // Never longer-lived than we issue: a stolen key could not mint a token for next year either.
    (exp as number) - (iat as number) <= EXECUTION_TOKEN_TTL_SECONDS
  );
}

// The encoded header is a pure function of the kid: memoized (a server signs with one or two).
const headers = new Map<string, string>();
function encodedHeader(kid: string): string {
  let h = headers.get(kid);
  if (h === undefined) {
    h = b64(JSON.stringify({ alg: 'EdDSA', typ: EXECUTION_TOKEN_TYPE, kid }));
    if (headers.size >= 16) headers.clear();
    headers.set(kid, h);
  }
  return h;
}

function b64(s: string): string {
  return Buffer.from(s, 'utf8').toString('base64url');
}

function parseJson(part: string): unknown {
  try {
    return JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
  } catch {
    return undefined;
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
