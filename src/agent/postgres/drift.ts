/**
 * Drift between the cluster's catalog and what Bulwark made: unexpected roles and superusers,
 * PUBLIC privileges and grants we did not make on tenant databases, databases we do not know,
 * and what a tenant owner can change on its own: database- and role-level settings, its
 * password outside rotation, functions and operators shadowing pg_catalog ones, a database still
 * owned by `<db>_owner` (made before the steward existed).
 *
 * Who reads what: cluster-wide catalogs (roles, databases, pg_db_role_setting, pg_authid) are
 * read by the admin on the maintenance database; everything inside a tenant database is read in
 * a steward session (steward.ts) with its settings pinned at login. Every catalog object is
 * `pg_catalog.`-qualified. The repair touches only what is ours (markers): it revokes from PUBLIC
 * and from roles that are not the database's own, re-grants our roles, moves a legacy database
 * to its steward, removes database-level and per-database settings, puts our roles' settings and
 * the owner's password (the pooler's verifier) back, and drops exact-signature shadows of
 * pg_catalog routines and operators (never CASCADE: one that something depends on is reported).
 * Foreign roles, superusers and unknown databases are only reported.
 */
import type pg from 'pg';
import type { DatabaseLimits } from '../../shared/contracts/jobs.ts';
import { quoteIdent, type RoleNames, roleNames } from '../../shared/identifiers.ts';
import { parseAccessMarker } from './access-sql.ts';
import {
  EXTENSION_GUARD,
  EXTENSION_GUARD_CHECK,
  HIDDEN_CATALOG_QUERY,
  TENANT_RANGE_FUNCTIONS,
  TENANT_TEMPLATE,
} from './catalog-visibility.ts';
import { isSpareName, SPARE_MARKER, SPARE_PREFIX, spareTag } from './spare-sql.ts';
import { type ClusterAccess, connectSteward, isLockTimeout, isLoginRefused } from './steward.ts';
import {
  databaseOwnership,
  effectiveSetting,
  ensureDatabase,
  ensureSteward,
  expectedRoleSettings,
  grantDatabase,
  MARKER_PREFIX,
  NotOursError,
  type Queryable,
  resetSettings,
  setOwnerPassword,
  setupSchema,
} from './tenant-sql.ts';

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
    | 'missing_grant'
    | 'database_owner'
    | 'database_setting'
    | 'role_setting'
    | 'owner_password'
    | 'shadow_routine'
    | 'catalog_visibility'
    | 'steward_unreachable'
    | 'repair_failed'
    | 'extension_in_catalog'
    | 'tenant_guard'
    | 'range_function'
    | 'spare_tampered';
  object: string;
  detail: string;
};

/** Databases and roles of the platform itself (never tenant objects). */
export type PlatformObjects = { databases: string[]; roles: string[] };

/** One known tenant database: its id (null: taken from our marker) and limits (null: unknown). */
export type DriftTarget = { name: string; id: string | null; limits: DatabaseLimits | null };

export type DriftDeps = {
  /** The admin pool, on the maintenance database. */
  admin: pg.Pool;
  cluster: ClusterAccess;
  /** The owner's verifier the pooler serves (the password the platform set), null if none. */
  ownerVerifier(name: string): string | null;
};

const SYSTEM_DATABASES = ['postgres', 'template0', 'template1', TENANT_TEMPLATE];
const SYSTEM_SCHEMAS = `('pg_catalog', 'information_schema', 'pg_toast')`;

/**
 * A shadow: `ext` is the extension it was made a member of (its name as an identifier, quoted
 * by PostgreSQL), null if none.
 */
type Shadow = {
  sig: string;
  owner: string;
  exact: boolean;
  kind: 'routine' | 'operator';
  ext: string | null;
};

/** SQL: the extension (name, `%I`-quoted) an object of catalog `cat` with oid `oid` belongs to, or NULL. */
const EXTENSION_OF = (cat: string, oid: string) =>
  `(SELECT pg_catalog.format('%I', e.extname) FROM pg_catalog.pg_depend d
      JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
     WHERE d.classid = 'pg_catalog.${cat}'::pg_catalog.regclass AND d.objid = ${oid}
       AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND d.deptype = 'e' LIMIT 1)`;

/** Known names with ids resolved from our markers where the payload had none. */
async function resolveTargets(admin: Queryable, targets: DriftTarget[]): Promise<Map<string, DriftTarget>> {
  const out = new Map<string, DriftTarget>(targets.map((t) => [t.name, t]));
  const missing = targets.filter((t) => t.id === null).map((t) => roleNames(t.name).owner);
  if (missing.length > 0) {
    const r = await admin.query<{ rolname: string; marker: string | null }>(
      `SELECT rolname::pg_catalog.text AS rolname, pg_catalog.shobj_description(oid, 'pg_authid') AS marker
         FROM pg_catalog.pg_roles WHERE rolname = ANY($1::pg_catalog.text[])`,
      [missing],
    );
    const ids = new Map(r.rows.map((row) => [row.rolname, row.marker]));
    for (const t of targets) {
      if (t.id !== null) continue;
      const marker = ids.get(roleNames(t.name).owner) ?? null;
      if (marker?.startsWith(MARKER_PREFIX))
        out.set(t.name, { ...t, id: marker.slice(MARKER_PREFIX.length) });
    }
  }
  return out;
}

export async function findDrift(
  deps: DriftDeps,
  targets: DriftTarget[],
  platform: PlatformObjects,
): Promise<DriftFinding[]> {
  const { admin } = deps;
  const findings: DriftFinding[] = [];
  const known = await resolveTargets(admin, targets);
  const ours = new Map<string, RoleNames>([...known.keys()].map((d) => [d, roleNames(d)]));
  const tenantRoles = new Map<string, string>();
  for (const [db, r] of ours) for (const role of Object.values(r)) tenantRoles.set(role, db);

  const me = (await admin.query<{ u: string }>('SELECT current_user::pg_catalog.text AS u')).rows[0]!.u;
  const roles = await admin.query<{
    rolname: string;
    rolsuper: boolean;
    marker: string | null;
    can_login: boolean;
    expired: boolean;
  }>(
    `SELECT rolname::pg_catalog.text AS rolname, rolsuper, pg_catalog.shobj_description(oid, 'pg_authid') AS marker,
            rolcanlogin AS can_login, (rolvaliduntil IS NULL OR rolvaliduntil <= pg_catalog.now()) AS expired
       FROM pg_catalog.pg_roles WHERE rolname !~ '^pg_'`,
  );
  const sparePrefix = `${SPARE_PREFIX}${spareTag(deps.cluster.key)}_`;
  const mySpare = (name: string) => name.startsWith(sparePrefix);
  const leftovers: DriftFinding[] = [];
  for (const r of roles.rows) {
    // A spare's role of this agent's warm pool (spare-sql.ts): the pool checks its spares
    // (`spare_tampered`). Another key's spares (an agent enrolled again) are nobody's: reported.
    if (mySpare(r.rolname) && r.marker === SPARE_MARKER && !r.rolsuper) continue;
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
    } else if (parseAccessMarker(r.marker) !== null) {
      // A just-in-time login (access-sql.ts): expected until its VALID UNTIL, then revoked.
      if (r.expired)
        leftovers.push({
          kind: 'unexpected_role',
          object: r.rolname,
          detail: r.can_login
            ? 'just-in-time login past its VALID UNTIL still present (the agent revokes it at expiry)'
            : 'just-in-time login ended but not dropped (NOLOGIN; it owns objects or holds privileges)',
        });
    } else if (r.rolname !== me && !platform.roles.includes(r.rolname)) {
      if (r.marker?.startsWith('bulwark:'))
        leftovers.push({
          kind: 'unexpected_role',
          object: r.rolname,
          detail: 'made by Bulwark for a database or grant this node no longer has',
        });
      else findings.push({ kind: 'unexpected_role', object: r.rolname, detail: 'role not made by Bulwark' });
    }
  }
  // Roles nobody here made are listed before our own leftovers: when the report is capped
  // (boundFindings), what is cut is the less alarming kind.
  findings.push(...leftovers);

  const dbs = await admin.query<{
    datname: string;
    owner: string;
    acl: string[] | null;
    marker: string | null;
  }>(
    `SELECT datname::pg_catalog.text AS datname, pg_catalog.pg_get_userbyid(datdba)::pg_catalog.text AS owner,
            datacl::pg_catalog.text[] AS acl, pg_catalog.shobj_description(oid, 'pg_database') AS marker
       FROM pg_catalog.pg_database`,
  );
  const present = new Set(dbs.rows.map((d) => d.datname));
  for (const name of known.keys()) {
    if (!present.has(name))
      findings.push({ kind: 'missing_database', object: name, detail: 'known but absent' });
  }
  const reachable: string[] = [];
  for (const d of dbs.rows) {
    const target = known.get(d.datname);
    if (!target) {
      const spare = isSpareName(d.datname) && d.marker?.startsWith(SPARE_MARKER);
      if (spare && !mySpare(d.datname))
        findings.push({
          kind: 'unknown_database',
          object: d.datname,
          detail: `a warm-pool spare made under another agent key (owned by ${d.owner}): no agent removes it`,
        });
      else if (!spare && !SYSTEM_DATABASES.includes(d.datname) && !platform.databases.includes(d.datname))
        findings.push({ kind: 'unknown_database', object: d.datname, detail: `owned by ${d.owner}` });
      continue;
    }
    const r = ours.get(d.datname)!;
    const state = target.id ? await databaseOwnership(admin, d.datname, r, target.id) : 'foreign';
    if (state === 'ours') reachable.push(d.datname);
    else
      findings.push({
        kind: 'database_owner',
        object: d.datname,
        detail:
          state === 'legacy'
            ? `owned by ${d.owner} (the tenant), not ${r.steward}: the tenant can change its settings`
            : `owned by ${d.owner}, not our ${r.steward}`,
      });
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
    const wanted: [string, string][] = [
      [r.owner, 'cCT'],
      [r.reader, 'c'],
      [r.migrator, 'c'],
      [r.explorer, 'c'],
    ];
    for (const [role, privs] of wanted) {
      if (!hasPrivileges(d.acl, role, privs))
        findings.push({ kind: 'missing_grant', object: d.datname, detail: `${role} lacks ${privs}` });
    }
    for (const item of d.acl) {
      const grantee = item.slice(0, item.indexOf('='));
      if (grantee === '')
        findings.push({ kind: 'public_database_privilege', object: d.datname, detail: item });
      else if (!mine.has(grantee.replaceAll('"', '')))
        findings.push({ kind: 'unexpected_grant', object: d.datname, detail: item });
    }
  }

  findings.push(...(await settingsDrift(admin, known, ours, present)));
  findings.push(...(await passwordDrift(deps, known, present)));

  for (const name of reachable) {
    const target = known.get(name)!;
    const r = ours.get(name)!;
    let c: pg.Client;
    try {
      c = await connectSteward(deps.cluster, { databaseId: target.id!, name, roles: r });
    } catch (err) {
      // One database's failure (refused login, no free connection slot) is that database's
      // finding; the other databases are still checked.
      findings.push({
        kind: 'steward_unreachable',
        object: name,
        detail: `${r.steward} ${isLoginRefused(err) ? 'cannot log in' : 'could not connect'} (${String((err as Error)?.message ?? err).slice(0, 200)}); in-database checks skipped`,
      });
      continue;
    }
    try {
      findings.push(...(await schemaDrift(c, name, r)));
      for (const s of await findShadows(c))
        findings.push({
          kind: 'shadow_routine',
          object: `${name}:${s.sig}`,
          detail: s.exact
            ? `${s.kind} with the exact signature of a pg_catalog one (owned by ${s.owner})`
            : `${s.kind} named like a pg_catalog one (owned by ${s.owner}); not dropped by a repair`,
        });
      const guard = await c.query<{ ok: boolean }>(EXTENSION_GUARD_CHECK);
      if (guard.rows[0]?.ok !== true)
        findings.push({
          kind: 'tenant_guard',
          object: `${name}:${EXTENSION_GUARD}`,
          detail:
            'the event trigger refusing tenant extensions in pg_catalog and ALTER EXTENSION … ADD is missing or disabled (database made before the current tenant template)',
        });
      const ranges = await c.query<{ range: string; func: string; owner: string }>(TENANT_RANGE_FUNCTIONS);
      for (const r of ranges.rows)
        findings.push({
          kind: 'range_function',
          object: clip(`${name}:${r.range}`, 200),
          detail: clip(
            `range type ${r.range} calls ${r.func}, owned by ${r.owner}: the planner runs it without an EXECUTE check in any session that queries the type (the explorer's included); not dropped by a repair`,
            1000,
          ),
        });
      for (const e of await systemSchemaExtensions(c))
        findings.push({
          kind: 'extension_in_catalog',
          object: `${name}:${e.ext}`,
          detail: `extension ${e.ext} installed in schema ${e.schema} by ${e.owner} (the schema every platform connection searches first); drop it or move it out as a superuser`,
        });
      const visible = await visibleCatalog(c);
      // One finding per database (a database made from an older template lacks dozens).
      if (visible.length > 0)
        findings.push({
          kind: 'catalog_visibility',
          object: `${name}:pg_catalog`,
          detail: clip(
            `${visible.length} catalog object(s) usable by PUBLIC (other tenants' sessions or counters; made before the current tenant template): ${visible.join(', ')}`,
            1000,
          ),
        });
    } catch (err) {
      findings.push({
        kind: 'steward_unreachable',
        object: name,
        detail: `in-database checks failed: ${String((err as Error)?.message ?? err).slice(0, 300)}`,
      });
    } finally {
      await c.end().catch(() => {});
    }
  }
  return boundFindings(findings);
}

/** Findings of one kind for one database (object prefix before `:`) beyond which only a count is kept. */
export const MAX_FINDINGS_PER_GROUP = 100;
/** The agent's job result is capped at 64 KiB by the server: the findings stay well below. */
const MAX_FINDINGS_JSON = 48 * 1024;

/**
 * A tenant can plant thousands of shadows: the report must still fit the job result (or drift
 * would go blind). Per kind and database at most MAX_FINDINGS_PER_GROUP, then one finding that
 * counts the rest; fields clipped to the contract (object 200, detail 1000 characters); the
 * whole list bounded in size with a last finding saying how many were left out.
 */
export function boundFindings(findings: DriftFinding[]): DriftFinding[] {
  const groups = new Map<string, number>();
  // Cluster-level findings first, then the counts, then per-object detail: what the size bound
  // cuts (last) is detail whose count is already reported.
  const head: DriftFinding[] = [];
  const tail: DriftFinding[] = [];
  const extra = new Map<string, { f: DriftFinding; n: number }>();
  for (const f of findings) {
    const i = f.object.indexOf(':');
    const key = `${f.kind}\u0000${i >= 0 ? f.object.slice(0, i) : ''}`;
    const n = (groups.get(key) ?? 0) + 1;
    groups.set(key, n);
    if (n <= MAX_FINDINGS_PER_GROUP) {
      (i >= 0 ? tail : head).push({ ...f, object: clip(f.object, 200), detail: clip(f.detail, 1000) });
      continue;
    }
    const e = extra.get(key);
    if (e) e.n++;
    else extra.set(key, { f, n: 1 });
  }
  for (const { f, n } of extra.values()) {
    const i = f.object.indexOf(':');
    head.push({
      kind: f.kind,
      object: clip(i >= 0 ? f.object.slice(0, i) : f.object, 200),
      detail: `and ${n} more ${f.kind} finding(s) not listed`,
    });
  }
  const out = [...head, ...tail];
  let size = 2;
  for (let k = 0; k < out.length; k++) {
    size += JSON.stringify(out[k]).length + 1;
    if (size > MAX_FINDINGS_JSON) {
      const left = out.length - k;
      const last = out[k]!;
      return [
        ...out.slice(0, k),
        {
          kind: last.kind,
          object: '(report)',
          detail: `${left} more finding(s) not listed (report too large)`,
        },
      ];
    }
  }
  return out;
}

function clip(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max - 1)}…`;
}

/** Database-level and per-database settings on tenant databases; our roles' own settings. */
async function settingsDrift(
  admin: Queryable,
  known: Map<string, DriftTarget>,
  ours: Map<string, RoleNames>,
  present: Set<string>,
): Promise<DriftFinding[]> {
  const findings: DriftFinding[] = [];
  const names = [...known.keys()].filter((n) => present.has(n));
  const roleList = names.flatMap((n) => Object.values(ours.get(n)!));
  const r = await admin.query<{
    datname: string | null;
    role: string | null;
    config: string[];
    effective: boolean;
  }>(
    `SELECT d.datname::pg_catalog.text AS datname,
            CASE WHEN s.setrole = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(s.setrole)::pg_catalog.text END AS role,
            s.setconfig AS config, ${effectiveSetting('s')} AS effective
       FROM pg_catalog.pg_db_role_setting s
       LEFT JOIN pg_catalog.pg_database d ON d.oid = s.setdatabase
      WHERE d.datname = ANY($1::pg_catalog.text[])
         OR pg_catalog.pg_get_userbyid(s.setrole) = ANY($2::pg_catalog.text[])`,
    [names, roleList],
  );
  const roleSettings = new Map<string, string[]>();
  const own = new Set(names);
  const ourRoles = new Set(roleList);
  for (const row of r.rows) {
    if (row.datname !== null && (!own.has(row.datname) || (!row.effective && row.role !== null))) {
      // A role's row in a database it cannot connect to never applies: no drift of that database.
      // One of our roles with settings in some other database (`ALTER ROLE self IN DATABASE …`)
      // is drift of that role (its own database's).
      if (row.role === null || !ourRoles.has(row.role)) continue;
      findings.push({
        kind: 'role_setting',
        object: row.role,
        detail: `in database ${row.datname}: ${row.config.join(', ')}`.slice(0, 1000),
      });
    } else if (row.datname !== null) {
      findings.push({
        kind: 'database_setting',
        object: row.datname,
        detail: `${row.role === null ? 'database-level' : `for ${row.role}`}: ${row.config.join(', ').slice(0, 800)}`,
      });
    } else if (row.role !== null) roleSettings.set(row.role, row.config);
  }
  for (const name of names) {
    const target = known.get(name)!;
    const roles = ours.get(name)!;
    const expected = target.limits ? expectedRoleSettings(roles, target.limits) : null;
    for (const role of Object.values(roles)) {
      const have = [...(roleSettings.get(role) ?? [])].sort();
      if (expected) {
        const want = [...(expected.get(role) ?? [])].sort();
        if (have.join('\n') !== want.join('\n'))
          findings.push({
            kind: 'role_setting',
            object: role,
            detail: `has {${have.join(', ')}}, expected {${want.join(', ')}}`.slice(0, 1000),
          });
      } else {
        // Limits unknown: only settings we never make are drift.
        const keys = new Set(
          [...(expectedRoleSettings(roles, ZERO_LIMITS).get(role) ?? [])].map((s) => s.split('=')[0]),
        );
        const odd = have.filter((s) => !keys.has(s.split('=')[0]));
        if (odd.length > 0)
          findings.push({ kind: 'role_setting', object: role, detail: `unexpected {${odd.join(', ')}}` });
      }
    }
  }
  return findings;
}

const ZERO_LIMITS: DatabaseLimits = {
  owner_connection_limit: 1,
  reader_connection_limit: 1,
  statement_timeout_ms: 0,
  idle_in_transaction_timeout_ms: 0,
};

/** The owner's password in PostgreSQL against the verifier the pooler serves. */
async function passwordDrift(
  deps: DriftDeps,
  known: Map<string, DriftTarget>,
  present: Set<string>,
): Promise<DriftFinding[]> {
  const findings: DriftFinding[] = [];
  const owners = new Map<string, string>();
  for (const name of known.keys()) if (present.has(name)) owners.set(roleNames(name).owner, name);
  if (owners.size === 0) return findings;
  const r = await deps.admin.query<{ rolname: string; rolpassword: string | null }>(
    `SELECT rolname::pg_catalog.text AS rolname, rolpassword FROM pg_catalog.pg_authid
      WHERE rolname = ANY($1::pg_catalog.text[])`,
    [[...owners.keys()]],
  );
  for (const row of r.rows) {
    const name = owners.get(row.rolname)!;
    const want = deps.ownerVerifier(name);
    if (want !== null && row.rolpassword !== want)
      findings.push({
        kind: 'owner_password',
        object: row.rolname,
        detail: 'password differs from the one the platform set (changed outside rotation)',
      });
  }
  return findings;
}

/** The public schema's owner and privileges, in a steward session. */
async function schemaDrift(c: Queryable, name: string, r: RoleNames): Promise<DriftFinding[]> {
  const findings: DriftFinding[] = [];
  const s = await c.query<{ acl: string[] | null; owner: string }>(
    `SELECT nspacl::pg_catalog.text[] AS acl, pg_catalog.pg_get_userbyid(nspowner)::pg_catalog.text AS owner
       FROM pg_catalog.pg_namespace WHERE nspname = 'public'`,
  );
  const acl = s.rows[0]?.acl ?? null;
  const pub = acl === null ? ['(default ACL)'] : acl.filter((i) => i.startsWith('='));
  for (const item of pub)
    findings.push({ kind: 'public_schema_privilege', object: `${name}.public`, detail: item });
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
      findings.push({ kind: 'missing_grant', object: `${name}.public`, detail: `${role} lacks ${privs}` });
  }
  return findings;
}

/**
 * Routines named like a pg_catalog routine and operators with a pg_catalog operator's exact
 * signature, in every schema but the system ones. Members of extensions are skipped only when a
 * superuser owns them (what an extension script makes, trusted extensions included): the tenant
 * owns the extensions it creates and may `ALTER EXTENSION … ADD` a routine of its own to hide it.
 */
async function findShadows(c: Queryable): Promise<Shadow[]> {
  const routines = await c.query<{ sig: string; owner: string; exact: boolean; ext: string | null }>(
    `SELECT pg_catalog.format('%I.%I(%s)', n.nspname, p.proname,
                              pg_catalog.pg_get_function_identity_arguments(p.oid)) AS sig,
            pg_catalog.pg_get_userbyid(p.proowner)::pg_catalog.text AS owner,
            ${EXTENSION_OF('pg_proc', 'p.oid')} AS ext,
            EXISTS (SELECT 1 FROM pg_catalog.pg_proc k
                     WHERE k.pronamespace = 'pg_catalog'::pg_catalog.regnamespace
                       AND k.proname = p.proname AND k.proargtypes = p.proargtypes) AS exact
       FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
      WHERE n.nspname NOT IN ${SYSTEM_SCHEMAS} AND n.nspname !~ '^pg_(toast_)?temp_'
        AND EXISTS (SELECT 1 FROM pg_catalog.pg_proc k
                     WHERE k.pronamespace = 'pg_catalog'::pg_catalog.regnamespace AND k.proname = p.proname)
        AND (${EXTENSION_OF('pg_proc', 'p.oid')} IS NULL
             OR NOT (SELECT a.rolsuper FROM pg_catalog.pg_roles a WHERE a.oid = p.proowner))
      ORDER BY 1`,
  );
  const operators = await c.query<{ sig: string; owner: string; ext: string | null }>(
    `SELECT pg_catalog.format('%I.%s(%s, %s)', n.nspname, o.oprname,
              CASE WHEN o.oprleft = 0 THEN 'NONE' ELSE pg_catalog.format_type(o.oprleft, NULL) END,
              CASE WHEN o.oprright = 0 THEN 'NONE' ELSE pg_catalog.format_type(o.oprright, NULL) END) AS sig,
            pg_catalog.pg_get_userbyid(o.oprowner)::pg_catalog.text AS owner,
            ${EXTENSION_OF('pg_operator', 'o.oid')} AS ext
       FROM pg_catalog.pg_operator o JOIN pg_catalog.pg_namespace n ON n.oid = o.oprnamespace
      WHERE n.nspname NOT IN ${SYSTEM_SCHEMAS} AND n.nspname !~ '^pg_(toast_)?temp_'
        AND EXISTS (SELECT 1 FROM pg_catalog.pg_operator k
                     WHERE k.oprnamespace = 'pg_catalog'::pg_catalog.regnamespace AND k.oprname = o.oprname
                       AND k.oprleft = o.oprleft AND k.oprright = o.oprright)
        AND (${EXTENSION_OF('pg_operator', 'o.oid')} IS NULL
             OR NOT (SELECT a.rolsuper FROM pg_catalog.pg_roles a WHERE a.oid = o.oprowner))
      ORDER BY 1`,
  );
  return [
    ...routines.rows.map((r) => ({ ...r, kind: 'routine' as const })),
    ...operators.rows.map((r) => ({ ...r, exact: true, kind: 'operator' as const })),
  ];
}

/**
 * Extensions in a system schema (pg_catalog, information_schema, pg_toast) that a role other than a
 * superuser owns: a tenant's `CREATE EXTENSION hstore SCHEMA pg_catalog` (trusted, so allowed
 * without CREATE on pg_catalog) adds routines and operators to the schema every platform
 * connection searches first. plpgsql (the superuser's) is not reported.
 */
async function systemSchemaExtensions(
  c: Queryable,
): Promise<{ ext: string; schema: string; owner: string }[]> {
  const r = await c.query<{ ext: string; schema: string; owner: string }>(
    `SELECT e.extname::pg_catalog.text AS ext, n.nspname::pg_catalog.text AS schema,
            pg_catalog.pg_get_userbyid(e.extowner)::pg_catalog.text AS owner
       FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace
      WHERE n.nspname IN ${SYSTEM_SCHEMAS}
        AND NOT COALESCE((SELECT a.rolsuper FROM pg_catalog.pg_roles a WHERE a.oid = e.extowner), false)
      ORDER BY 1`,
  );
  return r.rows;
}

/**
 * The catalog objects PUBLIC can still use in this database, of those the tenant template hides
 * (the same generated list: HIDDEN_CATALOG_QUERY).
 */
async function visibleCatalog(c: Queryable): Promise<string[]> {
  const r = await c.query<{ object: string }>(
    `SELECT h.object FROM (${HIDDEN_CATALOG_QUERY}) h
      WHERE CASE h.kind WHEN 'function' THEN pg_catalog.has_function_privilege('public', h.oid, 'EXECUTE')
                        ELSE pg_catalog.has_table_privilege('public', h.oid, 'SELECT') END`,
  );
  return r.rows.map((row) => row.object);
}

/** What a repair did: the databases fully repaired, and a `repair_failed` finding per failed step. */
export type DriftRepair = { fixed: string[]; failed: DriftFinding[] };

/**
 * Re-applies what is ours on the known databases that are ours. Each database is repaired on its
 * own, and each step of it too: a step that fails (a tenant holding a lock on its own role makes
 * `ALTER ROLE` time out after the pinned lock_timeout; its steward cannot log in) becomes a
 * `repair_failed` finding with a bounded detail, and the other steps and databases still run.
 * A database is listed as fixed only when every step succeeded.
 */
export async function fixDrift(deps: DriftDeps, targets: DriftTarget[]): Promise<DriftRepair> {
  const { admin } = deps;
  const fixed: string[] = [];
  const failed: DriftFinding[] = [];
  const known = await resolveTargets(admin, targets);
  for (const [name, target] of known) {
    if (target.id === null) continue;
    const id = target.id;
    const r = roleNames(name);
    let ok = true;
    const attempt = async (step: string, fn: () => Promise<void>): Promise<boolean> => {
      try {
        await fn();
        return true;
      } catch (err) {
        ok = false;
        if (err instanceof NotOursError) return false;
        failed.push({
          kind: 'repair_failed',
          object: `${name}:${step}`,
          detail: `${isLockTimeout(err) ? 'lock wait timed out (a session holds a lock on it): ' : ''}${clip(
            String((err as Error)?.message ?? err),
            300,
          )}; retried by the next repair`,
        });
        return false;
      }
    };
    let state = 'missing';
    await attempt('ownership', async () => {
      state = await databaseOwnership(admin, name, r, id);
    });
    if (state !== 'ours' && state !== 'legacy') continue;
    // The steward (made if missing, its password put back) owns the database, with our
    // marker; database-level settings go with it (ensureDatabase). Nothing else runs without it.
    const base = await attempt('steward', async () => {
      await ensureSteward(admin, { databaseId: id, roles: r, key: deps.cluster.key });
      await ensureDatabase(admin, name, r, id);
    });
    if (!base) continue;
    await attempt('grants', async () => {
      // Grants on our database to roles that are not its own are revoked; PUBLIC too (below).
      const foreign = await admin.query<{ grantee: string }>(
        `SELECT DISTINCT pg_catalog.pg_get_userbyid(a.grantee)::pg_catalog.text AS grantee
           FROM pg_catalog.pg_database d, pg_catalog.aclexplode(d.datacl) a
          WHERE d.datname = $1 AND a.grantee <> 0
            AND NOT (pg_catalog.pg_get_userbyid(a.grantee) = ANY($2::pg_catalog.name[]))`,
        [name, Object.values(r)],
      );
      for (const g of foreign.rows)
        await admin.query(`REVOKE ALL ON DATABASE ${quoteIdent(name)} FROM ${quoteIdent(g.grantee)}`);
      await grantDatabase(admin, name, r);
    });
    await attempt('settings', () => resetSettings(admin, name, r, target.limits));
    const verifier = deps.ownerVerifier(name);
    if (verifier !== null) await attempt('owner_password', () => setOwnerPassword(admin, r.owner, verifier));
    await attempt('schema', async () => {
      const c = await connectSteward(deps.cluster, { databaseId: id, name, roles: r });
      try {
        await setupSchema(c, r);
        await dropShadows(c, r);
      } finally {
        await c.end().catch(() => {});
      }
    });
    if (ok) fixed.push(name);
  }
  return { fixed, failed };
}

const OPERATOR_NAME = /^[+\-*/<>=~!@#%^&|`?]{1,63}$/;

/**
 * Drops the exact-signature shadows owned by the owner or the migrator, each in its own
 * transaction as its owner, never CASCADE; what cannot be dropped (a dependent object, another
 * owner) stays and is reported by the next findDrift.
 */
async function dropShadows(c: Queryable, r: RoleNames): Promise<void> {
  const actors = new Set([r.owner, r.migrator]);
  for (const s of await findShadows(c)) {
    if (!s.exact || !actors.has(s.owner)) continue;
    let drop: string;
    let object: string;
    if (s.kind === 'routine') {
      // `sig` is built by format('%I…') and pg_get_function_identity_arguments: quoted by PostgreSQL.
      object = `ROUTINE ${s.sig}`;
    } else {
      const m = /^("(?:[^"]|"")+"|[a-z_][a-z0-9_$]*)\.(.+?)\((.*)\)$/.exec(s.sig);
      if (!m || !OPERATOR_NAME.test(m[2]!)) continue;
      object = `OPERATOR ${m[1]}.${m[2]} (${m[3]})`;
    }
    // A shadow the tenant added to its own extension leaves the extension first (as its owner:
    // the tenant's extension; `ext` is quoted by PostgreSQL). Another owner's extension refuses.
    drop = `${s.ext === null ? '' : `ALTER EXTENSION ${s.ext} DROP ${object};\n`}DROP ${object}`;
    try {
      await c.query(`BEGIN;\nSET LOCAL ROLE ${quoteIdent(s.owner)};\n${drop};\nCOMMIT`);
    } catch {
      await c.query('ROLLBACK').catch(() => {});
    }
  }
}

/** Whether the ACL grants `role` every privilege letter in `privs` (e.g. `c`, `UC`). */
function hasPrivileges(acl: string[], role: string, privs: string): boolean {
  const granted = acl
    .filter((i) => i.slice(0, i.indexOf('=')).replaceAll('"', '') === role)
    .map((i) => i.slice(i.indexOf('=') + 1, i.indexOf('/')))
    .join('');
  return [...privs].every((p) => granted.includes(p));
}
