import { randomBytes, randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { parseCidr } from '../../../shared/cidr.ts';
import { DEFAULT_LIMITS, JOB_KINDS, MAX_ALLOWLIST_ENTRIES } from '../../../shared/contracts/jobs.ts';
import { AppError, badRequest, conflict, notFound, unavailable } from '../../../shared/errors.ts';
import { isReservedDatabaseName, isValidName } from '../../../shared/identifiers.ts';
import { scramVerifierAsync } from '../../../shared/scram.ts';
import type { ServerConfig } from '../../config.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import { type Db, type Tx, withTx } from '../../db/pool.ts';
import {
  assertDatabaseInScope,
  type Caller,
  callerLogFields,
  requireAccountScope,
  requireLevel,
} from '../../http/caller.ts';
import { type PageCursor, toPage } from '../../http/pagination.ts';
import { type AuditService, auditFromCaller } from '../audit/audit.service.ts';
import type { Freshness } from '../backups/backups.service.ts';
import type { JobNotifier } from '../jobs/job-notifier.ts';
import { enqueueJob } from '../jobs/jobs.repo.ts';
import { keyStillValid } from '../keys/keys.repo.ts';
import {
  ASSUMED_RESERVED_SLOTS,
  type CapacityConfig,
  reserveConnections,
  tenantConnections,
} from '../nodes/nodes.capacity.ts';
import { hideNodeRefusal, placeDatabase, seesNodeDetail } from '../nodes/nodes.placement.ts';
import type { ReauthProof } from '../people/reauth.ts';
import { sessionStillValid } from '../sessions/sessions.repo.ts';
import type { StepUp } from '../sessions/step-up.ts';
import {
  type AllowlistInput,
  defaultAllowlist,
  liveEntries,
  normaliseAllowlist,
  normaliseEntry,
  sameAllowlist,
  toPayloadAllowlist,
} from './databases.allowlist.ts';
import { createCredentialOps, passwordContext } from './databases.credentials.ts';
import { queueCreate } from './databases.jobs.ts';
import { requireHosted } from './databases.kind.ts';
import * as repo from './databases.repo.ts';
import { takeReserve } from './databases.reserves.ts';

type CredentialOps = ReturnType<typeof createCredentialOps>;

type DatabasesConfig = Pick<
  ServerConfig,
  'defaultAllowlist' | 'reservedDatabases' | 'poolerPublicHost' | 'poolerPort' | 'poolerSslmode'
> &
  CapacityConfig;

type DatabasesServiceDeps = {
  db: Db;
  /** Seals passwords at rest; null when no master key is configured (databases then unavailable). */
  box: SecretBox | null;
  config: DatabasesConfig;
  log: Logger;
  audit: Pick<AuditService, 'record'>;
  /** Told after an allowlist write (the expiry sweep re-plans for an earlier expiry). */
  onAllowlistChanged?: () => void;
  /** Signed-in users prove themselves again before a reveal (absent: they cannot reveal). */
  stepUp?: Pick<StepUp, 'requireOrVerify'>;
  /** The last good backup of a database, for its detail view (absent: not shown). */
  backupFreshness?: (databaseId: string) => Promise<Freshness>;
  /**
   * Wakes on a database's status NOTIFY (`DATABASE_STATUS_CHANNEL`, keyed by its id) or this
   * process's own completion of its job: a create with `wait_ms` waits on it (absent: no waiting).
   */
  statusWaiter?: Pick<JobNotifier, 'subscribe'>;
  /** Aborted when the server shuts down: waiting creates answer at once. */
  stopping?: AbortSignal;
  /** Told after a create took a reserved database (the keeper makes the next one). */
  onReserveTaken?: () => void;
  /** Told after a create's job for a node committed (this process's long-polls of it wake). */
  onJobQueued?: (nodeId: string) => void;
};

/** What a create may wait for and hand back (`POST /v1/databases`). */
type CreateOptions = {
  /** Wait up to this long (ms) for the database to be ready or failed; 0: answer at once. */
  waitMs?: number;
  /** With `waitMs`: the owner's password and connection info once ready (checked like a reveal). */
  reveal?: boolean;
  /** A signed-in user's step-up proof for `reveal` (none: an open step-up window is needed). */
  proof?: ReauthProof;
  requestId?: string;
  /** The client went away: stop waiting. */
  signal?: AbortSignal;
};

/** A created database, as it is when the create answers, and its credentials when revealed. */
type CreatedDatabase = {
  row: repo.DatabaseRow;
  credentials: { password: string; connection: ReturnType<CredentialOps['connectionOf']> } | null;
};

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

/** A stored CIDR in today's canonical spelling (left as stored if it no longer parses). */
function canonicalCidr(cidr: string): string {
  try {
    return parseCidr(cidr);
  } catch {
    return cidr;
  }
}

const isUniqueViolation = (err: unknown) => (err as { code?: unknown })?.code === '23505';

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

  /** `find`, refusing an attached database (409): `what` completes "Bulwark does not …". */
  const findHosted = async (caller: Caller, name: string, what: string, tx?: Tx) => {
    const row = await find(caller, name, tx);
    requireHosted(row, what);
    return row;
  };

  const requireStatus = (row: repo.DatabaseRow, allowed: repo.DatabaseStatus[], what: string) => {
    if (!allowed.includes(row.status)) {
      throw conflict(`Cannot ${what} while the database is ${row.status}`);
    }
  };

  /** One audit event per change, in the change's own transaction (fail closed). */
  const audit = (tx: Tx, caller: Caller, action: string, id: string, details: Record<string, unknown>) =>
    deps.audit.record(tx, auditFromCaller(caller, { action, targetType: 'database', targetId: id, details }));

  /** A new owner's password, sealed, and its SCRAM verifier (PBKDF2 off the event loop). */
  const newPassword = async (box: SecretBox, databaseId: string) => {
    const password = generatePassword();
    return {
      sealed: box.seal(password, passwordContext(databaseId)),
      verifier: await scramVerifierAsync(password),
    };
  };

  /**
   * Waits until the database is no longer provisioning (ready or failed) or `waitMs` passed, the
   * client left or the server stops: woken by its status NOTIFY (or this process's completion of
   * its job), never by polling. Returns the row as it is then; with `alongside`, also what it
   * started beside the row's last read after a wake-up (a wake-up nearly always means the status
   * changed: what the caller needs next is then on its way already; null when not started).
   */
  const waitForStatus = async <T>(
    accountId: string,
    name: string,
    id: string,
    waitMs: number,
    signal: AbortSignal | undefined,
    alongside?: () => Promise<T>,
  ): Promise<{ row: repo.DatabaseRow | null; started: Promise<T> | null }> => {
    const waiter = deps.statusWaiter;
    const stop = AbortSignal.any([...(signal ? [signal] : []), ...(deps.stopping ? [deps.stopping] : [])]);
    const deadline = Date.now() + waitMs;
    let woken = false;
    for (;;) {
      // Subscribed before the read: a NOTIFY between the two is not lost.
      const sub = waiter?.subscribe(id);
      const started = woken && alongside ? alongside() : null;
      started?.catch(() => {});
      const row = await repo.findByName(db, accountId, name);
      const left = deadline - Date.now();
      if (!row || row.id !== id || row.status !== 'provisioning' || !sub || left <= 0 || stop.aborted) {
        sub?.cancel();
        return { row: row && row.id === id ? row : null, started };
      }
      if ((await sub.wait(left, stop)) === 'aborted') return { row, started: null };
      woken = true;
    }
  };

  const credentialOps = createCredentialOps({
    db,
    config,
    log,
    stepUp: deps.stepUp,
    requireBox,
    find,
    requireStatus,
    audit,
    newPassword,
  });

  /**
   * Stores a new allowlist, queues the `database.allowlist` job that applies it on the node and
   * records `database.allowlist_changed`, all in the caller's transaction (the row is locked).
   */
  const writeAllowlist = async (
    tx: Tx,
    caller: Caller,
    row: repo.DatabaseRow,
    entries: repo.StoredAllowlistEntry[],
    change: Record<string, unknown>,
  ) => {
    await repo.setAllowlist(tx, row.id, entries);
    await enqueueJob(tx, {
      nodeId: row.node_id,
      accountId: caller.accountId,
      kind: JOB_KINDS.allowlist,
      payload: { database_id: row.id, name: row.name, allowlist: toPayloadAllowlist(entries) },
    });
    await audit(tx, caller, 'database.allowlist_changed', row.id, {
      name: row.name,
      entries: liveEntries(entries).map((e) => ({ cidr: e.cidr, expires_at: e.expires_at })),
      ...change,
    });
  };

  /**
   * One edit of one database's allowlist, safe against concurrent edits (no lost update).
   *
   * How: `find(…, tx)` reads the row with SELECT … FOR UPDATE inside the transaction, so edits
   * of the same database queue on the row lock; one that waited reads the list as the previous
   * edit committed it (READ COMMITTED re-reads a locked row once the lock is released), applies
   * its change to that, and writes it back before releasing the lock. The job is queued under
   * the same lock, so jobs are queued in commit order and the last one carries the final list.
   * We lock and edit in TypeScript rather than write one `UPDATE … SET allowlist = <jsonb
   * expression>` so that the rules (normalisation, the entry limit, replace-by-CIDR, a 404 for a
   * missing entry, the status check) are the same code the whole-list update uses, and because
   * the job needs the resulting list anyway.
   *
   * Expired entries not yet swept are kept in the row for the sweeper (the API never shows them).
   * An edit that changes nothing (the same entry added again) writes, queues and records nothing.
   */
  const editAllowlist = async (
    caller: Caller,
    name: string,
    edit: (current: repo.StoredAllowlistEntry[]) => repo.StoredAllowlistEntry[],
    change: Record<string, unknown>,
  ): Promise<repo.StoredAllowlistEntry[]> => {
    const { entries, changed } = await withTx(db, async (tx) => {
      const row = await findHosted(caller, name, 'keep an allowlist for', tx);
      requireStatus(row, ['provisioning', 'ready'], 'change the allowlist');
      // Entries stored before CIDRs had one canonical spelling are matched in that spelling.
      const live = liveEntries(row.allowlist).map((e) => ({ ...e, cidr: canonicalCidr(e.cidr) }));
      const next = edit(live);
      if (sameAllowlist(next, live)) return { entries: next, changed: false };
      // Expired entries the sweeper has not reached yet stay in the row: it removes them and
      // records their expiry (`database.allowlist_expired`), as for any other edit.
      const alive = liveEntries(row.allowlist);
      const expired = row.allowlist.filter((e) => !alive.includes(e));
      await writeAllowlist(tx, caller, row, [...next, ...expired], change);
      return { entries: next, changed: true };
    });
    if (changed) deps.onAllowlistChanged?.();
    return entries;
  };

  async function createDatabase(
    caller: Caller,
    input: { name: string; node?: string | undefined },
    opts: CreateOptions = {},
  ): Promise<CreatedDatabase> {
    const name = checkDatabaseName(input.name);
    requireLevel(caller, 'write');
    requireAccountScope(caller);
    const waitMs = opts.waitMs ?? 0;
    if (opts.reveal && waitMs <= 0)
      throw badRequest('"reveal" needs "wait_ms" (how long to wait for the database)');
    const box = requireBox();
    let id: string = randomUUID();
    // The verifier's PBKDF2 (off the event loop) runs beside the reveal check and the create's
    // transaction up to the job it goes in — begun only once no reserved database (ADR 0037) was
    // taken, when reserves are on: a create that takes one needs none.
    const ownerPassword = generatePassword();
    const sealed = box.seal(ownerPassword, passwordContext(id));
    let verifierRun: Promise<string> | null = null;
    const verifierOf = () => {
      verifierRun ??= scramVerifierAsync(ownerPassword);
      verifierRun.catch(() => {});
      return verifierRun;
    };
    if (config.reservedDatabases === 0) verifierOf();
    // Refused up front, as the reveal route would refuse it: nothing is created.
    if (opts.reveal)
      await credentialOps.requireMayReveal(caller, { id, name }, opts.proof ?? {}, opts.requestId ?? '');
    const allowlist = defaultAllowlist(config);
    const limits = { ...DEFAULT_LIMITS };
    const nodeName = input.node ?? null;
    let reserved = false;
    let nodeId: string | null = null;
    try {
      await withTx(db, async (tx) => {
        // An attached database a node offered and the account never accepted holds no name the
        // account wants: the create takes it (the offer is withdrawn, audited).
        for (const offer of await repo.withdrawOffers(tx, caller.accountId, name))
          await audit(tx, caller, 'database.detached', offer.id, {
            name,
            reason: 'offer_withdrawn_by_create',
            node_id: offer.node_id,
          });
        if (await repo.findByName(tx, caller.accountId, name))
          throw conflict(`Database "${name}" already exists`);
        // A reserved database ready on a node (ADR 0037): taken in this transaction, nothing to wait for.
        const taken =
          config.reservedDatabases > 0
            ? await takeReserve(tx, {
                accountId: caller.accountId,
                label: name,
                nodeRef: nodeName,
                allowlist,
                limits,
              })
            : null;
        if (taken) {
          id = taken.id;
          reserved = true;
          await audit(tx, caller, 'database.created', id, {
            name,
            node: taken.node_name,
            reserved: true,
            ...(opts.reveal ? { reveal: true } : {}),
          });
          await audit(tx, caller, 'database.create_done', id, { name, reserved: true });
          return;
        }
        verifierOf();
        // An explicit node, or the healthy uncordoned one with the most room (nodes.placement.ts).
        // A named node's refusals are one answer unless the caller is a platform admin.
        const detailed = nodeName === null || seesNodeDetail(caller);
        const node = await placeDatabase(
          tx,
          nodeName,
          {
            reserve: config.nodeConnectionReserve,
            assumedMaxConnections: config.nodeAssumedMaxConnections,
            assumedReservedSlots: ASSUMED_RESERVED_SLOTS,
          },
          { detailed },
        );
        // The node's row lock serialises this with every other reservation on the node.
        await reserveConnections(tx, {
          nodeId: node.id,
          requested: tenantConnections(limits),
          committed: repo.committedConnections,
          config,
          log,
          accountId: caller.accountId,
        }).catch((err: unknown) => {
          throw hideNodeRefusal(err, detailed);
        });
        // Its name on the node is generated (ADR 0039): labels are unique per account only.
        await queueCreate(tx, {
          id,
          accountId: caller.accountId,
          nodeId: node.id,
          label: name,
          passwordSealed: sealed,
          verifier: await verifierOf(),
          allowlist,
          limits,
        });
        nodeId = node.id;
        // A password handed back with the answer is recorded here, with the create (fail closed).
        await audit(tx, caller, 'database.created', id, {
          name,
          node: node.name,
          ...(opts.reveal ? { reveal: true } : {}),
        });
      });
    } catch (err) {
      if (isUniqueViolation(err)) throw conflict(`The database name "${name}" is taken; choose another`);
      throw err;
    }
    if (reserved) {
      deps.onReserveTaken?.();
      log.info(
        { database: name, database_id: id, ...callerLogFields(caller) },
        'database created from a reserve',
      );
    } else {
      // This process's long-polls of the node wake now, not a NOTIFY round trip later.
      if (nodeId) deps.onJobQueued?.(nodeId);
      log.info({ database: name, database_id: id, ...callerLogFields(caller) }, 'database create queued');
    }
    // The key or session is checked again at the end of the wait (revoked or ended meanwhile: no
    // password, as the reveal route would refuse it now), beside the password's unsealing.
    const revealNow = () =>
      Promise.all([
        caller.kind === 'key' ? keyStillValid(db, caller.keyId) : sessionStillValid(db, caller.sessionId),
        credentialOps.openPassword(caller, { id }),
      ]);
    const { row, started } = reserved
      ? // Ready already: the row and what the reveal needs, side by side.
        {
          row: await repo.findByName(db, caller.accountId, name),
          started: opts.reveal ? revealNow() : null,
        }
      : waitMs > 0
        ? await waitForStatus(
            caller.accountId,
            name,
            id,
            waitMs,
            opts.signal,
            opts.reveal ? revealNow : undefined,
          )
        : { row: await repo.findByName(db, caller.accountId, name), started: null };
    // Deleted meanwhile (by another request): what the create made is gone.
    if (!row) throw notFound('Database');
    if (!opts.reveal || row.status !== 'ready') return { row, credentials: null };
    // Begun beside the row's last read (after the wake-up that found it ready), or now.
    const [valid, password] = await (started ?? revealNow());
    if (!valid) return { row, credentials: null };
    log.info({ database: row.name, ...callerLogFields(caller) }, 'database credentials revealed at create');
    return {
      row,
      credentials: password === null ? null : { password, connection: credentialOps.connectionOf(row) },
    };
  }

  return {
    /** Creates a database and answers at once (the agent provisions it: status `provisioning`). */
    async create(
      caller: Caller,
      input: { name: string; node?: string | undefined },
    ): Promise<repo.DatabaseRow> {
      return (await createDatabase(caller, input)).row;
    },

    /**
     * Creates a database and, with `waitMs`, waits for it to be ready or failed; with `reveal`
     * (checked up front like a reveal: nothing is created when it is refused) hands back the
     * owner's password and where to connect once it is ready.
     */
    createDatabase,

    /**
     * One page, newest first (the route turns it into `{items, next_cursor}`), optionally only one
     * status and names containing `q` (case-insensitive, literal), each with its latest sample.
     */
    async list(
      caller: Caller,
      opts: { after: PageCursor | null; limit: number; status?: repo.DatabaseStatus; q?: string },
    ): Promise<{ items: (repo.DatabaseRow & repo.SampleColumns)[]; next_cursor: string | null }> {
      requireLevel(caller, 'read');
      const rows = await repo.listByAccount(db, caller.accountId, {
        after: opts.after,
        limit: opts.limit + 1,
        names: caller.databases,
        status: opts.status,
        contains: opts.q?.toLowerCase(),
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

    /** The database with its latest sample and its last good backup (the detail view). */
    async detail(
      caller: Caller,
      name: string,
    ): Promise<repo.DatabaseRow & repo.SampleColumns & { backup: Freshness | null }> {
      checkDatabaseName(name);
      requireLevel(caller, 'read');
      const row = await find(caller, name);
      const [sample, backup] = await Promise.all([
        repo.latestSample(db, row.id),
        deps.backupFreshness ? deps.backupFreshness(row.id) : null,
      ]);
      return { ...row, ...sample, backup };
    },

    async remove(caller: Caller, name: string, confirm: string): Promise<repo.DatabaseRow> {
      checkDatabaseName(name);
      requireLevel(caller, 'write');
      if (confirm !== name) throw badRequest('To delete a database, repeat its name in "confirm"');
      return withTx(db, async (tx) => {
        const row = await findHosted(caller, name, 'delete', tx);
        if (row.status === 'deleting') return row;
        await repo.markDeleting(tx, row.id);
        await enqueueJob(tx, {
          nodeId: row.node_id,
          accountId: caller.accountId,
          kind: JOB_KINDS.delete,
          payload: { database_id: row.id, name },
        });
        await audit(tx, caller, 'database.delete_requested', row.id, { name, node: row.node_name });
        log.info(
          { database: name, database_id: row.id, ...callerLogFields(caller) },
          'database delete queued',
        );
        return { ...row, status: 'deleting' as const };
      });
    },

    async getAllowlist(caller: Caller, name: string): Promise<repo.StoredAllowlistEntry[]> {
      checkDatabaseName(name);
      requireLevel(caller, 'read');
      return liveEntries((await findHosted(caller, name, 'keep an allowlist for')).allowlist);
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
        const row = await findHosted(caller, name, 'keep an allowlist for', tx);
        requireStatus(row, ['provisioning', 'ready'], 'change the allowlist');
        await writeAllowlist(tx, caller, row, entries, {});
        return entries;
      });
      deps.onAllowlistChanged?.();
      return saved;
    },

    /**
     * Adds one entry, or replaces the entry of the same CIDR (its expiry and note become the
     * given ones). Atomic against concurrent edits: see editAllowlist.
     */
    async addAllowlistEntry(
      caller: Caller,
      name: string,
      input: AllowlistInput,
    ): Promise<repo.StoredAllowlistEntry[]> {
      checkDatabaseName(name);
      requireLevel(caller, 'write');
      const entry = normaliseEntry(input, '', Date.now());
      return editAllowlist(
        caller,
        name,
        (current) => {
          const i = current.findIndex((e) => e.cidr === entry.cidr);
          if (i >= 0) return current.with(i, entry);
          if (current.length >= MAX_ALLOWLIST_ENTRIES) {
            throw badRequest(`The allowlist holds at most ${MAX_ALLOWLIST_ENTRIES} entries`);
          }
          return [...current, entry];
        },
        { added: { cidr: entry.cidr, expires_at: entry.expires_at } },
      );
    },

    /** Removes the entry of one CIDR (normalised like any entry); a 404 when it is not there. */
    async removeAllowlistEntry(
      caller: Caller,
      name: string,
      rawCidr: string,
    ): Promise<repo.StoredAllowlistEntry[]> {
      checkDatabaseName(name);
      requireLevel(caller, 'write');
      const { cidr } = normaliseEntry({ cidr: rawCidr }, '', Date.now());
      return editAllowlist(
        caller,
        name,
        (current) => {
          if (!current.some((e) => e.cidr === cidr)) {
            throw new AppError('not_found', `${cidr} is not on the allowlist of ${name}`);
          }
          return current.filter((e) => e.cidr !== cidr);
        },
        { removed: { cidr } },
      );
    },

    async getLimits(caller: Caller, name: string): Promise<repo.StoredLimits> {
      checkDatabaseName(name);
      requireLevel(caller, 'read');
      return (await findHosted(caller, name, 'set limits on')).limits;
    },

    async putLimits(caller: Caller, name: string, limits: repo.StoredLimits): Promise<repo.StoredLimits> {
      checkDatabaseName(name);
      requireLevel(caller, 'write');
      return withTx(db, async (tx) => {
        const row = await findHosted(caller, name, 'set limits on', tx);
        requireStatus(row, ['provisioning', 'ready'], 'change limits');
        // A raise reserves the difference on the node; a cut is always allowed, but sessions
        // opened under the old limit outlive it: the old total stays committed until a rotation
        // queued after the cut has ended them (databases.jobs.ts).
        const held = Math.max(tenantConnections(row.limits), (await repo.connectionsHeld(tx, row.id)) ?? 0);
        const raise = tenantConnections(limits) - held;
        if (raise > 0) {
          await reserveConnections(tx, {
            nodeId: row.node_id,
            requested: raise,
            committed: repo.committedConnections,
            config,
            log,
            accountId: caller.accountId,
          });
        }
        await repo.setLimits(tx, row.id, limits);
        const job = await enqueueJob(tx, {
          nodeId: row.node_id,
          accountId: caller.accountId,
          kind: JOB_KINDS.limits,
          payload: { database_id: row.id, name, limits },
        });
        if (raise < 0) await repo.holdConnections(tx, row.id, held, job.id);
        else await repo.holdConnections(tx, row.id, null, null);
        await audit(tx, caller, 'database.limits_changed', row.id, { name, limits });
        return limits;
      });
    },

    connection: credentialOps.connection,
    reveal: credentialOps.reveal,
    rotate: credentialOps.rotate,
  };
}

export type DatabasesService = ReturnType<typeof createDatabasesService>;
