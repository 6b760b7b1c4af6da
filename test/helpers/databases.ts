import type { KeyCaller, Permission } from '../../src/server/http/caller.ts';
import type { TestServer } from './server.ts';

/** An account row straight in the control DB; returns its id. */
export async function createAccount(s: TestServer, name: string): Promise<string> {
  const r = await s.db.pool.query<{ id: string }>(
    'INSERT INTO accounts (name) VALUES ($1) ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name RETURNING id',
    [name],
  );
  return r.rows[0]!.id;
}

export function callerFor(
  accountId: string,
  level: Permission = 'write',
  databases: string[] | null = null,
): KeyCaller {
  return {
    kind: 'key',
    accountId,
    accountName: 'test',
    keyId: '00000000-0000-4000-8000-000000000000',
    level,
    databases,
    explorer: false,
    sourceIp: '127.0.0.1',
  };
}

/**
 * A well-formed result of each job kind, shaped like the real agent's (the server checks results
 * against the job contract): what a fake agent reports when a test completes a job with `{}`.
 */
export function wellFormedResult(kind: string, payload: Record<string, unknown>): Record<string, unknown> {
  const name = typeof payload.name === 'string' ? payload.name : 'x';
  switch (kind) {
    case 'node.ping':
      return {
        pg_version: 'PostgreSQL (fake agent)',
        server_version_num: 170000,
        checked_at: new Date().toISOString(),
      };
    case 'database.create':
      return {
        name,
        roles: {
          owner: `${name}_owner`,
          reader: `${name}_reader`,
          migrator: `${name}_migrator`,
          explorer: `${name}_explorer`,
        },
        pooler_probe_ms: 1,
      };
    case 'database.delete':
      return { dropped: true };
    case 'database.rotate':
      return { rotated_at: new Date().toISOString(), terminated_sessions: 0 };
    case 'database.allowlist':
      return { entries: payload.allowlist ?? [] };
    case 'database.limits':
      return { limits: payload.limits };
    case 'node.drift':
      return { findings: [] };
    case 'node.drift_fix':
      return { fixed: [], findings: [] };
    default:
      return {};
  }
}

export type FakeAgent = {
  nodeId: string;
  token: string;
  poll(): Promise<{ id: number; kind: string; payload: Record<string, unknown>; attempt: number } | null>;
  secret(jobId: number, attempt: number): Promise<{ status: number; password?: string }>;
  complete(jobId: number, attempt: number, result: Record<string, unknown>): Promise<number>;
  fail(jobId: number, attempt: number, error: string, retryable: boolean): Promise<number>;
};

/**
 * An enrolled node driven by hand through the real agent API (no job handlers): for tests of
 * the server half that decide exactly when a job succeeds or fails.
 */
export async function enrollFakeAgent(s: TestServer, nodeName: string): Promise<FakeAgent> {
  const { token: enrollment } = await s.nodes.createEnrollment(nodeName, 10);
  const res = await s.app.inject({
    method: 'POST',
    url: '/v1/agent/enroll',
    payload: { enrollment_token: enrollment, agent_version: 'test' },
  });
  const { node_id: nodeId, agent_token: token } = res.json() as { node_id: string; agent_token: string };
  const headers = { authorization: `Bearer ${token}` };
  const post = (url: string, payload: Record<string, unknown>) =>
    s.app.inject({ method: 'POST', url, payload, headers });
  const polled = new Map<number, { kind: string; payload: Record<string, unknown> }>();
  return {
    nodeId,
    token,
    async poll() {
      const r = await post('/v1/agent/poll', { wait_ms: 0 });
      const job = r.json().job;
      if (job) polled.set(job.id, { kind: job.kind, payload: job.payload });
      return job;
    },
    async secret(jobId, attempt) {
      const r = await post(`/v1/agent/jobs/${jobId}/secret`, { attempt });
      return { status: r.statusCode, ...(r.statusCode === 200 ? { password: r.json().password } : {}) };
    },
    /** `{}` stands for a well-formed result of the polled job's kind (`wellFormedResult`). */
    async complete(jobId, attempt, result) {
      const job = polled.get(jobId);
      const sent = Object.keys(result).length === 0 && job ? wellFormedResult(job.kind, job.payload) : result;
      return (await post(`/v1/agent/jobs/${jobId}/complete`, { attempt, result: sent })).statusCode;
    },
    async fail(jobId, attempt, error, retryable) {
      return (await post(`/v1/agent/jobs/${jobId}/fail`, { attempt, error, retryable })).statusCode;
    },
  };
}
