import { Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { ATTACHED_REPORT_PATH, type AttachedReport } from '../shared/contracts/attached.ts';
import {
  archiveStreamPath,
  type BackupProgress,
  backupKeyResponseSchema,
  STREAM_TOKEN_HEADER,
} from '../shared/contracts/backups.ts';
import { jobSecretResponseSchema } from '../shared/contracts/jobs.ts';
import { moveArchivePath } from '../shared/contracts/moves.ts';

/** The agent's only channel to the control plane: outbound HTTPS (or loopback HTTP). */
export type PolledJob = {
  id: number;
  kind: string;
  payload: Record<string, unknown>;
  attempt: number;
  lease_expires_at: string | null;
};

export class ServerError extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

export function createServerClient(baseUrl: string, getToken: () => string | null) {
  const call = async <T>(
    path: string,
    body: unknown,
    signal?: AbortSignal,
    timeoutMs = 15_000,
  ): Promise<T> => {
    const token = getToken();
    const timeout = AbortSignal.timeout(timeoutMs);
    const res = await fetch(new URL(path, baseUrl), {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        ...(token ? { authorization: `Bearer ${token}` } : {}),
      },
      body: JSON.stringify(body),
      signal: signal ? AbortSignal.any([signal, timeout]) : timeout,
    });
    const text = await res.text();
    if (!res.ok) {
      let message = text.slice(0, 500);
      try {
        message = (JSON.parse(text) as { error?: { message?: string } }).error?.message ?? message;
      } catch {}
      throw new ServerError(res.status, `${path}: ${res.status} ${message}`);
    }
    return JSON.parse(text) as T;
  };

  return {
    enroll: (enrollmentToken: string, agentVersion: string, pooler?: { host: string; port: number }) =>
      call<{ node_id: string; node_name: string; agent_token: string }>('/v1/agent/enroll', {
        enrollment_token: enrollmentToken,
        agent_version: agentVersion,
        ...(pooler ? { pooler } : {}),
      }),
    poll: (waitMs: number, signal: AbortSignal) =>
      call<{ job: PolledJob | null }>('/v1/agent/poll', { wait_ms: waitMs }, signal, waitMs + 15_000),
    complete: (job: PolledJob, result: Record<string, unknown>) =>
      call<{ status: string }>(`/v1/agent/jobs/${job.id}/complete`, { attempt: job.attempt, result }),
    fail: (job: PolledJob, error: string, retryable: boolean) =>
      call<{ status: string }>(`/v1/agent/jobs/${job.id}/fail`, { attempt: job.attempt, error, retryable }),
    /** The job's secret (a clear password for a proving login); only for the lease holder. */
    jobSecret: async (job: PolledJob) =>
      jobSecretResponseSchema.parse(
        await call<unknown>(`/v1/agent/jobs/${job.id}/secret`, { attempt: job.attempt }),
      ),
    /** The data key of the backup a `backup.*` job names; only for the lease holder. */
    backupKey: async (job: PolledJob) =>
      backupKeyResponseSchema.parse(
        await call<unknown>(`/v1/agent/jobs/${job.id}/backup-key`, { attempt: job.attempt }),
      ),
    /** Explorer rows/schema for the request waiting on the server (never stored in the job). */
    explorerResult: (job: PolledJob, outcome: unknown) =>
      call<{ accepted: boolean }>(
        `/v1/agent/jobs/${job.id}/explorer-result`,
        { attempt: job.attempt, outcome },
        undefined,
        60_000,
      ),
    /** Whether this agent still holds the job's lease (the server ends a job whose client left). */
    jobStatus: (job: PolledJob) =>
      call<{ active: boolean }>(
        `/v1/agent/jobs/${job.id}/status`,
        { attempt: job.attempt },
        undefined,
        5_000,
      ),
    /** Extends the lease of a job this agent runs; a 404 (ServerError) when the lease is lost. */
    renewLease: (job: PolledJob) =>
      call<{ lease_expires_at: string; lease_ms: number }>(
        `/v1/agent/jobs/${job.id}/lease`,
        { attempt: job.attempt },
        undefined,
        10_000,
      ),
    /** How far a backup / restore / drill is (phase and bytes); shown by the API while it runs. */
    backupProgress: (job: PolledJob, p: Omit<BackupProgress, 'attempt'>) =>
      call<{ recorded: true }>(
        `/v1/agent/jobs/${job.id}/progress`,
        { attempt: job.attempt, ...p },
        undefined,
        10_000,
      ),
    /**
     * Streams an archive (as stored) to the download waiting on the server (ADR 0023); resolves
     * with the bytes the server relayed once the download ended whole. No overall timeout: the
     * transfer takes as long as the client reads; `signal` ends it.
     */
    streamArchive: async (job: PolledJob, token: string, body: Readable, signal: AbortSignal) => {
      const auth = getToken();
      const res = await fetch(new URL(archiveStreamPath(job.id, job.attempt), baseUrl), {
        method: 'POST',
        headers: {
          'content-type': 'application/octet-stream',
          [STREAM_TOKEN_HEADER]: token,
          ...(auth ? { authorization: `Bearer ${auth}` } : {}),
        },
        body: Readable.toWeb(body) as ReadableStream<Uint8Array>,
        duplex: 'half',
        signal,
      } as RequestInit);
      const text = await res.text();
      if (!res.ok) throw new ServerError(res.status, `archive stream: ${res.status} ${text.slice(0, 300)}`);
      return (JSON.parse(text) as { bytes: number }).bytes;
    },
    /**
     * The archive of the `database.move_in` this agent holds, relayed by the server from the move's
     * source node (ADR 0031): the response body as it arrives. No overall timeout (the server cuts
     * an idle transfer); `signal` (the lease) ends it.
     */
    fetchMoveArchive: async (job: PolledJob, signal: AbortSignal): Promise<Readable> => {
      const auth = getToken();
      const res = await fetch(new URL(moveArchivePath(job.id, job.attempt), baseUrl), {
        headers: auth ? { authorization: `Bearer ${auth}` } : {},
        redirect: 'error',
        signal,
      });
      if (!res.ok || !res.body) {
        const text = await res.text().catch(() => '');
        throw new ServerError(res.status, `move archive: ${res.status} ${text.slice(0, 300)}`);
      }
      return Readable.fromWeb(res.body as WebReadableStream<Uint8Array>);
    },
    /** Size and tenant connections of this node's databases (at most 1000 per call). */
    samples: (samples: { database_id: string; size_bytes: number; connections: number }[]) =>
      call<{ accepted: number }>('/v1/agent/samples', { samples }),
    /** Every attached database this agent's config loaded, with its checks (the answer: ids). */
    attached: (report: AttachedReport, signal?: AbortSignal) =>
      call<unknown>(ATTACHED_REPORT_PATH, report, signal, 30_000),
    heartbeat: (info: {
      agent_version: string;
      pg_version?: string;
      capabilities?: Record<string, unknown>;
      /** The cluster's connection slots (the server derives the node's tenant budget). */
      connections?: {
        max_connections: number;
        superuser_reserved_connections: number;
        reserved_connections: number;
      };
      /** Where tenants reach this node's PgBouncer (connection info names it). */
      pooler?: { host: string; port: number };
    }) => call<{ ok: true }>('/v1/agent/heartbeat', info),
  };
}

export type ServerClient = ReturnType<typeof createServerClient>;
