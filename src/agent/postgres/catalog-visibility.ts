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
const TEMPLATE_MARKER = 'bulwark:tenant-template:5';

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

/** The event trigger (made in the template, so in every tenant database) that guards extensions. */
export const EXTENSION_GUARD = 'bulwark_extension_guard';

/** Owner of an extension member, for the kinds of object a shadow or a hijack can be made of. */
const MEMBER_OWNER = `CASE d.classid
    WHEN 'pg_catalog.pg_proc'::pg_catalog.regclass THEN (SELECT x.proowner FROM pg_catalog.pg_proc x WHERE x.oid OPERATOR(pg_catalog.=) d.objid)
    WHEN 'pg_catalog.pg_operator'::pg_catalog.regclass THEN (SELECT x.oprowner FROM pg_catalog.pg_operator x WHERE x.oid OPERATOR(pg_catalog.=) d.objid)
    WHEN 'pg_catalog.pg_type'::pg_catalog.regclass THEN (SELECT x.typowner FROM pg_catalog.pg_type x WHERE x.oid OPERATOR(pg_catalog.=) d.objid)
    WHEN 'pg_catalog.pg_class'::pg_catalog.regclass THEN (SELECT x.relowner FROM pg_catalog.pg_class x WHERE x.oid OPERATOR(pg_catalog.=) d.objid)
    WHEN 'pg_catalog.pg_collation'::pg_catalog.regclass THEN (SELECT x.collowner FROM pg_catalog.pg_collation x WHERE x.oid OPERATOR(pg_catalog.=) d.objid)
    WHEN 'pg_catalog.pg_conversion'::pg_catalog.regclass THEN (SELECT x.conowner FROM pg_catalog.pg_conversion x WHERE x.oid OPERATOR(pg_catalog.=) d.objid)
    WHEN 'pg_catalog.pg_opclass'::pg_catalog.regclass THEN (SELECT x.opcowner FROM pg_catalog.pg_opclass x WHERE x.oid OPERATOR(pg_catalog.=) d.objid)
    WHEN 'pg_catalog.pg_opfamily'::pg_catalog.regclass THEN (SELECT x.opfowner FROM pg_catalog.pg_opfamily x WHERE x.oid OPERATOR(pg_catalog.=) d.objid)
    WHEN 'pg_catalog.pg_namespace'::pg_catalog.regclass THEN (SELECT x.nspowner FROM pg_catalog.pg_namespace x WHERE x.oid OPERATOR(pg_catalog.=) d.objid)
  END`;

/**
 * Range types whose subtype_diff or canonical function a role that is not a superuser owns. The
 * planner calls a range's subtype_diff through the type cache, with no EXECUTE check, when it
 * estimates `&&` or `<<` on a column with statistics: a tenant's own function would then run in
 * any session that queries the column — the explorer's included — with that session's rights.
 * (A trusted extension's functions belong to the bootstrap superuser, so its ranges pass.)
 * Columns: range type, function, its owner.
 */
export const TENANT_RANGE_FUNCTIONS = `SELECT r.rngtypid::pg_catalog.regtype::pg_catalog.text AS range,
         p.oid::pg_catalog.regprocedure::pg_catalog.text AS func,
         pg_catalog.pg_get_userbyid(p.proowner)::pg_catalog.text AS owner
    FROM pg_catalog.pg_range r
    JOIN pg_catalog.pg_proc p ON p.oid OPERATOR(pg_catalog.=) ANY (ARRAY[r.rngsubdiff, r.rngcanonical]::pg_catalog.oid[])
   WHERE NOT COALESCE((SELECT a.rolsuper FROM pg_catalog.pg_roles a WHERE a.oid OPERATOR(pg_catalog.=) p.proowner), false)`;

/**
 * The extension guard, made by the admin (a superuser) in the template. A tenant owns the
 * extensions it creates (trusted ones need no superuser) and could otherwise install one into
 * pg_catalog — the schema every platform connection searches first — or move one there, or
 * `ALTER EXTENSION … ADD` an object of its own to hide it among trusted extension code. At the
 * end of every CREATE EXTENSION / ALTER EXTENSION by a session whose login is not a superuser,
 * the guard refuses (rolling the statement back) if any extension sits in a system schema
 * without a superuser owning it, or any extension member of the kinds above is owned by a role
 * that is not a superuser (a trusted extension's script runs as the bootstrap superuser, so its
 * own objects never are); and, at the end of every CREATE TYPE, if a range type's subtype_diff
 * or canonical function is the tenant's own (TENANT_RANGE_FUNCTIONS). The function and the trigger belong to the superuser in a schema of
 * its own with no privileges for PUBLIC: no tenant role (nor the steward, which owns the
 * database) can alter, replace, disable or drop them; search_path is pinned on the function.
 * Drift reports a tenant database without it (`tenant_guard`: made before the guard).
 */
export const EXTENSION_GUARD_SQL = [
  'CREATE SCHEMA IF NOT EXISTS bulwark_guard',
  'REVOKE ALL ON SCHEMA bulwark_guard FROM PUBLIC',
  `CREATE OR REPLACE FUNCTION bulwark_guard.extension_guard() RETURNS event_trigger
     LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $guard$
BEGIN
  IF COALESCE((SELECT a.rolsuper FROM pg_catalog.pg_roles a WHERE a.rolname OPERATOR(pg_catalog.=) session_user), false) THEN
    RETURN;
  END IF;
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) e.extnamespace
              WHERE n.nspname OPERATOR(pg_catalog.=) ANY ('{pg_catalog,information_schema,pg_toast}'::pg_catalog.name[])
                AND NOT COALESCE((SELECT a.rolsuper FROM pg_catalog.pg_roles a WHERE a.oid OPERATOR(pg_catalog.=) e.extowner), false)) THEN
    RAISE EXCEPTION 'extensions may not be installed in a system schema (bulwark)' USING ERRCODE = '42501';
  END IF;
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
              WHERE d.refclassid OPERATOR(pg_catalog.=) 'pg_catalog.pg_extension'::pg_catalog.regclass
                AND d.deptype OPERATOR(pg_catalog.=) 'e'
                AND NOT COALESCE((SELECT a.rolsuper FROM pg_catalog.pg_roles a WHERE a.oid OPERATOR(pg_catalog.=) ${MEMBER_OWNER}), true)) THEN
    RAISE EXCEPTION 'objects may not be added to an extension (bulwark)' USING ERRCODE = '42501';
  END IF;
  IF EXISTS (${TENANT_RANGE_FUNCTIONS}) THEN
    RAISE EXCEPTION 'a range type''s subtype_diff must be a built-in function (bulwark)' USING ERRCODE = '42501';
  END IF;
END
$guard$`,
  'REVOKE ALL ON FUNCTION bulwark_guard.extension_guard() FROM PUBLIC',
  `DROP EVENT TRIGGER IF EXISTS ${EXTENSION_GUARD}`,
  `CREATE EVENT TRIGGER ${EXTENSION_GUARD} ON ddl_command_end
     WHEN TAG IN ('CREATE EXTENSION', 'ALTER EXTENSION', 'CREATE TYPE') EXECUTE FUNCTION bulwark_guard.extension_guard()`,
] as const;

/** SQL (one boolean, `ok`): this database has the extension guard, enabled, as the template makes it. */
export const EXTENSION_GUARD_CHECK = `SELECT EXISTS (
  SELECT 1 FROM pg_catalog.pg_event_trigger t JOIN pg_catalog.pg_proc f ON f.oid OPERATOR(pg_catalog.=) t.evtfoid
   WHERE t.evtname OPERATOR(pg_catalog.=) '${EXTENSION_GUARD}' AND t.evtenabled OPERATOR(pg_catalog.<>) 'D'
     AND t.evtevent OPERATOR(pg_catalog.=) 'ddl_command_end'
     AND 'CREATE TYPE' OPERATOR(pg_catalog.=) ANY (t.evttags)
     AND f.proname OPERATOR(pg_catalog.=) 'extension_guard'
     AND f.pronamespace OPERATOR(pg_catalog.=) (SELECT n.oid FROM pg_catalog.pg_namespace n
                                                 WHERE n.nspname OPERATOR(pg_catalog.=) 'bulwark_guard')
     AND (SELECT a.rolsuper FROM pg_catalog.pg_roles a WHERE a.oid OPERATOR(pg_catalog.=) f.proowner)
     AND (SELECT a.rolsuper FROM pg_catalog.pg_roles a WHERE a.oid OPERATOR(pg_catalog.=) t.evtowner)) AS ok`;

type Queryable = Pick<pg.ClientBase, 'query'>;

/**
 * pg_dump in an archive format always reads the database's own settings from pg_db_role_setting
 * (hidden from PUBLIC above). The database's owner — the steward (ADR 0010), never a tenant role —
 * may read it, through the predefined `pg_database_owner` (whose only member in each database is
 * that database's owner): the steward can then dump its database, and no tenant role gains
 * anything. A database made from an older template lacks it (its backups fail with "permission
 * denied for table pg_db_role_setting" until a superuser runs this statement in it once).
 */
export const BACKUP_READS_SETTINGS = 'GRANT SELECT ON pg_catalog.pg_db_role_setting TO pg_database_owner';

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

/** Session advisory lock (on the maintenance database) held by whoever makes the template. */
const TEMPLATE_LOCK = '7094232617468917249';

/**
 * Makes the tenant template if it is not ready (idempotent; at agent start). `connect` opens an
 * admin connection into the template (the only database besides the maintenance one the admin
 * ever enters; no tenant role can connect to it). Concurrent callers (agents, test files on one
 * cluster) take turns on a session advisory lock, polled so the pinned lock_timeout never
 * applies; a caller that finds the template ready once it has the lock (or while waiting) is done.
 * A crashed maker's lock goes with its session.
 */
export async function ensureTenantTemplate(
  admin: pg.Pool,
  connect: (database: string) => Promise<pg.Client>,
): Promise<void> {
  if ((await tenantTemplate(admin)) === TENANT_TEMPLATE) return;
  const lock = await admin.connect();
  try {
    for (let i = 0; ; i++) {
      const got = await lock.query<{ ok: boolean }>(
        'SELECT pg_catalog.pg_try_advisory_lock($1::pg_catalog.int8) AS ok',
        [TEMPLATE_LOCK],
      );
      if (got.rows[0]?.ok) break;
      if ((await tenantTemplate(admin)) === TENANT_TEMPLATE) return;
      if (i >= 600) throw new Error('timed out waiting for another maker of the tenant template');
      await new Promise((r) => setTimeout(r, 100));
    }
    try {
      if ((await tenantTemplate(admin)) === TENANT_TEMPLATE) return;
      await makeTemplate(admin, connect);
    } finally {
      await lock.query('SELECT pg_catalog.pg_advisory_unlock($1::pg_catalog.int8)', [TEMPLATE_LOCK]);
    }
  } finally {
    lock.release();
  }
}

async function makeTemplate(
  admin: pg.Pool,
  connect: (database: string) => Promise<pg.Client>,
): Promise<void> {
  const t = quoteIdent(TENANT_TEMPLATE);
  const exists = await admin.query('SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1', [
    TENANT_TEMPLATE,
  ]);
  if (exists.rows.length === 0) await admin.query(`CREATE DATABASE ${t} TEMPLATE template0 ENCODING 'UTF8'`);
  // Unfinished (ours, from a crash, or an older version's): finish it. Re-running is harmless.
  await admin.query(
    `ALTER DATABASE ${t} IS_TEMPLATE false ALLOW_CONNECTIONS true;\nREVOKE ALL ON DATABASE ${t} FROM PUBLIC`,
  );
  const c = await connect(TENANT_TEMPLATE);
  try {
    const hidden = await c.query<HiddenObject>(HIDDEN_CATALOG_QUERY);
    await c.query(
      [...hideStatements(hidden.rows), ...EXTENSION_GUARD_SQL, BACKUP_READS_SETTINGS].join(';\n'),
    );
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
