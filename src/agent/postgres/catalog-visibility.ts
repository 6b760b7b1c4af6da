/**
 * What a tenant sees of the others through the catalogs. PostgreSQL lets us hide, per database,
 * `pg_stat_activity` (and the function under it, `pg_stat_get_activity(integer)`) and
 * `pg_db_role_setting`; `pg_database` and `pg_roles` stay readable (psql and pg_dump need them).
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
/** Set last: the template is ready (and complete) only when it carries this comment. */
const TEMPLATE_MARKER = 'bulwark:tenant-template:1';

/** PUBLIC loses these in every tenant database (run inside the template). */
export const HIDE_FROM_PUBLIC = [
  'REVOKE SELECT ON pg_catalog.pg_stat_activity FROM PUBLIC',
  'REVOKE EXECUTE ON FUNCTION pg_catalog.pg_stat_get_activity(integer) FROM PUBLIC',
  'REVOKE SELECT ON pg_catalog.pg_db_role_setting FROM PUBLIC',
] as const;

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
      if ((err as { code?: string }).code !== '42P04') throw err;
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
    await c.query(HIDE_FROM_PUBLIC.join(';\n'));
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
