/**
 * The admin API over people: who the users are, their sessions, and ending one session. Platform
 * admins see everyone; an account's owners and admins see the members of the account they act in
 * (the policy table lets no one else here), and manage the sessions of those at or below their own
 * role who are not platform admins. Anyone else's user or session is a 404.
 */
import type { Logger } from 'pino';
import { conflict, forbidden, notFound } from '../../../shared/errors.ts';
import { type Db, withTx } from '../../db/pool.ts';
import type { Caller, UserPrincipal } from '../../http/caller.ts';
import type { PageCursor } from '../../http/pagination.ts';
import type { AuditService } from '../audit/audit.service.ts';
import { keyPrefixesOfUser, notifyKeysChanged } from '../keys/keys.repo.ts';
import type { SessionAuthenticator } from '../sessions/session-auth.ts';
import { notifySessionRevoked, notifyUserChanged, revokeSession } from '../sessions/sessions.repo.ts';
import type { RequireStepUp } from '../sessions/step-up.ts';
import * as repo from './users-admin.repo.ts';

export type UsersAdminDeps = {
  db: Db;
  log: Logger;
  audit: Pick<AuditService, 'record'>;
  /** This process's session cache: a revoked session drops from it at once (other replicas: NOTIFY). */
  auth: Pick<SessionAuthenticator, 'evictSession' | 'evictUser'>;
  /** This process's key cache: the keys of a demoted or removed member drop from it at once. */
  keys: { evict(lookupPrefix: string): void };
  /**
   * Step-up (sessions/step-up.ts): a promotion raises what another person's session and keys may
   * do, so a stolen session must not be able to make one; demotions and removals (what an
   * incident calls for) are never asked.
   */
  stepUp: RequireStepUp;
};

/** Who asks: a signed-in user, and the account they act in (if any). */
export type Viewer = {
  user: UserPrincipal;
  caller: Caller | null;
  /** The account named by Bulwark-Account (a platform admin need not be a member of it). */
  accountName?: string | null;
};

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

/**
 * The account whose members the viewer manages, and with what rights: a platform admin any member
 * to any role; an owner any member; an admin members and viewers, to no role above admin.
 */
async function memberScopeOf(
  db: Db,
  v: Viewer,
): Promise<{ accountId: string; role: repo.MemberRole | 'platform' }> {
  if (!v.caller) {
    // A platform admin names any account with Bulwark-Account; in no account, nobody is a member.
    const accountId =
      v.user.platformAdmin && v.accountName ? await repo.findAccountId(db, v.accountName) : null;
    if (accountId === null) throw notFound('User');
    return { accountId, role: 'platform' };
  }
  if (v.user.platformAdmin) return { accountId: v.caller.accountId, role: 'platform' };
  return { accountId: v.caller.accountId, role: v.caller.kind === 'user' ? v.caller.role : 'viewer' };
}

function assertMayManage(
  by: repo.MemberRole | 'platform',
  target: repo.MemberRole,
  to: repo.MemberRole | null,
): void {
  if (by === 'platform' || by === 'owner') return;
  if (by !== 'admin') throw forbidden(`Your role (${by}) does not allow members.manage`);
  if (target !== 'member' && target !== 'viewer')
    throw forbidden(`An admin manages only members and viewers, not an ${target}`);
  if (to === 'owner') throw forbidden('An admin cannot give a role above their own');
}

export function createUsersAdminService(deps: UsersAdminDeps) {
  const { db, log } = deps;

  /**
   * A role change (`to`) or a removal (`to` null) in the viewer's account, audited; every replica
   * drops the user's cached sessions and their keys' cache entries on commit, so the next request
   * acts with the new role (keys above it, or of a removed member, are refused).
   */
  async function changeMember(
    v: Viewer,
    userId: string,
    to: repo.MemberRole | null,
    requestId: string | null,
  ): Promise<{ from: repo.MemberRole; changed: boolean; accountId: string }> {
    const scope = await memberScopeOf(db, v);
    // A promotion asks for the step-up window before anything is locked (the check reads the
    // session row); the transaction refuses one that became a promotion meanwhile.
    const current = to ? (await repo.findMember(db, scope.accountId, userId))?.role : null;
    const promoting = to !== null && current != null && RANKED.indexOf(to) > RANKED.indexOf(current);
    if (promoting && current) {
      assertMayManage(scope.role, current, to);
      await deps.stepUp(
        { userId: v.user.userId, sessionId: v.user.sessionId },
        'give a member a higher role',
      );
    }
    let prefixes: string[] = [];
    const out = await withTx(db, async (tx) => {
      const members = await repo.lockMembers(tx, scope.accountId);
      const target = members.find((m) => m.user_id === userId);
      if (!target) throw notFound('User');
      assertMayManage(scope.role, target.role, to);
      if (to === target.role) return { from: target.role, changed: false };
      if (to && !promoting && RANKED.indexOf(to) > RANKED.indexOf(target.role))
        throw conflict('The member’s role changed meanwhile: try again');
      if (target.role === 'owner' && members.filter((m) => m.role === 'owner').length === 1)
        throw conflict(
          `This is the account's last owner: make another member owner before ${to ? 'demoting' : 'removing'} them`,
        );
      if (to) await repo.setMemberRole(tx, scope.accountId, userId, to);
      else await repo.deleteMember(tx, scope.accountId, userId);
      await notifyUserChanged(tx, userId);
      prefixes = await keyPrefixesOfUser(tx, userId);
      await notifyKeysChanged(tx, prefixes);
      await deps.audit.record(tx, {
        action: to ? 'member.role_changed' : 'member.removed',
        actorType: 'user',
        actorId: v.user.userId,
        targetType: 'user',
        targetId: userId,
        accountId: scope.accountId,
        sourceIp: v.user.sourceIp,
        requestId,
        details: to ? { from: target.role, to } : { role: target.role },
      });
      return { from: target.role, changed: true };
    });
    if (out.changed) {
      deps.auth.evictUser(userId);
      for (const p of prefixes) deps.keys.evict(p);
      log.info(
        {
          event: to ? 'member.role_changed' : 'member.removed',
          account_id: scope.accountId,
          user_id: userId,
          from: out.from,
          to,
          by: v.user.userId,
        },
        to ? 'member role changed' : 'member removed',
      );
    }
    return { ...out, accountId: scope.accountId };
  }

  return {
    /** Sets a member's role in the viewer's account; returns the member as the list shows them. */
    async setRole(
      v: Viewer,
      userId: string,
      role: repo.MemberRole,
      requestId: string | null,
    ): Promise<repo.AdminUserRow> {
      const { accountId } = await changeMember(v, userId, role, requestId);
      const row = await repo.findMember(db, accountId, userId);
      if (!row) throw notFound('User');
      return row;
    },

    /** Removes a member from the viewer's account. */
    async removeMember(v: Viewer, userId: string, requestId: string | null): Promise<void> {
      await changeMember(v, userId, null, requestId);
    },

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
