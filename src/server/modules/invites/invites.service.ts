/**
 * Invite-only sign-up. Codes are made in batches (shown once, stored as SHA-256), listed without
 * their codes, revoked, and redeemed once: the redemption deletes the invite in the transaction
 * that creates the user, so of any number of concurrent redemptions of one code exactly one
 * creates a user.
 *
 * No oracle: a used, an expired and a never-issued code are the same statement finding no row,
 * and get the same answer (`invalid_invite`), as does a valid code with a username already
 * taken. The username and password policy is checked before the code is looked at, and every
 * redemption past it costs one argon2id hash (the new user's, or a throwaway one when no user is
 * created): neither the answer nor its time says whether a code exists.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { AppError, badRequest, forbidden, notFound } from '../../../shared/errors.ts';
import { type Db, type Queryable, type Tx, withTx } from '../../db/pool.ts';
import { type Caller, requireAccountScope, requireLevel } from '../../http/caller.ts';
import type { PageCursor } from '../../http/pagination.ts';
import type { AuditEventDraft, AuditService } from '../audit/audit.service.ts';
import { createPasswordGate, type PasswordGate } from '../people/password-gate.ts';
import { checkPasswordPolicy, hashPassword } from '../people/passwords.ts';
import { type NewLocalUser, USERNAME_PATTERN } from '../people/users.service.ts';
import type { IssuedTokens } from '../sessions/sessions.service.ts';
import type { RequireStepUp } from '../sessions/step-up.ts';
import { generateInviteCode, hashInviteCode } from './invite-code.ts';
import * as repo from './invites.repo.ts';

export const DEFAULT_INVITE_HOURS = 72;
const HOUR_MS = 3_600_000;

const RANK: Record<repo.InviteRole, number> = { viewer: 1, member: 2, admin: 3, owner: 4 };

/** The one answer to every redemption that cannot go through, whatever the reason. */
const INVALID_INVITE_MESSAGE =
  'This invite cannot be redeemed: the code is used, expired or unknown, or the username is taken';
const invalidInvite = () => new AppError('invalid_invite', INVALID_INVITE_MESSAGE);

/** Who is making invites, in the terms the rules need (an API key, a user, the operator, `up`). */
export type Inviter = {
  /** The inviter's own account and role in it; null for a platform admin acting outside one. */
  account: { id: string; name: string } | null;
  role: repo.InviteRole | null;
  platformAdmin: boolean;
  userId: string | null;
  /** The signed-in inviter's session (step-up re-authentication); null for keys, the operator, `up`. */
  sessionId?: string | null;
  /** The actor part of the audit events. */
  actor: Pick<AuditEventDraft, 'actorType' | 'actorId' | 'sourceIp' | 'requestId'>;
};

/**
 * The caller as an inviter. An account-scoped admin API key stands for an account admin (it may
 * invite admins, members and viewers of its own account; never an owner, never a platform admin).
 * A signed-in user invites with their role (`inviterOfUser`).
 */
export function inviterOfCaller(caller: Caller, requestId: string | null = null): Inviter {
  if (caller.kind === 'user') return inviterOfUser(caller, requestId);
  requireLevel(caller, 'admin');
  requireAccountScope(caller);
  return {
    account: { id: caller.accountId, name: caller.accountName },
    role: 'admin',
    platformAdmin: false,
    userId: null,
    actor: { actorType: 'key', actorId: caller.keyId, sourceIp: caller.sourceIp, requestId },
  };
}

/** What inviting needs of a signed-in user acting in an account. */
type UserInInvites = {
  accountId: string;
  accountName: string;
  userId: string;
  sessionId: string;
  role: repo.InviteRole;
  platformAdmin: boolean;
  /** null: the whole account (database grants make a user database-scoped). */
  databases: readonly string[] | null;
  sourceIp: string;
};

/**
 * A signed-in user invites with their role in the account they act in (owners and admins only,
 * the whole account), and a platform admin with their platform rights.
 */
function inviterOfUser(user: UserInInvites, requestId: string | null = null): Inviter {
  if (!user.platformAdmin) {
    if (user.role !== 'owner' && user.role !== 'admin')
      throw forbidden('Only owners and admins of the account can invite');
    if (user.databases !== null) throw forbidden('A user limited to some databases cannot invite');
  }
  return {
    account: { id: user.accountId, name: user.accountName },
    role: user.role,
    platformAdmin: user.platformAdmin,
    userId: user.userId,
    sessionId: user.sessionId,
    actor: { actorType: 'user', actorId: user.userId, sourceIp: user.sourceIp, requestId },
  };
}

/** A signed-in platform admin who acts in no account (the first admin, before any membership). */
export function inviterOfPlatformAdmin(
  user: { userId: string; sessionId?: string; sourceIp: string },
  requestId: string | null = null,
): Inviter {
  return {
    account: null,
    role: null,
    platformAdmin: true,
    userId: user.userId,
    sessionId: user.sessionId ?? null,
    actor: { actorType: 'user', actorId: user.userId, sourceIp: user.sourceIp, requestId },
  };
}

type CreateInvitesInput = {
  count: number;
  role: repo.InviteRole | null;
  /** Account name; default: the inviter's own account. */
  account?: string | undefined;
  platformAdmin?: boolean | undefined;
  expiresInHours?: number | undefined;
};

type IssuedInvite = { id: string; code: string; expiresAt: Date; row: repo.InviteRow };

/**
 * Makes `count` invites in `tx`, each audited (`invite.created`, never the code). The rules are the
 * caller's (`authorizeInvites`); this only writes. Used by the API, `bulwark admin invite` and `up`.
 */
export async function issueInvites(
  tx: Queryable,
  record: (tx: Queryable, e: AuditEventDraft) => Promise<void>,
  x: {
    count: number;
    accountId: string | null;
    role: repo.InviteRole | null;
    platformAdmin: boolean;
    expiresAt: Date;
    createdByUserId: string | null;
    actor: Inviter['actor'];
  },
): Promise<IssuedInvite[]> {
  const codes = Array.from({ length: x.count }, () => generateInviteCode());
  const ids = codes.map(() => randomUUID());
  const rows = await repo.insertInvites(tx, {
    ids,
    codeHashes: codes.map(hashInviteCode),
    accountId: x.accountId,
    role: x.role,
    platformAdmin: x.platformAdmin,
    expiresAt: x.expiresAt,
    createdByUserId: x.createdByUserId,
  });
  const byId = new Map(rows.map((r) => [r.id, r]));
  const out: IssuedInvite[] = [];
  for (const [i, id] of ids.entries()) {
    const row = byId.get(id);
    if (!row) throw new Error('invite insert returned fewer rows than codes');
    await record(tx, {
      ...x.actor,
      action: 'invite.created',
      accountId: row.account_id,
      targetType: 'invite',
      targetId: row.id,
      details: {
        account: row.account_name,
        role: row.role,
        platform_admin: row.platform_admin,
        expires_at: row.expires_at.toISOString(),
      },
    });
    out.push({ id, code: codes[i]!, expiresAt: row.expires_at, row });
  }
  return out;
}

/**
 * The rules of who may invite whom, resolved to the invites' account (looked up in `db`):
 * - a platform admin invites into any account, and may make platform-admin invites (with an
 *   account or without one);
 * - anyone else only into their own account (another account is a 404, as if it did not exist),
 *   never a platform admin, never a role above their own.
 */
async function authorizeInvites(
  db: Queryable,
  inviter: Inviter,
  input: CreateInvitesInput,
): Promise<{ accountId: string | null; role: repo.InviteRole | null; platformAdmin: boolean }> {
  const platformAdmin = Boolean(input.platformAdmin);
  if (platformAdmin && !inviter.platformAdmin)
    throw forbidden(
      'Only a platform admin can invite a platform admin (the operator: `bulwark admin invite --platform-admin`)',
    );
  let accountId: string | null;
  if (inviter.platformAdmin) {
    accountId = input.account === undefined ? null : await repo.findAccountIdByName(db, input.account);
    if (input.account !== undefined && accountId === null) throw notFound('Account');
    if (input.account === undefined && inviter.account && !platformAdmin) accountId = inviter.account.id;
  } else {
    if (!inviter.account || (input.account !== undefined && input.account !== inviter.account.name))
      throw notFound('Account');
    accountId = inviter.account.id;
    const own = inviter.role;
    if (own === null || input.role === null || RANK[input.role] > RANK[own])
      throw forbidden('An invite cannot carry a role above its creator’s');
  }
  if (accountId === null) {
    if (!platformAdmin) throw badRequest('An invite without an account must be a platform-admin invite');
    return { accountId: null, role: null, platformAdmin };
  }
  if (input.role === null) throw badRequest('An invite into an account needs a role');
  return { accountId, role: input.role, platformAdmin };
}

/** What the invites service needs of the people module. */
type PeopleForInvites = {
  /**
   * Checks the username and password policy, hashes the password (argon2id, off the event loop)
   * and inserts the user and membership in `tx`; a taken username is a `conflict`.
   */
  createLocalUser(tx: Queryable, u: NewLocalUser): Promise<{ id: string; platform_admin: boolean }>;
};

type InvitesServiceDeps = {
  db: Db;
  log: Logger;
  audit: Pick<AuditService, 'record' | 'recordNow'>;
  people: PeopleForInvites;
  /** The password hash a refused redemption computes and throws away (default: argon2id, as a user's). */
  hashPassword?: (password: string) => Promise<unknown>;
  /** Bounds this process's concurrent argon2id work (share the sign-in's; default: a gate of its own). */
  passwordGate?: PasswordGate;
  /**
   * Usernames the server's configuration keeps suspended (`suspendedUsers`): not taken through an
   * invite (the same answer as a taken username), or the name would act until the next start.
   */
  suspendedUsernames?: ReadonlySet<string>;
  /** Sessions: a redemption that asks to be signed in gets one in the user's transaction. */
  sessions?: { issue(input: SessionStart, tx: Tx): Promise<IssuedTokens> };
  /**
   * The sessions module's step-up check: a signed-in inviter creates invites only within minutes
   * of re-authenticating (a stolen session must not mint itself a new account).
   */
  stepUp?: RequireStepUp;
  now?: () => number;
};

type SessionStart = {
  userId: string;
  sourceIp: string | null;
  userAgent: string | null;
  requestId: string | null;
};

type Redeemed = {
  user: { id: string; username: string; platform_admin: boolean };
  account: { id: string; name: string } | null;
  role: repo.InviteRole | null;
};

/** A redemption done, or refused as busy (too much argon2id work waiting in this process). */
type RedeemResult =
  | { ok: true; redeemed: Redeemed; session: IssuedTokens | null }
  | { ok: false; retryAfterS: number };

const isUsernameTaken = (err: unknown) => err instanceof AppError && err.code === 'conflict';

export function createInvitesService(deps: InvitesServiceDeps) {
  const { db, log, audit, people } = deps;
  const now = deps.now ?? Date.now;
  const burnHash = deps.hashPassword ?? hashPassword;
  const gate = deps.passwordGate ?? createPasswordGate();
  const record = (tx: Queryable, e: AuditEventDraft) => audit.record(tx, e);

  /** Whose invites a caller reaches: a platform admin every invite, anyone else their account's. */
  const filterOf = (inviter: Inviter): repo.InviteFilter => {
    if (inviter.platformAdmin) return { accountId: null };
    if (!inviter.account) throw forbidden();
    return { accountId: inviter.account.id };
  };

  return {
    /** `count` single-use codes, each shown once (in the answer) and stored only as its SHA-256. */
    async create(inviter: Inviter, input: CreateInvitesInput): Promise<IssuedInvite[]> {
      const target = await authorizeInvites(db, inviter, input);
      if (inviter.sessionId && inviter.userId && deps.stepUp)
        await deps.stepUp({ userId: inviter.userId, sessionId: inviter.sessionId }, 'create invites');
      const expiresAt = new Date(now() + (input.expiresInHours ?? DEFAULT_INVITE_HOURS) * HOUR_MS);
      const issued = await withTx(db, (tx) =>
        issueInvites(tx, record, {
          count: input.count,
          ...target,
          expiresAt,
          createdByUserId: inviter.userId,
          actor: inviter.actor,
        }),
      );
      log.info(
        {
          event: 'invite.created',
          count: issued.length,
          account_id: target.accountId,
          role: target.role,
          platform_admin: target.platformAdmin,
          by: inviter.actor.actorId ?? null,
        },
        'invites created',
      );
      return issued;
    },

    /** Pending invites (not expired), newest first; never a code. */
    async list(
      inviter: Inviter,
      page: { limit: number; after: PageCursor | null },
    ): Promise<repo.InviteRow[]> {
      return repo.listPendingInvites(db, filterOf(inviter), { limit: page.limit + 1, after: page.after });
    },

    /** Deletes an invite (its code stops working at once); another account's is a 404. */
    async revoke(inviter: Inviter, id: string): Promise<repo.InviteRow> {
      const filter = filterOf(inviter);
      const row = await withTx(db, async (tx) => {
        const row = await repo.deleteInvite(tx, filter, id);
        if (row)
          await audit.record(tx, {
            ...inviter.actor,
            action: 'invite.revoked',
            accountId: row.account_id,
            targetType: 'invite',
            targetId: row.id,
            details: { role: row.role, platform_admin: row.platform_admin },
          });
        return row;
      });
      if (!row) throw notFound('Invite');
      return row;
    },

    /**
     * Creates the local user (and membership, or a platform admin) of a pending code and deletes
     * the code, in one transaction. The policy is checked first, before the code is read; then the
     * code is taken and the user created (argon2id hashing inside). A refusal after that point is
     * always `invalid_invite`, after the same argon2id work (a throwaway hash when the code was not
     * taken), so neither the answer nor its time tells a used, an expired and an unknown code apart.
     * The argon2id work goes through the password gate: past its queue the answer is "busy" (429),
     * decided before the code is read.
     */
    async redeem(
      input: { code: string; username: string; password: string },
      ctx: { sourceIp: string | null; requestId: string | null },
      /** Sign the new user in (the dashboard): a session issued in the same transaction. */
      signIn?: { userAgent: string | null },
    ): Promise<RedeemResult> {
      if (!USERNAME_PATTERN.test(input.username))
        throw badRequest(
          'A username is 2–63 characters: a lower-case letter, then a-z, 0-9, ".", "_" or "-"',
        );
      checkPasswordPolicy(input.password, input.username);
      const codeHash = hashInviteCode(input.code);
      const attempt = await gate.run(async () => {
        let reason: 'invalid_code' | 'username_taken' | null = null;
        const out = await withTx(db, async (tx) => {
          const invite = await repo.takeInvite(tx, codeHash);
          if (!invite) {
            reason = 'invalid_code';
            return null;
          }
          if (deps.suspendedUsernames?.has(input.username)) {
            // As a taken username: the invite is put back, and the argon2id work is done anyway.
            reason = 'username_taken';
            await burnHash(input.password);
            throw new AppError('conflict', 'username kept suspended by the configuration');
          }
          let user: { id: string; platform_admin: boolean };
          try {
            user = await people.createLocalUser(tx, {
              username: input.username,
              password: input.password,
              platformAdmin: invite.platform_admin,
              membership:
                invite.account_id !== null && invite.role !== null
                  ? { accountId: invite.account_id, role: invite.role }
                  : undefined,
            });
          } catch (err) {
            if (!isUsernameTaken(err)) throw err;
            // Rolls back: the invite is back, unused.
            reason = 'username_taken';
            throw err;
          }
          await audit.record(tx, {
            action: 'invite.redeemed',
            actorType: 'user',
            actorId: user.id,
            accountId: invite.account_id,
            targetType: 'invite',
            targetId: invite.id,
            sourceIp: ctx.sourceIp,
            requestId: ctx.requestId,
            details: {
              user_id: user.id,
              username: input.username,
              role: invite.role,
              platform_admin: invite.platform_admin,
            },
          });
          const session =
            signIn && deps.sessions
              ? await deps.sessions.issue({ userId: user.id, ...ctx, userAgent: signIn.userAgent }, tx)
              : null;
          return { invite, user, session };
        }).catch((err: unknown) => {
          if (reason === 'username_taken') return null;
          throw err;
        });
        // The argon2id work a taken code would have cost (a taken username has already paid it).
        if (out === null && reason === 'invalid_code') await burnHash(input.password);
        return { out, reason };
      });
      if (attempt === null) {
        log.warn(`bulwark invite failure ip=${ctx.sourceIp ?? '-'} reason=busy`);
        return { ok: false, retryAfterS: 1 };
      }
      const { out, reason } = attempt;
      if (out === null) {
        // One greppable line (never the code or the password) for fail2ban, and the audit event.
        log.warn(`bulwark invite failure ip=${ctx.sourceIp ?? '-'} reason=${reason}`);
        await audit.recordNow({
          action: 'invite.redeem_failed',
          outcome: 'denied',
          sourceIp: ctx.sourceIp,
          requestId: ctx.requestId,
          details: { reason, username: input.username },
        });
        throw invalidInvite();
      }
      const { invite, user, session } = out;
      log.info(
        { event: 'invite.redeemed', invite_id: invite.id, user_id: user.id, account_id: invite.account_id },
        'invite redeemed',
      );
      return {
        ok: true,
        redeemed: {
          user: { id: user.id, username: input.username, platform_admin: user.platform_admin },
          account:
            invite.account_id !== null && invite.account_name !== null
              ? { id: invite.account_id, name: invite.account_name }
              : null,
          role: invite.role,
        },
        session,
      };
    },
  };
}

export type InvitesService = ReturnType<typeof createInvitesService>;
