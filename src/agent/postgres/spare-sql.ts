/**
 * The SQL of the warm pool's spare databases (ADR 0028, ADR 0034): made ahead of time, checked,
 * handed out as they are (never renamed), destroyed.
 *
 * A spare is a tenant database without a tenant: `bulwark_db_<tag>_<hex>` (the `bulwark_` prefix
 * is reserved, so no tenant can ever ask for such a name, nor for its roles), made from the tenant
 * template with the five roles of tenant-sql.ts, the database grants and the schema setup already
 * done. Its roles and database carry the comment `bulwark:spare`; the database's comment becomes
 * `bulwark:spare:ready:<fingerprint>` only once everything is in place, so a spare interrupted
 * while being made is never taken for a ready one. The owner has its password already (derived
 * from the agent key and the spare's own random name, `spareOwnerPassword`; the warm pool puts its
 * verifier in PgBouncer's auth file with the spare) but no LOGIN; the reader, migrator and
 * explorer have neither. Only its steward logs in (the platform's own loopback login with a
 * derived password), to make and check it. `<tag>` is derived from the agent key: an agent only
 * ever touches the spares it made.
 *
 * Handing one out (`claimSpareSql`) is ONE transaction sent as one message: a check that the
 * spare is still as we made it (raises otherwise), our ownership markers for the database id,
 * LOGIN for the owner, reader and migrator, and the limits. It commits or leaves the spare
 * untouched: a spare is never half handed out. The names stay: the database is the tenant's
 * under the spare's generated name (its physical name), the tenant's own name is a label the
 * server keeps (ADR 0034).
 */
import { createHash, randomBytes } from 'node:crypto';
import type pg from 'pg';
import { type DatabaseLimits, DEFAULT_LIMITS } from '../../shared/contracts/jobs.ts';
import { quoteIdent, quoteLiteral, type RoleNames, roleNames } from '../../shared/identifiers.ts';
import { scramVerifierAsync } from '../../shared/scram.ts';
import { tenantTemplate } from './catalog-visibility.ts';
import { type ClusterAccess, connectPinned, derivedRolePassword } from './steward.ts';
import {
  BASE_ATTRIBUTES,
  effectiveSetting,
  expectedRoleSettings,
  explorerSettingStatements,
  FIXED_LIMITS,
  grantDatabase,
  limitStatements,
  type Queryable,
  roleMarker,
  setupSchema,
  stewardStatements,
} from './tenant-sql.ts';

export const SPARE_PREFIX = 'bulwark_db_';
export const SPARE_MARKER = 'bulwark:spare';
const READY_PREFIX = `${SPARE_MARKER}:ready:`;
const q = quoteIdent;
const lit = quoteLiteral;

/** This agent's spare tag (6 hex of a hash of its key): spares of another agent are never touched. */
export function spareTag(key: Buffer): string {
  return createHash('sha256').update('bulwark-spare-tag:').update(key).digest('hex').slice(0, 6);
}

/** Of the shape the server accepts as a create's `physical_name` (SPARE_NAME_PATTERN). */
export function newSpareName(tag: string): string {
  return `${SPARE_PREFIX}${tag}_${randomBytes(5).toString('hex')}`;
}

/** A name the warm pool uses (any agent's); drift leaves such objects to the pool's own check. */
export function isSpareName(name: string): boolean {
  return name.startsWith(SPARE_PREFIX);
}

/** Password of a spare's steward (derived, never stored): keyed with the spare's own name. */
function spareStewardPassword(key: Buffer, roles: RoleNames): string {
  return derivedRolePassword(key, 'steward', `spare:${roles.steward}`, roles.steward);
}

/**
 * The owner's password of a spare (derived, never stored: the agent recomputes it after a
 * restart): keyed with the spare's own random name. It is the tenant's first password when the
 * spare is handed out; the server seals it and a rotation replaces it (ADR 0034).
 */
export function spareOwnerPassword(key: Buffer, spare: string): string {
  const owner = roleNames(spare).owner;
  return derivedRolePassword(key, 'owner', `spare:${owner}`, owner);
}

/** The database privileges every spare (and tenant database) has, as `grantee:privilege` (sorted, C order). */
function expectedDatabaseAcl(r: RoleNames): string[] {
  const all = ['CONNECT', 'CREATE', 'TEMPORARY'];
  return [
    ...all.map((p) => `${r.steward}:${p}`),
    ...all.map((p) => `${r.owner}:${p}`),
    ...[r.reader, r.migrator, r.explorer].map((role) => `${role}:CONNECT`),
  ].sort();
}

const textArray = (xs: string[]) => `ARRAY[${xs.map(lit).join(', ')}]::pg_catalog.text[]`;

/**
 * SQL listing what is wrong with a spare at the cluster level (one text row per problem, none
 * when it is as we made it): its database (ready marker, owner, privileges, connections allowed
 * without a limit, not a template, no settings) and its
 * five roles (marker, no LOGIN but the steward's, no password but the steward's and the owner's
 * — the owner's exactly `ownerVerifier`, the one PgBouncer serves —, no attribute, the connection
 * limits and role settings of `DEFAULT_LIMITS` the spare was made with (the explorer's settings),
 * no membership we did not make). Literals only (it also runs inside a DO block).
 */
export function spareProblemsSql(spare: string, ownerVerifier: string | null): string {
  const r = roleNames(spare);
  const kinds = Object.entries(r)
    .map(([k, n]) => `(${lit(k)}, ${lit(n)})`)
    .join(', ');
  const explorerSettings = textArray(
    [
      'default_transaction_read_only=on',
      `statement_timeout=${FIXED_LIMITS.explorerStatementTimeoutMs}`,
      `temp_file_limit=${FIXED_LIMITS.explorerTempFileLimitKb}`,
    ].sort(),
  );
  const memberships = [
    [r.owner, r.steward],
    [r.migrator, r.steward],
    [r.owner, r.migrator],
  ]
    .map(([g, m]) => lit(`${g}>${m}`))
    .join(', ');
  const roleSettings = expectedRoleSettings(r, DEFAULT_LIMITS);
  const settings = [
    `('explorer', ${explorerSettings})`,
    ...(['owner', 'reader', 'migrator'] as const).map(
      (k) => `(${lit(k)}, ${textArray([...(roleSettings.get(r[k]) ?? [])].sort())})`,
    ),
  ].join(', ');
  return `WITH r(kind, name) AS (VALUES ${kinds}),
  e(kind, conf) AS (VALUES ${settings}),
  a AS (SELECT r.kind, r.name, o.oid, o.rolsuper, o.rolcanlogin, o.rolcreatedb, o.rolcreaterole, o.rolreplication,
               o.rolbypassrls, o.rolpassword, o.rolvaliduntil, o.rolconnlimit,
               pg_catalog.shobj_description(o.oid, 'pg_authid') AS marker
          FROM r LEFT JOIN pg_catalog.pg_authid o ON o.rolname OPERATOR(pg_catalog.=) r.name),
  d AS (SELECT oid, datdba, datacl, datallowconn, datconnlimit, datistemplate,
               pg_catalog.shobj_description(oid, 'pg_database') AS marker
          FROM pg_catalog.pg_database WHERE datname OPERATOR(pg_catalog.=) ${lit(spare)})
SELECT 'database missing' AS problem WHERE NOT EXISTS (SELECT 1 FROM d)
UNION ALL SELECT 'database not marked ready' FROM d
 WHERE d.marker IS NULL OR NOT pg_catalog.starts_with(d.marker, ${lit(READY_PREFIX)})
UNION ALL SELECT 'database owner changed to ' || pg_catalog.pg_get_userbyid(d.datdba) FROM d
 WHERE d.datdba IS DISTINCT FROM (SELECT oid FROM a WHERE kind OPERATOR(pg_catalog.=) 'steward')
UNION ALL SELECT 'database privileges changed' FROM d
 WHERE d.datacl IS NULL OR (SELECT pg_catalog.array_agg(pg_catalog.pg_get_userbyid(x.grantee)::pg_catalog.text || ':' || x.privilege_type
                                     || CASE WHEN x.is_grantable THEN '*' ELSE '' END
                                     ORDER BY pg_catalog.pg_get_userbyid(x.grantee)::pg_catalog.text || ':' || x.privilege_type COLLATE "C")
                              FROM pg_catalog.aclexplode(d.datacl) x)
        IS DISTINCT FROM ${textArray(expectedDatabaseAcl(r))}
UNION ALL SELECT 'database connection settings changed' FROM d
 WHERE NOT d.datallowconn OR d.datistemplate OR d.datconnlimit OPERATOR(pg_catalog.<>) -1
UNION ALL SELECT 'setting in the database: ' || s.setconfig::pg_catalog.text
  FROM pg_catalog.pg_db_role_setting s JOIN d ON s.setdatabase OPERATOR(pg_catalog.=) d.oid
 WHERE ${effectiveSetting('s')}
UNION ALL SELECT a.name || ' missing or not a spare role' FROM a
 WHERE a.oid IS NULL OR a.marker IS DISTINCT FROM ${lit(SPARE_MARKER)}
UNION ALL SELECT a.name || CASE WHEN a.rolcanlogin THEN ' has LOGIN' ELSE ' lost LOGIN' END FROM a
 WHERE a.oid IS NOT NULL AND a.rolcanlogin IS DISTINCT FROM (a.kind OPERATOR(pg_catalog.=) 'steward')
UNION ALL SELECT a.name || ' has a password' FROM a
 WHERE a.rolpassword IS NOT NULL AND a.kind OPERATOR(pg_catalog.<>) ALL (ARRAY['steward', 'owner'])
UNION ALL SELECT a.name || ' password changed (or not in the pooler)' FROM a
 WHERE a.kind OPERATOR(pg_catalog.=) 'owner'
   AND a.rolpassword IS DISTINCT FROM ${ownerVerifier === null ? 'NULL' : lit(ownerVerifier)}
UNION ALL SELECT a.name || ' has a role attribute' FROM a
 WHERE a.rolsuper OR a.rolcreatedb OR a.rolcreaterole OR a.rolreplication OR a.rolbypassrls OR a.rolvaliduntil IS NOT NULL
UNION ALL SELECT a.name || ' connection limit changed' FROM a
 WHERE a.oid IS NOT NULL
   AND a.rolconnlimit OPERATOR(pg_catalog.<>) CASE a.kind WHEN 'steward' THEN ${FIXED_LIMITS.stewardConnectionLimit}
       WHEN 'owner' THEN ${Math.trunc(DEFAULT_LIMITS.owner_connection_limit)}
       WHEN 'reader' THEN ${Math.trunc(DEFAULT_LIMITS.reader_connection_limit)}
       WHEN 'migrator' THEN ${FIXED_LIMITS.migratorConnectionLimit} ELSE -1 END
UNION ALL SELECT a.name || ' has setting ' || s.setconfig::pg_catalog.text
  FROM pg_catalog.pg_db_role_setting s JOIN a ON a.oid OPERATOR(pg_catalog.=) s.setrole
 WHERE NOT (s.setdatabase OPERATOR(pg_catalog.=) 0
            AND (SELECT pg_catalog.array_agg(x ORDER BY x COLLATE "C") FROM pg_catalog.unnest(s.setconfig) x)
                IS NOT DISTINCT FROM (SELECT e.conf FROM e WHERE e.kind OPERATOR(pg_catalog.=) a.kind))
UNION ALL SELECT a.name || ' lost its settings' FROM a JOIN e ON e.kind OPERATOR(pg_catalog.=) a.kind
 WHERE a.oid IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_db_role_setting s
                                          WHERE s.setrole OPERATOR(pg_catalog.=) a.oid AND s.setdatabase OPERATOR(pg_catalog.=) 0)
UNION ALL SELECT 'membership ' || pg_catalog.pg_get_userbyid(m.roleid) || ' of ' || pg_catalog.pg_get_userbyid(m.member)
  FROM pg_catalog.pg_auth_members m
 WHERE (m.roleid IN (SELECT oid FROM a) OR m.member IN (SELECT oid FROM a))
   AND (pg_catalog.pg_get_userbyid(m.roleid)::pg_catalog.text || '>' || pg_catalog.pg_get_userbyid(m.member)::pg_catalog.text)
       OPERATOR(pg_catalog.<>) ALL (ARRAY[${memberships}]::pg_catalog.text[])`;
}

/** What is wrong with a spare at the cluster level (empty: nothing). */
export async function spareProblems(
  admin: Queryable,
  spare: string,
  ownerVerifier: string | null,
): Promise<string[]> {
  const r = await admin.query<{ problem: string }>(spareProblemsSql(spare, ownerVerifier));
  return r.rows.map((row) => row.problem);
}

/**
 * Inside a spare (steward session): a digest of everything a user made there — the rows of the
 * catalogs a planted object would change (tables, routines, types, operators, triggers, rules,
 * casts, languages, policies, event triggers, extensions, default privileges…) with their owners,
 * privileges and bodies, every schema with its owner and privileges, and the OIDs past the
 * bootstrap range of every other per-database catalog with an `oid` column the steward can read
 * (publications, text search objects, foreign servers, collations, statistics…: found from
 * pg_class, so a catalog of a later PostgreSQL is covered too). Equal digests: nothing was planted
 * or changed since it was made.
 */
const FINGERPRINT_SQL = `SELECT pg_catalog.md5(pg_catalog.string_agg(x, E'\n' ORDER BY x COLLATE "C")) AS fp FROM (
  SELECT 'n:' || oid || ':' || nspname || ':' || nspowner || ':' || COALESCE(nspacl::pg_catalog.text, '') FROM pg_catalog.pg_namespace
  UNION ALL SELECT 'c:' || oid || ':' || relname || ':' || relnamespace || ':' || relowner || ':' || relkind::pg_catalog.text || ':' || COALESCE(relacl::pg_catalog.text, '') FROM pg_catalog.pg_class WHERE oid OPERATOR(pg_catalog.>=) 16384
  UNION ALL SELECT 'p:' || oid || ':' || proname || ':' || pronamespace || ':' || proowner || ':' || pg_catalog.md5(COALESCE(prosrc, '') || COALESCE(probin, '')) || ':' || COALESCE(proacl::pg_catalog.text, '') || ':' || prosecdef FROM pg_catalog.pg_proc WHERE oid OPERATOR(pg_catalog.>=) 16384
  UNION ALL SELECT 't:' || oid || ':' || typname || ':' || typnamespace || ':' || typowner FROM pg_catalog.pg_type WHERE oid OPERATOR(pg_catalog.>=) 16384
  UNION ALL SELECT 'o:' || oid || ':' || oprname || ':' || oprnamespace || ':' || oprcode::pg_catalog.oid FROM pg_catalog.pg_operator WHERE oid OPERATOR(pg_catalog.>=) 16384
  UNION ALL SELECT 'tg:' || oid || ':' || tgname || ':' || tgenabled::pg_catalog.text FROM pg_catalog.pg_trigger WHERE oid OPERATOR(pg_catalog.>=) 16384
  UNION ALL SELECT 'rw:' || oid || ':' || rulename FROM pg_catalog.pg_rewrite WHERE oid OPERATOR(pg_catalog.>=) 16384
  UNION ALL SELECT 'ca:' || oid || ':' || castfunc::pg_catalog.oid FROM pg_catalog.pg_cast WHERE oid OPERATOR(pg_catalog.>=) 16384
  UNION ALL SELECT 'l:' || oid || ':' || lanname FROM pg_catalog.pg_language WHERE oid OPERATOR(pg_catalog.>=) 16384
  UNION ALL SELECT 'pol:' || oid || ':' || polname FROM pg_catalog.pg_policy
  UNION ALL SELECT 'ev:' || oid || ':' || evtname || ':' || evtenabled::pg_catalog.text || ':' || evtfoid::pg_catalog.oid FROM pg_catalog.pg_event_trigger
  UNION ALL SELECT 'x:' || oid || ':' || extname || ':' || extversion || ':' || extnamespace FROM pg_catalog.pg_extension
  UNION ALL SELECT 'da:' || oid || ':' || defaclrole || ':' || defaclnamespace || ':' || defaclobjtype::pg_catalog.text || ':' || defaclacl::pg_catalog.text FROM pg_catalog.pg_default_acl
  UNION ALL SELECT 'co:' || oid || ':' || conname FROM pg_catalog.pg_constraint WHERE oid OPERATOR(pg_catalog.>=) 16384
  UNION ALL SELECT 'opc:' || oid || ':' || opcname FROM pg_catalog.pg_opclass WHERE oid OPERATOR(pg_catalog.>=) 16384
  UNION ALL SELECT 'cv:' || oid || ':' || conname FROM pg_catalog.pg_conversion WHERE oid OPERATOR(pg_catalog.>=) 16384
  UNION ALL SELECT 'lo:' || oid FROM pg_catalog.pg_largeobject_metadata
  UNION ALL SELECT 'oids:' || c.relname || ':' || pg_catalog.md5(pg_catalog.query_to_xml(pg_catalog.format(
      'SELECT oid FROM pg_catalog.%I WHERE oid OPERATOR(pg_catalog.>=) 16384 ORDER BY oid', c.relname), false, false, '')::pg_catalog.text)
    FROM pg_catalog.pg_class c
   WHERE c.relnamespace OPERATOR(pg_catalog.=) 'pg_catalog'::pg_catalog.regnamespace
     AND c.relkind OPERATOR(pg_catalog.=) 'r' AND NOT c.relisshared
     AND pg_catalog.has_table_privilege(c.oid, 'SELECT')
     AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid OPERATOR(pg_catalog.=) c.oid
                    AND a.attname OPERATOR(pg_catalog.=) 'oid' AND NOT a.attisdropped)
) s(x)`;

/** A steward session inside a spare (caller ends it). */
export function connectSpare(cluster: ClusterAccess, spare: string): Promise<pg.Client> {
  const roles = roleNames(spare);
  return connectPinned(cluster, {
    database: spare,
    user: roles.steward,
    password: spareStewardPassword(cluster.key, roles),
    applicationName: 'bulwark-steward',
  });
}

export async function spareFingerprint(c: Queryable): Promise<string> {
  const r = await c.query<{ fp: string }>(FINGERPRINT_SQL);
  return r.rows[0]!.fp;
}

/** The fingerprint a ready spare's marker records (null: not ready). */
export function readyFingerprint(marker: string | null): string | null {
  return marker?.startsWith(READY_PREFIX) ? marker.slice(READY_PREFIX.length) : null;
}

/**
 * Makes one spare: roles (one transaction; the owner's verifier is `ownerVerifier`, of
 * `spareOwnerPassword`), the database from the tenant template, its grants, the schema setup in a
 * steward session, then `beforeReady` (the pool adds the spare's pooler entry), then the ready
 * marker with the fingerprint. Anything interrupted leaves a spare without its ready marker, which
 * `listSpares` reports as unfinished. Returns the fingerprint.
 */
export async function buildSpare(
  admin: pg.Pool,
  cluster: ClusterAccess,
  spare: string,
  ownerVerifier: string,
  beforeReady: () => Promise<void> = async () => {},
): Promise<string> {
  const r = roleNames(spare);
  const verifier = await scramVerifierAsync(spareStewardPassword(cluster.key, r));
  const sql = ['BEGIN'];
  for (const name of Object.values(r)) {
    sql.push(`CREATE ROLE ${q(name)} NOLOGIN`, `COMMENT ON ROLE ${q(name)} IS ${lit(SPARE_MARKER)}`);
  }
  for (const name of [r.owner, r.reader, r.migrator, r.explorer])
    sql.push(`ALTER ROLE ${q(name)} NOLOGIN ${BASE_ATTRIBUTES} INHERIT`);
  sql.push(`ALTER ROLE ${q(r.owner)} PASSWORD ${lit(ownerVerifier)}`);
  // The default limits already (connection limits, role settings): a session opened before the
  // claim (the pool's warm-up login) has the settings a create with the default limits sets.
  sql.push(
    ...explorerSettingStatements(r),
    ...stewardStatements(r, verifier),
    ...limitStatements(r, DEFAULT_LIMITS),
  );
  sql.push(`GRANT ${q(r.owner)} TO ${q(r.migrator)}`, 'COMMIT');
  await admin.query(sql.join(';\n'));
  const template = q(await tenantTemplate(admin));
  await admin.query(`CREATE DATABASE ${q(spare)} OWNER ${q(r.steward)} TEMPLATE ${template} ENCODING 'UTF8'`);
  await admin.query(`COMMENT ON DATABASE ${q(spare)} IS ${lit(SPARE_MARKER)}`);
  await grantDatabase(admin, spare, r);
  const c = await connectSpare(cluster, spare);
  let fp: string;
  try {
    await setupSchema(c, r);
    fp = await spareFingerprint(c);
  } finally {
    await c.end().catch(() => {});
  }
  await beforeReady();
  await admin.query(`COMMENT ON DATABASE ${q(spare)} IS ${lit(READY_PREFIX + fp)}`);
  return fp;
}

/**
 * Opens a ready spare's PgBouncer session again (the pool's keep-warm, ADR 0035): the spare is
 * marked unfinished and its owner given LOGIN in one transaction, `login` runs, then NOLOGIN and
 * the ready marker (with the fingerprint it had) come back in one transaction. Stopped in between
 * (a crash), the spare is an unfinished one, which the pool destroys at its next listing — never a
 * ready spare whose owner can log in, which its checks would report as tampered.
 */
export async function rewarmSpare(
  admin: pg.Pool,
  spare: string,
  fingerprint: string,
  login: () => Promise<unknown>,
): Promise<void> {
  const owner = q(roleNames(spare).owner);
  await admin.query(
    `BEGIN; COMMENT ON DATABASE ${q(spare)} IS ${lit(SPARE_MARKER)}; ALTER ROLE ${owner} LOGIN; COMMIT`,
  );
  try {
    await login();
  } finally {
    await admin.query(
      `BEGIN; ALTER ROLE ${owner} NOLOGIN; COMMENT ON DATABASE ${q(spare)} IS ${lit(READY_PREFIX + fingerprint)}; COMMIT`,
    );
  }
}

export type ListedSpare = { name: string; fingerprint: string | null };

/**
 * This agent's spares in the cluster: ready ones (with their fingerprint), unfinished ones
 * (fingerprint null), spare roles whose database is gone (`orphanRoles`), and every database
 * under this agent's spare prefix (`databases`: spares and the ones handed out).
 */
export async function listSpares(
  admin: Queryable,
  tag: string,
): Promise<{ spares: ListedSpare[]; orphanRoles: string[]; databases: string[] }> {
  const prefix = `${SPARE_PREFIX}${tag}_`;
  const dbs = await admin.query<{ name: string; marker: string | null }>(
    `SELECT datname::pg_catalog.text AS name, pg_catalog.shobj_description(oid, 'pg_database') AS marker
       FROM pg_catalog.pg_database WHERE pg_catalog.starts_with(datname::pg_catalog.text, $1)`,
    [prefix],
  );
  const spares = dbs.rows
    .filter((d) => d.marker?.startsWith(SPARE_MARKER))
    .map((d) => ({ name: d.name, fingerprint: readyFingerprint(d.marker) }));
  const names = new Set(spares.map((s) => s.name));
  const roles = await admin.query<{ name: string }>(
    `SELECT rolname::pg_catalog.text AS name FROM pg_catalog.pg_roles
      WHERE pg_catalog.starts_with(rolname::pg_catalog.text, $1)
        AND pg_catalog.shobj_description(oid, 'pg_authid') OPERATOR(pg_catalog.=) $2`,
    [prefix, SPARE_MARKER],
  );
  const owned = new Set([...names].flatMap((n) => Object.values(roleNames(n))));
  return {
    spares,
    orphanRoles: roles.rows.map((x) => x.name).filter((n) => !owned.has(n)),
    databases: dbs.rows.map((d) => d.name),
  };
}

/**
 * Destroys a spare: its database (if still marked as a spare) and those of its roles that still
 * carry the spare marker. A claimed spare carries the tenant's markers and is never touched.
 * True when no database of that name is left (its pooler entry may go).
 */
export async function destroySpare(admin: pg.Pool, spare: string): Promise<boolean> {
  const marker = await admin.query<{ m: string | null }>(
    `SELECT pg_catalog.shobj_description(oid, 'pg_database') AS m FROM pg_catalog.pg_database
      WHERE datname OPERATOR(pg_catalog.=) $1`,
    [spare],
  );
  const m = marker.rows[0]?.m;
  const gone = marker.rows.length === 0 || m?.startsWith(SPARE_MARKER) === true;
  if (marker.rows.length > 0 && gone) await admin.query(`DROP DATABASE IF EXISTS ${q(spare)} WITH (FORCE)`);
  await dropSpareRoles(admin, Object.values(roleNames(spare)));
  return gone;
}

export async function dropSpareRoles(admin: pg.Pool, names: string[]): Promise<void> {
  const r = await admin.query<{ name: string }>(
    `SELECT rolname::pg_catalog.text AS name FROM pg_catalog.pg_roles
      WHERE rolname OPERATOR(pg_catalog.=) ANY($1::pg_catalog.text[])
        AND pg_catalog.shobj_description(oid, 'pg_authid') OPERATOR(pg_catalog.=) $2`,
    [names, SPARE_MARKER],
  );
  const mine = new Set(r.rows.map((x) => x.name));
  // The steward last: the others are its memberships.
  const ordered = names
    .filter((n) => mine.has(n))
    .sort((a, b) => Number(a.endsWith('_steward')) - Number(b.endsWith('_steward')));
  if (ordered.length > 0)
    await admin.query(['BEGIN', ...ordered.map((n) => `DROP ROLE ${q(n)}`), 'COMMIT'].join(';\n'));
}

/**
 * The spare an earlier run of a create handed out for `databaseId` (its claim committed, the job
 * did not report): the database under a spare name carrying that id's marker, other than
 * `named` (the name the server knows it by: a generated name shares the prefix, ADR 0039), or null.
 */
export async function claimedSpareOf(
  admin: Queryable,
  databaseId: string,
  named: string,
): Promise<string | null> {
  const r = await admin.query<{ name: string }>(
    `SELECT datname::pg_catalog.text AS name FROM pg_catalog.pg_database
      WHERE pg_catalog.starts_with(datname::pg_catalog.text, $1)
        AND datname::pg_catalog.text OPERATOR(pg_catalog.<>) $3
        AND pg_catalog.shobj_description(oid, 'pg_database') OPERATOR(pg_catalog.=) $2`,
    [SPARE_PREFIX, roleMarker(databaseId), named],
  );
  return r.rows[0]?.name ?? null;
}

/** What the claim makes of a spare: the tenant's database (its id and limits). */
export type ClaimTarget = {
  databaseId: string;
  limits: DatabaseLimits;
  /**
   * The steward's verifier for this database id (its password is derived from the id and the
   * spare's steward role): set in the claim's own transaction, which then commits synchronously.
   * Without it the claim commits without waiting for its WAL flush and the caller sets the
   * steward's password next (a synchronous commit that flushes both).
   */
  stewardVerifier?: (spare: string) => Promise<string>;
};

/**
 * The claim, as one message (simple protocol: one implicit round trip): BEGIN, the cluster-level
 * check (raises `spare <name> tampered: …`; the owner's password must still be `ownerVerifier`),
 * our markers, the logins, the limits, the steward's derived password when given, COMMIT. No rename: the spare's names are the database's physical names (ADR 0034).
 * A second claim of the same spare fails its check (the markers are the tenant's by then).
 */
export function claimSpareSql(
  spare: string,
  ownerVerifier: string,
  t: Omit<ClaimTarget, 'stewardVerifier'> & { stewardVerifier?: string },
): string {
  const r = roleNames(spare);
  const marker = lit(roleMarker(t.databaseId));
  const check = `DO $bulwark_claim$ DECLARE p pg_catalog.text; BEGIN
  SELECT pg_catalog.string_agg(problem, '; ') INTO p FROM (${spareProblemsSql(spare, ownerVerifier)}) s;
  IF p IS NOT NULL THEN RAISE EXCEPTION 'spare % tampered: %', ${lit(spare)}, p USING ERRCODE = 'P0001'; END IF;
END $bulwark_claim$`;
  const base = `${BASE_ATTRIBUTES} INHERIT`;
  // Without the steward's password, the commit does not wait for its WAL flush: the job's next
  // transaction (that password, a synchronous commit) flushes it; the job is ready only after it.
  const sql = ['BEGIN', ...(t.stewardVerifier ? [] : ['SET LOCAL synchronous_commit = off']), check];
  sql.push(`COMMENT ON DATABASE ${q(spare)} IS ${marker}`);
  for (const name of Object.values(r)) sql.push(`COMMENT ON ROLE ${q(name)} IS ${marker}`);
  sql.push(
    `ALTER ROLE ${q(r.owner)} LOGIN ${base}`,
    `ALTER ROLE ${q(r.reader)} LOGIN ${base}`,
    `ALTER ROLE ${q(r.migrator)} LOGIN ${base}`,
    ...limitStatements(r, t.limits),
    ...(t.stewardVerifier ? stewardStatements(r, t.stewardVerifier) : []),
    'COMMIT',
  );
  return sql.join(';\n');
}
