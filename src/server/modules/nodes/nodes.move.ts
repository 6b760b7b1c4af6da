/**
 * Moving a database to another node, and draining a node (issue 17, ADR 0031).
 *
 * A move is `database.*` jobs (contracts/moves.ts), driven from the transaction that finishes
 * each one (job hooks), so every transition commits with the job that caused it:
 *
 *   request ─▶ move_out@source (pre-copy: dump while serving, fingerprint before the snapshot)
 *          ─ok─▶ move_in@target (create, restore, proving login)
 *          ─ok─▶ move_freeze@source (writes stop, every session ended, fingerprint again)
 *                  │ unchanged: switch node_id, audit database.moved, cleanup@source
 *                  │ changed:   cleanup@target, move_out@source (frozen) ─▶ move_in ─▶ switch
 *   any step dead: thaw@source (and cleanup@target once the target made something)
 *
 * Writes stop at the freeze, so they are refused only for the check and the switch — unless the
 * database changed while it was copied, when the second, frozen copy is what they wait for (as
 * every move did before pre-copies). A source whose agent does not offer `move_freeze` is frozen
 * before its only copy. Until the switch commits, the source holds the database and the database
 * record names it; any failure before it gives the source its access back and drops what the
 * target made. The owner's password is the same on the target (its verifier is derived from the
 * sealed password, as for a create), so applications reconnect with the same credentials.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { backupManifestSchema } from '../../../shared/contracts/backup-results.ts';
import {
  MOVE_JOB_KINDS,
  moveFreezeResultSchema,
  moveOutPayloadSchema,
  moveOutResultSchema,
} from '../../../shared/contracts/moves.ts';
import { AppError, conflict, notFound, unavailable } from '../../../shared/errors.ts';
import { scramVerifier } from '../../../shared/scram.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import { notify } from '../../db/notify.ts';
import { type Db, type Tx, withTx } from '../../db/pool.ts';
import { assertDatabaseInScope, type Caller, requireLevel, type UserPrincipal } from '../../http/caller.ts';
import { type AuditService, auditFromCaller } from '../audit/audit.service.ts';
import { toPayloadAllowlist } from '../databases/databases.allowlist.ts';
import { passwordContext } from '../databases/databases.credentials.ts';
import { DATABASE_STATUS_CHANNEL } from '../databases/databases.jobs.ts';
import { requireHosted } from '../databases/databases.kind.ts';
import * as dbRepo from '../databases/databases.repo.ts';
import { enqueueJob, findLeasedJob, type JobRow } from '../jobs/jobs.repo.ts';
import {
  ASSUMED_RESERVED_SLOTS,
  type CapacityConfig,
  reserveConnections,
  tenantConnections,
} from './nodes.capacity.ts';
import * as fleet from './nodes.fleet.repo.ts';
import { failMove } from './nodes.move.fail.ts';
import * as repo from './nodes.move.repo.ts';
import {
  bestNode,
  hideNodeRefusal,
  lockNodeState,
  nameTaken,
  refusal,
  seesNodeDetail,
} from './nodes.placement.ts';

export const moveKeyContext = (moveId: string) => `move-key:${moveId.toLowerCase()}`;

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const moveIdOf = (job: JobRow): string | null => {
  const v = job.payload.move_id;
  return typeof v === 'string' && UUID.test(v) ? v : null;
};
const isMoveKind = (kind: string) => (Object.values(MOVE_JOB_KINDS) as string[]).includes(kind);
const reasonOf = (job: JobRow, what: string) =>
  `${what}: ${job.last_error ?? 'the job failed'}`.slice(0, 1000);

/** What the API shows of a move. */
export function presentMove(m: repo.MoveRow) {
  return {
    id: m.id,
    database: m.database_name,
    from_node: m.source_node,
    to_node: m.target_node,
    status: m.status,
    error: m.error,
    copies: m.copies,
    size_bytes: m.size_bytes === null ? null : Number(m.size_bytes),
    freeze_ms: m.freeze_ms === null ? null : Number(m.freeze_ms),
    duration_ms: m.duration_ms === null ? null : Number(m.duration_ms),
    frozen_at: m.frozen_at?.toISOString() ?? null,
    created_at: m.created_at.toISOString(),
    finished_at: m.finished_at?.toISOString() ?? null,
  };
}
export type MoveView = ReturnType<typeof presentMove>;

export function createMoves(deps: {
  db: Db;
  box: SecretBox | null;
  log: Logger;
  audit: Pick<AuditService, 'record'>;
  config: CapacityConfig;
  /**
   * Ends the database's live just-in-time logins (their revocations queued on its node) in the
   * caller's transaction; returns how many. A login made on the source exists only there.
   */
  endAccess?: (tx: Tx, databaseId: string) => Promise<number>;
}) {
  const { db, log } = deps;
  const requireBox = (): SecretBox => {
    if (!deps.box) throw unavailable('Moves are unavailable: the server has no master key configured');
    return deps.box;
  };

  const capacity = () => ({
    reserve: deps.config.nodeConnectionReserve,
    assumedMaxConnections: deps.config.nodeAssumedMaxConnections,
    assumedReservedSlots: ASSUMED_RESERVED_SLOTS,
  });

  /**
   * Starts a move of a ready database to the node `targetId`, checked under its row lock (FOR NO
   * KEY UPDATE, as placement: a cordon or decommission committed meanwhile is seen) as placement
   * checks a named node: active, uncordoned, healthy (`refusal`), not the source, the name free
   * there, room for its connections. Then the move's row, `moving`, and the source's `move_out`.
   * `detailed`: the caller may learn why the node was refused (platform admins, drains); others
   * get one answer for every refusal about the node (nodes.placement.ts `nodeUnavailable`).
   */
  async function begin(
    tx: Tx,
    d: {
      id: string;
      account_id: string;
      name: string;
      pg_name?: string | null;
      node_id: string;
      limits: dbRepo.StoredLimits;
    },
    targetId: string,
    drainId: string | null,
    detailed: boolean,
  ): Promise<{ id: string; target: string }> {
    const box = requireBox();
    const target = await lockNodeState(tx, targetId);
    if (!target) throw hideNodeRefusal(notFound('Node'), detailed);
    // The caller sees its database's node: naming it is no news.
    if (target.id === d.node_id) throw conflict(`Database "${d.name}" is already on node "${target.name}"`);
    const why = refusal(target);
    if (why) throw hideNodeRefusal(new AppError('conflict', why, { node: target.name }), detailed);
    if (await nameTaken(tx, target.id, d.pg_name ?? d.name))
      throw hideNodeRefusal(
        conflict(`Node "${target.name}" already holds a database named "${d.name}"`),
        detailed,
      );
    try {
      await reserveConnections(tx, {
        nodeId: target.id,
        requested: tenantConnections(d.limits),
        committed: dbRepo.committedConnections,
        config: deps.config,
        log,
        accountId: d.account_id,
      });
    } catch (err) {
      throw hideNodeRefusal(err, detailed);
    }
    const id = randomUUID();
    const wrappedKey = box.seal(randomBytes(32).toString('base64url'), moveKeyContext(id));
    await repo.insertMove(tx, {
      id,
      accountId: d.account_id,
      databaseId: d.id,
      sourceNodeId: d.node_id,
      targetNodeId: target.id,
      drainId,
      wrappedKey,
    });
    await repo.setMoving(tx, d.id, true);
    // A just-in-time login is a role on the source with CONNECT of its own: the freeze would not
    // stop it, and the target will not have it. It ends now (audited as ended by the move); its
    // revocation is queued before the move_out, so the source runs it first.
    await deps.endAccess?.(tx, d.id);
    // A pre-copy when the source can freeze and fingerprint afterwards; else frozen from the start.
    const precopy = await repo.nodeOffers(tx, d.node_id, MOVE_JOB_KINDS.freeze);
    await enqueueJob(tx, {
      nodeId: d.node_id,
      accountId: d.account_id,
      kind: MOVE_JOB_KINDS.out,
      payload: { move_id: id, database_id: d.id, name: d.name, ...(precopy ? { precopy: true } : {}) },
    });
    await notify(tx, DATABASE_STATUS_CHANNEL, d.id);
    return { id, target: target.name };
  }

  /** The next database of a running drain, or the drain's end. */
  async function continueDrain(tx: Tx, drainId: string): Promise<void> {
    const drain = await repo.lockDrain(tx, drainId);
    if (drain?.status !== 'running') return;
    const next = await repo.nextDrainDatabase(tx, drain.node_id);
    if (!next) {
      const left = await repo.countUnmovable(tx, drain.node_id);
      await repo.finishDrain(
        tx,
        drain.id,
        left === 0 ? 'completed' : 'failed',
        left === 0 ? null : `${left} database(s) not ready were left on the node`,
      );
      await deps.audit.record(tx, {
        action: left === 0 ? 'node.drained' : 'node.drain_failed',
        outcome: left === 0 ? 'success' : 'failure',
        targetType: 'node',
        targetId: drain.node_id,
        details: { drain_id: drain.id, left },
      });
      return;
    }
    const row = await dbRepo.findByName(tx, next.account_id, next.name, { forUpdate: true });
    // Placement's choice: active, uncordoned, healthy, the name free there (so never the drained node).
    const target = row ? await bestNode(tx, dbRepo.physicalName(row), capacity()) : null;
    let started: { id: string; target: string } | null = null;
    let reason = 'no node can take it';
    if (row && target) {
      try {
        // Every check comes before the first write: a refusal leaves the transaction clean.
        started = await begin(tx, row, target.id, drain.id, true);
      } catch (err) {
        if (!(err instanceof AppError)) throw err;
        reason = err.message;
      }
    }
    if (!row || !started) {
      await repo.finishDrain(tx, drain.id, 'failed', `no node can take database ${next.name}: ${reason}`);
      await deps.audit.record(tx, {
        action: 'node.drain_failed',
        outcome: 'failure',
        targetType: 'node',
        targetId: drain.node_id,
        details: { drain_id: drain.id, database: next.name, reason: reason.slice(0, 300) },
      });
      return;
    }
    await deps.audit.record(tx, {
      action: 'database.move_requested',
      accountId: row.account_id,
      targetType: 'database',
      targetId: row.id,
      details: {
        name: row.name,
        move_id: started.id,
        from: row.node_name,
        to: started.target,
        drain_id: drain.id,
      },
    });
  }

  /** A move that cannot go on (nodes.move.fail.ts), failed by the agent that ran the step. */
  const fail = (tx: Tx, job: JobRow, move: repo.MoveRow, reason: string, targetTouched: boolean) =>
    failMove(tx, deps.audit, { actorType: 'agent', actorId: job.node_id }, move, reason, targetTouched);

  async function copied(tx: Tx, job: JobRow, move: repo.MoveRow) {
    const parsed = moveOutResultSchema.safeParse(job.result);
    const asked = moveOutPayloadSchema.safeParse(job.payload);
    // A frozen copy reports when it froze (a pre-copy may be made frozen: its database was at
    // work); only a pre-copy may report a fingerprint, and never after the move froze.
    if (
      !parsed.success ||
      !asked.success ||
      parsed.data.backup_id !== move.id ||
      (parsed.data.fingerprint !== undefined && (asked.data.precopy !== true || move.frozen_at !== null))
    ) {
      await fail(tx, job, move, 'the source reported a result that does not match the move', false);
      return;
    }
    const r = parsed.data;
    const box = deps.box;
    const d = await repo.databaseById(tx, move.database_id);
    const sealed = await repo.sealedPassword(tx, move.database_id);
    if (!box || !d || !sealed) {
      await fail(tx, job, move, 'the database or its password is no longer available', false);
      return;
    }
    const manifest = backupManifestSchema.parse(r);
    await repo.markRestoring(tx, move.id, {
      manifest,
      sizeBytes: r.size_bytes,
      frozenAt: r.frozen_at ?? null,
      fingerprint: r.fingerprint ?? null,
    });
    // The same password: a new SCRAM verifier (new salt) of the stored one, as a create makes.
    const verifier = scramVerifier(box.open(sealed, passwordContext(move.database_id)));
    await enqueueJob(tx, {
      nodeId: move.target_node_id,
      accountId: move.account_id,
      kind: MOVE_JOB_KINDS.in,
      payload: {
        move_id: move.id,
        database_id: move.database_id,
        name: move.database_name,
        expected: manifest,
        create: {
          database_id: move.database_id,
          name: move.database_name,
          verifier,
          allowlist: toPayloadAllowlist(d.allowlist),
          limits: d.limits,
        },
      },
    });
  }

  async function restored(tx: Tx, job: JobRow, move: repo.MoveRow) {
    if (move.frozen_at === null) {
      // A pre-copy is on the target: the source stops writes now and shows whether it changed.
      await repo.markFreezing(tx, move.id);
      await enqueueJob(tx, {
        nodeId: move.source_node_id,
        accountId: move.account_id,
        kind: MOVE_JOB_KINDS.freeze,
        payload: { move_id: move.id, database_id: move.database_id, name: move.database_name },
      });
      return;
    }
    await switchOver(tx, job, move);
  }

  /**
   * The source froze after a pre-copy: unchanged since the copy, the switch; changed (or a
   * session it could not end), the target's copy is dropped and the frozen source copied again.
   */
  async function frozen(tx: Tx, job: JobRow, move: repo.MoveRow) {
    const parsed = moveFreezeResultSchema.safeParse(job.result);
    if (!parsed.success) {
      await fail(tx, job, move, 'the source reported a freeze that does not match the move', true);
      return;
    }
    const r = parsed.data;
    if (r.quiet && move.precopy_fingerprint !== null && r.fingerprint === move.precopy_fingerprint) {
      await repo.markFrozen(tx, move.id, r.frozen_at);
      await switchOver(tx, job, (await repo.findMove(tx, move.id))!);
      return;
    }
    log.info(
      { move_id: move.id, database_id: move.database_id, quiet: r.quiet },
      'the database changed during its pre-copy: copying it again, frozen',
    );
    await repo.markSecondCopy(tx, move.id, r.frozen_at);
    const payload = { move_id: move.id, database_id: move.database_id, name: move.database_name };
    // Jobs of one database run in queue order: the first copy is gone before the second comes.
    await enqueueJob(tx, {
      nodeId: move.target_node_id,
      accountId: move.account_id,
      kind: MOVE_JOB_KINDS.cleanup,
      payload,
    });
    await enqueueJob(tx, {
      nodeId: move.source_node_id,
      accountId: move.account_id,
      kind: MOVE_JOB_KINDS.out,
      payload,
    });
  }

  async function switchOver(tx: Tx, job: JobRow, move: repo.MoveRow) {
    if (await nameTaken(tx, move.target_node_id, move.database_physical)) {
      await fail(tx, job, move, 'the name was taken on the target during the move', true);
      return;
    }
    await repo.switchNode(tx, move.database_id, move.target_node_id);
    await repo.finishMove(tx, move.id, 'switched', null);
    await enqueueJob(tx, {
      nodeId: move.source_node_id,
      accountId: move.account_id,
      kind: MOVE_JOB_KINDS.cleanup,
      payload: { move_id: move.id, database_id: move.database_id, name: move.database_name },
    });
    const done = await repo.findMove(tx, move.id);
    await deps.audit.record(tx, {
      action: 'database.moved',
      actorType: 'agent',
      actorId: job.node_id,
      accountId: move.account_id,
      targetType: 'database',
      targetId: move.database_id,
      details: {
        name: move.database_name,
        move_id: move.id,
        from: move.source_node,
        to: move.target_node,
        copies: move.copies,
        freeze_ms: done?.freeze_ms === null || !done ? null : Number(done.freeze_ms),
        size_bytes: done?.size_bytes === null || !done ? null : Number(done.size_bytes),
      },
    });
    await notify(tx, DATABASE_STATUS_CHANNEL, move.database_id);
    log.info({ database_id: move.database_id, move_id: move.id, to: move.target_node }, 'database moved');
    if (move.drain_id) await continueDrain(tx, move.drain_id);
  }

  /** The move a leased move job belongs to, for the node that holds the lease (else null). */
  async function leasedMove(nodeId: string, jobId: number, attempt: number) {
    const job = await findLeasedJob(db, jobId, nodeId, attempt);
    if (!job || !isMoveKind(job.kind)) return null;
    const moveId = moveIdOf(job);
    const move = moveId ? await repo.findMove(db, moveId) : null;
    if (!move || move.account_id !== job.account_id) return { job, move: null };
    return { job, move };
  }

  return {
    /** `POST /v1/databases/:name/move`: 202 with the move to follow. */
    async move(caller: Caller, name: string, nodeName: string): Promise<MoveView> {
      requireLevel(caller, 'admin');
      assertDatabaseInScope(caller, name);
      const id = await withTx(db, async (tx) => {
        const row = await dbRepo.findByName(tx, caller.accountId, name, { forUpdate: true });
        if (!row) throw notFound('Database');
        requireHosted(row, 'move');
        if (row.status !== 'ready') throw conflict(`Cannot move the database while it is ${row.status}`);
        if (row.rotation_pending) throw conflict('Cannot move the database during a credential rotation');
        const detailed = seesNodeDetail(caller);
        const target = await repo.findNode(tx, { name: nodeName });
        if (!target) throw hideNodeRefusal(notFound('Node'), detailed);
        // Checked here, and again under the node's lock in begin().
        const why = target.id === row.node_id ? null : refusal(target);
        if (why) throw hideNodeRefusal(new AppError('conflict', why, { node: target.name }), detailed);
        const { id: moveId } = await begin(tx, row, target.id, null, detailed);
        await deps.audit.record(
          tx,
          auditFromCaller(caller, {
            action: 'database.move_requested',
            targetType: 'database',
            targetId: row.id,
            details: { name, move_id: moveId, from: row.node_name, to: target.name },
          }),
        );
        return moveId;
      });
      log.info({ database: name, move_id: id }, 'database move queued');
      return presentMove((await repo.findMove(db, id))!);
    },

    /** `GET /v1/databases/:name/move`: the latest move of the database. */
    async status(caller: Caller, name: string): Promise<MoveView> {
      requireLevel(caller, 'read');
      assertDatabaseInScope(caller, name);
      const row = await dbRepo.findByName(db, caller.accountId, name);
      if (!row) throw notFound('Database');
      const m = await repo.latestMove(db, row.id);
      if (!m) throw notFound('Move');
      return presentMove(m);
    },

    /** `POST /v1/nodes/:id/drain` (platform admins): moves every ready database off the node, one at a time. */
    async drain(user: UserPrincipal, nodeId: string) {
      const drainId = randomUUID();
      // Cordoned first, in its own transaction: nothing new is placed on the node while it drains
      // (and its lock is not held while the drain locks its first target). It stays cordoned after.
      await withTx(db, async (tx) => {
        const node = await fleet.lockNode(tx, nodeId);
        if (!node) throw notFound('Node');
        if (!(await fleet.setCordon(tx, nodeId, true))) return;
        await deps.audit.record(tx, {
          action: 'node.cordoned',
          actorType: 'user',
          actorId: user.userId,
          sourceIp: user.sourceIp,
          targetType: 'node',
          targetId: nodeId,
          details: { node_name: node.name, reason: 'drain' },
        });
      });
      await withTx(db, async (tx) => {
        const node = await repo.findNode(tx, { id: nodeId });
        if (!node) throw notFound('Node');
        if ((await repo.latestDrain(tx, nodeId))?.status === 'running')
          throw conflict(`Node "${node.name}" is already being drained`);
        await repo.insertDrain(tx, drainId, nodeId);
        await deps.audit.record(tx, {
          action: 'node.drain_requested',
          actorType: 'user',
          actorId: user.userId,
          sourceIp: user.sourceIp,
          targetType: 'node',
          targetId: nodeId,
          details: { drain_id: drainId, node: node.name },
        });
        await continueDrain(tx, drainId);
      });
      return this.drainStatus(nodeId);
    },

    /** `GET /v1/nodes/:id/drain`: the node's latest drain and its moves. */
    async drainStatus(nodeId: string) {
      const drain = await repo.latestDrain(db, nodeId);
      if (!drain) throw notFound('Drain');
      const moves = await repo.movesOfDrain(db, drain.id);
      return {
        id: drain.id,
        status: drain.status,
        error: drain.error,
        created_at: drain.created_at.toISOString(),
        finished_at: drain.finished_at?.toISOString() ?? null,
        moves: moves.map(presentMove),
      };
    },

    /** Registered for `database.move_` jobs: runs in the transaction that finished the job. */
    async onJobFinished(tx: Tx, job: JobRow): Promise<void> {
      const moveId = moveIdOf(job);
      if (!moveId) return;
      const move = await repo.findMove(tx, moveId, { forUpdate: true });
      if (!move || move.account_id !== job.account_id) return;
      const ok = job.status === 'succeeded';
      switch (job.kind) {
        case MOVE_JOB_KINDS.out:
          if (move.status !== 'copying' || job.node_id !== move.source_node_id) return;
          if (ok) await copied(tx, job, move);
          else await fail(tx, job, move, reasonOf(job, 'the copy at the source failed'), false);
          break;
        case MOVE_JOB_KINDS.in:
          if (move.status !== 'restoring' || job.node_id !== move.target_node_id) return;
          if (ok) await restored(tx, job, move);
          else await fail(tx, job, move, reasonOf(job, 'the restore at the target failed'), true);
          break;
        case MOVE_JOB_KINDS.freeze:
          if (move.status !== 'freezing' || job.node_id !== move.source_node_id) return;
          if (ok) await frozen(tx, job, move);
          else await fail(tx, job, move, reasonOf(job, 'the freeze at the source failed'), true);
          break;
        default:
          // thaw / cleanup: their outcome is audited by the database jobs' hook (`<kind>_done|failed`).
          if (!ok) log.warn({ move_id: move.id, kind: job.kind, job: job.id }, 'a move clean-up step failed');
          break;
      }
    },

    /** The move archive's data key, for the node that holds a move_out / move_in lease; else null. */
    async moveKey(nodeId: string, jobId: number, attempt: number): Promise<string | null> {
      const leased = await leasedMove(nodeId, jobId, attempt);
      if (!leased) return null;
      const { job, move } = leased;
      const node = job.kind === MOVE_JOB_KINDS.out ? move?.source_node_id : move?.target_node_id;
      if (!move || (job.kind !== MOVE_JOB_KINDS.out && job.kind !== MOVE_JOB_KINDS.in) || node !== nodeId)
        throw notFound('Job lease');
      const box = requireBox();
      log.info({ job: jobId, kind: job.kind, move_id: move.id }, 'move key handed to its agent');
      return box.open(move.wrapped_key, moveKeyContext(move.id));
    },

    /** The owner's password for the target's proving login (move_in only); else null. */
    async jobSecret(nodeId: string, jobId: number, attempt: number): Promise<string | null> {
      const leased = await leasedMove(nodeId, jobId, attempt);
      if (!leased) return null;
      const { job, move } = leased;
      if (
        !move ||
        job.kind !== MOVE_JOB_KINDS.in ||
        move.target_node_id !== nodeId ||
        move.status !== 'restoring'
      )
        throw notFound('Job lease');
      const sealed = await repo.sealedPassword(db, move.database_id);
      if (!sealed) throw notFound('Job lease');
      log.info({ job: jobId, kind: job.kind, move_id: move.id }, 'job secret handed to its agent');
      return requireBox().open(sealed, passwordContext(move.database_id));
    },
  };
}

export type Moves = ReturnType<typeof createMoves>;
