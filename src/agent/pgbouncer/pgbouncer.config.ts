import { parseCidr } from '../../shared/cidr.ts';
import { SCRAM_VERIFIER_PATTERN } from '../../shared/scram.ts';

/**
 * Renders PgBouncer's three files from desired state. One wildcard `[databases]` entry
 * serves every tenant database (PgBouncer's reload cost grows with the square of the
 * number of `[databases]` lines, but linearly with auth-file and hba lines), so adding a
 * database only adds auth-file and hba lines.
 */
export type PoolerSettings = {
  listenAddr: string;
  listenPort: number;
  pgHost: string;
  pgPort: number;
  authFile: string;
  hbaFile: string;
  pidFile: string;
  adminUser: string;
  poolMode: 'session' | 'transaction';
  maxClientConn: number;
  defaultPoolSize: number;
  tls: { certFile: string; keyFile: string; sslmode: 'allow' | 'prefer' | 'require' } | null;
  /**
   * The reload probe's one-time user (see pooler-manager.ts): listed in `stats_users`, so a
   * login as it to the `pgbouncer` console proves this very ini was loaded.
   */
  probeUser?: string | undefined;
};

/**
 * What a connection that has not logged in can hold. PgBouncer counts a client against
 * `max_client_conn` from the TCP accept, before hba or authentication, so strangers' idle
 * sockets compete with tenants for those slots. Each is closed after `client_login_timeout`
 * (PgBouncer's default: 60 s) unless it logs in, and the limit is far above what tenants use:
 * a lock-out needs `maxClientConn` sockets held at once, each re-opened within the timeout.
 * Every slot costs a file descriptor: PgBouncer's open-file limit is raised to match
 * (src/embedded/pgbouncer-process.ts).
 */
export const POOLER_LIMITS = Object.freeze({ maxClientConn: 10_000, clientLoginTimeoutS: 10 });

export type AuthEntry = { user: string; verifier: string };
export type HbaRule = { database: string; user: string; cidr: string };

const NAME = /^[a-z][a-z0-9_]{0,62}$/;

function assertName(n: string): string {
  if (!NAME.test(n)) throw new Error(`invalid pooler user name: ${n}`);
  return n;
}

export function renderIni(s: PoolerSettings): string {
  const lines = [
    '; Managed by Bulwark: rewritten on every change, edits are lost.',
    '[databases]',
    `* = host=${s.pgHost} port=${s.pgPort}`,
    '',
    '[pgbouncer]',
    `listen_addr = ${s.listenAddr}`,
    `listen_port = ${s.listenPort}`,
    'unix_socket_dir =',
    'auth_type = hba',
    `auth_file = ${s.authFile}`,
    `auth_hba_file = ${s.hbaFile}`,
    `admin_users = ${s.adminUser}`,
    ...(s.probeUser ? [`stats_users = ${assertName(s.probeUser)}`] : []),
    `pidfile = ${s.pidFile}`,
    `pool_mode = ${s.poolMode}`,
    `max_client_conn = ${s.maxClientConn}`,
    `client_login_timeout = ${POOLER_LIMITS.clientLoginTimeoutS}`,
    `default_pool_size = ${s.defaultPoolSize}`,
    'ignore_startup_parameters = extra_float_digits,options',
    'server_reset_query = DISCARD ALL',
    'server_reset_query_always = 1',
    'log_connections = 0',
    'log_disconnections = 0',
  ];
  if (s.tls) {
    lines.push(
      `client_tls_sslmode = ${s.tls.sslmode}`,
      `client_tls_cert_file = ${s.tls.certFile}`,
      `client_tls_key_file = ${s.tls.keyFile}`,
      // `secure` = TLS 1.2 and 1.3 (PgBouncer 1.18 ignores the whole TLS block on a list it cannot parse).
      'client_tls_protocols = secure',
      // Only for verifying client certificates, which no hba line asks for (auth is SCRAM). Without
      // it PgBouncer parses the system CA bundle on every RELOAD: ~55 ms instead of ~3.5 ms here.
      // Pointing it at our own certificate also means no public CA could vouch for a client.
      `client_tls_ca_file = ${s.tls.certFile}`,
    );
  }
  return `${lines.join('\n')}\n`;
}

function quoted(s: string): string {
  if (s.includes('"') || s.includes('\n')) throw new Error('invalid character in auth file entry');
  return `"${s}"`;
}

/** One auth-file line; throws unless the user is a valid name and the secret a SCRAM verifier. */
export function authLine(e: AuthEntry): string {
  if (!NAME.test(e.user)) throw new Error(`invalid pooler user name: ${e.user}`);
  if (!SCRAM_VERIFIER_PATTERN.test(e.verifier))
    throw new Error(`auth entry for ${e.user} is not a SCRAM verifier`);
  return `${quoted(e.user)} ${quoted(e.verifier)}`;
}

export function renderAuthFile(entries: AuthEntry[]): string {
  const seen = new Set<string>();
  const out: string[] = [];
  for (const e of entries) {
    const line = authLine(e);
    if (seen.has(e.user)) throw new Error(`duplicate auth entry for ${e.user}`);
    seen.add(e.user);
    out.push(line);
  }
  if (out.length === 0) throw new Error('auth file would be empty');
  return `${out.join('\n')}\n`;
}

/** One tenant hba line; throws unless the names are valid and the CIDR parses. */
export function hbaRuleLine(r: HbaRule): string {
  return `host ${hbaName(r.database)} ${hbaName(r.user)} ${parseCidr(r.cidr)} scram-sha-256`;
}

/**
 * The admin console rule always comes first; an hba file without it locks everyone out. The
 * probe user's rule, when given, comes last: a login through it proves the file was read to
 * its end.
 */
export function renderHba(adminUser: string, rules: HbaRule[], probeUser?: string): string {
  const out = [HBA_HEADER, consoleRuleLine(adminUser)];
  for (const r of rules) out.push(hbaRuleLine(r));
  if (probeUser) out.push(consoleRuleLine(probeUser));
  return `${out.join('\n')}\n`;
}

/**
 * Lines refusing every login to one database, from any address (placed right after the admin
 * console rule, so they win over the database's own rules). PgBouncer evaluates hba as soon as
 * a client names its database and user, and drops a refused client there and then, before any
 * authentication exchange: see `disconnect` in pooler-manager.ts for why that matters.
 */
export function rejectDatabaseLines(database: string): string[] {
  const db = hbaName(database);
  return [`host ${db} all 0.0.0.0/0 reject`, `host ${db} all ::/0 reject`];
}

/**
 * A database or user name in an hba line, always quoted: PgBouncer (like PostgreSQL) reads an
 * unquoted `all`, `sameuser`, `samerole`, `replication` … as a keyword, and a tenant may call its
 * database `all` — its rules would then match every database on the node (and a cut's reject
 * lines every login). A quoted token is a plain name. Names are checked against NAME first, so
 * they hold no quote.
 */
function hbaName(name: string): string {
  if (!NAME.test(name)) throw new Error(`invalid hba name: ${name}`);
  return `"${name}"`;
}

export const HBA_HEADER = '# Managed by Bulwark. First match wins; no match means no access.';

/** A login to the `pgbouncer` console database, from loopback only. */
export function consoleRuleLine(user: string): string {
  return `host pgbouncer ${hbaName(user)} 127.0.0.1/32 scram-sha-256`;
}
