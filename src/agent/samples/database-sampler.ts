/**
 * The database sampler: every interval, the size (`pg_database_size`) and the tenant's own
 * connection count of each tenant database on this node, reported to the server
 * (`POST /v1/agent/samples`) for the dashboard's list and charts.
 *
 * It never connects into a tenant database. Both numbers come from the maintenance database,
 * over the admin pool whose session settings are pinned at login (search_path pg_catalog,pg_temp
 * …: steward.ts), in a transaction that drops to the predefined role `pg_read_all_stats` — the
 * least privilege that reads every database's size and every session in pg_stat_activity. So
 * nothing a tenant plants or sets in its database (functions, operators, `ALTER DATABASE … SET`,
 * `ALTER ROLE … SET`) is in reach of these statements, and every name in them is
 * `pg_catalog.`-qualified all the same.
 *
 * Which databases: those carrying our marker (`bulwark:database:<id>`, set by the steward, who
 * owns the database — the tenant cannot change it); the server also takes a sample only for a
 * database placed on this node. Connections: client backends logged in as the database's own
 * login roles (owner, reader, migrator), so the platform's sessions (steward, explorer, the admin,
 * the pooler's console) are never counted, and a tenant can move only its own database's number
 * (its roles can connect to no other database).
 */
import type pg from 'pg';
import type { Logger } from 'pino';
import { roleNames } from '../../shared/identifiers.ts';
import { MARKER_PREFIX } from '../postgres/tenant-sql.ts';
import type { ServerClient } from '../server-client.ts';

/** Samples per report (the server's bound). */
const REPORT_SIZE = 1_000;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const NAME = /^[a-z][a-z0-9_]{0,62}$/;

export type DatabaseSample = { database_id: string; size_bytes: number; connections: number };

const SIZES = `SELECT d.datname::pg_catalog.text AS name, c.description AS marker,
       pg_catalog.pg_database_size(d.oid)::pg_catalog.int8 AS size_bytes
  FROM pg_catalog.pg_database d
  JOIN pg_catalog.pg_shdescription c
    ON c.objoid OPERATOR(pg_catalog.=) d.oid
   AND c.classoid OPERATOR(pg_catalog.=) 'pg_catalog.pg_database'::pg_catalog.regclass
 WHERE pg_catalog.starts_with(c.description, $1::pg_catalog.text)`;

const SESSIONS = `SELECT a.datname::pg_catalog.text AS name, a.usename::pg_catalog.text AS role,
       pg_catalog.count(*)::pg_catalog.int4 AS n
  FROM pg_catalog.pg_stat_activity a
 WHERE a.backend_type OPERATOR(pg_catalog.=) 'client backend' AND a.datname IS NOT NULL
 GROUP BY 1, 2`;

/** One reading of the cluster: a sample per tenant database. */
export async function readSamples(admin: pg.Pool): Promise<DatabaseSample[]> {
  const c = await admin.connect();
  try {
    await c.query('BEGIN READ ONLY');
    await c.query('SET LOCAL ROLE pg_read_all_stats');
    const sizes = await c.query<{ name: string; marker: string; size_bytes: string }>(SIZES, [MARKER_PREFIX]);
    const sessions = await c.query<{ name: string; role: string | null; n: number }>(SESSIONS);
    await c.query('COMMIT');
    const byDatabase = new Map<string, Map<string, number>>();
    for (const s of sessions.rows) {
      if (s.role === null) continue;
      const roles = byDatabase.get(s.name) ?? new Map<string, number>();
      roles.set(s.role, (roles.get(s.role) ?? 0) + s.n);
      byDatabase.set(s.name, roles);
    }
    const out: DatabaseSample[] = [];
    for (const d of sizes.rows) {
      const id = d.marker.slice(MARKER_PREFIX.length);
      if (!UUID.test(id) || !NAME.test(d.name)) continue;
      const r = roleNames(d.name);
      const roles = byDatabase.get(d.name);
      const connections = [r.owner, r.reader, r.migrator].reduce((n, role) => n + (roles?.get(role) ?? 0), 0);
      out.push({ database_id: id, size_bytes: Number(d.size_bytes), connections });
    }
    return out;
  } catch (err) {
    await c.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    c.release();
  }
}

/**
 * One sampling round: read, then report in batches. Never throws (a failure is logged; the next
 * round tries again); a round still running when the next is due makes that one a no-op.
 */
export function createDatabaseSampler(deps: {
  admin: pg.Pool;
  client: Pick<ServerClient, 'samples'>;
  log: Logger;
}): () => Promise<void> {
  let running = false;
  return async () => {
    if (running) return;
    running = true;
    try {
      const samples = await readSamples(deps.admin);
      for (let i = 0; i < samples.length; i += REPORT_SIZE)
        await deps.client.samples(samples.slice(i, i + REPORT_SIZE));
    } catch (err) {
      deps.log.warn({ err: { message: (err as Error)?.message } }, 'database sampling failed');
    } finally {
      running = false;
    }
  };
}
