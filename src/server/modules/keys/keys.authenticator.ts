/**
 * The hot path of every /v1 request: a presented API key → its caller. Checksum first (no I/O on
 * garbage), then the cached row (evicted on every replica by revocation NOTIFYs, bypassed while
 * the listener is down), the constant-time hash comparison and the row's state; refusals of real
 * keys are audited, uses are batched. Key management (create, revoke, the idle sweeper) is in
 * keys.service.ts and evicts through `evict`.
 */
import { hash } from 'node:crypto';
import type { Logger } from 'pino';
import { keyHashesEqual, parseApiKey } from '../../../shared/api-key.ts';
import { createPgListener, type PgListener } from '../../db/pg-listener.ts';
import { type Db, withTx } from '../../db/pool.ts';
import type { Caller } from '../../http/caller.ts';
import type { AuditService } from '../audit/audit.service.ts';
import { createKeyCache } from './key-cache.ts';
import { listenForKeyChanges } from './key-listener.ts';
import { createKeyUsageRecorder } from './key-usage.ts';
import * as repo from './keys.repo.ts';

/** `bwk_` + the 12-char lookup prefix: safe to show, log and store in clear. */
export const displayPrefix = (lookupPrefix: string) => `bwk_${lookupPrefix}`;

/** Same bytes as hashApiKey (SHA-256 of the whole key), one-shot: about half the cost on the hot path. */
const hashPresentedKey = (key: string): Buffer => hash('sha256', key, 'buffer');

export type AuthFailure =
  | 'malformed'
  | 'checksum'
  | 'unknown'
  | 'decoy'
  | 'revoked'
  | 'expired'
  | 'creator_revoked'
  | 'account_suspended';

export type AuthResult = { ok: true; caller: Caller } | { ok: false; reason: AuthFailure };

export type KeyAuthenticatorDeps = {
  db: Db;
  log: Logger;
  /** Refusals of real keys (`recordNow`) and first uses (`record`, with the usage write). */
  audit: Pick<AuditService, 'record' | 'recordNow'>;
  /** Control DB URL for the revocation LISTEN connection (used when no shared listener is given). */
  databaseUrl: string;
  /** The process's shared LISTEN connection; without one the authenticator opens (and closes) its own. */
  listener?: PgListener;
  cacheTtlMs?: number;
  cacheMaxEntries?: number;
  usageFlushMs?: number;
  now?: () => number;
};

export function createKeyAuthenticator(deps: KeyAuthenticatorDeps) {
  const { db, log, audit } = deps;
  const now = deps.now ?? Date.now;

  const ownListener = deps.listener ? null : createPgListener(deps.databaseUrl, log, 'keys');
  const listener = deps.listener ?? ownListener!;
  listenForKeyChanges(listener, {
    evict: (p) => cache.evict(p),
    evictAccount: (id) => cache.evictAccount(id),
    clear: () => cache.clear(),
  });
  const cache = createKeyCache({
    ttlMs: deps.cacheTtlMs ?? 30_000,
    maxEntries: deps.cacheMaxEntries ?? 10_000,
    trusted: listener.connected,
    now,
  });

  type PresentedKey = { keyId: string; accountId: string; prefix: string; sourceIp: string };

  /** A refusal of a real key (its secret matched), recorded as `action` with outcome `denied`. */
  function recordKeyRefusal(action: string, e: PresentedKey, details: Record<string, unknown> = {}): void {
    audit
      .recordNow({
        action,
        outcome: 'denied',
        actorType: 'key',
        actorId: e.keyId,
        accountId: e.accountId,
        sourceIp: e.sourceIp,
        targetType: 'key',
        targetId: e.keyId,
        details: { key_prefix: e.prefix, ...details },
      })
      .catch((err: Error) =>
        log.error({ err: { message: err.message }, action }, 'could not record a key refusal'),
      );
  }

  /**
   * A real key presented after it stopped working — revoked, expired, its creator revoked, its
   * account suspended: someone still holds it. Recorded as `key.refused` (the account's admins see
   * it); scanners' garbage is not (it never matches a key). Bounded like every auth failure by the
   * per-IP failure budget.
   */
  function onRealKeyRefused(e: PresentedKey & { reason: AuthFailure }): void {
    recordKeyRefusal('key.refused', e, { reason: e.reason });
  }

  /**
   * A decoy key was presented with its correct secret: someone has our canary. Refused like
   * an unknown key; records the critical `key.decoy_used` audit event (outcome `denied`) and alerts.
   */
  function onDecoyKeyUsed(e: PresentedKey): void {
    recordKeyRefusal('key.decoy_used', e);
    log.fatal(
      {
        event: 'key.decoy_used',
        key_id: e.keyId,
        account_id: e.accountId,
        key_prefix: e.prefix,
        ip: e.sourceIp,
      },
      'DECOY API KEY USED: credential leak suspected',
    );
  }

  /** Keys used for the first time (from the batched last-use flush, which audits `key.first_used`). */
  function onKeyFirstUsed(keyIds: string[]): void {
    log.info({ event: 'key.first_use', key_ids: keyIds }, 'API keys used for the first time');
  }

  const usage = createKeyUsageRecorder({
    // The first use is recorded in the audit log in the same transaction as the usage write.
    write: (uses) =>
      withTx(db, async (tx) => {
        const first = await repo.recordKeyUse(tx, uses);
        for (const k of await repo.keysForAudit(tx, first)) {
          await audit.record(tx, {
            action: 'key.first_used',
            actorType: 'key',
            actorId: k.id,
            accountId: k.account_id,
            sourceIp: k.last_used_ip,
            targetType: 'key',
            targetId: k.id,
          });
        }
        return first;
      }),
    onFirstUse: onKeyFirstUsed,
    log,
    intervalMs: deps.usageFlushMs ?? 5_000,
  });

  return {
    cacheStats: cache.stats,
    cacheSize: cache.size,
    /** Drops a key from this process's cache at once (management, after a revocation commits). */
    evict: (lookupPrefix: string) => cache.evict(lookupPrefix),
    listenerReady: (timeoutMs?: number) => listener.ready(timeoutMs),
    listenerConnected: () => listener.connected(),

    /**
     * Bearer key → caller. Format and checksum are checked before anything else (no I/O on
     * garbage); then the cached row, the constant-time hash comparison, and the row's state.
     */
    async authenticate(raw: string, sourceIp: string): Promise<AuthResult> {
      const parsed = parseApiKey(raw);
      if (!parsed.ok) return { ok: false, reason: parsed.reason === 'format' ? 'malformed' : 'checksum' };
      const row = await cache.get(parsed.lookupPrefix, (p) => repo.findKeyForAuth(db, p));
      if (!row || !keyHashesEqual(hashPresentedKey(raw), row.key_hash))
        return { ok: false, reason: 'unknown' };
      const prefix = displayPrefix(row.lookup_prefix);
      if (row.decoy) {
        onDecoyKeyUsed({ keyId: row.id, accountId: row.account_id, prefix, sourceIp });
        return { ok: false, reason: 'decoy' };
      }
      const refused = row.revoked_at
        ? 'revoked'
        : row.expires_at.getTime() <= now()
          ? 'expired'
          : row.creator_revoked
            ? 'creator_revoked'
            : row.account_status !== 'active'
              ? 'account_suspended'
              : null;
      if (refused) {
        onRealKeyRefused({ keyId: row.id, accountId: row.account_id, prefix, sourceIp, reason: refused });
        return { ok: false, reason: refused };
      }
      usage.note(row.id, sourceIp);
      return {
        ok: true,
        caller: {
          kind: 'key',
          accountId: row.account_id,
          accountName: row.account_name,
          keyId: row.id,
          level: row.level,
          databases: row.databases,
          explorer: row.explorer,
          sourceIp,
          keyPrefix: prefix,
          keyName: row.name,
          expiresAt: row.expires_at,
        },
      };
    },

    /** Writes the batched last uses now (tests; shutdown does it too). */
    flushUsage: () => usage.flush(),

    async close(): Promise<void> {
      await usage.close().catch(() => {});
      await ownListener?.close();
    },
  };
}

export type KeyAuthenticator = ReturnType<typeof createKeyAuthenticator>;
