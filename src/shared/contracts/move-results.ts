/**
 * The kinds and results of the move jobs (issue 17, ADR 0031). Kept apart from `moves.ts` (the
 * payloads, which build on `jobs.ts`) so that `jobs.ts` can list these results in
 * `jobResultSchemas` without an import cycle. Import from `moves.ts`, which re-exports all of this.
 */
import { z } from 'zod';
import { backupCreateResultSchema, backupRestoreResultSchema } from './backup-results.ts';

/**
 * All four are `database.*` kinds on purpose: jobs of one database run in queue order across
 * nodes (migration 0008), so a move's steps never overlap each other or any other job of the
 * database.
 */
export const MOVE_JOB_KINDS = {
  /** On the source: freeze writes, then dump into the move's archive. */
  out: 'database.move_out',
  /** On the target: create the database as `database.create` does, restore, prove a login. */
  in: 'database.move_in',
  /** On the source after a failed move: give the database its access back. */
  thaw: 'database.move_thaw',
  /** Drops a copy: the source's after the switch, the target's after a failed move. */
  cleanup: 'database.move_cleanup',
} as const;

export const moveOutResultSchema = backupCreateResultSchema.extend({
  /** When writes stopped at the source (the freeze's start). */
  frozen_at: z.iso.datetime({ offset: true }),
});
export type MoveOutResult = z.infer<typeof moveOutResultSchema>;

export const moveInResultSchema = backupRestoreResultSchema.extend({
  /** The owner's proving login through the target's PgBouncer, in ms. */
  login_proved: z.literal(true),
});
export type MoveInResult = z.infer<typeof moveInResultSchema>;

export const moveThawResultSchema = z.object({ thawed: z.literal(true) });
export const moveCleanupResultSchema = z.object({ dropped: z.boolean() });
