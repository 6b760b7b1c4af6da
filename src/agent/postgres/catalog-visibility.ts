/**
 * What a tenant sees of the others through the catalogs. PostgreSQL lets us hide, per database,
 * other backends' sessions (`pg_stat_activity`, the per-backend accessors under it, the SSL,
 * GSSAPI and progress views), other databases' activity counters (`pg_stat_database`,
 * `pg_stat_get_db_*`) and `pg_db_role_setting` (HIDDEN_CATALOG_QUERY lists them);
 * `pg_database` and `pg_roles` stay readable (psql and pg_dump need them).
 * Those catalog objects belong to the bootstrap superuser, so only a superuser can revoke from
 * PUBLIC on them — and no superuser connects into a tenant database (steward.ts). The revocations
 * are therefore made once, in a template database of ours that no tenant can reach,
 * `bulwark_tenant_template` (made from template0 by the admin, never connectable afterwards), and
 * every new tenant database is copied from it. A database made before this (or from template0
 * because the template was not ready) is reported by drift as `catalog_visibility`; it cannot be
 * repaired online without a superuser session inside it.
 */
import type pg from 'pg';
import { quoteIdent, quoteLiteral } from '../../shared/identifiers.ts';

export const TENANT_TEMPLATE = 'bulwark_tenant_template';
/**
 * Set last: the template is ready (and complete) only when it carries this comment. The version
 * changes whenever what the template hides changes; an older template is finished again at the
 * next agent start (databases copied from it before keep what they had: drift reports them).
 */
const TEMPLATE_MARKER = 'bulwark:tenant-template:2';

/**
 * The catalog objects PUBLIC loses in every tenant database, as a query (run in the template by
 * the admin, and by drift in each tenant database): one row per object, `kind` 'function' or
 * 'relation', its oid and its name as text (`regprocedure` / `regclass`). The list is made from
 * the catalog by name, not by hand, so that every accessor of the family goes — including ones a
 * later PostgreSQL adds:
 *   - other backends' sessions: pg_stat_activity and the function under it
 *     (pg_stat_get_activity), every per-backend accessor (pg_stat_get_backend_idset(),
 *     pg_stat_get_backend_pid/_dbid/_userid/_activity/_client_addr/… ), pg_stat_ssl,
 *     pg_stat_gssapi, the pg_stat_progress_* views and pg_stat_get_progress_info, the replication
 *     and subscription views and their functions;
 *   - other databases' activity counters: pg_stat_database, pg_stat_database_conflicts and every
 *     pg_stat_get_db_* function;
 *   - other tenants' settings: pg_db_role_setting.
 * Kept (psql, pg_dump and the platform need them, or they show this session or this database
 * only): pg_database, pg_roles, pg_locks, pg_prepared_statements, pg_cursors (the explorer's
 * leftover check), pg_backend_pid(), pg_stat_user_tables and the per-table accessors.
 */
export const HIDDEN_CATALOG_QUERY = `
SELECT 'function'::pg_catalog.text AS kind, p.oid, p.oid::pg_catalog.regprocedure::pg_catalog.text AS object
  FROM pg_catalog.pg_proc p
 WHERE p.pronamespace OPERATOR(pg_catalog.=) 'pg_catalog'::pg_catalog.regnamespace
   AND (p.proname OPERATOR(pg_catalog.~) '^pg_stat_get_(backend|db)_'
        OR p.proname OPERATOR(pg_catalog.=) ANY ('{pg_stat_get_activity,pg_stat_get_progress_info,pg_stat_get_wal_senders,pg_stat_get_wal_receiver,pg_stat_get_subscription}'::pg_catalog.name[]))
UNION ALL
SELECT 'relation', c.oid, c.oid::pg_catalog.regclass::pg_catalog.text
  FROM pg_catalog.pg_class c
 WHERE c.relnamespace OPERATOR(pg_catalog.=) 'pg_catalog'::pg_catalog.regnamespace
   AND c.relkind OPERATOR(pg_catalog.=) ANY ('{r,v}'::pg_catalog.char[])
   AND (c.relname OPERATOR(pg_catalog.~) '^pg_stat_progress_'
        OR c.relname OPERATOR(pg_catalog.=) ANY ('{pg_stat_activity,pg_stat_database,pg_stat_database_conflicts,pg_stat_ssl,pg_stat_gssapi,pg_stat_replication,pg_stat_wal_receiver,pg_stat_subscription,pg_db_role_setting}'::pg_catalog.name[]))
 ORDER BY 1, 3`;

export type HiddenObject = { kind: 'function' | 'relation'; object: string };

/** The REVOKE statements for the hidden objects (names as PostgreSQL prints them, schema-qualified). */
export function hideStatements(objects: readonly HiddenObject[]): string[] {
  return objects.map((o) =>
    o.kind === 'function'
      ? `REVOKE EXECUTE ON FUNCTION pg_catalog.${o.object.replace(/^pg_catalog\./, '')} FROM PUBLIC`
      : `REVOKE SELECT ON pg_catalog.${quoteIdent(o.object.replace(/^pg_catalog\./, ''))} FROM PUBLIC`,
  );
}

type Queryable = Pick<pg.ClientBase, 'query'>;

/** The template to copy tenant databases from: ours when ready, template0 otherwise. */
export async function tenantTemplate(admin: Queryable): Promise<string> {
  const r = await admin.query<{ ok: boolean }>(
    `SELECT d.datistemplate AND NOT d.datallowconn
            AND pg_catalog.shobj_description(d.oid, 'pg_database') = $2 AS ok
       FROM pg_catalog.pg_database d WHERE d.datname = $1`,
    [TENANT_TEMPLATE, TEMPLATE_MARKER],
  );
  return r.rows[0]?.ok ? TENANT_TEMPLATE : 'template0';
}

/**
 * Makes the tenant template if it is not ready (idempotent; at agent start). `connect` opens an
 * admin connection into the template (the only database besides the maintenance one the admin
 * ever enters; no tenant role can connect to it). Concurrent callers: the one whose CREATE
 * DATABASE fails waits for the other's marker.
 */
export async function ensureTenantTemplate(
  admin: pg.Pool,
  connect: (database: string) => Promise<pg.Client>,
): Promise<void> {
  if ((await tenantTemplate(admin)) === TENANT_TEMPLATE) return;
  const t = quoteIdent(TENANT_TEMPLATE);
  const exists = await admin.query('SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1', [
    TENANT_TEMPLATE,
  ]);
  if (exists.rows.length === 0) {
    try {
      await admin.query(`CREATE DATABASE ${t} TEMPLATE template0 ENCODING 'UTF8'`);
    } catch (err) {
      // 42P04, or 23505 when two CREATE DATABASE race on pg_database's unique index.
      if (!['42P04', '23505'].includes(String((err as { code?: string }).code))) throw err;
      // Another caller is making it: wait (bounded) for its marker.
      for (let i = 0; i < 100; i++) {
        if ((await tenantTemplate(admin)) === TENANT_TEMPLATE) return;
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }
  // Unfinished (ours, from a crash or a timed-out peer): finish it. Re-running is harmless.
  await admin.query(
    `ALTER DATABASE ${t} IS_TEMPLATE false ALLOW_CONNECTIONS true;\nREVOKE ALL ON DATABASE ${t} FROM PUBLIC`,
  );
  const c = await connect(TENANT_TEMPLATE);
  try {
    const hidden = await c.query<HiddenObject>(HIDDEN_CATALOG_QUERY);
    await c.query(hideStatements(hidden.rows).join(';\n'));
  } finally {
    await c.end().catch(() => {});
  }
  await admin.query(
    `ALTER DATABASE ${t} IS_TEMPLATE true ALLOW_CONNECTIONS false;\n` +
      `COMMENT ON DATABASE ${t} IS ${quoteLiteral(TEMPLATE_MARKER)}`,
  );
}

/**
 * Tenant roles may not log in to the maintenance databases (idempotent; at agent start). The
 * admin keeps its access as a superuser; no role of ours needs them.
 */
export async function refuseMaintenanceLogins(admin: Queryable): Promise<void> {
  await admin.query('REVOKE CONNECT ON DATABASE postgres, template1 FROM PUBLIC');
}
