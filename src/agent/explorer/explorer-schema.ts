import type pg from 'pg';
import { EXPLORER_LIMITS, type SchemaOutput } from '../../shared/contracts/explorer-channel.ts';
import { roleNames } from '../../shared/identifiers.ts';
import { connectAttached } from '../attached/attached-check.ts';
import type { AttachedDatabase } from '../attached/attached-config.ts';
import { connectPinned, isLoginRefused } from '../postgres/steward.ts';
import { MARKER_PREFIX } from '../postgres/tenant-sql.ts';
import { attachedLoginError } from './explorer-pools.ts';
import { type ExplorerRoleDeps, explorerPassword, prepareExplorerRole } from './explorer-role.ts';

const KINDS: Record<string, SchemaOutput['tables'][number]['kind']> = {
  r: 'table',
  v: 'view',
  m: 'materialized_view',
  f: 'foreign_table',
  p: 'partitioned_table',
};

/**
 * Tables, views and their columns in schema public of one database (catalogs are refused to
 * explorer queries; this is the dedicated way to list them). Read on a short-lived connection as
 * the database's explorer role — the least privilege that can see them — with the platform's
 * settings pinned at login (search_path = pg_catalog, pg_temp), every catalog object qualified.
 * The explorer role is prepared first when it cannot log in yet.
 */
export async function readPublicSchema(
  deps: ExplorerRoleDeps,
  database: string,
  /**
   * The id the request names: the database's marker must carry it. A name can be another
   * database's (an attached database's Bulwark name equal to a hosted one's here, asked before
   * the server's answer registered it): never read under an id that is not its own.
   */
  databaseId: string,
): Promise<SchemaOutput> {
  const roles = roleNames(database);
  // The database id (the explorer's password is derived from it) is on our marker of its role.
  const marked = await deps.admin.query<{ marker: string | null }>(
    `SELECT pg_catalog.shobj_description(oid, 'pg_authid') AS marker
       FROM pg_catalog.pg_roles WHERE rolname = $1::pg_catalog.text`,
    [roles.explorer],
  );
  const marker = marked.rows[0]?.marker ?? '';
  if (!marker.startsWith(MARKER_PREFIX) || marker.slice(MARKER_PREFIX.length) !== databaseId)
    throw new Error(`database ${database} is not ours`);
  const password = explorerPassword(deps.key, databaseId, roles.explorer);
  const login = { database, user: roles.explorer, password, applicationName: 'bulwark-explorer-schema' };
  // The explorer's own session defaults (read only, 10 s) are pinned too, not left to role settings.
  const pins = { default_transaction_read_only: 'on', statement_timeout: '10000' };
  let c: pg.Client;
  try {
    c = await connectPinned(deps, login, pins);
  } catch (err) {
    if (!isLoginRefused(err)) throw err;
    await prepareExplorerRole(deps, { databaseId, name: database, roles, password });
    c = await connectPinned(deps, login, pins);
  }
  try {
    return await schemaOf(c);
  } finally {
    await c.end().catch(() => {});
  }
}

/**
 * The same listing for an attached database (ADR 0031), read as the entry's own read-only role
 * at its host, with the platform's settings pinned at login (attached-check.ts connectAttached).
 * Nothing is prepared: Bulwark owns nothing there; a refused login is an error.
 */
export async function readAttachedSchema(db: AttachedDatabase): Promise<SchemaOutput> {
  const c = await connectAttached(db, 'reader', {
    applicationName: 'bulwark-explorer-schema',
    settings: { default_transaction_read_only: 'on', statement_timeout: '10000' },
  }).catch((err: unknown) => {
    throw isLoginRefused(err) ? attachedLoginError(db, err) : err;
  });
  try {
    return await schemaOf(c);
  } finally {
    await c.end().catch(() => {});
  }
}

/** Tables, views and columns of schema public (at most maxSchemaColumns, then `truncated`). */
async function schemaOf(c: pg.Client): Promise<SchemaOutput> {
  const r = await c.query<{
    rel: string;
    kind: string;
    col: string | null;
    type: string | null;
    nullable: boolean;
  }>(
    `SELECT c.relname AS rel, c.relkind::pg_catalog.text AS kind, a.attname AS col,
            pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
            NOT coalesce(a.attnotnull, false) AS nullable
       FROM pg_catalog.pg_class c
       JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
       LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
      WHERE c.relkind IN ('r', 'v', 'm', 'f', 'p')
      ORDER BY c.relname, a.attnum
      LIMIT $1`,
    [EXPLORER_LIMITS.maxSchemaColumns + 1],
  );
  const truncated = r.rows.length > EXPLORER_LIMITS.maxSchemaColumns;
  const tables: SchemaOutput['tables'] = [];
  for (const row of r.rows.slice(0, EXPLORER_LIMITS.maxSchemaColumns)) {
    let t = tables.at(-1);
    if (!t || t.name !== row.rel) {
      t = { name: row.rel, kind: KINDS[row.kind] ?? 'table', columns: [] };
      tables.push(t);
    }
    if (row.col !== null)
      t.columns.push({ name: row.col, type: row.type ?? 'unknown', nullable: row.nullable });
  }
  return { tables, truncated };
}
