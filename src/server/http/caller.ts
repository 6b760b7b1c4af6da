import type { FastifyRequest } from 'fastify';
import { forbidden, notFound, unauthorized } from '../../shared/errors.ts';

/**
 * Who is calling, as established by authentication (see auth plugin). Every tenant-owned
 * read and write is scoped by `accountId`; a database-scoped key sees only its databases,
 * and everything else is a 404 to it.
 */
export type Permission = 'read' | 'write' | 'admin';

export type Caller = {
  kind: 'key';
  accountId: string;
  accountName: string;
  keyId: string;
  level: Permission;
  /** null: the whole account; otherwise the only database names this caller can see. */
  databases: readonly string[] | null;
  /** May use the SQL explorer (account admins, or keys granted it explicitly). */
  explorer: boolean;
  sourceIp: string;
  /** Display prefix of the key (`bwk_` + 12 chars), its name and expiry (set by the auth plugin). */
  keyPrefix?: string;
  keyName?: string;
  expiresAt?: Date;
};

declare module 'fastify' {
  interface FastifyRequest {
    caller?: Caller;
  }
  interface FastifyContextConfig {
    /** Routes under /v1 require a key unless marked public. */
    public?: boolean;
  }
}

const RANK: Record<Permission, number> = { read: 1, write: 2, admin: 3 };

export function requireCaller(req: FastifyRequest): Caller {
  if (!req.caller) throw unauthorized();
  return req.caller;
}

export function hasLevel(caller: Caller, level: Permission): boolean {
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
