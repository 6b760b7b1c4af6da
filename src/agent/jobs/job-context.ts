import type { Readable } from 'node:stream';
import type pg from 'pg';
import type { Logger } from 'pino';
import type { BackupProgress } from '../../shared/contracts/backups.ts';

/** What a job handler may use. The admin pool is the only admin connection to the cluster. */
export type JobContext = {
  admin: pg.Pool;
  log: Logger;
  signal: AbortSignal;
  /** Which run of the job this is (1 first; more after a failure or a lost lease). */
  attempt?: number;
  /**
   * Fetches the job's secret (the owner's clear password) from the server, which hands it
   * only to the current lease holder. Used for proving logins; never logged or stored.
   */
  secret?: () => Promise<string>;
  /**
   * Fetches the data key (32 bytes) of the backup the job names, from the server, which hands it
   * only to the current lease holder (`backup.*` jobs; contracts/backups.ts). Never logged or stored.
   */
  backupKey?: () => Promise<Buffer>;
  /**
   * Hands an ephemeral result (explorer rows) to the server outside the job row, for the
   * current lease holder only; the server never stores it in the job (issue 6).
   */
  sendResult?: (outcome: unknown) => Promise<void>;
  /** Whether this agent still holds the job's lease (false once the server ended the job). */
  leaseActive?: () => Promise<boolean>;
  /**
   * Runs `fn` once the job's outcome has been reported (or could not be): background work the
   * job caused (the warm pool's refill) never delays its report.
   */
  afterReport?: (fn: () => void) => void;
  /** Reports how far a backup / restore / drill is (best effort: a failed report is only logged). */
  progress?: (p: Omit<BackupProgress, 'attempt'>) => Promise<void>;
  /** Streams an archive to the download waiting on the server (`backup.download`, ADR 0023). */
  streamArchive?: (token: string, body: Readable) => Promise<number>;
  /**
   * A `database.move_in`'s archive relayed by the server from the move's source node (when this
   * node's store does not hold it): the bytes as stored, still encrypted under the move key.
   */
  fetchMoveArchive?: () => Promise<Readable>;
};

/**
 * Returned by a handler whose result the server already recorded (an explorer result completes
 * its job on receipt): the agent then does not call `complete`.
 */
export const JOB_REPORTED: Record<string, unknown> = Object.freeze({});

/** A failure the handler knows is final (bad input): no retry. Anything else is retried. */
export class PermanentJobError extends Error {}

export type JobHandler = (
  payload: Record<string, unknown>,
  ctx: JobContext,
) => Promise<Record<string, unknown>>;
