/**
 * Moving a database between nodes (issue 17, ADR 0031): the agent's four steps. The server
 * orchestrates them (one job each, queued in order: jobs of one database never overlap).
 *
 * - `database.move_out` (source): dumps the database into the move's archive exactly as
 *   `backup.create` does (same archive format, the move's own data key, read back and verified
 *   before it reports). A pre-copy (`precopy`) dumps while the database still serves and reports
 *   its change fingerprint taken before the dump's snapshot (move-fingerprint.ts) — unless its
 *   sessions are at work (it would change during the copy): then, as without `precopy`, it
 *   freezes writes first — PgBouncer `KILL` (clients cut, new logins refused until `RESUME`), `CONNECT`
 *   revoked from the database's roles, every session of it terminated and waited for.
 * - `database.move_freeze` (source, after the target restored a pre-copy): the same freeze, then
 *   the fingerprint again. The server switches when it is unchanged, and otherwise asks for a
 *   frozen second copy (the target's first one dropped) — so writes stop only for this check
 *   unless the database changed during the copy.
 * - `database.move_in` (target): restores that archive into a new database exactly as a
 *   `backup.restore` into a new database does — which first runs `database.create` with the
 *   source's id, name, owner verifier, allowlist and limits (same roles, same password) and ends
 *   with the owner's login through the target's PgBouncer — then checks the restored rows against
 *   the dump's counts.
 * - `database.move_thaw` (source, after a failed move): `CONNECT` granted back, `RESUME`.
 * - `database.move_cleanup`: `database.delete` of one copy (the source after the switch, the
 *   target after a failure), plus the move's archive.
 *
 * The archive must be readable by both nodes: the same backup store (the off-site bucket, or one
 * backup directory on one host). The target reports a missing archive as a failed move.
 */

import { pipeline } from 'node:stream/promises';
import {
  MOVE_JOB_KINDS,
  type MoveFreezeResult,
  type MoveInResult,
  type MoveOutResult,
  moveCleanupPayloadSchema,
  moveFreezePayloadSchema,
  moveInPayloadSchema,
  moveOutPayloadSchema,
  moveThawPayloadSchema,
} from '../../shared/contracts/moves.ts';
import { quoteIdent, type RoleNames, roleNames } from '../../shared/identifiers.ts';
import { backupCreate } from '../backups/backup-create.ts';
import type { BackupJobDeps } from '../backups/backup-deps.ts';
import { connectForTools, stewardLogin } from '../backups/backup-deps.ts';
import { backupRestore } from '../backups/backup-restore.ts';
import { grantDatabase, terminateSessions } from '../postgres/tenant-sql.ts';
import { sleep } from '../sleep.ts';
import { parsePayload } from './database-common.ts';
import { databaseDelete } from './database-delete.ts';
import { type JobContext, type JobHandler, PermanentJobError } from './job-context.ts';
import {
  databaseFingerprint,
  otherSessions,
  sessionsAtWork,
  waitForSettledCounts,
} from './move-fingerprint.ts';

const tenantRoles = (roles: RoleNames) => [roles.owner, roles.reader, roles.migrator, roles.explorer];

/** A PgBouncer console command; a database PgBouncer has no pool for (or is not paused) is fine. */
async function poolerCommand(deps: BackupJobDeps, command: 'RECONNECT', name: string) {
  try {
    await deps.pooler.admin(`${command} ${name}`);
  } catch (err) {
    if (/no such database|is not paused/i.test((err as Error).message)) return;
    throw err;
  }
}

/** Does the database exist on this cluster? (a move of a database this node does not hold fails). */
async function exists(ctx: JobContext, name: string): Promise<boolean> {
  const r = await ctx.admin.query('SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1', [name]);
  return (r.rowCount ?? 0) > 0;
}

/** How long the freeze waits for each terminated session to be gone. */
const TERMINATE_WAIT_MS = 5_000;

/**
 * Writes stop: clients through PgBouncer are cut and new ones held; nobody but the steward (who
 * owns the database) may connect directly; every open session of the database or of its roles is
 * ended, and waited for (bounded) until it left — its statistics flushed as it went, which the
 * change fingerprint relies on. Idempotent.
 */
export async function freezeDatabase(deps: BackupJobDeps, ctx: JobContext, name: string): Promise<void> {
  const roles = roleNames(name);
  // KILL through the pooler's safe cut (no client mid-login); logins refused until `resume`.
  await deps.pooler.disconnect(name, { hold: true });
  await ctx.admin.query(
    `REVOKE CONNECT, TEMPORARY ON DATABASE ${quoteIdent(name)} FROM ${tenantRoles(roles).map(quoteIdent).join(', ')}`,
  );
  await terminateSessions(ctx.admin, {
    roles: tenantRoles(roles),
    database: name,
    waitMs: TERMINATE_WAIT_MS,
  });
}

/**
 * A pre-copy first has PgBouncer close the database's idle server connections (`RECONNECT`:
 * clients keep theirs) and watches the sessions left for `watchMs`: one that does anything
 * meanwhile is an application at work, and a database at work would change during the copy and
 * need a second, frozen one — so it is copied frozen at once (as a move without pre-copy). A quiet
 * one waits (at most `maxMs`) until its sessions were idle for `settledMs`, their counts flushed
 * (move-fingerprint.ts), and is fingerprinted.
 */
const PRECOPY = { watchMs: 400, settledMs: 10_100, maxMs: 1_500 };

/**
 * A pre-copy's fingerprint, or null when the database is at work (it is then copied frozen).
 * `fingerprintOf` reads a fingerprint without either (the freeze's own).
 */
async function precopyFingerprint(
  deps: BackupJobDeps,
  ctx: JobContext,
  p: { move_id: string; database_id: string; name: string },
): Promise<string | null> {
  const steward = roleNames(p.name).steward;
  await poolerCommand(deps, 'RECONNECT', p.name);
  if (
    await sessionsAtWork(ctx.admin, p.name, steward, {
      watchMs: PRECOPY.watchMs,
      sleep: (ms) => sleep(ms, ctx.signal),
    })
  ) {
    ctx.log.info({ move_id: p.move_id }, 'the database is at work: copied frozen, without a pre-copy');
    return null;
  }
  const waited = await waitForSettledCounts(ctx.admin, p.name, steward, {
    ...PRECOPY,
    sleep: (ms) => sleep(ms, ctx.signal),
  });
  if (waited > 1)
    ctx.log.info(
      { move_id: p.move_id, waited_ms: Math.round(waited) },
      'pre-copy waited for settled counters',
    );
  try {
    return (await fingerprintOf(deps, ctx, p)).fingerprint;
  } catch (err) {
    if (ctx.signal.aborted) throw err;
    // A lock a tenant holds on a sequence, or one it may not read: copied frozen (the freeze ends
    // the session holding the lock; the dump reports what it may not read).
    ctx.log.warn(
      { move_id: p.move_id, err: { message: (err as Error).message } },
      'pre-copy fingerprint not taken: copied frozen',
    );
    return null;
  }
}

/** The change fingerprint of database `name`, read by its steward (and whether it was alone). */
async function fingerprintOf(deps: BackupJobDeps, ctx: JobContext, p: { database_id: string; name: string }) {
  const steward = roleNames(p.name).steward;
  const login = stewardLogin(deps.cluster, { databaseId: p.database_id, steward }, p.name);
  const client = await connectForTools(deps.cluster, login);
  try {
    const fingerprint = await databaseFingerprint(ctx.admin, client, p.name);
    return { fingerprint, others: await otherSessions(ctx.admin, p.name, steward) };
  } finally {
    await client.end().catch(() => {});
  }
}

/** Writes resume: the database's grants as `database.create` makes them, and PgBouncer's `RESUME`. */
export async function thawDatabase(deps: BackupJobDeps, ctx: JobContext, name: string): Promise<void> {
  if (await exists(ctx, name)) await grantDatabase(ctx.admin, name, roleNames(name));
  await deps.pooler.resume(name);
}

const archiveOf = (p: { database_id: string; move_id: string }) => ({
  databaseId: p.database_id,
  backupId: p.move_id,
});

export function moveOut(deps: BackupJobDeps): JobHandler {
  const dump = backupCreate(deps);
  return async (payload, ctx) => {
    const p = parsePayload(moveOutPayloadSchema, payload);
    if (!(await exists(ctx, p.name)))
      throw new PermanentJobError(`database ${p.name} is not on this node; nothing to move`);
    // Before the dump's snapshot: whatever changes after it changes the fingerprint.
    const fingerprint = p.precopy ? await precopyFingerprint(deps, ctx, p) : null;
    if (fingerprint !== null) {
      await deps.onStep?.(MOVE_JOB_KINDS.out, 'dump');
      const made = await dump({ backup_id: p.move_id, database_id: p.database_id, name: p.name }, ctx);
      const result: MoveOutResult = { ...(made as Omit<MoveOutResult, 'fingerprint'>), fingerprint };
      return result;
    }
    await deps.onStep?.(MOVE_JOB_KINDS.out, 'freeze');
    await freezeDatabase(deps, ctx, p.name);
    const frozenAt = new Date().toISOString();
    await deps.onStep?.(MOVE_JOB_KINDS.out, 'dump');
    const made = await dump({ backup_id: p.move_id, database_id: p.database_id, name: p.name }, ctx);
    const result: MoveOutResult = { ...(made as Omit<MoveOutResult, 'frozen_at'>), frozen_at: frozenAt };
    return result;
  };
}

/**
 * Copies the archive the server relays from the source into this node's store (as stored: the
 * restore authenticates it under the move key, so a cut or altered transfer is refused there). A
 * failed copy leaves no archive behind.
 */
async function fetchArchive(
  deps: BackupJobDeps,
  ctx: JobContext,
  p: { database_id: string; move_id: string },
) {
  const source = await ctx.fetchMoveArchive!();
  const pending = await deps.storage.create(archiveOf(p));
  try {
    await pipeline(source, pending.stream);
    const { sizeBytes } = await pending.commit();
    ctx.log.info({ move_id: p.move_id, bytes: sizeBytes }, 'move archive fetched from the source node');
  } catch (err) {
    source.destroy();
    await pending.abort().catch(() => {});
    throw new Error(`the move archive could not be fetched: ${(err as Error).message}`.slice(0, 500));
  }
}

export function moveIn(deps: BackupJobDeps): JobHandler {
  const restore = backupRestore(deps);
  return async (payload, ctx) => {
    const p = parsePayload(moveInPayloadSchema, payload);
    if (!(await deps.storage.exists(archiveOf(p)))) {
      // Nodes with stores of their own: the server relays the source's archive into this one.
      if (!ctx.fetchMoveArchive)
        throw new PermanentJobError(
          'this node cannot read the move archive: the source and the target need the same backup store (ADR 0031)',
        );
      await deps.onStep?.(MOVE_JOB_KINDS.in, 'fetch');
      await fetchArchive(deps, ctx, p);
    }
    await deps.onStep?.(MOVE_JOB_KINDS.in, 'restore');
    // The restore into a new database runs database.create first: the owner's login through this
    // node's PgBouncer with the source's password is part of it (it fails the job otherwise).
    const restored = await restore(
      {
        backup_id: p.move_id,
        database_id: p.database_id,
        name: p.name,
        mode: 'new',
        source: { database_id: p.database_id, name: p.name },
        expected: p.expected,
        create: p.create,
      },
      ctx,
    );
    await deps.storage
      .remove(archiveOf(p))
      .catch((err: Error) => ctx.log.warn({ err: { message: err.message } }, 'move archive not removed'));
    const result: MoveInResult = { ...(restored as Omit<MoveInResult, 'login_proved'>), login_proved: true };
    return result;
  };
}

export function moveFreeze(deps: BackupJobDeps): JobHandler {
  return async (payload, ctx) => {
    const p = parsePayload(moveFreezePayloadSchema, payload);
    if (!(await exists(ctx, p.name)))
      throw new PermanentJobError(`database ${p.name} is not on this node; nothing to freeze`);
    await deps.onStep?.(MOVE_JOB_KINDS.freeze, 'freeze');
    const frozenAt = new Date().toISOString();
    await freezeDatabase(deps, ctx, p.name);
    await deps.onStep?.(MOVE_JOB_KINDS.freeze, 'fingerprint');
    const { fingerprint, others } = await fingerprintOf(deps, ctx, p);
    if (others > 0) ctx.log.warn({ move_id: p.move_id, sessions: others }, 'sessions left after the freeze');
    const result: MoveFreezeResult = { frozen_at: frozenAt, fingerprint, quiet: others === 0 };
    return result;
  };
}

export function moveThaw(deps: BackupJobDeps): JobHandler {
  return async (payload, ctx) => {
    const p = parsePayload(moveThawPayloadSchema, payload);
    await thawDatabase(deps, ctx, p.name);
    await deps.storage.remove(archiveOf(p)).catch(() => false);
    return { thawed: true };
  };
}

export function moveCleanup(deps: BackupJobDeps): JobHandler {
  const drop = databaseDelete(deps);
  return async (payload, ctx) => {
    const p = parsePayload(moveCleanupPayloadSchema, payload);
    const { dropped } = (await drop({ database_id: p.database_id, name: p.name }, ctx)) as {
      dropped: boolean;
    };
    await deps.storage.remove(archiveOf(p)).catch(() => false);
    return { dropped };
  };
}

/** The move job kinds: offered by an agent that has the backup jobs (pg_dump, a backup store). */
export function moveHandlers(deps: BackupJobDeps): [string, JobHandler][] {
  return [
    [MOVE_JOB_KINDS.out, moveOut(deps)],
    [MOVE_JOB_KINDS.in, moveIn(deps)],
    [MOVE_JOB_KINDS.freeze, moveFreeze(deps)],
    [MOVE_JOB_KINDS.thaw, moveThaw(deps)],
    [MOVE_JOB_KINDS.cleanup, moveCleanup(deps)],
  ];
}
