/**
 * Access tokens: JWTs signed with Ed25519 (alg EdDSA, pinned on verification: `none`, HS256 and
 * every other algorithm are refused whatever the header says), typ `at+jwt`, with `iss`, `aud`,
 * `sub` (the user), `jti` (the session), `iat` and `exp` required and checked.
 *
 * The signing key is shared by every replica through the control database: the first replica
 * that needs one creates it under an advisory lock, its private half sealed with the master
 * keyring (AAD `session-signing-key:<kid>`); verification needs only the public half (by `kid`).
 * Verified tokens are cached until they expire (an Ed25519 verification costs ~150 µs; a Map
 * lookup ~1 µs): revocation is not the token's business but the session's (see sessions.auth.ts).
 */
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
} from 'node:crypto';
import { errors as joseErrors, jwtVerify, SignJWT } from 'jose';
import { unavailable } from '../../../shared/errors.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import { type Db, withTx } from '../../db/pool.ts';
import * as repo from './sessions.repo.ts';

export const ACCESS_TOKEN_TYPE = 'at+jwt';
/** Access tokens are three base64url parts; anything else is not one. */
export const JWT_SHAPE = /^[A-Za-z0-9_-]{10,200}\.[A-Za-z0-9_-]{10,1500}\.[A-Za-z0-9_-]{0,200}$/;
const KID = /^[A-Za-z0-9_-]{8,64}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export type AccessClaims = { userId: string; sessionId: string; expiresAtMs: number };

export type SessionTokensDeps = {
  db: Db;
  /** The master keyring box; without one no token can be issued (verification still works). */
  box: SecretBox | null;
  issuer: string;
  audience: string;
  accessTokenTtlSeconds: number;
  now?: () => number;
  verifiedCacheMax?: number;
};

const sealContext = (kid: string) => `session-signing-key:${kid}`;

export function createSessionTokens(deps: SessionTokensDeps) {
  const now = deps.now ?? Date.now;
  const publicKeys = new Map<string, KeyObject>();
  let signing: { kid: string; key: KeyObject } | null = null;
  const verified = new Map<string, AccessClaims>();
  const verifiedMax = deps.verifiedCacheMax ?? 10_000;

  async function signingKey(): Promise<{ kid: string; key: KeyObject }> {
    if (signing) return signing;
    const box = deps.box;
    if (!box)
      throw unavailable('Sign-in is unavailable: the server has no master key (BULWARK_MASTER_KEY_FILE)');
    const row = await withTx(deps.db, async (tx) => {
      await repo.lockSigningKeys(tx);
      const existing = await repo.newestSigningKey(tx);
      if (existing) return existing;
      const kid = randomBytes(16).toString('base64url');
      const pair = generateKeyPairSync('ed25519');
      const created: repo.SigningKeyRow = {
        kid,
        public_key_pem: pair.publicKey.export({ type: 'spki', format: 'pem' }).toString(),
        private_key_sealed: box.seal(
          pair.privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(),
          sealContext(kid),
        ),
      };
      await repo.insertSigningKey(tx, created);
      return created;
    });
    const key = createPrivateKey(box.open(row.private_key_sealed, sealContext(row.kid)));
    publicKeys.set(row.kid, createPublicKey(row.public_key_pem));
    signing = { kid: row.kid, key };
    return signing;
  }

  async function publicKey(kid: unknown): Promise<KeyObject> {
    if (typeof kid !== 'string' || !KID.test(kid)) throw new joseErrors.JWSInvalid('bad kid');
    const cached = publicKeys.get(kid);
    if (cached) return cached;
    const pem = await repo.findSigningPublicKey(deps.db, kid);
    if (!pem) throw new joseErrors.JWKSNoMatchingKey();
    const key = createPublicKey(pem);
    publicKeys.set(kid, key);
    return key;
  }

  return {
    /** A signed access token for this session, and its lifetime in seconds. */
    async sign(userId: string, sessionId: string): Promise<{ token: string; expiresIn: number }> {
      const { kid, key } = await signingKey();
      const iat = Math.floor(now() / 1000);
      const token = await new SignJWT({})
        .setProtectedHeader({ alg: 'EdDSA', typ: ACCESS_TOKEN_TYPE, kid })
        .setIssuer(deps.issuer)
        .setAudience(deps.audience)
        .setSubject(userId)
        .setJti(sessionId)
        .setIssuedAt(iat)
        .setExpirationTime(iat + deps.accessTokenTtlSeconds)
        .sign(key);
      return { token, expiresIn: deps.accessTokenTtlSeconds };
    },

    /** The token's claims when its signature, algorithm, type, issuer, audience and times hold; else null. */
    async verify(token: string): Promise<AccessClaims | null> {
      const t = now();
      const hit = verified.get(token);
      if (hit) {
        if (hit.expiresAtMs > t) return hit;
        verified.delete(token);
        return null;
      }
      if (!JWT_SHAPE.test(token)) return null;
      try {
        const { payload } = await jwtVerify(token, (header) => publicKey(header.kid), {
          algorithms: ['EdDSA'],
          typ: ACCESS_TOKEN_TYPE,
          issuer: deps.issuer,
          audience: deps.audience,
          requiredClaims: ['iss', 'aud', 'sub', 'jti', 'iat', 'exp'],
          currentDate: new Date(t),
          maxTokenAge: deps.accessTokenTtlSeconds,
        });
        const { sub, jti, exp } = payload;
        if (typeof sub !== 'string' || !UUID.test(sub) || typeof jti !== 'string' || !UUID.test(jti))
          return null;
        const { iat } = payload;
        // Never longer-lived than we issue (a stolen key could not mint a token for next year either).
        if (typeof exp !== 'number' || typeof iat !== 'number' || exp - iat > deps.accessTokenTtlSeconds)
          return null;
        const claims: AccessClaims = { userId: sub, sessionId: jti, expiresAtMs: exp * 1000 };
        if (verified.size >= verifiedMax) {
          const oldest = verified.keys().next();
          if (!oldest.done) verified.delete(oldest.value);
        }
        verified.set(token, claims);
        return claims;
      } catch (err) {
        if (err instanceof joseErrors.JOSEError || err instanceof TypeError || err instanceof SyntaxError)
          return null;
        throw err;
      }
    },
  };
}

export type SessionTokens = ReturnType<typeof createSessionTokens>;
