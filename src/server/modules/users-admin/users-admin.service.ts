/**
 * The admin API over people: who the users are, their sessions, and ending one session. Platform
 * admins see everyone; an account's owners and admins see the members of the account they act in
 * (the policy table lets no one else here), and manage the sessions of those at or below their own
 * role who are not platform admins. Anyone else's user or session is a 404.
 */
import type { Logger } from 'pino';
import { notFound } from '../../../shared/errors.ts';
import { type Db, withTx } from '../../db/pool.ts';
import type { Caller, UserPrincipal } from '../../http/caller.ts';
import type { PageCursor } from '../../http/pagination.ts';
import type { AuditService } from '../audit/audit.service.ts';
import type { SessionAuthenticator } from '../sessions/session-auth.ts';
import { notifySessionRevoked, revokeSession } from '../sessions/sessions.repo.ts';
import * as repo from './users-admin.repo.ts';

export type UsersAdminDeps = {
  db: Db;
  log: Logger;
  audit: Pick<AuditService, 'record'>;
  /** This process's session cache: a revoked session drops from it at once (other replicas: NOTIFY). */
  auth: Pick<SessionAuthenticator, 'evictSession'>;
};

/** Who asks: a signed-in user, and the account they act in (if any). */
export type Viewer = { user: UserPrincipal; caller: Caller | null };

type Page = { limit: number; after: PageCursor | null };

/** null: the platform-wide view; otherwise the one account whose members the viewer sees. */
function scopeOf(v: Viewer): string | null {
  if (v.user.platformAdmin) return null;
  // The policy table only lets account owners and admins (acting in their account) this far.
  if (!v.caller) throw notFound('User');
  return v.caller.accountId;
}

const RANKED = ['viewer', 'member', 'admin', 'owner'] as const;

/**
 * Whose sessions the viewer manages: everyone's (platform admins), or those of the account's
 * members at or below the viewer's role who are not platform admins — an admin cannot sign out
 * the owner, nobody but a platform admin signs out a platform admin.
 */
function sessionScopeOf(v: Viewer): repo.SessionScope {
  const accountId = scopeOf(v);
  if (accountId === null) return null;
  const role = v.caller?.kind === 'user' ? v.caller.role : 'viewer';
  return { accountId, roles: RANKED.slice(0, RANKED.indexOf(role) + 1) };
}

export function createUsersAdminService(deps: UsersAdminDeps) {
  const { db, log } = deps;
  return {
    /** `limit + 1` rows (the extra one says there is more). */
    listUsers(v: Viewer, page: Page): Promise<repo.AdminUserRow[]> {
      return repo.listUsers(db, scopeOf(v), { limit: page.limit + 1, after: page.after });
    },

    async listSessions(v: Viewer, userId: string, page: Page): Promise<repo.AdminSessionRow[]> {
      if (!(await repo.userManaged(db, sessionScopeOf(v), userId))) throw notFound('User');
      return repo.listSessions(db, userId, { limit: page.limit + 1, after: page.after });
    },

    /** Ends one session on every replica (NOTIFY on commit), audited; an ended one is returned as is. */
    async revokeSession(
      v: Viewer,
      sessionId: string,
      requestId: string | null,
    ): Promise<repo.AdminSessionRow> {
      const scope = sessionScopeOf(v);
      const row = await withTx(db, async (tx) => {
        const found = await repo.findManagedSession(tx, scope, sessionId);
        if (!found) throw notFound('Session');
        if (found.revoked_at !== null) return found;
        await revokeSession(tx, sessionId, 'revoked');
        await notifySessionRevoked(tx, sessionId);
        await deps.audit.record(tx, {
          action: 'session.revoked',
          actorType: 'user',
          actorId: v.user.userId,
          targetType: 'session',
          targetId: sessionId,
          accountId: scope?.accountId ?? null,
          sourceIp: v.user.sourceIp,
          requestId,
          details: { reason: 'revoked', user_id: found.user_id },
        });
        return (await repo.findManagedSession(tx, scope, sessionId)) ?? found;
      });
      deps.auth.evictSession(sessionId);
      log.info(
        { event: 'session.revoked', session_id: sessionId, user_id: row.user_id, by: v.user.userId },
        'session revoked',
      );
      return row;
    },
  };
}

export type UsersAdminService = ReturnType<typeof createUsersAdminService>;
