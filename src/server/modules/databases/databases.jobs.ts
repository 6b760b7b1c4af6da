import type { Logger } from 'pino';
import { BACKUP_JOB_KINDS } from '../../../shared/contracts/backup-results.ts';
import { JOB_KINDS, SPARE_NAME_PATTERN } from '../../../shared/contracts/jobs.ts';
import { notFound, unavailable } from '../../../shared/errors.ts';
import { scramVerifier } from '../../../shared/scram.ts';
import type { SecretBox } from '../../crypto/secret-box.ts';
import { notify } from '../../db/notify.ts';
import { type Db, type Tx, withTx } from '../../db/pool.ts';
import type { AuditService } from '../audit/audit.service.ts';
import type { WithheldResult } from '../jobs/job-hooks.ts';
import { enqueueJob, findLeasedJob, type JobRow } from '../jobs/jobs.repo.ts';
import { toPayloadAllowlist } from './databases.allowlist.ts';
import { passwordContext } from './databases.credentials.ts';
import * as repo from './databases.repo.ts';

/** NOTIFY channel: a database's job finished (payload: the database id); its row may have changed. */
export const DATABASE_STATUS_CHANNEL = 'bulwark_database_status';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const databaseIdOf = (job: JobRow): string | null => {
  const id = job.payload.database_id;
  return typeof id === 'string' && UUID.test(id) ? id : null;
};

/** `backup.restore` (src/shared/contracts/backup-results.ts): into a new database, it creates one. */
const RESTORE_KIND = BACKUP_JOB_KINDS.restore;
const isRecord = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v);

/** A rotation queued by the server to put the previous password back after a failed one. */
const isRepair = (job: JobRow) => job.payload.repair === true;

const reason = (job: JobRow, what: string) => `${what}: ${job.last_error ?? 'the job failed'}`.slice(0, 1000);

/**
 * A new database's row and its `database.create` job, in the caller's transaction: the row with
 * its sealed password and its generated name on the node (`pg_name`), the job with the owner's
 * verifier and that name, which a warm-pool spare's own name may replace (`generated_name`). A
 * create's and a reserve's. Returns the generated name.
 */
export async function queueCreate(
  tx: Tx,
  d: {
    id: string;
    accountId: string | null;
    nodeId: string;
    label: string;
    passwordSealed: string;
    verifier: string;
    allowlist: repo.StoredAllowlistEntry[];
    limits: repo.StoredLimits;
  },
): Promise<string> {
  // Its name on the node is generated whatever the label (ADR 0039): nothing in the cluster's
  // catalogs names it by its label, and no answer depends on other accounts' labels.
  const physical = repo.generatedPhysicalName();
  await repo.insertDatabase(tx, {
    id: d.id,
    accountId: d.accountId,
    nodeId: d.nodeId,
    name: d.label,
    pgName: physical,
    passwordSealed: d.passwordSealed,
    allowlist: d.allowlist,
    limits: d.limits,
  });
  await enqueueJob(tx, {
    nodeId: d.nodeId,
    accountId: d.accountId,
    kind: JOB_KINDS.create,
    payload: {
      database_id: d.id,
      name: physical,
      generated_name: true,
      verifier: d.verifier,
      allowlist: toPayloadAllowlist(d.allowlist),
      limits: d.limits,
    },
  });
  return physical;
}

/** The agent side of databases: job secrets and what a finished job does to a database. */
export function createDatabaseJobs(deps: {
  db: Db;
  box: SecretBox | null;
  log: Logger;
  audit: Pick<AuditService, 'record'>;
  /** Wakes this process's waiters for a database (a create waiting for it) after the commit. */
  wake?: (databaseId: string) => void;
}) {
  /**
   * A rotation died. The agent may already have set the new verifier on PostgreSQL before it
   * failed, so dropping the pending password could leave nobody with a working one. Instead the
   * stored (previous) password is put back on the node by a repair rotation, queued behind
   * nothing (jobs of one database run in order) and proven like any rotation; the row says
   * `restoring`, then `failed_restored` (rotation failed, old password restored). A repair that
   * dies too is recorded as `failed` and left for an operator (`bulwark db rotate` starts over).
   */
  async function restoreAfterFailedRotation(tx: Tx, job: JobRow, id: string): Promise<void> {
    if (isRepair(job)) {
      const original = (await repo.lastRotationReason(tx, id)) ?? 'credential rotation failed';
      await repo.abandonRotation(
        tx,
        id,
        `${original}; ${reason(job, 'restoring the previous password failed')}`,
      );
      return;
    }
    const why = reason(job, 'credential rotation failed');
    const sealed =
      job.account_id && deps.box
        ? await repo.findSealed(tx, { id, accountId: job.account_id, nodeId: job.node_id })
        : null;
    if (!sealed?.password_sealed || !deps.box) {
      await repo.abandonRotation(tx, id, `${why}; the previous password could not be re-applied`);
      return;
    }
    const previous = deps.box.open(sealed.password_sealed, passwordContext(id));
    await repo.restartRotationWithCurrentPassword(tx, id, why);
    await enqueueJob(tx, {
      nodeId: job.node_id,
      accountId: job.account_id,
      kind: JOB_KINDS.rotate,
      payload: { database_id: id, name: job.payload.name, verifier: scramVerifier(previous), repair: true },
    });
  }

  /**
   * The audit action of a finished job: `<kind>_done` / `<kind>_failed`, except a repair
   * rotation's, which says what it means: the rotation failed and the old password was restored
   * (or could not be).
   */
  /**
   * A create succeeded: the database is ready. A warm-pool spare (ADR 0034) keeps its own name on
   * the node (`physical_name`, stored as `pg_name` over the generated one the job gave) and its owner's
   * password is the one the agent set (sealed here as the server seals its own), in this
   * transaction.
   */
  async function markCreated(tx: Tx, job: JobRow, id: string, withheld: WithheldResult): Promise<void> {
    const physical = job.result?.physical_name;
    const pgName = typeof physical === 'string' && physical !== job.payload.name ? physical : null;
    const password = withheld.owner_password;
    const passwordSealed =
      typeof password === 'string' && deps.box ? deps.box.seal(password, passwordContext(id)) : null;
    await repo.markReady(tx, id, { pgName, passwordSealed });
  }

  const auditAction = (job: JobRow, ok: boolean): string => {
    if (job.kind === JOB_KINDS.rotate && isRepair(job)) {
      return ok ? 'database.rotate_failed_restored' : 'database.rotate_restore_failed';
    }
    return `${job.kind}_${ok ? 'done' : 'failed'}`;
  };

  return {
    /**
     * Vets a `database.create` result before it is stored (the job is locked, still running): the
     * owner's password the agent set on a warm-pool spare is withheld from `jobs.result` (the
     * finished hook seals it onto the database), and a physical name that is neither the job's nor
     * a spare's, or that another live database of the node already has, is refused (the job fails
     * for good; ADR 0034, ADR 0039).
     */
    async checkResult(
      tx: Tx,
      job: JobRow,
      result: Record<string, unknown>,
    ): Promise<
      { ok: true; stored: Record<string, unknown>; withheld?: WithheldResult } | { ok: false; reason: string }
    > {
      if (job.kind !== JOB_KINDS.create) return { ok: true, stored: result };
      const { owner_password: ownerPassword, ...stored } = result;
      const id = databaseIdOf(job);
      const physical = typeof result.physical_name === 'string' ? result.physical_name : null;
      // The job's own name, or a spare's: an agent never names a database anything else.
      if (physical && physical !== job.payload.name && !SPARE_NAME_PATTERN.test(physical)) {
        return { ok: false, reason: "physical_name is neither the job's name nor a spare's" };
      }
      if (id && physical && (await repo.physicalNameTaken(tx, job.node_id, physical, id))) {
        return { ok: false, reason: "physical_name is another database's on this node" };
      }
      if (typeof ownerPassword === 'string' && !deps.box) {
        return { ok: false, reason: 'owner_password cannot be sealed: the server has no master key' };
      }
      return {
        ok: true,
        stored,
        withheld: typeof ownerPassword === 'string' ? { owner_password: ownerPassword } : {},
      };
    },

    /** After the commit: wakes this process's waiters for the database at once (no NOTIFY trip). */
    committed(job: JobRow): void {
      const id = databaseIdOf(job);
      if (id) deps.wake?.(id);
    },

    /**
     * The clear password a running create/rotate job needs for its login probe, for the node
     * that holds the job's current lease only. Anything else is a 404 that says nothing more.
     */
    async jobSecret(nodeId: string, jobId: number, attempt: number): Promise<string> {
      const job = await findLeasedJob(deps.db, jobId, nodeId, attempt);
      const id = job ? databaseIdOf(job) : null;
      // A restore into a new database creates it as a create does (its payload's `create`).
      const creates =
        job?.kind === JOB_KINDS.create || (job?.kind === RESTORE_KIND && isRecord(job.payload.create));
      // A job without an account: a reserved database's create (ADR 0037), whose row has none either.
      if (!job || !id || (!job.account_id && !creates) || (!creates && job.kind !== JOB_KINDS.rotate)) {
        throw notFound('Job lease');
      }
      const sealed = await repo.findSealed(deps.db, { id, accountId: job.account_id, nodeId });
      const value = creates ? sealed?.password_sealed : sealed?.pending_password_sealed;
      if (!value) throw notFound('Job lease');
      if (!deps.box) throw unavailable('The server has no master key configured');
      deps.log.info({ job: jobId, kind: job.kind, database_id: id }, 'job secret handed to its agent');
      return deps.box.open(value, passwordContext(id));
    },

    /** Registered for `database.` jobs: runs in the transaction that finished the job. */
    async onJobFinished(tx: Tx, job: JobRow, withheld: WithheldResult = {}): Promise<void> {
      const id = databaseIdOf(job);
      if (!id) return;
      const ok = job.status === 'succeeded';
      const rotationReason =
        job.kind === JOB_KINDS.rotate && isRepair(job) ? await repo.lastRotationReason(tx, id) : null;
      // A create job names the database as the agent makes it (its generated name on the node,
      // ADR 0039); its account's record and webhooks name its label.
      const label =
        (job.kind === JOB_KINDS.create ? await repo.labelOf(tx, id) : null) ??
        (typeof job.payload.name === 'string' ? job.payload.name : null);
      await deps.audit.record(tx, {
        action: auditAction(job, ok),
        actorType: 'agent',
        actorId: job.node_id,
        accountId: job.account_id,
        targetType: 'database',
        targetId: id,
        outcome: ok ? 'success' : 'failure',
        details: {
          name: label,
          job_id: job.id,
          attempts: job.attempts,
          ...(ok ? {} : { error: (job.last_error ?? '').slice(0, 500) }),
          ...(rotationReason ? { rotation_failure: rotationReason.slice(0, 500) } : {}),
        },
      });
      // Whoever waits for this database (a CLI, a benchmark) wakes at the commit, without polling.
      await notify(tx, DATABASE_STATUS_CHANNEL, id);
      switch (job.kind) {
        case JOB_KINDS.create:
          if (ok) await markCreated(tx, job, id, withheld);
          else await repo.markFailed(tx, id, 'provisioning', reason(job, 'provisioning failed'));
          break;
        case JOB_KINDS.delete:
          if (ok) await repo.markDeleted(tx, id);
          else await repo.markFailed(tx, id, 'deleting', reason(job, 'deletion failed'));
          break;
        case JOB_KINDS.rotate:
          if (ok) {
            if (isRepair(job)) await repo.finishRestore(tx, id);
            else await repo.finishRotation(tx, id);
            // Either way the agent ended the owner's sessions opened before this job.
            await repo.releaseHeldConnections(tx, id, job.id);
          } else await restoreAfterFailedRotation(tx, job, id);
          break;
        case JOB_KINDS.allowlist:
          if (!ok) await repo.noteFailure(tx, id, reason(job, 'allowlist update failed'));
          break;
        case JOB_KINDS.limits:
          if (!ok) await repo.noteFailure(tx, id, reason(job, 'limits update failed'));
          break;
        default:
          break;
      }
    },
  };
}

/**
 * Re-seals every stored password with the box's active key (after `bulwark master-key rotate`
 * added one). Batches of rows are locked and rewritten in their own transactions; values
 * already under the active key are left alone, so a re-run finishes an interrupted one.
 */
export async function resealPasswords(
  db: Db,
  box: SecretBox,
  batchSize = 200,
): Promise<{ resealed: number; checked: number }> {
  let after: string | null = null;
  let resealed = 0;
  let checked = 0;
  for (;;) {
    const batch: repo.SealedRow[] = await withTx(db, async (tx) => {
      const rows = await repo.lockSealedBatch(tx, after, batchSize);
      for (const row of rows) {
        checked += 1;
        const ctx = passwordContext(row.id);
        const redo = (v: string | null) => (v && box.needsRotation(v) ? box.seal(box.open(v, ctx), ctx) : v);
        const next = {
          id: row.id,
          password_sealed: redo(row.password_sealed),
          pending_password_sealed: redo(row.pending_password_sealed),
        };
        if (
          next.password_sealed !== row.password_sealed ||
          next.pending_password_sealed !== row.pending_password_sealed
        ) {
          await repo.updateSealed(tx, next);
          resealed += 1;
        }
      }
      return rows;
    });
    if (batch.length < batchSize) break;
    after = batch.at(-1)!.id;
  }
  return { resealed, checked };
}
