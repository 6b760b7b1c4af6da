import pg from 'pg';
import type { z } from 'zod';
import { PoolerConfigError, type PoolerManager } from '../pgbouncer/pooler-manager.ts';
import { coversLoopback } from '../pgbouncer/pooler-state.ts';

import type { WarmPool } from '../pool/warm-pool.ts';
import type { PlatformObjects } from '../postgres/drift.ts';
import type { ClusterAccess } from '../postgres/steward.ts';
import { NotOursError } from '../postgres/tenant-sql.ts';
import { type JobContext, PermanentJobError } from './job-context.ts';

/** What the database jobs need besides the job context; built once in the agent's wiring. */
export type DatabaseJobDeps = {
  pooler: PoolerManager;
  /** Where the agent reaches PgBouncer for its proving logins. */
  poolerHost: string;
  poolerPort: number;
  /** TLS options for the proving login when PgBouncer requires TLS (loopback, self-signed). */
  poolerSsl?: pg.ClientConfig['ssl'];
  /**
   * The cluster's loopback port and the agent's key: work inside a tenant database logs in there
   * as its steward (postgres/steward.ts), never as the admin.
   */
  cluster: ClusterAccess;
  /** The platform's own databases and roles (control DB and its role), never drift. */
  platform?: PlatformObjects;
  /** The node's spare databases (ADR 0028); absent or size 0: every create is a cold one. */
  warmPool?: WarmPool;
  /** Test hook called before each step; a throw here is an agent killed at that step. */
  onStep?: (kind: string, step: string) => void | Promise<void>;
  now?: () => number;
};

export function parsePayload<S extends z.ZodType>(schema: S, payload: unknown): z.infer<S> {
  const r = schema.safeParse(payload);
  if (!r.success) {
    const where = r.error.issues.map((i) => `${i.path.join('.') || '(payload)'}: ${i.message}`).join('; ');
    throw new PermanentJobError(`invalid job payload: ${where}`);
  }
  return r.data;
}

/** Errors that no retry can fix become permanent; everything else is retried. */
export function classify(err: unknown): unknown {
  if (err instanceof NotOursError || err instanceof PoolerConfigError)
    return new PermanentJobError(err.message);
  return err;
}

export async function getSecret(ctx: JobContext): Promise<string> {
  if (!ctx.secret)
    throw new PermanentJobError('this agent cannot fetch job secrets; no proving login possible');
  return ctx.secret();
}

/**
 * Logs in through PgBouncer as the database's owner and checks who and where it is. Returns
 * the time it took (ms). This is the proof a database (or a new password) really works.
 */
export async function proveLogin(
  deps: DatabaseJobDeps,
  login: { database: string; user: string; password: string },
): Promise<number> {
  const t0 = performance.now();
  const client = new pg.Client({
    host: deps.poolerHost,
    port: deps.poolerPort,
    user: login.user,
    password: login.password,
    database: login.database,
    connectionTimeoutMillis: 5_000,
    query_timeout: 10_000,
    application_name: 'bulwark-agent-probe',
    ...(deps.poolerSsl ? { ssl: deps.poolerSsl } : {}),
  });
  client.on('error', () => {});
  try {
    await client.connect();
    const r = await client.query<{ u: string; d: string }>(
      'SELECT current_user AS u, pg_catalog.current_database() AS d',
    );
    if (r.rows[0]?.u !== login.user || r.rows[0]?.d !== login.database)
      throw new Error('proving login landed in the wrong place');
  } catch (err) {
    throw new Error(`login through the pooler as ${login.user} failed: ${(err as Error).message}`);
  } finally {
    await client.end().catch(() => {});
  }
  return performance.now() - t0;
}

/** Runs a proving login, opening loopback access for it only if the allowlist lacks it. */
export async function proveThroughPooler(
  deps: DatabaseJobDeps,
  ctx: JobContext,
  login: { database: string; user: string },
): Promise<number> {
  const password = await getSecret(ctx);
  const entry = deps.pooler.state().databases[login.database];
  if (!entry) throw new Error(`database ${login.database} is not in the pooler state`);
  const needLoopback = !coversLoopback(entry.allowlist.map((e) => e.cidr));
  if (needLoopback && !deps.pooler.hasLoopback(login.database))
    await deps.pooler.update((s) => s, { loopbackFor: login });
  try {
    return await proveLogin(deps, { ...login, password });
  } finally {
    if (needLoopback) await deps.pooler.endLoopback(login.database);
  }
}
