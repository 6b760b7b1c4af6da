import type { FastifyRequest } from 'fastify';
import { forbidden, notFound, unauthorized } from '../../shared/errors.ts';

/**
 * Who is calling, as established by authentication (see auth plugin). Every tenant-owned
 * read and write is scoped by `accountId`; a database-scoped key sees only its databases,
 * and everything else is a 404 to it.
 */
export type Permission = 'read' | 'write' | 'admin';

type AccountCaller = {
  accountId: string;
  accountName: string;
  level: Permission;
  /** null: the whole account; otherwise the only database names this caller can see. */
  databases: readonly string[] | null;
  /** May use the SQL explorer (account admins, or keys granted it explicitly). */
  explorer: boolean;
  sourceIp: string;
};

/** An API key (`Bearer bwk_…`). */
export type KeyCaller = AccountCaller & {
  kind: 'key';
  keyId: string;
  /** Display prefix of the key (`bwk_` + 12 chars), its name and expiry (set by the auth plugin). */
  keyPrefix?: string;
  keyName?: string;
  expiresAt?: Date;
};

export type MembershipRole = 'owner' | 'admin' | 'member' | 'viewer';

/**
 * A signed-in user (`Bearer <access token>`) acting in one account: the one named by the
 * `Bulwark-Account` header, or their only membership. The policy table (policy.ts) decides by the
 * role; where a service needs a level, the role maps to one: owner/admin → admin (with the
 * explorer), member → write, viewer → read; database grants make the caller database-scoped.
 */
export type UserCaller = AccountCaller & {
  kind: 'user';
  userId: string;
  sessionId: string;
  role: MembershipRole;
  platformAdmin: boolean;
};

export type Caller = KeyCaller | UserCaller;

/** A signed-in user, whether or not they act in an account on this request (set by the auth plugin). */
export type UserPrincipal = {
  userId: string;
  sessionId: string;
  platformAdmin: boolean;
  sourceIp: string;
  /** Why no account caller was set (no membership, several and none named…); null when one was. */
  accountProblem: string | null;
};

/** Log fields naming who acted: `key_id` or `user_id`. */
export function callerLogFields(c: Caller): { key_id: string } | { user_id: string } {
  return c.kind === 'key' ? { key_id: c.keyId } : { user_id: c.userId };
}

/** Who acted, for audit events and logs: the key or the user. */
export function callerActor(c: Caller): { type: 'key' | 'user'; id: string } {
  return c.kind === 'key' ? { type: 'key', id: c.keyId } : { type: 'user', id: c.userId };
}

declare module 'fastify' {
  interface FastifyRequest {
    caller?: Caller;
    user?: UserPrincipal;
  }
}

const RANK: Record<Permission, number> = { read: 1, write: 2, admin: 3 };

export function requireCaller(req: FastifyRequest): Caller {
  if (req.caller) return req.caller;
  if (req.user) throw forbidden(req.user.accountProblem ?? 'You are not a member of this account');
  throw unauthorized();
}

/** Routes of signed-in users only (their sessions, their profile): an API key is refused. */
export function requireUser(req: FastifyRequest): UserPrincipal {
  if (req.user) return req.user;
  if (req.caller) throw forbidden('This needs a signed-in user, not an API key');
  throw unauthorized();
}

/** Routes that describe an API key: a signed-in user is refused. */
export function requireKeyCaller(req: FastifyRequest): KeyCaller {
  const c = requireCaller(req);
  if (c.kind !== 'key') throw forbidden('This describes an API key; signed-in users use GET /v1/me');
  return c;
}

function hasLevel(caller: Caller, level: Permission): boolean {
  return RANK[caller.level] >= RANK[level];
}

export function requireLevel(caller: Caller, level: Permission): void {
  if (!hasLevel(caller, level)) throw forbidden(`This needs a key with ${level} permission`);
}

/** A database outside the caller's scope does not exist, as far as the caller can tell. */
export function assertDatabaseInScope(caller: Caller, name: string): void {
  if (caller.databases !== null && !caller.databases.includes(name)) throw notFound('Database');
}

/** Account-scoped keys only (e.g. creating databases, managing keys). */
export function requireAccountScope(caller: Caller): void {
  if (caller.databases !== null) throw forbidden('A database-scoped key cannot do this');
}
