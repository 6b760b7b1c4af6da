import fs from 'node:fs/promises';
import type pg from 'pg';
import type { Logger } from 'pino';
import { VERSION } from '../shared/version.ts';
import type { ServerClient } from './server-client.ts';

/** The cluster's version and connection slots, as the server's heartbeat route takes them. */
async function readClusterInfo(admin: pg.Pool) {
  // The running values (a changed max_connections counts from the restart that applies it).
  // reserved_connections exists from PostgreSQL 16 on (missing_ok: NULL before).
  const r = await admin.query<{ v: string; max: number; su: number; rc: number }>(
    `SELECT pg_catalog.version() AS v,
            pg_catalog.current_setting('max_connections')::pg_catalog.int4 AS max,
            pg_catalog.current_setting('superuser_reserved_connections')::pg_catalog.int4 AS su,
            COALESCE(pg_catalog.current_setting('reserved_connections', true), '0')::pg_catalog.int4 AS rc`,
  );
  return r.rows[0];
}

/**
 * One heartbeat: tells the server this agent's version, its cluster's and the job kinds it runs,
 * then touches the liveness file. Never throws (a failure is logged; the next beat tries again).
 */
export function createHeartbeat(deps: {
  admin: pg.Pool;
  client: Pick<ServerClient, 'heartbeat'>;
  jobKinds: readonly string[];
  aliveFile: string;
  log: Logger;
  /** More to report among the capabilities (the warm pool's size and ready spares). */
  capabilities?: () => Record<string, unknown>;
  /** Where tenants reach this node's PgBouncer, when the operator said (`poolerPublicHost`). */
  pooler?: { host: string; port: number } | undefined;
}): () => Promise<void> {
  return async () => {
    try {
      const row = await readClusterInfo(deps.admin);
      await deps.client.heartbeat({
        agent_version: VERSION,
        pg_version: row?.v ?? 'unknown',
        capabilities: { jobs: [...deps.jobKinds], ...deps.capabilities?.() },
        ...(deps.pooler ? { pooler: deps.pooler } : {}),
        ...(row
          ? {
              connections: {
                max_connections: row.max,
                superuser_reserved_connections: row.su,
                reserved_connections: row.rc,
              },
            }
          : {}),
      });
      await fs.writeFile(deps.aliveFile, `${new Date().toISOString()}\n`);
    } catch (err) {
      deps.log.warn({ err: { message: (err as Error)?.message } }, 'heartbeat failed');
    }
  };
}
