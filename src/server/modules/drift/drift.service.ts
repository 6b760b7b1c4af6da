/**
 * Drift between a node's cluster and the desired state (issue 4): the server queues a
 * `node.drift` (or `node.drift_fix`) job carrying the node's known databases from the control
 * DB (names, and ids with limits), and waits — bounded — for the agent's findings. An operator concern, never a tenant one:
 * reached through `bulwark doctor` on the server host (straight through the control DB) or
 * `GET /v1/nodes/:id/drift` behind the server's operator token (see drift.routes.ts).
 */
import type pg from 'pg';
import { z } from 'zod';
import { driftFindingSchema, JOB_KINDS, limitsSchema } from '../../../shared/contracts/jobs.ts';
import { notFound, unavailable } from '../../../shared/errors.ts';
import { listen, notify, unlisten } from '../../db/notify.ts';
import type { Db, Tx } from '../../db/pool.ts';
import { enqueueJob, getJob, type JobRow } from '../jobs/jobs.repo.ts';
import * as repo from './drift.repo.ts';

/** NOTIFY channel on which a finished `node.*` job announces its id (see `driftJobFinished`). */
export const JOB_DONE_CHANNEL = 'bulwark_job_done';

export type DriftFinding = z.infer<typeof driftFindingSchema>;
export type DriftReport = {
  node: { id: string; name: string };
  fix: boolean;
  /** Databases whose privileges were re-applied (`fix` only). */
  fixed: string[];
  findings: DriftFinding[];
};

const resultSchema = z.object({
  findings: z.array(driftFindingSchema),
  fixed: z.array(z.string()).optional(),
});

/** Job hook for `node.`: wakes whoever waits for this job (in the finishing transaction). */
export async function driftJobFinished(tx: Tx, job: JobRow): Promise<void> {
  await notify(tx, JOB_DONE_CHANNEL, String(job.id));
}

/**
 * Waits until the job is finished (succeeded or dead) or the deadline passes. Wakes on the
 * job's NOTIFY; a 1 s re-check covers a notification lost with a dropped connection.
 */
export async function waitForJob(db: Db, jobId: number, deadline: number): Promise<JobRow | null> {
  const client: pg.PoolClient = await db.connect();
  let wake: (() => void) | null = null;
  const onNote = (m: pg.Notification) => {
    if (m.channel === JOB_DONE_CHANNEL && m.payload === String(jobId)) wake?.();
  };
  client.on('notification', onNote);
  try {
    await listen(client, JOB_DONE_CHANNEL);
    for (;;) {
      const job = await getJob(client, jobId);
      if (job && (job.status === 'succeeded' || job.status === 'dead')) return job;
      const left = deadline - Date.now();
      if (left <= 0) return job;
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, Math.min(left, 1_000));
        wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
      wake = null;
    }
  } finally {
    client.off('notification', onNote);
    await unlisten(client, JOB_DONE_CHANNEL).catch(() => {});
    client.release();
  }
}

export function createDriftService(deps: { db: Db }) {
  const { db } = deps;
  return {
    listNodes: () => repo.listNodes(db),
    findNode: (ref: string) => repo.findNode(db, ref),

    /** Queues the drift job for one node and returns its findings; 503 when no answer in time. */
    async check(nodeRef: string, opts: { fix: boolean; timeoutMs: number }): Promise<DriftReport> {
      const node = await repo.findNode(db, nodeRef);
      if (!node) throw notFound('Node');
      const known = await repo.knownDatabaseDetails(db, node.id);
      // Ids (the agent derives the steward's login from them) and limits (role settings are
      // compared with them); a record whose limits do not parse is sent with null limits.
      const databases = known.map((d) => {
        const limits = limitsSchema.safeParse(d.limits);
        return { id: d.id, name: d.name, limits: limits.success ? limits.data : null };
      });
      const job = await enqueueJob(db, {
        nodeId: node.id,
        kind: opts.fix ? JOB_KINDS.driftFix : JOB_KINDS.drift,
        payload: { known_databases: known.map((d) => d.name), databases },
        maxAttempts: 1,
      });
      const done = await waitForJob(db, job.id, Date.now() + opts.timeoutMs);
      if (done?.status !== 'succeeded') {
        await repo.abandonQueuedJob(db, job.id);
        throw unavailable(
          done?.status === 'dead'
            ? `The drift check failed on node ${node.name}: ${(done.last_error ?? 'unknown').slice(0, 300)}`
            : `Node ${node.name} did not answer the drift check in time`,
        );
      }
      const r = resultSchema.safeParse(done.result);
      if (!r.success) throw unavailable(`Node ${node.name} returned a malformed drift result`);
      return {
        node: { id: node.id, name: node.name },
        fix: opts.fix,
        fixed: r.data.fixed ?? [],
        findings: r.data.findings,
      };
    },
  };
}

export type DriftService = ReturnType<typeof createDriftService>;
