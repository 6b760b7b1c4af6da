/**
 * The execution keys this agent trusts (ADR 0021): the server's Ed25519 public keys, pinned in
 * `execution-keys.json` (a JWKS, 0600) in the agent's state dir. A token is verified only against
 * a pinned key (src/shared/execution-token.ts), never against a key that came with it.
 *
 * How a key gets pinned:
 * - Embedded stack (`bulwark up`): the supervisor writes the server's JWKS into the file at every
 *   start (server and agent share the host: filesystem trust).
 * - Otherwise, first start (no file): trust on first use of the authenticated agent API
 *   `GET /v1/agent/execution-keys` (agent token, over TLS).
 * - Later (a token names a kid we do not hold): one refresh of the same route, at most once per
 *   `minRefreshMs`; a new key is pinned only when the answer carries an endorsement chain from a
 *   key already pinned (`sig` = Ed25519 by `by` over endorsementText(kid); the kid is the key's
 *   RFC 7638 thumbprint, so it binds the key). A compromised or impersonated server therefore
 *   cannot add a key of its own; it can only withhold keys (a denial of service it has anyway).
 *   Pinned keys the server stopped publishing are dropped, never the last one.
 */
import { createPublicKey, type KeyObject, verify } from 'node:crypto';
import { closeSync, constants, fstatSync, openSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { z } from 'zod';
import { writeFileAtomic0600 } from '../../shared/atomic-file.ts';
import { jwkThumbprint, pinnedKeysFromJwks } from '../../shared/execution-token.ts';

export const EXECUTION_KEYS_FILE = 'execution-keys.json';

/** What a key's endorsement signs: the new kid (its key's thumbprint), under a fixed prefix. */
const endorsementText = (kid: string) => `bulwark-execution-key-endorsement:${kid}`;

const KID = z.string().regex(/^[A-Za-z0-9_-]{43}$/);
const X = z.string().regex(/^[A-Za-z0-9_-]{43}$/);
const jwkSchema = z
  .object({
    kty: z.literal('OKP'),
    crv: z.literal('Ed25519'),
    x: X,
    kid: KID,
    use: z.literal('sig').optional(),
    alg: z.literal('EdDSA').optional(),
  })
  .strict();
export const endorsementSchema = z
  .object({ kid: KID, x: X, by: KID, sig: z.string().regex(/^[A-Za-z0-9_-]{86}$/) })
  .strict();
export type Endorsement = z.infer<typeof endorsementSchema>;

/** The answer of `GET /v1/agent/execution-keys`. */
export const executionKeysAnswerSchema = z.object({
  node_id: z.string().min(1).max(128),
  keys: z.array(jwkSchema).max(16),
  endorsements: z.array(endorsementSchema).max(256),
});
export type ExecutionKeysAnswer = z.infer<typeof executionKeysAnswerSchema>;

export type PinnedKeys = {
  /** kid → key, as pinned now. */
  keys(): ReadonlyMap<string, KeyObject>;
  /**
   * Asks the server (at most once per minRefreshMs; concurrent callers share one call) and pins
   * the keys it may. Never throws; true when a kid was added.
   */
  refresh(): Promise<boolean>;
};

type JwkOut = { kty: 'OKP'; crv: 'Ed25519'; x: string; kid: string; use: 'sig'; alg: 'EdDSA' };
const toJwk = (kid: string, x: string): JwkOut => ({
  kty: 'OKP',
  crv: 'Ed25519',
  x,
  kid,
  use: 'sig',
  alg: 'EdDSA',
});

/** Reads a pin file: must be a regular file of ours, 0600; null when absent. Throws on anything else. */
export function readPinFile(file: string): Map<string, string> | null {
  let fd: number;
  try {
    fd = openSync(file, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Error(`execution keys ${file}: cannot open (${(err as NodeJS.ErrnoException).code})`);
  }
  let text: string;
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw new Error(`execution keys ${file} is not a regular file`);
    if ((st.mode & 0o077) !== 0) throw new Error(`execution keys ${file} is accessible by group/others`);
    if (typeof process.getuid === 'function' && st.uid !== process.getuid())
      throw new Error(`execution keys ${file} is owned by another user`);
    text = readFileSync(fd, 'utf8');
  } finally {
    closeSync(fd);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`execution keys ${file} is not valid JSON`);
  }
  // Checks every key (Ed25519, public only, kid = thumbprint); throws otherwise.
  pinnedKeysFromJwks(json);
  const out = new Map<string, string>();
  for (const k of (json as { keys: { kid: string; x: string }[] }).keys) out.set(k.kid, k.x);
  return out;
}

/** Writes the pin file (atomic, 0600): the embedded supervisor and the agent itself. */
export function writePinFile(file: string, keys: ReadonlyMap<string, string>): void {
  const jwks = { keys: [...keys].map(([kid, x]) => toJwk(kid, x)) };
  pinnedKeysFromJwks(jwks); // never write what we could not read back
  writeFileAtomic0600(file, `${JSON.stringify(jwks, null, 2)}\n`);
}

/**
 * The keys reachable from `pinned` (kid → x) through `endorsements`: each step's signature is
 * checked with a key already trusted, and each kid must be its key's thumbprint.
 */
export function endorsedKeys(
  pinned: ReadonlyMap<string, string>,
  endorsements: readonly Endorsement[],
): Map<string, string> {
  const trusted = new Map(pinned);
  let grew = true;
  // Each pass adds at least one key or ends: at most endorsements.length + 1 passes.
  while (grew) {
    grew = false;
    for (const e of endorsements) {
      if (trusted.has(e.kid)) continue;
      const byX = trusted.get(e.by);
      if (byX === undefined || jwkThumbprint(e.x) !== e.kid) continue;
      let ok = false;
      try {
        const by = createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: byX }, format: 'jwk' });
        ok = verify(null, Buffer.from(endorsementText(e.kid), 'utf8'), by, Buffer.from(e.sig, 'base64url'));
      } catch {
        ok = false;
      }
      if (ok) {
        trusted.set(e.kid, e.x);
        grew = true;
      }
    }
  }
  return trusted;
}

export type PinnedKeysOptions = {
  stateDir: string;
  /** The authenticated agent API (GET /v1/agent/execution-keys); null: pins come from the file only. */
  fetchKeys: (() => Promise<ExecutionKeysAnswer>) | null;
  log: Logger;
  /** Least time between two refreshes (default 60 s). */
  minRefreshMs?: number;
  now?: () => number;
};

/**
 * Opens the pin file (trust on first use of the authenticated API when there is none) and
 * returns the pinned keys. Throws on a damaged or group-readable file (fail closed).
 */
export async function openPinnedKeys(opts: PinnedKeysOptions): Promise<PinnedKeys> {
  const file = path.join(opts.stateDir, EXECUTION_KEYS_FILE);
  const now = opts.now ?? Date.now;
  const minRefreshMs = opts.minRefreshMs ?? 60_000;
  let pinned = readPinFile(file) ?? new Map<string, string>();
  let objects = pinnedKeysFromJwks({ keys: [...pinned].map(([kid, x]) => toJwk(kid, x)) });
  let lastRefresh = Number.NEGATIVE_INFINITY;
  let inFlight: Promise<boolean> | null = null;

  const set = (next: Map<string, string>) => {
    writePinFile(file, next);
    pinned = next;
    objects = pinnedKeysFromJwks({ keys: [...next].map(([kid, x]) => toJwk(kid, x)) });
  };

  const apply = (answer: ExecutionKeysAnswer): boolean => {
    const published = new Map(answer.keys.map((k) => [k.kid, k.x] as const));
    for (const [kid, x] of published)
      if (jwkThumbprint(x) !== kid) throw new Error(`the server published kid ${kid} for another key`);
    if (pinned.size === 0) {
      // Trust on first use, over the authenticated API (ADR 0021).
      if (published.size === 0) return false;
      set(published);
      opts.log.info({ kids: [...published.keys()] }, 'execution keys pinned (first use)');
      return true;
    }
    const trusted = endorsedKeys(pinned, answer.endorsements);
    const next = new Map<string, string>();
    for (const [kid, x] of published) if (trusted.get(kid) === x) next.set(kid, x);
    const refused = [...published.keys()].filter((kid) => !next.has(kid));
    if (refused.length > 0)
      opts.log.warn({ kids: refused }, 'execution keys without an endorsement from a pinned key: not pinned');
    // The server stopped publishing a key: its tokens have expired. Never drop the last key.
    if (next.size === 0) return false;
    const added = [...next.keys()].filter((kid) => !pinned.has(kid));
    const same = added.length === 0 && next.size === pinned.size;
    if (!same) {
      set(next);
      if (added.length > 0) opts.log.info({ kids: added }, 'execution keys pinned (endorsed)');
    }
    return added.length > 0;
  };

  const refresh = (): Promise<boolean> => {
    if (!opts.fetchKeys) return Promise.resolve(false);
    if (inFlight) return inFlight;
    if (now() - lastRefresh < minRefreshMs) return Promise.resolve(false);
    lastRefresh = now();
    const fetchKeys = opts.fetchKeys;
    inFlight = (async () => {
      try {
        return apply(executionKeysAnswerSchema.parse(await fetchKeys()));
      } catch (err) {
        opts.log.warn({ err: { message: (err as Error).message } }, 'execution keys: refresh failed');
        return false;
      } finally {
        inFlight = null;
      }
    })();
    return inFlight;
  };

  if (pinned.size === 0) {
    if (opts.fetchKeys) await refresh();
    if (pinned.size === 0) opts.log.warn('no execution keys pinned: every execution token is refused');
  }
  return { keys: () => objects, refresh };
}
