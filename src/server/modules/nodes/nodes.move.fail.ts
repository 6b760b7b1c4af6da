/**
 * A move that cannot go on (ADR 0031): the failure path, and the deadline of each step.
 *
 * The failure path: the move `failed`, the database `ready` on its source, `move_thaw` queued on
 * the source (it gets its access back), `move_cleanup` queued on the target when the target may
 * have made something, audit `database.move_failed`, and the move's drain (if any) failed.
 *
 * Deadlines: a move step (`move_out` at the source, `move_in` at the target, `move_freeze` at the
 * source) whose node never
 * takes it, or stops renewing its lease, for `startMinutes`, or that has not finished
 * `stepMinutes` after it was queued, fails the move by the same path: its job is dead-lettered
 * (jobs of one database run in queue order, so the thaw queued after it could not run otherwise)
 * and the source is thawed. Without a deadline a move to a node that died froze its source for good.
 * A target that never took `move_in` made nothing: no cleanup is queued on it; once a pre-copy is
 * restored there (`freezing`), it did.
 */
import type { Logger } from 'pino';
import { MOVE_JOB_KINDS } from '../../../shared/contracts/moves.ts';
import { notify } from '../../db/notify.ts';
import { type Db, type Tx, withTx } from '../../db/pool.ts';
import type { AuditService } from '../audit/audit.service.ts';
import { DATABASE_STATUS_CHANNEL } from '../databases/databases.jobs.ts';
import { enqueueJob } from '../jobs/jobs.repo.ts';
import * as repo from './nodes.move.repo.ts';
import { ACTIVE_MOVE_STATUSES } from './nodes.move.repo.ts';

export type MoveDeadlines = {
  /** A step whose job no node has taken (or whose lease lapsed) for this long fails the move. */
  startMinutes: number;
  /** A step not finished this long after it was queued fails the move. */
  stepMinutes: number;
};

/** Defaults: a node that takes no job for 15 minutes is gone; a step of 6 hours is a stuck one. */
export const DEFAULT_MOVE_DEADLINES: MoveDeadlines = { startMinutes: 15, stepMinutes: 360 };

/** Moves failed by one deadline pass at most (the next pass takes the rest). */
const BATCH = 100;

type Actor = { actorType: 'agent' | 'system'; actorId?: string };

/** A move that cannot go on: the source serves again, the target's copy (if any) goes. */
export async function failMove(
  tx: Tx,
  audit: Pick<AuditService, 'record'>,
  actor: Actor,
  move: repo.MoveRow,
  reason: string,
  targetTouched: boolean,
): Promise<void> {
  await repo.finishMove(tx, move.id, 'failed', reason);
  await repo.setMoving(tx, move.database_id, false);
  const payload = { move_id: move.id, database_id: move.database_id, name: move.database_name };
  // Jobs of one database run in order: the source is thawed before the target is cleaned.
  await enqueueJob(tx, {
    nodeId: move.source_node_id,
    accountId: move.account_id,
    kind: MOVE_JOB_KINDS.thaw,
    payload,
  });
  if (targetTouched)
    await enqueueJob(tx, {
      nodeId: move.target_node_id,
      accountId: move.account_id,
      kind: MOVE_JOB_KINDS.cleanup,
      payload,
    });
  await audit.record(tx, {
    action: 'database.move_failed',
    outcome: 'failure',
    ...actor,
    accountId: move.account_id,
    targetType: 'database',
    targetId: move.database_id,
    details: {
      name: move.database_name,
      move_id: move.id,
      from: move.source_node,
      to: move.target_node,
      reason: reason.slice(0, 500),
    },
  });
  await notify(tx, DATABASE_STATUS_CHANNEL, move.database_id);
  if (move.drain_id) {
    await repo.finishDrain(tx, move.drain_id, 'failed', `moving ${move.database_name} failed: ${reason}`);
    await audit.record(tx, {
      action: 'node.drain_failed',
      outcome: 'failure',
      targetType: 'node',
      targetId: move.source_node_id,
      details: { drain_id: move.drain_id, database: move.database_name },
    });
  }
}

/** A live step job (queued or running) of a move; the predicates match jobs_database_order_v2_idx. */
const LIVE_STEP = `j.payload->>'database_id' = $1 AND j.payload->>'move_id' = $2 AND j.kind = $3
  AND j.status IN ('queued', 'running')
  AND (j.kind LIKE 'database.%' OR j.kind IN ('backup.create', 'backup.restore', 'backup.drill'))`;
/** Not taken up (queued, or its lease lapsed) for `startMinutes` ($4). */
const STALLED = `((j.status = 'queued' AND greatest(j.run_after, j.updated_at) < now() - make_interval(mins => $4))
  OR (j.status = 'running' AND j.lease_expires_at < now() - make_interval(mins => $4)))`;
/** Not finished `stepMinutes` ($5) after it was queued. */
const OVERDUE = `j.created_at < now() - make_interval(mins => $5)`;

const STEPS = {
  copying: { kind: MOVE_JOB_KINDS.out, what: 'the copy at the source', at: 'source' },
  restoring: { kind: MOVE_JOB_KINDS.in, what: 'the restore at the target', at: 'target' },
  freezing: { kind: MOVE_JOB_KINDS.freeze, what: 'the freeze at the source', at: 'source' },
} as const;
type StepStatus = keyof typeof STEPS;
const isStep = (status: string): status is StepStatus => Object.hasOwn(STEPS, status);

/**
 * One deadline pass: fails the moves whose current step is past its deadline, or has no live job
 * (it ended without its hook failing the move), each in its own transaction. Returns their ids.
 */
export async function failOverdueMoves(
  db: Db,
  deps: { audit: Pick<AuditService, 'record'>; log: Logger },
  deadlines: MoveDeadlines,
): Promise<string[]> {
  // Candidates: moves in flight without a live step job within its deadlines.
  const candidates = await db.query<{ move_id: string; database_id: string }>(
    `SELECT m.id AS move_id, m.database_id FROM database_moves m
      WHERE m.status IN ${ACTIVE_MOVE_STATUSES}
        AND NOT EXISTS (
          SELECT 1 FROM jobs j
           WHERE j.payload->>'database_id' = m.database_id::text AND j.payload->>'move_id' = m.id::text
             AND j.kind = CASE m.status WHEN 'copying' THEN $1 WHEN 'restoring' THEN $2 ELSE $6 END
             AND j.status IN ('queued', 'running')
             AND (j.kind LIKE 'database.%' OR j.kind IN ('backup.create', 'backup.restore', 'backup.drill'))
             AND NOT (${STALLED.replaceAll('$4', '$3')} OR ${OVERDUE.replaceAll('$5', '$4')}))
      ORDER BY m.created_at LIMIT $5`,
    [
      MOVE_JOB_KINDS.out,
      MOVE_JOB_KINDS.in,
      deadlines.startMinutes,
      deadlines.stepMinutes,
      BATCH,
      MOVE_JOB_KINDS.freeze,
    ],
  );
  const failed: string[] = [];
  for (const c of candidates.rows) {
    try {
      if (await failOne(db, deps, deadlines, c.move_id, c.database_id)) {
        failed.push(c.move_id);
        deps.log.warn(
          { event: 'database.move_failed', move_id: c.move_id },
          'move past its step deadline: failed, source thawed',
        );
      }
    } catch (err) {
      deps.log.warn(
        { move_id: c.move_id, err: { message: (err as Error).message } },
        'move deadline check failed',
      );
    }
  }
  return failed;
}

/**
 * Fails one move if it is still past its deadline. Locks as a step's completion does — the job,
 * then the move — so a completion in progress is waited for and then seen, never overridden.
 */
async function failOne(
  db: Db,
  deps: { audit: Pick<AuditService, 'record'> },
  deadlines: MoveDeadlines,
  moveId: string,
  databaseId: string,
): Promise<boolean> {
  return withTx(db, async (tx) => {
    const before = await repo.findMove(tx, moveId);
    if (!before || !isStep(before.status)) return false;
    const kind = STEPS[before.status].kind;
    const live = await tx.query<{ id: string; claimed: boolean; stalled: boolean; overdue: boolean }>(
      `SELECT j.id::text AS id, j.claimed_at IS NOT NULL AS claimed, ${STALLED} AS stalled, ${OVERDUE} AS overdue
         FROM jobs j WHERE ${LIVE_STEP} ORDER BY j.id DESC LIMIT 1 FOR UPDATE OF j`,
      [databaseId, moveId, kind, deadlines.startMinutes, deadlines.stepMinutes],
    );
    const job = live.rows[0] ?? null;
    const move = await repo.findMove(tx, moveId, { forUpdate: true });
    // Moved on meanwhile (its step completed, or another server failed it): the next pass decides.
    if (!move || move.status !== before.status) return false;
    if (job && !job.stalled && !job.overdue) return false;
    const step = STEPS[before.status].what;
    const node = STEPS[before.status].at === 'source' ? move.source_node : move.target_node;
    const reason = !job
      ? `${step} ended without an outcome`
      : job.stalled
        ? `${step} was not taken up by node ${node} within ${deadlines.startMinutes} minutes`
        : `${step} did not finish within ${deadlines.stepMinutes} minutes`;
    if (job)
      await tx.query(
        `UPDATE jobs SET status = 'dead', lease_expires_at = NULL, finished_at = now(), updated_at = now(),
                last_error = left(coalesce(last_error || '; ', '') || $2, 4000)
          WHERE id = $1 AND status IN ('queued', 'running')`,
        [job.id, `move deadline: ${reason}`],
      );
    // A target that never took move_in made nothing there; one that restored a pre-copy did.
    let touched = move.status === 'freezing';
    if (move.status === 'restoring')
      touched = job
        ? job.claimed
        : ((
            await tx.query(
              `SELECT 1 FROM jobs WHERE payload->>'move_id' = $1 AND kind = $2 AND claimed_at IS NOT NULL LIMIT 1`,
              [moveId, MOVE_JOB_KINDS.in],
            )
          ).rowCount ?? 0) > 0;
    await failMove(tx, deps.audit, { actorType: 'system' }, move, reason, touched);
    return true;
  });
}
