import { randomBytes, randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { DEFAULT_LIMITS, JOB_KINDS } from '../../../agent/jobs/contract.ts';
import { parseCidr } from '../../../agent/pgbouncer/pgbouncer.config.ts';
import { badRequest, conflict, notFound, unavailable } from '../../../shared/errors.ts';
import { isReservedDatabaseName, isValidName, roleNames } from '../../../shared/identifiers.ts';
import { scramVerifier } from '../../../shared/scram.ts';
import type { ServerConfig } from '../../config.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import { type Db, type Tx, withTx } from '../../db/pool.ts';
import { assertDatabaseInScope, type Caller, requireAccountScope, requireLevel } from '../../http/caller.ts';
import { type PageCursor, toPage } from '../../http/pagination.ts';
import { auditFromCaller, recordAudit } from '../audit/audit.service.ts';
import { enqueueJob } from '../jobs/jobs.repo.ts';
import * as repo from './databases.repo.ts';

type DatabasesConfig = Pick<
  ServerConfig,
  'defaultAllowlist' | 'poolerPublicHost' | 'poolerPort' | 'poolerSslmode'
>;

type DatabasesServiceDeps = {
  db: Db;
  /** Seals passwords at rest; null when no master key is configured (databases then unavailable). */
  box: SecretBox | null;
  config: DatabasesConfig;
  log: Logger;
  /** Told after an allowlist write (the expiry sweep re-plans for an earlier expiry). */
  onAllowlistChanged?: () => void;
};

type AllowlistInput = { cidr: string; expires_at?: string | undefined; note?: string | undefined };

export const passwordContext = (databaseId: string) => `database:${databaseId}`;

/** 32 random bytes, URL-safe: the owner's password. */
const generatePassword = () => randomBytes(32).toString('base64url');

/** Names are checked before anything else touches them: a clear 400, nothing created. */
export function checkDatabaseName(name: string): string {
  if (!isValidName(name)) {
    throw badRequest(
      'Invalid database name: use 1-63 characters a-z, 0-9 and _, starting with a letter (a-z)',
    );
  }
  if (isReservedDatabaseName(name)) throw badRequest(`The database name "${name}" is reserved`);
  return name;
}

const isUniqueViolation = (err: unknown) => (err as { code?: unknown })?.code === '23505';

/** Entries that have not expired, for the API and for the agent (which also drops them itself). */
function liveEntries(entries: repo.StoredAllowlistEntry[], now = Date.now()): repo.StoredAllowlistEntry[] {
  return entries.filter((e) => e.expires_at === null || Date.parse(e.expires_at) > now);
}

const toPayloadAllowlist = (entries: repo.StoredAllowlistEntry[]) =>
  liveEntries(entries).map((e) => ({ cidr: e.cidr, expires_at: e.expires_at }));

/** Validates, normalises and de-duplicates (the longest-lived entry for a CIDR wins). */
function normaliseAllowlist(input: AllowlistInput[], now = Date.now()): repo.StoredAllowlistEntry[] {
  const byCidr = new Map<string, repo.StoredAllowlistEntry>();
  for (const [i, e] of input.entries()) {
    let cidr: string;
    try {
      cidr = parseCidr(e.cidr);
    } catch {
      throw badRequest(`entries[${i}].cidr is not an IPv4 or IPv6 CIDR`);
    }
    let expires: string | null = null;
    if (e.expires_at !== undefined) {
      const t = Date.parse(e.expires_at);
      if (!Number.isFinite(t)) throw badRequest(`entries[${i}].expires_at is not a date`);
      if (t <= now) throw badRequest(`entries[${i}].expires_at must be in the future`);
      expires = new Date(t).toISOString();
    }
    const entry = { cidr, expires_at: expires, note: e.note ?? null };
    const seen = byCidr.get(cidr);
    if (
      !seen ||
      (seen.expires_at !== null && (expires === null || Date.parse(expires) > Date.parse(seen.expires_at)))
    ) {
      byCidr.set(cidr, entry);
    }
  }
  return [...byCidr.values()];
}

export function createDatabasesService(deps: DatabasesServiceDeps) {
  const { db, config, log } = deps;

  const requireBox = (): SecretBox => {
    if (!deps.box) throw unavailable('Databases are unavailable: the server has no master key configured');
    return deps.box;
  };

  /** Name, then scope: another account's or an out-of-scope database is a 404. */
  const find = async (caller: Caller, name: string, tx?: Tx): Promise<repo.DatabaseRow> => {
    checkDatabaseName(name);
    assertDatabaseInScope(caller, name);
    const row = await repo.findByName(tx ?? db, caller.accountId, name, { forUpdate: Boolean(tx) });
    if (!row) throw notFound('Database');
    return row;
  };

  const requireStatus = (row: repo.DatabaseRow, allowed: repo.DatabaseStatus[], what: string) => {
    if (!allowed.includes(row.status)) {
      throw conflict(`Cannot ${what} while the database is ${row.status}`);
    }
  };

  /** One audit event per change, in the change's own transaction (fail closed). */
  const audit = (tx: Tx, caller: Caller, action: string, id: string, details: Record<string, unknown>) =>
    recordAudit(tx, auditFromCaller(caller, { action, targetType: 'database', targetId: id, details }));

  const newPassword = (box: SecretBox, databaseId: string) => {
    const password = generatePassword();
    return { sealed: box.seal(password, passwordContext(databaseId)), verifier: scramVerifier(password) };
  };

  return {
    async create(
      caller: Caller,
      input: { name: string; node?: string | undefined },
    ): Promise<repo.DatabaseRow> {
      const name = checkDatabaseName(input.name);
      requireLevel(caller, 'write');
      requireAccountScope(caller);
      const box = requireBox();
      const id = randomUUID();
      const { sealed, verifier } = newPassword(box, id);
      const allowlist = config.defaultAllowlist.map((c) => ({
        cidr: parseCidr(c),
        expires_at: null,
        note: 'default',
      }));
      const limits = { ...DEFAULT_LIMITS };
      const nodeName = input.node ?? null;
      try {
        await withTx(db, async (tx) => {
          if (await repo.findByName(tx, caller.accountId, name))
            throw conflict(`Database "${name}" already exists`);
          const node = await repo.pickNode(tx, name, nodeName);
          if (!node) {
            if (!(await repo.activeNodeExists(tx, nodeName))) {
              throw nodeName ? notFound('Node') : unavailable('No active node to place the database on');
            }
            throw conflict(`The database name "${name}" is taken; choose another`);
          }
          await repo.insertDatabase(tx, {
            id,
            accountId: caller.accountId,
            nodeId: node.id,
            name,
            passwordSealed: sealed,
            allowlist,
            limits,
          });
          await enqueueJob(tx, {
            nodeId: node.id,
            accountId: caller.accountId,
            kind: JOB_KINDS.create,
            payload: { database_id: id, name, verifier, allowlist: toPayloadAllowlist(allowlist), limits },
          });
          await audit(tx, caller, 'database.created', id, { name, node: node.name });
        });
      } catch (err) {
        if (isUniqueViolation(err)) throw conflict(`The database name "${name}" is taken; choose another`);
        throw err;
      }
      log.info({ database: name, database_id: id, key_id: caller.keyId }, 'database create queued');
      return (await repo.findByName(db, caller.accountId, name))!;
    },

    /** One page, newest first (the route turns it into `{items, next_cursor}`). */
    async list(
      caller: Caller,
      opts: { after: PageCursor | null; limit: number },
    ): Promise<{ items: repo.DatabaseRow[]; next_cursor: string | null }> {
      requireLevel(caller, 'read');
      const rows = await repo.listByAccount(db, caller.accountId, {
        after: opts.after,
        limit: opts.limit + 1,
        names: caller.databases,
      });
      return toPage(
        rows,
        opts.limit,
        (r) => ({ ts: r.created_us, id: r.id }),
        (r) => r,
      );
    },

    async get(caller: Caller, name: string): Promise<repo.DatabaseRow> {
      checkDatabaseName(name);
      requireLevel(caller, 'read');
      return find(caller, name);
    },

    async remove(caller: Caller, name: string, confirm: string): Promise<repo.DatabaseRow> {
      checkDatabaseName(name);
      requireLevel(caller, 'write');
      if (confirm !== name) throw badRequest('To delete a database, repeat its name in "confirm"');
      return withTx(db, async (tx) => {
        const row = await find(caller, name, tx);
        if (row.status === 'deleting') return row;
        await repo.markDeleting(tx, row.id);
        await enqueueJob(tx, {
          nodeId: row.node_id,
          accountId: caller.accountId,
          kind: JOB_KINDS.delete,
          payload: { database_id: row.id, name },
        });
        await audit(tx, caller, 'database.delete_requested', row.id, { name, node: row.node_name });
        log.info({ database: name, database_id: row.id, key_id: caller.keyId }, 'database delete queued');
        return { ...row, status: 'deleting' as const };
      });
    },

    async getAllowlist(caller: Caller, name: string): Promise<repo.StoredAllowlistEntry[]> {
      checkDatabaseName(name);
      requireLevel(caller, 'read');
      return liveEntries((await find(caller, name)).allowlist);
    },

    async putAllowlist(
      caller: Caller,
      name: string,
      input: AllowlistInput[],
    ): Promise<repo.StoredAllowlistEntry[]> {
      checkDatabaseName(name);
      requireLevel(caller, 'write');
      const entries = normaliseAllowlist(input);
      const saved = await withTx(db, async (tx) => {
        const row = await find(caller, name, tx);
        requireStatus(row, ['provisioning', 'ready'], 'change the allowlist');
        await repo.setAllowlist(tx, row.id, entries);
        await enqueueJob(tx, {
          nodeId: row.node_id,
          accountId: caller.accountId,
          kind: JOB_KINDS.allowlist,
          payload: { database_id: row.id, name, allowlist: toPayloadAllowlist(entries) },
        });
        await audit(tx, caller, 'database.allowlist_changed', row.id, {
          name,
          entries: entries.map((e) => ({ cidr: e.cidr, expires_at: e.expires_at })),
        });
        return entries;
      });
      deps.onAllowlistChanged?.();
      return saved;
    },

    async getLimits(caller: Caller, name: string): Promise<repo.StoredLimits> {
      checkDatabaseName(name);
      requireLevel(caller, 'read');
      return (await find(caller, name)).limits;
    },

    async putLimits(caller: Caller, name: string, limits: repo.StoredLimits): Promise<repo.StoredLimits> {
      checkDatabaseName(name);
      requireLevel(caller, 'write');
      return withTx(db, async (tx) => {
        const row = await find(caller, name, tx);
        requireStatus(row, ['provisioning', 'ready'], 'change limits');
        await repo.setLimits(tx, row.id, limits);
        await enqueueJob(tx, {
          nodeId: row.node_id,
          accountId: caller.accountId,
          kind: JOB_KINDS.limits,
          payload: { database_id: row.id, name, limits },
        });
        await audit(tx, caller, 'database.limits_changed', row.id, { name, limits });
        return limits;
      });
    },

    /** Where to connect: everything but the password. */
    async connection(caller: Caller, name: string) {
      checkDatabaseName(name);
      requireLevel(caller, 'read');
      const row = await find(caller, name);
      const user = roleNames(row.name).owner;
      const host = config.poolerPublicHost.includes(':')
        ? `[${config.poolerPublicHost}]`
        : config.poolerPublicHost;
      return {
        host: config.poolerPublicHost,
        port: config.poolerPort,
        user,
        database: row.name,
        sslmode: config.poolerSslmode,
        uri: `postgresql://${user}@${host}:${config.poolerPort}/${row.name}?sslmode=${config.poolerSslmode}`,
      };
    },

    /** The owner's password, on explicit request only (write level). Logged without the value. */
    async reveal(caller: Caller, name: string): Promise<{ password: string }> {
      checkDatabaseName(name);
      requireLevel(caller, 'write');
      const box = requireBox();
      const password = await withTx(db, async (tx) => {
        const row = await find(caller, name, tx);
        requireStatus(row, ['provisioning', 'ready', 'failed'], 'reveal credentials');
        const sealed = await repo.findSealed(tx, { id: row.id, accountId: caller.accountId });
        if (!sealed?.password_sealed) throw notFound('Database');
        // Recorded before the password leaves: no audit row, no password.
        await audit(tx, caller, 'database.credentials_revealed', row.id, {
          name,
          password_version: row.password_version,
        });
        return box.open(sealed.password_sealed, passwordContext(row.id));
      });
      log.info({ database: name, key_id: caller.keyId }, 'database credentials revealed');
      return { password };
    },

    /** A new password for the owner; it replaces the old one when the agent reports it live. */
    async rotate(caller: Caller, name: string): Promise<repo.DatabaseRow> {
      checkDatabaseName(name);
      requireLevel(caller, 'write');
      const box = requireBox();
      return withTx(db, async (tx) => {
        const row = await find(caller, name, tx);
        requireStatus(row, ['ready'], 'rotate credentials');
        if (row.rotation_pending) throw conflict('A credential rotation is already in progress');
        const { sealed, verifier } = newPassword(box, row.id);
        await repo.setPendingPassword(tx, row.id, sealed);
        await enqueueJob(tx, {
          nodeId: row.node_id,
          accountId: caller.accountId,
          kind: JOB_KINDS.rotate,
          payload: { database_id: row.id, name, verifier },
        });
        await audit(tx, caller, 'database.credentials_rotation_requested', row.id, { name });
        log.info({ database: name, database_id: row.id, key_id: caller.keyId }, 'credential rotation queued');
        return { ...row, rotation_pending: true };
      });
    },
  };
}

export type DatabasesService = ReturnType<typeof createDatabasesService>;
