/**
 * How the platform works inside a tenant database without ever being more than the tenant.
 *
 * The agent's superuser (the "admin") stays on the maintenance database `postgres`: roles,
 * databases, pg_terminate_backend, pg_authid. Everything inside a tenant database logs in as
 * `<db>_steward` — a non-superuser that owns the database (so the tenant cannot change its
 * database-level settings) and is a member of `<db>_owner` and `<db>_migrator` (so it can take
 * over the public schema and set their default privileges). A shadow function the tenant planted
 * can therefore run at most as the tenant's own roles, never as a superuser.
 *
 * Every platform connection (admin, steward, explorer schema read) pins at login the settings
 * that would change what our SQL means or whether it runs. Startup options outrank
 * `ALTER DATABASE … SET`, `ALTER ROLE … SET` and `ALTER ROLE … IN DATABASE … SET` (checked in
 * test/tenant-isolation.test.ts); a `SET` after connecting would come too late for anything the
 * login itself runs.
 *
 * Passwords of the platform's per-database logins (steward, explorer) are
 * HMAC-SHA256(agent key, purpose + database id + role): nothing per database is stored, and only
 * the SCRAM verifier reaches PostgreSQL. Neither login is in PgBouncer's auth file (loopback
 * PostgreSQL port only).
 */
import { createHmac } from 'node:crypto';
import pg from 'pg';
import type { RoleNames } from '../../shared/identifiers.ts';

/**
 * How long any platform statement waits for a lock (ms). A tenant can hold locks the platform
 * needs for as long as it likes — its own roles' pg_authid rows (`BEGIN; ALTER ROLE self …` left
 * open with its idle timeout off), pg_db_role_setting rows, its schemas and functions — and the
 * agent runs jobs one at a time: a long wait there stalls every other account. The platform's
 * own statements take their locks for milliseconds, so a short wait costs nothing; a statement
 * that times out (SQLSTATE 55P03) fails its job, which the queue retries later with backoff, and
 * drift repair moves on to the next database (`repair_failed`).
 */
export const PLATFORM_LOCK_TIMEOUT_MS = 3_000;

/** The settings every platform connection pins at login (name → value). */
export const PINNED_SETTINGS: Readonly<Record<string, string>> = {
  search_path: 'pg_catalog,pg_temp',
  role: 'none',
  default_transaction_read_only: 'off',
  default_transaction_isolation: 'read committed',
  default_transaction_deferrable: 'off',
  statement_timeout: '120000',
  lock_timeout: String(PLATFORM_LOCK_TIMEOUT_MS),
  idle_in_transaction_session_timeout: '0',
  idle_session_timeout: '0',
  check_function_bodies: 'on',
  standard_conforming_strings: 'on',
  transform_null_equals: 'off',
  row_security: 'off',
  default_tablespace: '',
  temp_tablespaces: '',
  local_preload_libraries: '',
  exit_on_error: 'off',
  DateStyle: 'ISO,MDY',
  IntervalStyle: 'postgres',
  TimeZone: 'UTC',
  lc_monetary: 'C',
  lc_numeric: 'C',
  lc_time: 'C',
  client_min_messages: 'warning',
};

/** The libpq `options` string for PINNED_SETTINGS (spaces and backslashes escaped), plus overrides. */
export function pinnedOptions(overrides: Readonly<Record<string, string>> = {}): string {
  const all = { ...PINNED_SETTINGS, ...overrides };
  return Object.entries(all)
    .map(([k, v]) => `-c ${k}=${v.replaceAll('\\', '\\\\').replaceAll(' ', '\\ ')}`)
    .join(' ');
}

/** Password of one of the platform's per-database logins (never stored, never logged). */
export function derivedRolePassword(
  key: Buffer,
  purpose: 'explorer' | 'steward' | 'owner',
  databaseId: string,
  role: string,
): string {
  return createHmac('sha256', key).update(`bulwark-${purpose}:${databaseId}:${role}`).digest('base64url');
}

export function stewardPassword(key: Buffer, databaseId: string, roles: Pick<RoleNames, 'steward'>): string {
  return derivedRolePassword(key, 'steward', databaseId, roles.steward);
}

/** Where the agent reaches the cluster's loopback port, and the key its derived passwords come from. */
export type ClusterAccess = { pgHost: string; pgPort: number; key: Buffer };

/** A new connection (caller ends it) with the pinned settings. */
export async function connectPinned(
  access: Pick<ClusterAccess, 'pgHost' | 'pgPort'>,
  login: { database: string; user: string; password: string; applicationName?: string },
  overrides: Readonly<Record<string, string>> = {},
): Promise<pg.Client> {
  const client = new pg.Client({
    host: access.pgHost,
    port: access.pgPort,
    database: login.database,
    user: login.user,
    password: login.password,
    application_name: login.applicationName ?? 'bulwark-agent',
    connectionTimeoutMillis: 10_000,
    query_timeout: 130_000,
    options: pinnedOptions(overrides),
  });
  client.on('error', () => {});
  try {
    await client.connect();
  } catch (err) {
    await client.end().catch(() => {});
    throw err;
  }
  return client;
}

/** A steward session in one tenant database (caller ends it). */
export function connectSteward(
  access: ClusterAccess,
  target: { databaseId: string; name: string; roles: RoleNames },
): Promise<pg.Client> {
  return connectPinned(access, {
    database: target.name,
    user: target.roles.steward,
    password: stewardPassword(access.key, target.databaseId, target.roles),
    applicationName: 'bulwark-steward',
  });
}

/** SQLSTATEs of a refused login (wrong password, no LOGIN, role missing). */
export const LOGIN_REFUSED = new Set(['28P01', '28000']);

export function isLoginRefused(err: unknown): boolean {
  return LOGIN_REFUSED.has(String((err as { code?: unknown })?.code));
}

/** SQLSTATE 55P03 (lock_not_available): a lock_timeout expired, e.g. behind a tenant's lock. */
export function isLockTimeout(err: unknown): boolean {
  return String((err as { code?: unknown })?.code) === '55P03';
}
