/**
 * Key management: create (shown once), list, show, revoke (with every key it created, on every
 * replica at once) and the idle-key sweeper. Authentication — the hot path — is
 * keys.authenticator.ts; this service only tells it which cached keys to drop.
 */
import type { Logger } from 'pino';
import { generateApiKey, hashApiKey } from '../../../shared/api-key.ts';
import { badRequest, forbidden, notFound } from '../../../shared/errors.ts';
import { type Db, withTx } from '../../db/pool.ts';
import { type Caller, callerActor, type Permission, requireLevel } from '../../http/caller.ts';
import type { PageCursor } from '../../http/pagination.ts';
import {
  type AuditEventDraft,
  type AuditService,
  auditFromCaller,
  recordAudit,
} from '../audit/audit.service.ts';
import type { RequireStepUp } from '../sessions/step-up.ts';
import type { KeyAuthenticator } from './keys.authenticator.ts';
import * as repo from './keys.repo.ts';

export { displayPrefix } from './keys.authenticator.ts';

const DAY_MS = 86_400_000;

const RANK: Record<Permission, number> = { read: 1, write: 2, admin: 3 };

/**
 * Keys minting keys: at most this many levels below an operator key. Revocation reaches every
 * descendant however deep (chains made before this bound included); the bound keeps the chain
 * walks short and delegation legible.
 */
export const MAX_KEY_CHAIN_DEPTH = 16;

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
  audit: Pick<AuditService, 'record'>;
  /** This process's authenticator: a revoked key leaves its cache at once (other replicas: by NOTIFY). */
  authenticator: Pick<KeyAuthenticator, 'evict'>;
  /** How often the `key_idle_revoke_days` policy runs (0: never; tests call revokeIdleKeys). */
  idleSweepMs?: number;
  /**
   * The sessions module's step-up check: a signed-in user mints a key only within minutes of
   * re-authenticating (a stolen session must not turn itself into a lasting credential).
   */
  stepUp?: RequireStepUp;
  now?: () => number;
};

/**
 * Mints a key straight through the control DB for an account, creating the account if it
 * does not exist (`bulwark admin create-key`, test helpers). Expires per account policy. Its
 * events go through the plain `recordAudit`: the CLI runs no chainer (the server's finds them).
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
  const { db, log, audit } = deps;
  const now = deps.now ?? Date.now;
  const evict = (prefix: string) => deps.authenticator.evict(prefix);

  /** Revokes, NOTIFYs every replica on commit, and evicts here at once (no wait for our own NOTIFY). */
  const revokeAndNotify = async (
    filter: repo.KeyFilter,
    id: string,
    event: (row: repo.KeyRow) => AuditEventDraft,
  ) => {
    const { row, prefixes } = await withTx(db, async (tx) => {
      const row = await repo.revokeKey(tx, filter, id);
      if (row) await audit.record(tx, event(row));
      const prefixes = row ? await repo.keyChainPrefixes(tx, row.id) : [];
      await repo.notifyKeysChanged(tx, prefixes);
      return { row, prefixes };
    });
    for (const p of prefixes) evict(p);
    return row;
  };

  async function revokeIdleKeys(): Promise<number> {
    const evicted: string[] = [];
    const n = await withTx(db, async (tx) => {
      const revoked = await repo.revokeIdleKeys(tx);
      const prefixes: string[] = [];
      for (const k of revoked) {
        prefixes.push(...(await repo.keyChainPrefixes(tx, k.id)));
        await audit.record(tx, {
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
    for (const p of evicted) evict(p);
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
    return {
      accountId: caller.accountId,
      createdBy: caller.databases === null ? null : callerActor(caller).id,
    };
  };

  return {
    /** A new key, shown once. It can never exceed its creator's rights. */
    async create(caller: Caller, input: CreateKeyInput): Promise<{ key: string; row: repo.KeyRow }> {
      // Keys mint keys as admins; a signed-in user of any role mints keys up to their role (the
      // level and explorer of a user come from the role): a key never exceeds its creator's role.
      if (caller.kind === 'key') requireLevel(caller, 'admin');
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
      if (caller.kind === 'user' && deps.stepUp) await deps.stepUp(caller, 'create an API key');
      return withTx(db, async (tx) => {
        const account = await repo.findAccountById(tx, caller.accountId);
        if (!account) throw notFound('Account');
        // A key's creator: another key (the chain is bounded, the expiry inherited) or a signed-in user.
        const creator =
          caller.kind === 'key' ? await repo.getKey(tx, { accountId: caller.accountId }, caller.keyId) : null;
        if (caller.kind === 'key') {
          if (!creator) throw notFound('Account');
          const depth = (await repo.keyChainDepth(tx, creator.id)) + 1;
          if (depth > MAX_KEY_CHAIN_DEPTH)
            throw badRequest(
              `A key cannot be created more than ${MAX_KEY_CHAIN_DEPTH} levels below an operator key; create it from a key higher in the chain`,
              { max_chain_depth: MAX_KEY_CHAIN_DEPTH },
            );
        }
        const t = now();
        const creatorExpiry = creator?.expires_at.getTime() ?? Number.POSITIVE_INFINITY;
        const limit = Math.min(t + account.max_key_lifetime_days * DAY_MS, creatorExpiry);
        let expiresAt = new Date(limit);
        if (input.expiresAt) {
          const at = input.expiresAt.getTime();
          if (at <= t) throw badRequest('expires_at must be in the future');
          if (at > t + account.max_key_lifetime_days * DAY_MS)
            throw badRequest(
              `expires_at is beyond the account's maximum key lifetime (${account.max_key_lifetime_days} days)`,
            );
          if (at > creatorExpiry)
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
          createdByKeyId: caller.kind === 'key' ? caller.keyId : null,
          createdByUserId: caller.kind === 'user' ? caller.userId : null,
          expiresAt,
        });
        await audit.record(
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
            by: callerActor(caller).id,
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
        { event: 'key.revoked', key_id: row.id, account_id: row.account_id, by: callerActor(caller).id },
        'API key revoked',
      );
      return row;
    },

    /** Tells every replica to drop every cached key of an account (call after suspending it). */
    async accountChanged(accountId: string): Promise<void> {
      await repo.notifyAccountChanged(db, accountId);
    },

    revokeIdleKeys,

    close(): void {
      clearInterval(idleTimer);
    },
  };
}

export type KeysService = ReturnType<typeof createKeysService>;
