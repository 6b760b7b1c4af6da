/**
 * Sessions of signed-in users: issued at sign-in (the login and OIDC flows call `issue`), rotated
 * on every refresh, revoked by logout, by refresh-token reuse and by suspension. Revocations
 * reach every replica's session cache through NOTIFY on commit (session-auth.ts).
 *
 * A refresh token is `bwr_` + 32 random bytes (base64url), stored only as its SHA-256. Rotation
 * marks the presented token used and inserts its successor in one transaction, under a row lock
 * on the session; presenting a used token revokes the whole session (someone else has it).
 */
import type { Logger } from 'pino';
import { generateToken, hashToken } from '../../../shared/api-key.ts';
import { conflict, forbidden, notFound, unauthorized } from '../../../shared/errors.ts';
import { type Db, type Tx, withTx } from '../../db/pool.ts';
import type { UserPrincipal } from '../../http/caller.ts';
import type { AuditService } from '../audit/audit.service.ts';
import { keyPrefixesOfUser, notifyKeysChanged } from '../keys/keys.repo.ts';
import type { SessionAuthenticator } from './session-auth.ts';
import type { SessionTokens } from './session-tokens.ts';
import * as repo from './sessions.repo.ts';

export const REFRESH_TOKEN_PREFIX = 'bwr_';
export const REFRESH_FAILED_MESSAGE = 'Invalid, expired or revoked refresh token';
const USER_AGENT_MAX = 500;
const DAY_MS = 86_400_000;

/**
 * A session's tokens as sign-in hands them out, and (never sent as such) the session they belong
 * to: the dashboard's cookies need its id (the CSRF token is bound to it) and its end.
 */
export type IssuedTokens = {
  access_token: string;
  refresh_token: string;
  expires_in: number;
  session: { id: string; expiresAt: Date };
};

/** The part of IssuedTokens an API client gets (the tokens and the access token's lifetime). */
export const tokensBody = (t: Pick<IssuedTokens, 'access_token' | 'refresh_token' | 'expires_in'>) => ({
  access_token: t.access_token,
  refresh_token: t.refresh_token,
  expires_in: t.expires_in,
});

export type SessionsServiceDeps = {
  db: Db;
  log: Logger;
  audit: Pick<AuditService, 'record' | 'recordNow'>;
  tokens: Pick<SessionTokens, 'sign'>;
  /** This process's session cache: revocations drop from it at once (other replicas: NOTIFY). */
  auth: Pick<SessionAuthenticator, 'evictSession' | 'evictUser'>;
  /** This process's key cache: the keys of a suspended user drop from it at once. */
  keys: { evict(lookupPrefix: string): void };
  refreshTokenTtlDays: number;
  /** Usernames the server's configuration keeps suspended (normalised; config `suspendedUsers`). */
  suspendedUsers?: readonly string[];
  now?: () => number;
};

type ClientInfo = { sourceIp: string | null; userAgent?: string | null; requestId?: string | null };

const boundedAgent = (ua: string | null | undefined) =>
  typeof ua === 'string' && ua.length > 0 ? ua.slice(0, USER_AGENT_MAX) : null;

export function createSessionsService(deps: SessionsServiceDeps) {
  const { db, log, audit } = deps;
  const now = deps.now ?? Date.now;
  // Sessions that ended a day ago are deleted opportunistically (at most every 10 minutes, 1,000
  // at a time, off the request path), so sign-ins cannot grow the tables without bound.
  let lastPrune = 0;
  const maybePrune = () => {
    if (now() - lastPrune < 600_000) return;
    lastPrune = now();
    void repo
      .deleteEndedSessions(db, 1_000)
      .catch((err: Error) => log.warn({ err: { message: err.message } }, 'session prune failed'));
  };

  const configSuspended: ReadonlySet<string> = new Set(deps.suspendedUsers ?? []);

  /**
   * Sets a user's status; on suspension ends every session. Either way the user's keys (and their
   * children) and sessions are dropped from every replica's caches on commit. Audited. False when
   * the status was already that.
   */
  async function changeStatus(
    userId: string,
    suspended: boolean,
    by: { actorType: 'user' | 'system'; actorId: string | null; sourceIp: string | null },
    requestId: string | null,
    accountId: string | null,
  ): Promise<boolean> {
    let keyPrefixes: string[] = [];
    const ended = await withTx(db, async (tx) => {
      const changed = await repo.setUserStatus(tx, userId, suspended ? 'suspended' : 'active');
      if (!changed) return null;
      const revoked = suspended ? await repo.revokeUserSessions(tx, userId, 'user_suspended') : [];
      await repo.notifyUserChanged(tx, userId);
      // The keys they created (and those keys' children) stop or resume with them.
      keyPrefixes = await keyPrefixesOfUser(tx, userId);
      await notifyKeysChanged(tx, keyPrefixes);
      const actor = { actorType: by.actorType, actorId: by.actorId, sourceIp: by.sourceIp, requestId };
      await audit.record(tx, {
        ...actor,
        action: suspended ? 'user.suspended' : 'user.reactivated',
        targetType: 'user',
        targetId: userId,
        accountId,
        details: suspended
          ? {
              sessions_revoked: revoked.length,
              ...(by.actorType === 'system' ? { by: 'configuration' } : {}),
            }
          : {},
      });
      for (const id of revoked) {
        await audit.record(tx, {
          ...actor,
          action: 'session.revoked',
          targetType: 'session',
          targetId: id,
          details: { reason: 'user_suspended', user_id: userId },
        });
      }
      return revoked;
    });
    deps.auth.evictUser(userId);
    for (const p of keyPrefixes) deps.keys.evict(p);
    return ended !== null;
  }

  async function newRefreshToken(tx: Tx, sessionId: string): Promise<string> {
    const token = generateToken(REFRESH_TOKEN_PREFIX, 32);
    await repo.insertRefreshToken(tx, sessionId, hashToken(token));
    return token;
  }

  async function start(tx: Tx, input: { userId: string } & ClientInfo) {
    const expiresAt = new Date(now() + deps.refreshTokenTtlDays * DAY_MS);
    const session = await repo.insertSession(tx, {
      userId: input.userId,
      expiresAt,
      sourceIp: input.sourceIp,
      userAgent: boundedAgent(input.userAgent),
    });
    const refresh = await newRefreshToken(tx, session.id);
    await audit.record(tx, {
      action: 'session.issued',
      actorType: 'user',
      actorId: input.userId,
      targetType: 'session',
      targetId: session.id,
      sourceIp: input.sourceIp,
      requestId: input.requestId ?? null,
      details: { expires_at: expiresAt.toISOString() },
    });
    return { sessionId: session.id, refresh, expiresAt };
  }

  /** Both revocation paths end the same way: the row, the audit event, the NOTIFY, the local cache. */
  async function revokeInTx(
    tx: Tx,
    sessionId: string,
    reason: repo.RevokeReason,
    event: { action: string; outcome?: 'success' | 'denied'; actorId: string; sourceIp: string | null },
    requestId: string | null,
  ): Promise<boolean> {
    const revoked = await repo.revokeSession(tx, sessionId, reason);
    if (!revoked) return false;
    await repo.notifySessionRevoked(tx, sessionId);
    await audit.record(tx, {
      action: event.action,
      outcome: event.outcome ?? 'success',
      actorType: 'user',
      actorId: event.actorId,
      targetType: 'session',
      targetId: sessionId,
      sourceIp: event.sourceIp,
      requestId,
      details: { reason },
    });
    return true;
  }

  return {
    /**
     * A new session for a user whose sign-in was just checked: a signed access token, an opaque
     * refresh token (shown once) and the access token's lifetime in seconds. Pass `tx` to make the
     * session part of the sign-in's transaction (the access token is signed after the insert).
     */
    async issue(input: { userId: string } & ClientInfo, tx?: Tx): Promise<IssuedTokens> {
      maybePrune();
      const started = tx ? await start(tx, input) : await withTx(db, (t) => start(t, input));
      const access = await deps.tokens.sign(input.userId, started.sessionId);
      return {
        access_token: access.token,
        refresh_token: started.refresh,
        expires_in: access.expiresIn,
        session: { id: started.sessionId, expiresAt: started.expiresAt },
      };
    },

    /**
     * A used refresh token for a new pair. A token presented a second time revokes its session
     * (committed before the refusal) and is audited as `session.refresh_reused`.
     */
    async refresh(refreshToken: string, client: ClientInfo): Promise<IssuedTokens> {
      if (!refreshToken.startsWith(REFRESH_TOKEN_PREFIX) || refreshToken.length > 200)
        throw unauthorized(REFRESH_FAILED_MESSAGE);
      const outcome = await withTx(db, async (tx) => {
        const row = await repo.findRefreshTokenForUpdate(tx, hashToken(refreshToken));
        if (!row) return { ok: false as const };
        if (row.used_at) {
          const revoked = await revokeInTx(
            tx,
            row.session_id,
            'refresh_reuse',
            {
              action: 'session.refresh_reused',
              outcome: 'denied',
              actorId: row.user_id,
              sourceIp: client.sourceIp,
            },
            client.requestId ?? null,
          );
          return { ok: false as const, reused: { sessionId: row.session_id, userId: row.user_id, revoked } };
        }
        if (
          row.session_revoked_at ||
          row.session_expires_at.getTime() <= now() ||
          row.user_status !== 'active'
        )
          return { ok: false as const };
        await repo.markRefreshTokenUsed(tx, row.id);
        await repo.touchSession(tx, row.session_id);
        const refresh = await newRefreshToken(tx, row.session_id);
        return {
          ok: true as const,
          refresh,
          sessionId: row.session_id,
          userId: row.user_id,
          expiresAt: row.session_expires_at,
        };
      });
      if (!outcome.ok) {
        if (outcome.reused) {
          deps.auth.evictSession(outcome.reused.sessionId);
          log.warn(
            {
              event: 'session.refresh_reused',
              session_id: outcome.reused.sessionId,
              user_id: outcome.reused.userId,
              ip: client.sourceIp,
            },
            'refresh token reused: session revoked',
          );
        }
        throw unauthorized(REFRESH_FAILED_MESSAGE);
      }
      const access = await deps.tokens.sign(outcome.userId, outcome.sessionId);
      return {
        access_token: access.token,
        refresh_token: outcome.refresh,
        expires_in: access.expiresIn,
        session: { id: outcome.sessionId, expiresAt: outcome.expiresAt },
      };
    },

    /** Ends the caller's session: the very next request with its access or refresh token is refused. */
    async logout(user: UserPrincipal, requestId: string | null): Promise<void> {
      await withTx(db, (tx) =>
        revokeInTx(
          tx,
          user.sessionId,
          'logout',
          { action: 'session.logout', actorId: user.userId, sourceIp: user.sourceIp },
          requestId,
        ),
      );
      deps.auth.evictSession(user.sessionId);
    },

    /**
     * Ends the live session a refresh token belongs to (a browser signing in again: its previous
     * session is logged out). An unknown, used or already-ended token changes nothing.
     */
    async endByRefreshToken(refreshToken: string, client: ClientInfo): Promise<boolean> {
      if (!refreshToken.startsWith(REFRESH_TOKEN_PREFIX) || refreshToken.length > 200) return false;
      const ended = await withTx(db, async (tx) => {
        const row = await repo.findRefreshTokenForUpdate(tx, hashToken(refreshToken));
        if (!row || row.used_at || row.session_revoked_at) return null;
        const event = { action: 'session.logout', actorId: row.user_id, sourceIp: client.sourceIp };
        const revoked = await revokeInTx(tx, row.session_id, 'logout', event, client.requestId ?? null);
        return revoked ? row.session_id : null;
      });
      if (ended) deps.auth.evictSession(ended);
      return ended !== null;
    },

    /** The signed-in user and their memberships. */
    async me(user: UserPrincipal) {
      const row = await repo.findUser(db, user.userId);
      if (!row) throw unauthorized();
      const memberships = await repo.listMemberships(db, user.userId);
      return { user: row, memberships };
    },

    /**
     * Suspends a user (platform admin; or an owner of every account the user is a member of): every
     * session ends, and every key they created stops working, on the next request on every replica.
     * A user the server's configuration keeps suspended (`suspendedUsers`) cannot be reactivated.
     */
    async setSuspended(
      actor: UserPrincipal,
      userId: string,
      suspended: boolean,
      requestId: string | null,
    ): Promise<repo.UserRow> {
      const target = await repo.findUser(db, userId);
      const ownedOver = actor.platformAdmin ? [] : await repo.accountsOwnedOver(db, actor.userId, userId);
      if (!target || (!actor.platformAdmin && ownedOver.length === 0)) throw notFound('User');
      if (target.id === actor.userId) throw forbidden('You cannot suspend or reactivate yourself');
      if (target.platform_admin && !actor.platformAdmin)
        throw forbidden('Only a platform admin can suspend or reactivate a platform admin');
      if (!actor.platformAdmin && (await repo.memberOutsideOwned(db, actor.userId, userId)))
        throw forbidden(
          'This user also belongs to an account you do not own: only a platform admin can suspend or reactivate them',
        );
      if (!suspended && target.username !== null && configSuspended.has(target.username))
        throw conflict("This user is suspended by the server's configuration (suspendedUsers)");
      const changed = await changeStatus(
        userId,
        suspended,
        { actorType: 'user', actorId: actor.userId, sourceIp: actor.sourceIp },
        requestId,
        ownedOver.length === 1 ? ownedOver[0]! : null,
      );
      if (!changed) {
        const current = await repo.findUser(db, userId);
        if (!current) throw notFound('User');
        return current;
      }
      log.info(
        { event: suspended ? 'user.suspended' : 'user.reactivated', user_id: userId, by: actor.userId },
        suspended ? 'user suspended' : 'user reactivated',
      );
      return { ...target, status: suspended ? 'suspended' : 'active' };
    },

    /**
     * At start: the users the configuration names are suspended (their sessions and keys end), as
     * if by a platform admin, whatever the API did since. Unknown names are skipped (a user made
     * later is suspended at the next start). Returns the usernames it suspended now.
     */
    async applyConfigSuspensions(): Promise<string[]> {
      if (configSuspended.size === 0) return [];
      const done: string[] = [];
      for (const u of await repo.findActiveUsersByUsername(db, [...configSuspended])) {
        if (
          await changeStatus(u.id, true, { actorType: 'system', actorId: null, sourceIp: null }, null, null)
        )
          done.push(u.username);
      }
      if (done.length > 0)
        log.info({ event: 'user.suspended', users: done.length }, 'users suspended by the configuration');
      return done;
    },
  };
}

export type SessionsService = ReturnType<typeof createSessionsService>;
