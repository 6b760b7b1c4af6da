/**
 * Drift between the cluster's catalog and what Bulwark made: unexpected roles and superusers,
 * PUBLIC privileges and grants we did not make on tenant databases, databases we do not know.
 * The repair touches only what is ours (a tenant database whose owner role carries our
 * marker): it revokes from PUBLIC and from roles that are not the database's own, and re-grants
 * our roles; everything else (foreign roles, superusers, unknown databases) is only reported.
 */
import type pg from 'pg';
import { quoteIdent, type RoleNames, roleNames } from '../../shared/identifiers.ts';
import { grantDatabase, type Queryable, setupSchema } from './tenant-sql.ts';

export type DriftFinding = {
  kind:
    | 'unknown_database'
    | 'missing_database'
    | 'unexpected_role'
    | 'unexpected_superuser'
    | 'foreign_role'
    | 'public_database_privilege'
    | 'public_schema_privilege'
    | 'unexpected_grant'
    | 'missing_grant';
  object: string;
  detail: string;
};

/** Databases and roles of the platform itself (never tenant objects). */
export type PlatformObjects = { databases: string[]; roles: string[] };

const SYSTEM_DATABASES = ['postgres', 'template0', 'template1'];
const MARKER_PREFIX = 'bulwark:database:';

/** A new admin connection into one database (caller ends it). */
export type ConnectAdmin = (database: string) => Promise<pg.Client>;

export async function findDrift(
  admin: pg.Pool,
  connect: ConnectAdmin,
  known: string[],
  platform: PlatformObjects,
): Promise<DriftFinding[]> {
  const findings: DriftFinding[] = [];
  const knownSet = new Set(known);
  const ours = new Map<string, RoleNames>(known.map((d) => [d, roleNames(d)]));
  const tenantRoles = new Map<string, string>();
  for (const [db, r] of ours) for (const role of Object.values(r)) tenantRoles.set(role, db);

  const me = (await admin.query<{ u: string }>('SELECT current_user AS u')).rows[0]!.u;
  const roles = await admin.query<{ rolname: string; rolsuper: boolean; marker: string | null }>(
    `SELECT rolname, rolsuper, shobj_description(oid, 'pg_authid') AS marker
       FROM pg_roles WHERE rolname !~ '^pg_'`,
  );
  for (const r of roles.rows) {
    if (r.rolsuper && r.rolname !== me)
      findings.push({
        kind: 'unexpected_superuser',
        object: r.rolname,
        detail: 'superuser other than the agent',
      });
    const db = tenantRoles.get(r.rolname);
    if (db !== undefined) {
      if (!r.marker?.startsWith(MARKER_PREFIX))
        findings.push({
          kind: 'foreign_role',
          object: r.rolname,
          detail: `named like a role of ${db} but not made by us`,
        });
    } else if (r.rolname !== me && !platform.roles.includes(r.rolname)) {
      findings.push({ kind: 'unexpected_role', object: r.rolname, detail: 'role not made by Bulwark' });
    }
  }

  const dbs = await admin.query<{ datname: string; owner: string; acl: string[] | null }>(
    `SELECT datname, pg_get_userbyid(datdba) AS owner, datacl::text[] AS acl FROM pg_database`,
  );
  const present = new Set(dbs.rows.map((d) => d.datname));
  for (const name of known) {
    if (!present.has(name))
      findings.push({ kind: 'missing_database', object: name, detail: 'known but absent' });
  }
  for (const d of dbs.rows) {
    if (!knownSet.has(d.datname)) {
      if (!SYSTEM_DATABASES.includes(d.datname) && !platform.databases.includes(d.datname))
        findings.push({ kind: 'unknown_database', object: d.datname, detail: `owned by ${d.owner}` });
      continue;
    }
    const r = ours.get(d.datname)!;
    // A NULL ACL means the defaults: PUBLIC may CONNECT and create TEMP tables.
    if (d.acl === null) {
      findings.push({
        kind: 'public_database_privilege',
        object: d.datname,
        detail: 'default ACL (PUBLIC CONNECT, TEMP)',
      });
      continue;
    }
    const mine = new Set(Object.values(r));
    for (const role of Object.values(r)) {
      if (!hasPrivileges(d.acl, role, 'c'))
        findings.push({ kind: 'missing_grant', object: d.datname, detail: `${role} lacks CONNECT` });
    }
    for (const item of d.acl) {
      const grantee = item.slice(0, item.indexOf('='));
      if (grantee === '')
        findings.push({ kind: 'public_database_privilege', object: d.datname, detail: item });
      else if (!mine.has(grantee.replaceAll('"', '')))
        findings.push({ kind: 'unexpected_grant', object: d.datname, detail: item });
    }
  }

  for (const name of known) {
    if (!present.has(name)) continue;
    const c = await connect(name);
    try {
      const s = await c.query<{ acl: string[] | null; owner: string }>(
        "SELECT nspacl::text[] AS acl, pg_get_userbyid(nspowner) AS owner FROM pg_namespace WHERE nspname = 'public'",
      );
      const acl = s.rows[0]?.acl ?? null;
      const pub = acl === null ? ['(default ACL)'] : acl.filter((i) => i.startsWith('='));
      for (const item of pub)
        findings.push({ kind: 'public_schema_privilege', object: `${name}.public`, detail: item });
      const r = roleNames(name);
      if (s.rows[0] && s.rows[0].owner !== r.owner)
        findings.push({
          kind: 'missing_grant',
          object: `${name}.public`,
          detail: `schema owned by ${s.rows[0].owner}, not ${r.owner}`,
        });
      const wanted: [string, string][] = [
        [r.reader, 'U'],
        [r.explorer, 'U'],
        [r.migrator, 'UC'],
      ];
      for (const [role, privs] of wanted) {
        if (acl !== null && !hasPrivileges(acl, role, privs))
          findings.push({
            kind: 'missing_grant',
            object: `${name}.public`,
            detail: `${role} lacks ${privs}`,
          });
      }
    } finally {
      await c.end().catch(() => {});
    }
  }
  return findings;
}

/** Re-applies our privileges on the known databases that are ours; returns what was repaired. */
export async function fixDrift(admin: pg.Pool, connect: ConnectAdmin, known: string[]): Promise<string[]> {
  const fixed: string[] = [];
  for (const name of known) {
    const r = roleNames(name);
    if (!(await ownedByUs(admin, name, r.owner))) continue;
    // Grants on our database to roles that are not its own are revoked; PUBLIC too (below).
    const foreign = await admin.query<{ grantee: string }>(
      `SELECT DISTINCT pg_get_userbyid(a.grantee) AS grantee
         FROM pg_database d, aclexplode(d.datacl) a
        WHERE d.datname = $1 AND a.grantee <> 0 AND NOT (pg_get_userbyid(a.grantee) = ANY($2))`,
      [name, Object.values(r)],
    );
    for (const g of foreign.rows)
      await admin.query(`REVOKE ALL ON DATABASE ${quoteIdent(name)} FROM ${quoteIdent(g.grantee)}`);
    await grantDatabase(admin, name, r);
    const c = await connect(name);
    try {
      await setupSchema(c, r);
    } finally {
      await c.end().catch(() => {});
    }
    fixed.push(name);
  }
  return fixed;
}

/** Whether the ACL grants `role` every privilege letter in `privs` (e.g. `c`, `UC`). */
function hasPrivileges(acl: string[], role: string, privs: string): boolean {
  const granted = acl
    .filter((i) => i.slice(0, i.indexOf('=')).replaceAll('"', '') === role)
    .map((i) => i.slice(i.indexOf('=') + 1, i.indexOf('/')))
    .join('');
  return [...privs].every((p) => granted.includes(p));
}

async function ownedByUs(db: Queryable, name: string, owner: string): Promise<boolean> {
  const r = await db.query<{ marker: string | null }>(
    `SELECT shobj_description(a.oid, 'pg_authid') AS marker
       FROM pg_database d JOIN pg_roles a ON a.oid = d.datdba
      WHERE d.datname = $1 AND a.rolname = $2`,
    [name, owner],
  );
  return r.rows[0]?.marker?.startsWith(MARKER_PREFIX) ?? false;
}
