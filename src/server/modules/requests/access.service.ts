/**
 * Just-in-time credentials (issue 14): executing an approved access request makes a time-boxed
 * personal login on the database's node. The server picks the login (`<db>_jit_<8 hex>`) and a
 * strong password, keeps only the password's SCRAM verifier long enough to queue the job, signs an
 * execution token of mode `access` binding accessGrantText() of the grant, queues `access.grant`
 * and waits (bounded) for the agent to report the login live. The requester sees the password
 * once, in the answer; it is never stored, logged or audited.
 *
 * Ending a grant: at valid_until the agent ends the login on its own clock (access-expiry.ts on
 * the agent); the server's sweeper (access.expiry.ts) marks it expired and queues `access.revoke`
 * too, which then finds nothing left. A cancelled request or a deleted database ends its grants
 * at once (revokeForRequest / revokeForDatabase, each in the caller's transaction).
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { jitLoginName } from '../../../shared/access-login.ts';
import {
  accessGrantText,
  EXECUTION_JOB_KINDS,
  type GrantAccessPayload,
} from '../../../shared/contracts/execution.ts';
import { AppError, conflict, notFound, unavailable } from '../../../shared/errors.ts';
import {
  EXECUTION_TOKEN_TTL_SECONDS,
  type ExecutionCapability,
  type ExecutionClaims,
  sqlSha256,
} from '../../../shared/execution-token.ts';
import { scramVerifier } from '../../../shared/scram.ts';
import type { ServerConfig } from '../../config.ts';
import { notify } from '../../db/notify.ts';
import { type Db, type Tx, withTx } from '../../db/pool.ts';
import type { AuditService } from '../audit/audit.service.ts';
import { requireHosted } from '../databases/databases.kind.ts';
import { labelOf } from '../databases/databases.repo.ts';
import { JOB_DONE_CHANNEL, waitForJob } from '../drift/drift.service.ts';
import { enqueueJob, type JobRow } from '../jobs/jobs.repo.ts';
import * as repo from './access.repo.ts';

/** Shortest and longest grant this service makes (the request API bounds durations further). */
export const ACCESS_DURATION_BOUNDS_S = { min: 1, max: 366 * 24 * 3600 } as const;

export type AccessCredentials = {
  login: string;
  /** Shown once; never stored. */
  password: string;
  /** Through the pooler, as the database's own connection string (no password in it). */
  connection_string: string;
  valid_until: string;
};

export type GrantInput = {
  accountId: string;
  requestId: string;
  databaseId: string;
  capability: ExecutionCapability;
  durationS: number;
  /** Who executed the request (the audit's actor once the login is live). */
  actor: { type: 'user' | 'key' | 'system'; id: string | null };
};

export type AccessServiceDeps = {
  db: Db;
  log: Logger;
  audit: Pick<AuditService, 'record'>;
  /** The server's execution key ring (its `sign`). */
  signer: { sign(claims: ExecutionClaims): string };
  config: Pick<ServerConfig, 'poolerPublicHost' | 'poolerPort' | 'poolerSslmode'>;
  /** How long grantAccess waits for the agent (default 30 s). */
  grantTimeoutMs?: number;
  /** Told after a grant is made or ended, so the expiry sweeper re-plans. */
  onChanged?: () => void;
};

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const BATCH = 200;

export function createAccessService(deps: AccessServiceDeps) {
  const { db, log, audit } = deps;
  const grantTimeoutMs = deps.grantTimeoutMs ?? 30_000;

  const connectionString = (login: string, database: string) => {
    const { poolerPublicHost: h, poolerPort: port, poolerSslmode: sslmode } = deps.config;
    const host = h.includes(':') ? `[${h}]` : h;
    return `postgresql://${login}@${host}:${port}/${database}?sslmode=${sslmode}`;
  };

  /** Queues the revocation of live grants (locked by the caller) and marks them ended. */
  const endGrants = async (tx: Tx, grants: repo.LiveGrant[], reason: repo.EndReason) => {
    for (const g of grants) {
      const job = await enqueueJob(tx, {
        nodeId: g.node_id,
        accountId: g.account_id,
        kind: EXECUTION_JOB_KINDS.revokeAccess,
        payload: { database_id: g.database_id, name: g.name, grant_id: g.id, login: g.login },
      });
      await repo.markEnded(tx, g.id, reason, job.id);
    }
    return grants.length;
  };

  return {
    /**
     * Makes the grant of one executed access request and returns its credentials (once). Throws
     * 409 when the database is not ready, 502 execution_refused when the agent refused or failed
     * the grant, 503 when it did not answer in time (the grant is then abandoned and revoked).
     */
    async grantAccess(input: GrantInput): Promise<AccessCredentials> {
      if (
        !Number.isSafeInteger(input.durationS) ||
        input.durationS < ACCESS_DURATION_BOUNDS_S.min ||
        input.durationS > ACCESS_DURATION_BOUNDS_S.max
      )
        throw new RangeError('access duration out of bounds');
      if (!UUID.test(input.requestId) || !UUID.test(input.databaseId)) throw new TypeError('bad ids');
      const password = randomBytes(24).toString('base64url');
      const { job, payload } = await withTx(db, async (tx) => {
        const database = await repo.findDatabase(tx, input.accountId, input.databaseId);
        if (!database) throw notFound('Database');
        requireHosted(database, 'make just-in-time logins on');
        if (database.status !== 'ready')
          throw conflict(`Access needs a ready database (it is ${database.status})`);
        const grantId = randomUUID();
        const login = jitLoginName(database.name, randomBytes(4).toString('hex'));
        const validUntil = new Date(Math.floor(Date.now() / 1000) * 1000 + input.durationS * 1000);
        const payload: GrantAccessPayload = {
          database_id: database.id,
          name: database.name,
          grant_id: grantId,
          token: '',
          login,
          capability: input.capability,
          verifier: scramVerifier(password),
          valid_until: validUntil.toISOString(),
        };
        const iat = Math.floor(Date.now() / 1000);
        payload.token = deps.signer.sign({
          request_id: input.requestId,
          database: database.name,
          node: database.node_id,
          capability: input.capability,
          mode: 'access',
          sql_sha256: sqlSha256(accessGrantText(payload)),
          approved_rows: null,
          jti: randomUUID(),
          iat,
          exp: iat + EXECUTION_TOKEN_TTL_SECONDS,
        });
        await repo.insertGrant(tx, {
          id: grantId,
          account_id: input.accountId,
          request_id: input.requestId,
          database_id: database.id,
          login,
          capability: input.capability,
          valid_until: validUntil,
          actor_type: input.actor.type,
          actor_id: input.actor.id,
        });
        // The token lives 5 minutes: a retry after that is refused by the agent (and fails the grant).
        const job = await enqueueJob(tx, {
          nodeId: database.node_id,
          accountId: input.accountId,
          kind: EXECUTION_JOB_KINDS.grantAccess,
          payload,
          maxAttempts: 3,
        });
        await repo.setGrantJob(tx, grantId, job.id);
        return { job, payload };
      });
      deps.onChanged?.();

      const done = await waitForJob(db, job.id, Date.now() + grantTimeoutMs);
      if (done?.status === 'succeeded') {
        log.info(
          { grant: payload.grant_id, login: payload.login, request: input.requestId },
          'access granted',
        );
        return {
          login: payload.login,
          password,
          connection_string: connectionString(payload.login, payload.name),
          valid_until: payload.valid_until,
        };
      }
      if (done?.status === 'dead')
        throw new AppError('execution_refused', 'The node did not make the login', {
          reason: (done.last_error ?? 'the job failed').slice(0, 300),
        });
      // No answer in time: nobody will see this password, so the login must not stay.
      await withTx(db, async (tx) => {
        await repo.abandonQueuedJob(tx, job.id);
        const failed = await repo.markFailed(
          tx,
          payload.grant_id,
          'the node did not answer in time',
          'grant_timeout',
        );
        if (failed)
          await enqueueJob(tx, {
            nodeId: job.node_id,
            accountId: input.accountId,
            kind: EXECUTION_JOB_KINDS.revokeAccess,
            payload: {
              database_id: payload.database_id,
              name: payload.name,
              grant_id: payload.grant_id,
              login: payload.login,
            },
          });
      });
      throw unavailable('The node did not make the login in time; the grant was withdrawn');
    },

    /** Ends the live grants of a request now (e.g. it was cancelled); in the caller's transaction. */
    async revokeForRequest(tx: Tx, requestId: string, reason: repo.EndReason = 'cancelled'): Promise<number> {
      const n = await endGrants(tx, await repo.lockLiveOfRequest(tx, requestId, 1_000), reason);
      if (n) deps.onChanged?.();
      return n;
    },

    /** Ends the live grants on a database (it is being deleted, or moved); in the caller's transaction. */
    async revokeForDatabase(
      tx: Tx,
      databaseId: string,
      reason: Extract<repo.EndReason, 'database_deleted' | 'moved'> = 'database_deleted',
    ): Promise<number> {
      const n = await endGrants(tx, await repo.lockLiveOfDatabase(tx, databaseId, 10_000), reason);
      if (n) deps.onChanged?.();
      return n;
    },

    /** Marks grants past valid_until expired and queues their revocation; returns how many. */
    async sweepExpired(now = new Date()): Promise<number> {
      let total = 0;
      for (;;) {
        const n = await withTx(db, async (tx) =>
          endGrants(tx, await repo.lockExpired(tx, now, BATCH), 'expired'),
        );
        total += n;
        if (n < BATCH) break;
      }
      if (total) log.info({ grants: total }, 'expired access grants revoked');
      return total;
    },

    nextExpiry: () => repo.nextExpiry(db),

    /**
     * Hook for `access.` jobs (in the transaction that finished the job): the grant becomes
     * active (audited `access.granted`) or failed; a revocation's answer is recorded (audited
     * `access.revoked`). Whoever waits for the job wakes at the commit.
     */
    async onJobFinished(tx: Tx, job: JobRow): Promise<void> {
      await notify(tx, JOB_DONE_CHANNEL, String(job.id));
      const grantId = job.payload.grant_id;
      if (typeof grantId !== 'string' || !UUID.test(grantId)) return;
      // The events name the database by its label (the account's name for it), never by its name
      // on the node, which the job carries (ADR 0039).
      const ok = job.status === 'succeeded';
      if (job.kind === EXECUTION_JOB_KINDS.grantAccess) {
        const row = ok
          ? await repo.markActive(tx, grantId)
          : await repo.markFailed(tx, grantId, job.last_error ?? 'the job failed');
        if (!row) return;
        await audit.record(tx, {
          action: 'access.granted',
          outcome: ok ? 'success' : 'failure',
          actorType: row.actor_type,
          actorId: row.actor_id,
          accountId: row.account_id,
          targetType: 'database',
          targetId: row.database_id,
          details: {
            name: await labelOf(tx, row.database_id),
            request_id: row.request_id,
            grant_id: row.id,
            login: row.login,
            capability: row.capability,
            valid_until: row.valid_until.toISOString(),
            ...(ok ? {} : { error: (job.last_error ?? '').slice(0, 500) }),
          },
        });
      } else if (job.kind === EXECUTION_JOB_KINDS.revokeAccess) {
        const row = await repo.findGrant(tx, grantId);
        if (!row) return;
        const outcome = ok
          ? (job.result ?? {})
          : { error: (job.last_error ?? 'the job failed').slice(0, 500) };
        await repo.setRevokeOutcome(tx, grantId, outcome);
        await audit.record(tx, {
          action: 'access.revoked',
          outcome: ok ? 'success' : 'failure',
          actorType: 'agent',
          actorId: job.node_id,
          accountId: row.account_id,
          targetType: 'database',
          targetId: row.database_id,
          details: {
            name: await labelOf(tx, row.database_id),
            request_id: row.request_id,
            grant_id: row.id,
            login: row.login,
            reason: row.end_reason,
            ...outcome,
          },
        });
      }
    },

    /** Hook for `database.delete`: a deleted database's grants end with it. */
    async onDatabaseJobFinished(tx: Tx, job: JobRow): Promise<void> {
      const id = job.payload.database_id;
      if (
        job.kind !== 'database.delete' ||
        job.status !== 'succeeded' ||
        typeof id !== 'string' ||
        !UUID.test(id)
      )
        return;
      await endGrants(tx, await repo.lockLiveOfDatabase(tx, id, 10_000), 'database_deleted');
    },
  };
}

export type AccessService = ReturnType<typeof createAccessService>;
