import { hash } from 'node:crypto';
import type { Logger } from 'pino';
import { generateApiKey, hashApiKey, keyHashesEqual, parseApiKey } from '../../../shared/api-key.ts';
import { badRequest, forbidden, notFound } from '../../../shared/errors.ts';
import { createPgListener, type PgListener } from '../../db/pg-listener.ts';
import { type Db, withTx } from '../../db/pool.ts';
import { type Caller, type Permission, requireLevel } from '../../http/caller.ts';
import type { PageCursor } from '../../http/pagination.ts';
import {
  type AuditEventDraft,
  auditFromCaller,
  recordAudit,
  recordAuditNow,
} from '../audit/audit.service.ts';
import { createKeyCache } from './key-cache.ts';
import { listenForKeyChanges } from './key-listener.ts';
import { createKeyUsageRecorder } from './key-usage.ts';
import * as repo from './keys.repo.ts';

/** `bwk_` + the 12-char lookup prefix: safe to show, log and store in clear. */
export const displayPrefix = (lookupPrefix: string) => `bwk_${lookupPrefix}`;

const DAY_MS = 86_400_000;

/** Same bytes as hashApiKey (SHA-256 of the whole key), one-shot: about half the cost on the hot path. */
const hashPresentedKey = (key: string): Buffer => hash('sha256', key, 'buffer');
const RANK: Record<Permission, number> = { read: 1, write: 2, admin: 3 };

/**
 * Keys minting keys: at most this many levels below an operator key. Revocation reaches every
 * descendant however deep (chains made before this bound included); the bound keeps the chain
 * walks short and delegation legible.
 */
export const MAX_KEY_CHAIN_DEPTH = 16;

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

export type CreateKeyInput = {
  name: string;
  level: Permission;
  databases?: string[] | null | undefined;
  expiresAt?: Date | undefined;
  explorer?: boolean | undefined;
  decoy?: boolean | undefined;
};

export type KeysServiceDeps = {
  db: Db;
  log: Logger;
  /** Control DB URL for the revocation LISTEN connection (used when no shared listener is given). */
  databaseUrl: string;
  /** The process's shared LISTEN connection; without one the service opens (and closes) its own. */
  listener?: PgListener;
  cacheTtlMs?: number;
  cacheMaxEntries?: number;
  usageFlushMs?: number;
  /** How often the `key_idle_revoke_days` policy runs (0: never; tests call revokeIdleKeys). */
  idleSweepMs?: number;
  now?: () => number;
};

/**
 * Mints a key straight through the control DB for an account, creating the account if it
 * does not exist (`bulwark admin create-key`, test helpers). Expires per account policy.
 */
export async function createOperatorKey(
  db: Db,
  opts: { accountName: string; level: Permission; name?: string },
): Promise<{ key: string; row: repo.KeyRow; account: repo.AccountRow & { created: boolean } }> {
  return withTx(db, async (tx) => {
    const account = await repo.ensureAccount(tx, opts.accountName);
    const { key, lookupPrefix } = generateApiKey();
    const row = await repo.insertKey(tx, {
      accountId: account.id,
      name: opts.name ?? 'operator key',
      lookupPrefix,
      keyHash: hashApiKey(key),
      level: opts.level,
      databases: null,
      explorer: opts.level === 'admin',
      decoy: false,
      createdByKeyId: null,
      expiresAt: new Date(Date.now() + account.max_key_lifetime_days * DAY_MS),
    });
    const operator = { actorType: 'operator' as const, accountId: account.id };
    if (account.created) {
      await recordAudit(tx, {
        ...operator,
        action: 'account.created',
        targetType: 'account',
        targetId: account.id,
      });
    }
    await recordAudit(tx, {
      ...operator,
      action: 'key.created',
      targetType: 'key',
      targetId: row.id,
      details: { name: row.name, level: row.level, via: 'operator' },
    });
    return { key, row, account };
  });
}

export function createKeysService(deps: KeysServiceDeps) {
  const { db, log } = deps;
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
    recordAuditNow(db, {
      action,
      outcome: 'denied',
      actorType: 'key',
      actorId: e.keyId,
      accountId: e.accountId,
      sourceIp: e.sourceIp,
      targetType: 'key',
      targetId: e.keyId,
      details: { key_prefix: e.prefix, ...details },
    }).catch((err: Error) =>
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
          await recordAudit(tx, {
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

  /** Revokes, NOTIFYs every replica on commit, and evicts here at once (no wait for our own NOTIFY). */
  const revokeAndNotify = async (
    filter: repo.KeyFilter,
    id: string,
    event: (row: repo.KeyRow) => AuditEventDraft,
  ) => {
    const { row, prefixes } = await withTx(db, async (tx) => {
      const row = await repo.revokeKey(tx, filter, id);
      if (row) await recordAudit(tx, event(row));
      const prefixes = row ? await repo.keyChainPrefixes(tx, row.id) : [];
      await repo.notifyKeysChanged(tx, prefixes);
      return { row, prefixes };
    });
    for (const p of prefixes) cache.evict(p);
    return row;
  };

  async function revokeIdleKeys(): Promise<number> {
    const evicted: string[] = [];
    const n = await withTx(db, async (tx) => {
      const revoked = await repo.revokeIdleKeys(tx);
      const prefixes: string[] = [];
      for (const k of revoked) {
        prefixes.push(...(await repo.keyChainPrefixes(tx, k.id)));
        await recordAudit(tx, {
          action: 'key.revoked',
          accountId: k.account_id,
          targetType: 'key',
          targetId: k.id,
          details: { reason: 'idle' },
        });
      }
      await repo.notifyKeysChanged(tx, prefixes);
      evicted.push(...prefixes);
      if (revoked.length)
        log.info({ event: 'key.idle_revoked', key_ids: revoked.map((k) => k.id) }, 'idle keys revoked');
      return revoked.length;
    });
    for (const p of evicted) cache.evict(p);
    return n;
  }

  const idleTimer =
    deps.idleSweepMs === 0
      ? undefined
      : setInterval(
          () =>
            void revokeIdleKeys().catch((err: Error) =>
              log.warn({ err: { message: err.message } }, 'idle key sweep failed'),
            ),
          deps.idleSweepMs ?? 3_600_000,
        );
  idleTimer?.unref();

  /** Key management scope: a database-scoped admin sees only the keys it created itself. */
  const manageFilter = (caller: Caller): repo.KeyFilter => {
    requireLevel(caller, 'admin');
    return { accountId: caller.accountId, createdBy: caller.databases === null ? null : caller.keyId };
  };

  return {
    cacheStats: cache.stats,
    cacheSize: cache.size,
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

    /** A new key, shown once. It can never exceed its creator's rights. */
    async create(caller: Caller, input: CreateKeyInput): Promise<{ key: string; row: repo.KeyRow }> {
      requireLevel(caller, 'admin');
      if (RANK[input.level] > RANK[caller.level])
        throw forbidden('A key cannot be given more than its creator has');
      if (input.explorer && !caller.explorer)
        throw forbidden('A key cannot be given the explorer its creator lacks');
      if (input.decoy && caller.databases !== null) throw forbidden('A database-scoped key cannot do this');
      let databases = input.databases ? [...new Set(input.databases)] : null;
      if (caller.databases !== null) {
        if (databases === null) databases = [...caller.databases];
        else if (databases.some((d) => !caller.databases?.includes(d)))
          throw forbidden('A key cannot reach databases its creator cannot');
      }
      return withTx(db, async (tx) => {
        const account = await repo.findAccountById(tx, caller.accountId);
        const creator = await repo.getKey(tx, { accountId: caller.accountId }, caller.keyId);
        if (!account || !creator) throw notFound('Account');
        const depth = (await repo.keyChainDepth(tx, creator.id)) + 1;
        if (depth > MAX_KEY_CHAIN_DEPTH)
          throw badRequest(
            `A key cannot be created more than ${MAX_KEY_CHAIN_DEPTH} levels below an operator key; create it from a key higher in the chain`,
            { max_chain_depth: MAX_KEY_CHAIN_DEPTH },
          );
        const t = now();
        const limit = Math.min(t + account.max_key_lifetime_days * DAY_MS, creator.expires_at.getTime());
        let expiresAt = new Date(limit);
        if (input.expiresAt) {
          const at = input.expiresAt.getTime();
          if (at <= t) throw badRequest('expires_at must be in the future');
          if (at > t + account.max_key_lifetime_days * DAY_MS)
            throw badRequest(
              `expires_at is beyond the account's maximum key lifetime (${account.max_key_lifetime_days} days)`,
            );
          if (at > creator.expires_at.getTime())
            throw badRequest('expires_at must not be later than the expiry of the key creating it');
          expiresAt = input.expiresAt;
        }
        const { key, lookupPrefix } = generateApiKey();
        const row = await repo.insertKey(tx, {
          accountId: caller.accountId,
          name: input.name,
          lookupPrefix,
          keyHash: hashApiKey(key),
          level: input.level,
          databases,
          explorer: Boolean(input.explorer),
          decoy: Boolean(input.decoy),
          createdByKeyId: caller.keyId,
          expiresAt,
        });
        await recordAudit(
          tx,
          auditFromCaller(caller, {
            action: 'key.created',
            targetType: 'key',
            targetId: row.id,
            details: {
              name: row.name,
              level: row.level,
              databases: row.databases,
              explorer: row.explorer,
              decoy: row.decoy,
              expires_at: row.expires_at.toISOString(),
            },
          }),
        );
        log.info(
          {
            event: 'key.created',
            key_id: row.id,
            account_id: row.account_id,
            by: caller.keyId,
            decoy: row.decoy,
          },
          'API key created',
        );
        return { key, row };
      });
    },

    async list(caller: Caller, page: { limit: number; after: PageCursor | null }): Promise<repo.KeyRow[]> {
      return repo.listKeys(db, manageFilter(caller), { limit: page.limit + 1, after: page.after });
    },

    async get(caller: Caller, id: string): Promise<repo.KeyRow> {
      const row = await repo.getKey(db, manageFilter(caller), id);
      if (!row) throw notFound('Key');
      return row;
    },

    /** Revokes at once on every replica (NOTIFY on commit), along with every key it created. */
    async revoke(caller: Caller, id: string): Promise<repo.KeyRow> {
      const row = await revokeAndNotify(manageFilter(caller), id, (r) =>
        auditFromCaller(caller, {
          action: 'key.revoked',
          targetType: 'key',
          targetId: r.id,
          details: { name: r.name },
        }),
      );
      if (!row) throw notFound('Key');
      log.info(
        { event: 'key.revoked', key_id: row.id, account_id: row.account_id, by: caller.keyId },
        'API key revoked',
      );
      return row;
    },

    /** Tells every replica to drop every cached key of an account (call after suspending it). */
    async accountChanged(accountId: string): Promise<void> {
      await db.query('SELECT pg_notify($1, $2)', [repo.KEYS_CHANNEL, `account:${accountId}`]);
    },

    revokeIdleKeys,
    flushUsage: () => usage.flush(),

    async close(): Promise<void> {
      clearInterval(idleTimer);
      await usage.close().catch(() => {});
      await ownListener?.close();
    },
  };
}

export type KeysService = ReturnType<typeof createKeysService>;
