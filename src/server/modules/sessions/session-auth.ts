/**
 * The per-request check of a signed-in user: access token → claims (signature checked once per
 * token, then cached until it expires) → the session and its user (one lookup, cached while the
 * LISTEN connection is up and evicted on every replica by `session:<id>` / `user:<id>` NOTIFYs on
 * the key channel; while it is down every request reads the database: revocation fails closed)
 * → the account the user acts in on this request.
 */
import type { Logger } from 'pino';
import type { PgListener } from '../../db/pg-listener.ts';
import type { Db } from '../../db/pool.ts';
import type { MembershipRole, Permission, UserCaller, UserPrincipal } from '../../http/caller.ts';
import { KEYS_CHANNEL } from '../keys/keys.repo.ts';
import type { SessionTokens } from './session-tokens.ts';
import * as repo from './sessions.repo.ts';

export type SessionAuthFailure =
  | 'invalid_token'
  | 'unknown_session'
  | 'session_revoked'
  | 'session_expired'
  | 'user_suspended';

export type SessionAuthResult =
  | { ok: true; user: UserPrincipal; caller: UserCaller | null }
  | { ok: false; reason: SessionAuthFailure };

type SessionState = { row: repo.SessionAuthRow; memberships: repo.MembershipRow[] };

const LEVEL: Record<MembershipRole, Permission> = {
  owner: 'admin',
  admin: 'admin',
  member: 'write',
  viewer: 'read',
};

const SESSION = /^session:([0-9a-f-]{36})$/;
const USER = /^user:([0-9a-f-]{36})$/;

export function createSessionAuthenticator(deps: {
  db: Db;
  log: Logger;
  tokens: Pick<SessionTokens, 'verify'>;
  listener: PgListener;
  cacheTtlMs?: number;
  cacheMaxEntries?: number;
  now?: () => number;
}) {
  const now = deps.now ?? Date.now;
  const ttlMs = deps.cacheTtlMs ?? 10_000;
  const maxEntries = deps.cacheMaxEntries ?? 10_000;
  const cache = new Map<string, { state: SessionState; fetchedAt: number }>();
  // Bumped by every eviction: a load that started before one is used once but not cached.
  let epoch = 0;
  const stats = { hits: 0, misses: 0, evictions: 0 };

  const evictSession = (id: string) => {
    epoch++;
    if (cache.delete(id)) stats.evictions++;
  };
  const evictUser = (userId: string) => {
    epoch++;
    for (const [id, e] of cache) {
      if (e.state.row.user_id === userId) {
        cache.delete(id);
        stats.evictions++;
      }
    }
  };
  const clear = () => {
    epoch++;
    cache.clear();
  };

  deps.listener.on(KEYS_CHANNEL, (payload) => {
    if (payload === '*') return clear();
    for (const part of payload.split(',')) {
      const s = SESSION.exec(part);
      if (s) evictSession(s[1]!);
      const u = USER.exec(part);
      if (u) evictUser(u[1]!);
    }
  });
  deps.listener.onConnect(clear);
  deps.listener.onDisconnect(clear);

  async function load(sessionId: string): Promise<SessionState | null> {
    const trusted = deps.listener.connected();
    if (trusted) {
      const hit = cache.get(sessionId);
      if (hit && now() - hit.fetchedAt < ttlMs) {
        stats.hits++;
        return hit.state;
      }
      if (hit) cache.delete(sessionId);
    }
    stats.misses++;
    const startedAt = epoch;
    const row = await repo.findSessionForAuth(deps.db, sessionId);
    if (!row) return null;
    const memberships = await repo.listMemberships(deps.db, row.user_id);
    const state = { row, memberships };
    if (trusted && deps.listener.connected() && epoch === startedAt) {
      if (cache.size >= maxEntries) {
        const oldest = cache.keys().next();
        if (!oldest.done) cache.delete(oldest.value);
      }
      cache.set(sessionId, { state, fetchedAt: now() });
    }
    return state;
  }

  /** The account this request acts in, or why there is none. */
  function pickAccount(
    memberships: repo.MembershipRow[],
    accountName: string | undefined,
  ): repo.MembershipRow | string {
    const live = memberships.filter((m) => m.account_status === 'active');
    if (accountName !== undefined) {
      return live.find((m) => m.account_name === accountName) ?? 'You are not a member of this account';
    }
    if (live.length === 1) return live[0]!;
    if (live.length === 0) return 'You are not a member of any account';
    return 'You are a member of several accounts: name one with the Bulwark-Account header';
  }

  return {
    stats,
    cacheSize: () => cache.size,
    /** Drops a session from this process's cache at once (logout; other replicas hear the NOTIFY). */
    evictSession,
    evictUser,

    async authenticate(token: string, sourceIp: string, accountName?: string): Promise<SessionAuthResult> {
      const claims = await deps.tokens.verify(token);
      if (!claims) return { ok: false, reason: 'invalid_token' };
      const state = await load(claims.sessionId);
      if (!state || state.row.user_id !== claims.userId) return { ok: false, reason: 'unknown_session' };
      if (state.row.revoked_at) return { ok: false, reason: 'session_revoked' };
      if (state.row.expires_at.getTime() <= now()) return { ok: false, reason: 'session_expired' };
      if (state.row.user_status !== 'active') return { ok: false, reason: 'user_suspended' };
      const picked = pickAccount(state.memberships, accountName);
      const user: UserPrincipal = {
        userId: claims.userId,
        sessionId: claims.sessionId,
        platformAdmin: state.row.platform_admin,
        sourceIp,
        accountProblem: typeof picked === 'string' ? picked : null,
      };
      if (typeof picked === 'string') return { ok: true, user, caller: null };
      const level = LEVEL[picked.role];
      return {
        ok: true,
        user,
        caller: {
          kind: 'user',
          userId: claims.userId,
          sessionId: claims.sessionId,
          role: picked.role,
          platformAdmin: state.row.platform_admin,
          accountId: picked.account_id,
          accountName: picked.account_name,
          level,
          databases: picked.databases,
          explorer: level === 'admin',
          sourceIp,
        },
      };
    },
  };
}

export type SessionAuthenticator = ReturnType<typeof createSessionAuthenticator>;
