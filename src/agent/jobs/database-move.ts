/**
 * Moving a database between nodes (issue 17, ADR 0031): the agent's four steps. The server
 * orchestrates them (one job each, queued in order: jobs of one database never overlap).
 *
 * - `database.move_out` (source): freezes writes — PgBouncer `KILL` (clients cut, new ones held
 *   until `RESUME`), `CONNECT` revoked from the database's roles, and every session of it
 *   terminated — then dumps it into the move's archive exactly as `backup.create` does (same
 *   archive format, the move's own data key, read back and verified before it reports).
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
  type MoveInResult,
  type MoveOutResult,
  moveCleanupPayloadSchema,
  moveInPayloadSchema,
  moveOutPayloadSchema,
  moveThawPayloadSchema,
} from '../../shared/contracts/moves.ts';
import { quoteIdent, type RoleNames, roleNames } from '../../shared/identifiers.ts';
import { backupCreate } from '../backups/backup-create.ts';
import type { BackupJobDeps } from '../backups/backup-deps.ts';
import { backupRestore } from '../backups/backup-restore.ts';
import { grantDatabase, terminateSessions } from '../postgres/tenant-sql.ts';
import { parsePayload } from './database-common.ts';
import { databaseDelete } from './database-delete.ts';
import { type JobContext, type JobHandler, PermanentJobError } from './job-context.ts';

const tenantRoles = (roles: RoleNames) => [roles.owner, roles.reader, roles.migrator, roles.explorer];

/** A PgBouncer console command; a database PgBouncer has no pool for (or is not paused) is fine. */
async function poolerCommand(deps: BackupJobDeps, command: 'KILL' | 'RESUME', name: string) {
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

/**
 * Writes stop: clients through PgBouncer are cut and new ones held; nobody but the steward (who
 * owns the database) may connect directly; every open session is ended. Idempotent.
 */
export async function freezeDatabase(deps: BackupJobDeps, ctx: JobContext, name: string): Promise<void> {
  const roles = roleNames(name);
  await poolerCommand(deps, 'KILL', name);
  await ctx.admin.query(
    `REVOKE CONNECT, TEMPORARY ON DATABASE ${quoteIdent(name)} FROM ${tenantRoles(roles).map(quoteIdent).join(', ')}`,
  );
  await terminateSessions(ctx.admin, { roles: tenantRoles(roles), database: name });
}

/** Writes resume: the database's grants as `database.create` makes them, and PgBouncer's `RESUME`. */
export async function thawDatabase(deps: BackupJobDeps, ctx: JobContext, name: string): Promise<void> {
  if (await exists(ctx, name)) await grantDatabase(ctx.admin, name, roleNames(name));
  await poolerCommand(deps, 'RESUME', name);
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
    [MOVE_JOB_KINDS.thaw, moveThaw(deps)],
    [MOVE_JOB_KINDS.cleanup, moveCleanup(deps)],
  ];
}
