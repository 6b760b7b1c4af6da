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
  /**
   * On the source: dump into the move's archive — while it still serves (`precopy`, with the
   * change fingerprint taken before the dump's snapshot), or frozen first (a second copy, or a
   * server that asks for no pre-copy).
   */
  out: 'database.move_out',
  /** On the target: create the database as `database.create` does, restore, prove a login. */
  in: 'database.move_in',
  /**
   * On the source after a pre-copy was restored on the target: freeze writes, end every session,
   * take the change fingerprint again (unchanged: the switch; changed: a frozen second copy).
   */
  freeze: 'database.move_freeze',
  /** On the source after a failed move: give the database its access back. */
  thaw: 'database.move_thaw',
  /** Drops a copy: the source's after the switch, the target's after a failed move. */
  cleanup: 'database.move_cleanup',
} as const;

/** A database's change fingerprint (move-fingerprint.ts): SHA-256, hex. */
export const moveFingerprintSchema = z.string().regex(/^[0-9a-f]{64}$/);

export const moveOutResultSchema = backupCreateResultSchema
  .extend({
    /** When writes stopped at the source (the freeze's start); absent for a pre-copy. */
    frozen_at: z.iso.datetime({ offset: true }).optional(),
    /** A pre-copy's change fingerprint, taken before the dump's snapshot. */
    fingerprint: moveFingerprintSchema.optional(),
  })
  .refine((r) => (r.frozen_at === undefined) !== (r.fingerprint === undefined), {
    message: 'a move_out result is either frozen (frozen_at) or a pre-copy (fingerprint)',
  });
export type MoveOutResult = z.infer<typeof moveOutResultSchema>;

export const moveInResultSchema = backupRestoreResultSchema.extend({
  /** The owner's proving login through the target's PgBouncer, in ms. */
  login_proved: z.literal(true),
});
export type MoveInResult = z.infer<typeof moveInResultSchema>;

export const moveFreezeResultSchema = z.object({
  /** When writes stopped at the source. */
  frozen_at: z.iso.datetime({ offset: true }),
  /** The change fingerprint after every session of the database ended. */
  fingerprint: moveFingerprintSchema,
  /** No session but the steward's was left in the database (else the fingerprint proves nothing). */
  quiet: z.boolean(),
});
export type MoveFreezeResult = z.infer<typeof moveFreezeResultSchema>;

export const moveThawResultSchema = z.object({ thawed: z.literal(true) });
export const moveCleanupResultSchema = z.object({ dropped: z.boolean() });
