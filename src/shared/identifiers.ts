/**
 * Names and SQL quoting.
 *
 * User-chosen names (databases, roles we derive from them, …) must match NAME_PATTERN:
 * lowercase ASCII, so they are the same quoted or unquoted, fit NAMEDATALEN (63 bytes) and
 * cannot smuggle anything into SQL. Everything that reaches SQL text still goes through
 * quoteIdent/quoteLiteral; values go through bind parameters whenever the statement allows it.
 */
import { createHash } from 'node:crypto';

/** Postgres NAMEDATALEN - 1: identifiers longer than this are silently truncated by the server. */
export const MAX_IDENTIFIER_BYTES = 63;

export const NAME_PATTERN = /^[a-z][a-z0-9_]{0,62}$/;

export function isValidName(s: unknown): s is string {
  return typeof s === 'string' && NAME_PATTERN.test(s);
}

function describeValue(s: unknown): string {
  if (typeof s !== 'string') return s === null ? 'null' : typeof s;
  const shown = s.length > 70 ? `${s.slice(0, 64)}…` : s;
  return JSON.stringify(shown);
}

export function assertValidName(s: unknown, what = 'name'): string {
  if (isValidName(s)) return s;
  throw new TypeError(
    `invalid ${what} ${describeValue(s)}: must start with a lowercase letter (a-z), contain only ` +
      'a-z, 0-9 and _, and be at most 63 characters',
  );
}

export const RESERVED_DATABASE_NAMES: ReadonlySet<string> = new Set([
  'postgres',
  'template0',
  'template1',
  'pgbouncer',
  'bulwark',
  'bulwark_control',
]);

const RESERVED_DATABASE_PREFIXES = ['pg_', 'bulwark_'] as const;

export function isReservedDatabaseName(name: string): boolean {
  if (RESERVED_DATABASE_NAMES.has(name)) return true;
  return RESERVED_DATABASE_PREFIXES.some((p) => name.startsWith(p));
}

/**
 * A name a new database may take: NAME_PATTERN without the reserved names and prefixes, as one
 * regular expression (negative lookahead), so the API document can publish the whole rule.
 * Built from the two lists above; `identifiers.test.ts` checks it agrees with them.
 */
export const NEW_DATABASE_NAME_PATTERN = new RegExp(
  `^(?!(?:${RESERVED_DATABASE_PREFIXES.join('|')})|(?:${[...RESERVED_DATABASE_NAMES].join('|')})$)` +
    NAME_PATTERN.source.slice(1),
);

/**
 * Postgres identifier quoting (same as quote_ident / PQescapeIdentifier): wrap in double
 * quotes and double any embedded double quote. Refuses NUL (truncates the statement in the
 * wire protocol), empty names and names over 63 bytes (the server would silently truncate,
 * so two different inputs could name the same object).
 */
export function quoteIdent(name: string): string {
  if (typeof name !== 'string') throw new TypeError('identifier must be a string');
  if (name.length === 0) throw new TypeError('identifier must not be empty');
  if (name.includes('\0')) throw new TypeError('identifier must not contain NUL');
  if (Buffer.byteLength(name, 'utf8') > MAX_IDENTIFIER_BYTES) {
    throw new TypeError(`identifier is longer than ${MAX_IDENTIFIER_BYTES} bytes`);
  }
  return `"${name.replaceAll('"', '""')}"`;
}

/**
 * String literal for the few DDL statements that cannot take bind parameters
 * (e.g. `CREATE ROLE … PASSWORD '…'`). Assumes standard_conforming_strings = on (the default
 * since PostgreSQL 9.1; our connections must not turn it off): backslashes are ordinary
 * characters and only `'` needs doubling. Refuses NUL. The error never echoes the value,
 * because this is used for passwords.
 */
export function quoteLiteral(s: string): string {
  if (typeof s !== 'string') throw new TypeError('literal must be a string');
  if (s.includes('\0')) throw new TypeError('literal must not contain NUL');
  return `'${s.replaceAll("'", "''")}'`;
}

export type RoleNames = {
  owner: string;
  reader: string;
  migrator: string;
  explorer: string;
  /** The platform's own login into the database (owns it; never in PgBouncer's auth file). */
  steward: string;
};

const ROLE_SUFFIXES: Readonly<RoleNames> = {
  owner: '_owner',
  reader: '_reader',
  migrator: '_migrator',
  explorer: '_explorer',
  steward: '_steward',
};

/**
 * Length (hex chars) of the stable hash tag used when a role name would not fit. 16 hex =
 * 64 bits: with only 8 hex (32 bits) a tenant could force a collision with ~2^32 SHA-256
 * calls (minutes on one core), and 5,000 long names sharing a prefix would collide by
 * accident about once in 350 runs.
 */
export const ROLE_HASH_HEX_LENGTH = 16;

function deriveRoleName(db: string, suffix: string, tag: string): string {
  // `>=` rather than `>`: untruncated role names are then always <= 62 chars and truncated
  // ones always exactly 63, so a db name that happens to look like `<prefix>_<hash>` can
  // never reproduce another database's truncated role name.
  if (db.length + suffix.length < MAX_IDENTIFIER_BYTES) return db + suffix;
  const keep = MAX_IDENTIFIER_BYTES - suffix.length - 1 - ROLE_HASH_HEX_LENGTH;
  return `${db.slice(0, keep)}_${tag}${suffix}`;
}

/**
 * Role names for a database: `<db>_owner`, `<db>_reader`, `<db>_migrator`, `<db>_explorer` and
 * the platform's `<db>_steward`.
 * When that would not fit in 63 bytes (i.e. db.length + suffix.length >= 63) the db part is
 * truncated and followed by `_<first 16 hex of sha256(db)>`, e.g.
 * `<first 37..41 chars of db>_<16 hex>_owner`. Results always match NAME_PATTERN and are
 * <= 63 bytes. Different kinds never collide with each other (the suffix always ends the name).
 *
 * Collision notes: untruncated names are injective; a truncated name never equals an
 * untruncated one (62 vs 63 chars); two truncated names collide only if the db names share
 * the kept prefix AND the 64-bit hash tag. Defence in depth all the same: provisioning must
 * create roles with plain `CREATE ROLE` (fails if it exists), record role ownership in the
 * control database under a UNIQUE constraint, and never adopt or drop a role it did not create.
 */
export function roleNames(db: string): RoleNames {
  assertValidName(db, 'database name');
  const tag = createHash('sha256').update(db, 'utf8').digest('hex').slice(0, ROLE_HASH_HEX_LENGTH);
  return {
    owner: deriveRoleName(db, ROLE_SUFFIXES.owner, tag),
    reader: deriveRoleName(db, ROLE_SUFFIXES.reader, tag),
    migrator: deriveRoleName(db, ROLE_SUFFIXES.migrator, tag),
    explorer: deriveRoleName(db, ROLE_SUFFIXES.explorer, tag),
    steward: deriveRoleName(db, ROLE_SUFFIXES.steward, tag),
  };
}
