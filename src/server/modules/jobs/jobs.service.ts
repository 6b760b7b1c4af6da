/**
 * What an account may see of the job queue: its own jobs, narrowed to its databases for a
 * database-scoped key. Payloads never leave (they may hold SQL); the SQL is in jobs.repo.ts.
 */
import { notFound } from '../../../shared/errors.ts';
import type { Db } from '../../db/pool.ts';
import type { Caller } from '../../http/caller.ts';
import type { PageCursor } from '../../http/pagination.ts';
import { type AccountJobRow, getAccountJob, listAccountJobs, renewLease } from './jobs.repo.ts';

export function createJobsService(deps: { db: Db; leaseMs?: number }) {
  const { db } = deps;
  const leaseMs = deps.leaseMs ?? 120_000;
  return {
    /**
     * Agent → server: extends the lease of a job this node runs (a long backup renews it while it
     * works, so it is never reclaimed and run twice); a lost lease is a 404.
     */
    async renewLease(nodeId: string, jobId: number, attempt: number) {
      const until = await renewLease(db, jobId, nodeId, attempt, leaseMs);
      if (!until) throw notFound('Job lease');
      return { lease_expires_at: until.toISOString(), lease_ms: leaseMs };
    },

    /** The caller's jobs, newest first: `limit + 1` rows (the extra one says there is more). */
    list(caller: Caller, page: { limit: number; after: PageCursor | null }): Promise<AccountJobRow[]> {
      return listAccountJobs(db, caller.accountId, caller.databases, page);
    },

    /** One of the caller's jobs; another account's (or another database's) is a 404. */
    async get(caller: Caller, id: number): Promise<AccountJobRow> {
      const row = await getAccountJob(db, caller.accountId, caller.databases, id);
      if (!row) throw notFound('Job');
      return row;
    },
  };
}

export type JobsService = ReturnType<typeof createJobsService>;
