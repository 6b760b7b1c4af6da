/**
 * What an attached database's roles may do, checked as the roles themselves (ADR 0031). The
 * reader must not be able to write anything; neither role may be a superuser, the database's
 * owner (or a member of it) or able to make roles, bypass row security or replicate. A refusal
 * is a finding of severity `refuse`; what cannot be proven either way is a `warn`.
 *
 * These are privilege checks: they say what PostgreSQL would allow the role, not what it did. The
 * test proves the reader's refusal with real writes.
 */
import pg from 'pg';
import { pinnedOptions } from '../postgres/steward.ts';
import type { AttachedDatabase } from './attached-config.ts';
import { attachedSsl } from './attached-connect.ts';

export type AttachedFinding = {
  role: 'reader' | 'migrator';
  severity: 'refuse' | 'warn';
  kind: string;
  object: string;
  detail: string;
};

export type AttachedCheck = {
  name: string;
  /** False when a role could not log in or a refusing finding exists. */
  ok: boolean;
  server_version: string | null;
  findings: AttachedFinding[];
};

const SYSTEM_SCHEMAS = `n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'`;

/**
 * Connects as one of the entry's roles (short timeouts; the caller ends it). The platform's pinned
 * settings (steward.ts) go in the startup packet: the database's owner can `ALTER DATABASE … SET`
 * a search_path that puts its own operators before pg_catalog's, or a `role` that makes the
 * checks below look at another role than the one that logs in; startup options outrank both.
 * A session that runs the tenant's SQL overrides search_path, as execution-session.ts does.
 */
export async function connectAttached(
  db: AttachedDatabase,
  role: 'reader' | 'migrator',
  opts: {
    applicationName?: string /** Pinned settings to change (e.g. a tenant's search_path). */;
    settings?: Record<string, string>;
  } = {},
): Promise<pg.Client> {
  const c = new pg.Client({
    host: db.host,
    port: db.port,
    database: db.database,
    user: db[role].user,
    password: db[role].password,
    connectionTimeoutMillis: 5_000,
    query_timeout: 15_000,
    application_name: opts.applicationName ?? 'bulwark-attached-check',
    options: pinnedOptions(opts.settings),
    ssl: attachedSsl(db),
  });
  c.on('error', () => {});
  try {
    await c.connect();
  } catch (err) {
    await c.end().catch(() => {});
    throw err;
  }
  return c;
}

async function roleFindings(c: pg.Client, role: 'reader' | 'migrator'): Promise<AttachedFinding[]> {
  const out: AttachedFinding[] = [];
  const me = await c.query<{
    rolname: string;
    rolsuper: boolean;
    rolcreaterole: boolean;
    rolbypassrls: boolean;
    rolreplication: boolean;
    owner: boolean;
    dbowner: string;
    write_all: boolean;
    server_files: boolean;
    set_roles: string[];
    escalations: {
      role: string;
      super: boolean;
      createrole: boolean;
      replication: boolean;
      bypassrls: boolean;
    }[];
  }>(
    `SELECT r.rolname, r.rolsuper, r.rolcreaterole, r.rolbypassrls, r.rolreplication,
            pg_catalog.pg_has_role(current_user, d.datdba, 'MEMBER') AS owner,
            pg_catalog.pg_get_userbyid(d.datdba) AS dbowner,
            EXISTS (SELECT 1 FROM pg_catalog.pg_roles w WHERE w.rolname = 'pg_write_all_data'
                     AND pg_catalog.pg_has_role(current_user, w.oid, 'MEMBER')) AS write_all,
            EXISTS (SELECT 1 FROM pg_catalog.pg_roles w
                     WHERE w.rolname IN ('pg_write_server_files', 'pg_execute_server_program')
                       AND pg_catalog.pg_has_role(current_user, w.oid, 'MEMBER')) AS server_files,
            ARRAY(SELECT m.rolname::pg_catalog.text FROM pg_catalog.pg_roles m
                   WHERE m.rolname <> current_user
                     AND pg_catalog.pg_has_role(current_user, m.oid, 'MEMBER')
                     AND NOT pg_catalog.pg_has_role(current_user, m.oid, 'USAGE')
                   ORDER BY 1 LIMIT 20) AS set_roles,
            -- Roles it is a member of (INHERIT or not: SET ROLE takes them) with a power refused
            -- on the login role itself.
            COALESCE((SELECT pg_catalog.json_agg(pg_catalog.json_build_object(
                        'role', m.rolname, 'super', m.rolsuper, 'createrole', m.rolcreaterole,
                        'replication', m.rolreplication, 'bypassrls', m.rolbypassrls) ORDER BY m.rolname)
                        FROM (SELECT * FROM pg_catalog.pg_roles m
                               WHERE m.rolname <> current_user
                                 AND (m.rolsuper OR m.rolcreaterole OR m.rolreplication OR m.rolbypassrls)
                                 AND pg_catalog.pg_has_role(current_user, m.oid, 'MEMBER')
                               ORDER BY m.rolname LIMIT 20) m), '[]'::pg_catalog.json) AS escalations
       FROM pg_catalog.pg_roles r, pg_catalog.pg_database d
      WHERE r.rolname = current_user AND d.datname = pg_catalog.current_database()`,
  );
  const r = me.rows[0];
  if (!r)
    return [
      { role, severity: 'refuse', kind: 'unknown_role', object: '', detail: 'the role is not in pg_roles' },
    ];
  const refuse = (kind: string, object: string, detail: string) =>
    out.push({ role, severity: 'refuse', kind, object, detail });
  if (r.rolsuper) refuse('superuser', r.rolname, 'a superuser can do anything: use a role without SUPERUSER');
  if (r.owner)
    refuse(
      'database_owner',
      r.rolname,
      `the role owns the database or is a member of its owner (${r.dbowner}): owners can grant themselves anything`,
    );
  if (r.rolcreaterole) refuse('createrole', r.rolname, 'CREATEROLE can make and grant roles: refused');
  if (r.rolreplication) refuse('replication', r.rolname, 'REPLICATION is not needed: refused');
  if (r.server_files)
    refuse('server_files', r.rolname, 'member of pg_write_server_files / pg_execute_server_program');
  for (const m of r.escalations) {
    const via = `the role is a member of ${m.role}, which SET ROLE makes it`;
    if (m.super) refuse('superuser', m.role, `${via}: a superuser`);
    if (m.createrole) refuse('createrole', m.role, `${via}: CREATEROLE can make and grant roles`);
    if (m.replication) refuse('replication', m.role, `${via}: REPLICATION is not needed`);
    if (m.bypassrls && role === 'reader')
      refuse('bypassrls', m.role, `${via}: the read-only role must not bypass row security`);
  }
  if (role === 'reader') {
    if (r.rolbypassrls) refuse('bypassrls', r.rolname, 'the read-only role must not bypass row security');
    if (r.write_all) refuse('write_all_data', r.rolname, 'member of pg_write_all_data');
    // A membership without INHERIT: the privilege checks below do not see that role's rights,
    // but `SET ROLE` would take them.
    for (const m of r.set_roles)
      refuse('set_role', m, 'the read-only role can SET ROLE to it, whose rights are not checked here');
  }
  return out;
}

/** Everything the reader could write (the first 20 of each kind). */
async function readerWrites(c: pg.Client): Promise<AttachedFinding[]> {
  const out: AttachedFinding[] = [];
  const add = (kind: string, rows: { obj: string; what: string }[], detail: (w: string) => string) => {
    for (const x of rows)
      out.push({ role: 'reader', severity: 'refuse', kind, object: x.obj, detail: detail(x.what) });
  };
  const tables = await c.query<{ obj: string; what: string }>(
    `SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) AS obj, p.priv AS what
       FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      CROSS JOIN pg_catalog.unnest(ARRAY['INSERT', 'UPDATE', 'DELETE', 'TRUNCATE']) AS p(priv)
      WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND ${SYSTEM_SCHEMAS}
        AND (pg_catalog.has_table_privilege(c.oid, p.priv)
             OR (p.priv IN ('INSERT', 'UPDATE') AND pg_catalog.has_any_column_privilege(c.oid, p.priv)))
      ORDER BY 1, 2 LIMIT 20`,
  );
  add('table_write', tables.rows, (w) => `the read-only role has ${w} on it`);
  const schemas = await c.query<{ obj: string; what: string }>(
    `SELECT pg_catalog.quote_ident(n.nspname) AS obj, 'CREATE' AS what FROM pg_catalog.pg_namespace n
      WHERE ${SYSTEM_SCHEMAS} AND pg_catalog.has_schema_privilege(n.oid, 'CREATE') ORDER BY 1 LIMIT 20`,
  );
  add('schema_create', schemas.rows, () => 'the read-only role may create objects in this schema');
  const dbCreate = await c.query<{ obj: string; what: string }>(
    `SELECT pg_catalog.current_database()::text AS obj, 'CREATE' AS what
      WHERE pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE')`,
  );
  add('database_create', dbCreate.rows, () => 'the read-only role may create schemas in the database');
  const seqs = await c.query<{ obj: string; what: string }>(
    `SELECT pg_catalog.format('%I.%I', n.nspname, c.relname) AS obj,
            CASE WHEN pg_catalog.has_sequence_privilege(c.oid, 'UPDATE') THEN 'UPDATE' ELSE 'USAGE' END AS what
       FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
      WHERE c.relkind = 'S' AND ${SYSTEM_SCHEMAS}
        AND (pg_catalog.has_sequence_privilege(c.oid, 'UPDATE') OR pg_catalog.has_sequence_privilege(c.oid, 'USAGE'))
      ORDER BY 1 LIMIT 20`,
  );
  add('sequence_write', seqs.rows, (w) => `the read-only role has ${w} on it (nextval/setval change it)`);
  // A SECURITY DEFINER function the reader may run acts with its owner's rights: not provable here.
  const definers = await c.query<{ obj: string; what: string }>(
    `SELECT pg_catalog.format('%I.%I(%s)', n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid)) AS obj,
            pg_catalog.pg_get_userbyid(p.proowner) AS what
       FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
      WHERE p.prosecdef AND ${SYSTEM_SCHEMAS} AND pg_catalog.has_function_privilege(p.oid, 'EXECUTE')
      ORDER BY 1 LIMIT 20`,
  );
  for (const x of definers.rows)
    out.push({
      role: 'reader',
      severity: 'warn',
      kind: 'security_definer',
      object: x.obj,
      detail: `runs with the rights of ${x.what}; whether it writes cannot be checked here`,
    });
  return out;
}

/** Checks both roles of one attached database (never throws: a failed login is a finding). */
export async function checkAttached(db: AttachedDatabase): Promise<AttachedCheck> {
  const findings: AttachedFinding[] = [];
  let version: string | null = null;
  for (const role of ['reader', 'migrator'] as const) {
    let c: pg.Client | null = null;
    try {
      c = await connectAttached(db, role);
      version ??= (await c.query<{ v: string }>("SELECT pg_catalog.current_setting('server_version') AS v"))
        .rows[0]!.v;
      findings.push(...(await roleFindings(c, role)));
      if (role === 'reader') findings.push(...(await readerWrites(c)));
    } catch (err) {
      findings.push({
        role,
        severity: 'refuse',
        kind: 'login_failed',
        object: db[role].user,
        detail: `could not log in or check: ${(err as Error).message}`.slice(0, 500),
      });
    } finally {
      await c?.end().catch(() => {});
    }
  }
  return {
    name: db.name,
    ok: !findings.some((f) => f.severity === 'refuse'),
    server_version: version,
    findings,
  };
}
