/**
 * Connections of the explorer roles: one small pg.Pool per database, logging in directly on the
 * loopback PostgreSQL port as `<db>_explorer` (never through PgBouncer, never as the admin).
 *
 * Each connection reads through a filtered socket (explorer-stream.ts) that bounds what the
 * server's messages can make the agent hold. Connections run in pg's pipeline mode
 * (explorer-protocol.ts): the executor writes a query's statements at once. A connection goes back to its pool only after ROLLBACK, DISCARD ALL and a
 * check that nothing of the session survived, pipelined in one round trip (ROLLBACK also ends an
 * aborted transaction); anything odd (an error in any of the three, leftover state) destroys it.
 * Measured here: a pooled reset costs ~0.3 ms off the response path, while a fresh SCRAM login
 * per query costs several ms on it (bench/explorer-e2e.bench.ts prints both).
 */
import pg from 'pg';
import type { Logger } from 'pino';
import { roleNames } from '../../shared/identifiers.ts';
import type { AttachedDatabase } from '../attached/attached-config.ts';
import { attachedSsl, cancelAttachedBackend } from '../attached/attached-connect.ts';
import type { AttachedRegistry } from '../attached/attached-registry.ts';
import { backendPid, pipelined } from './explorer-protocol.ts';
import { explorerPassword, prepareExplorerRole } from './explorer-role.ts';
import { ExplorerSocket } from './explorer-stream.ts';
import { type ExplorerTlsOptions, ExplorerTlsSocket } from './explorer-tls-socket.ts';

export type ExplorerPoolDeps = {
  /** The agent's admin pool (role checks, pg_cancel_backend). */
  admin: pg.Pool;
  /** A new admin connection to one database of the cluster (caller ends it). */
  connectAdmin(database: string): Promise<pg.Client>;
  /** The cluster's loopback address (the admin URL's host and port). */
  pgHost: string;
  pgPort: number;
  /** The agent's explorer key (explorer-role.ts). */
  key: Buffer;
  log: Logger;
  /** Connections per database (default 2; the role's CONNECTION LIMIT is 4). */
  maxConnections?: number;
  /** Re-apply login + EXECUTE revocations when older than this (default 5 min). */
  reprepareMs?: number;
  /**
   * Attached databases (ADR 0031): an id found here is read as the entry's own reader at the
   * entry's host, with nothing prepared (Bulwark owns nothing there).
   */
  attached?: Pick<AttachedRegistry, 'get'>;
};

type ExplorerLease = {
  client: pg.PoolClient;
  /** The login the session must be (the guard's and the reset's expected user). */
  role: string;
  /** Asks the connection's server to cancel its running statement. May reject. */
  cancel(): Promise<unknown>;
  /** ROLLBACK, DISCARD ALL, verify, release (or destroy). Never rejects. */
  reset(): Promise<void>;
  /** Destroys the connection once `after` (a cancel in flight) settled. Never rejects. */
  discard(after: Promise<unknown>): Promise<void>;
};

type Entry = { pool: pg.Pool; preparedAt: number; attached?: AttachedDatabase };

const LOGIN_ERRORS = new Set(['28P01', '28000']);

/** Session state that must not survive a query: counted after DISCARD ALL, must all be zero (the executor's kept logins too). */
export const LEFTOVERS = `SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_statements)
     OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_locks
        WHERE pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()
          AND locktype OPERATOR(pg_catalog.=) 'advisory')
     OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_listening_channels())
     OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_cursors
        WHERE name OPERATOR(pg_catalog.<>) '')
     OPERATOR(pg_catalog.+) (SELECT pg_catalog.count(*) FROM pg_catalog.pg_class
        WHERE relnamespace OPERATOR(pg_catalog.=) pg_catalog.pg_my_temp_schema()) AS leftovers,
     current_user::pg_catalog.text AS cur, session_user::pg_catalog.text AS sess,
     pg_catalog.pg_current_xact_id_if_assigned() IS NULL AS no_xact`;
export type Leftovers = { leftovers: string; cur: string; sess: string; no_xact: string };

/** A refused login of an attached database's reader: the operator's to fix (no password in it). */
export function attachedLoginError(db: AttachedDatabase, err: unknown): Error {
  return Object.assign(
    new Error(
      `attached database ${db.name}: its read-only role ${db.reader.user} could not log in at ${db.host}:${db.port}/${db.database} (${(err as Error).message.slice(0, 300)})`,
    ),
    { code: String((err as { code?: unknown }).code) },
  );
}

export function createExplorerPools(deps: ExplorerPoolDeps) {
  const entries = new Map<string, Entry>();
  const reprepareMs = deps.reprepareMs ?? 300_000;

  /** The explorer's pool for one login (the same settings for hosted and attached databases). */
  const newPool = (login: {
    host: string;
    port: number;
    database: string;
    user: string;
    password: string;
    /** TLS (attached databases): negotiated under the filter (explorer-tls-socket.ts), not by pg. */
    tls?: ExplorerTlsOptions;
  }): pg.Pool => {
    const { tls, ...plain } = login;
    const pool = new pg.Pool({
      ...plain,
      max: deps.maxConnections ?? 2,
      idleTimeoutMillis: 30_000,
      connectionTimeoutMillis: 5_000,
      application_name: 'bulwark-explorer',
      // Statements are written without waiting for the previous answer (each with its own Sync).
      pipeline: true,
      // Session defaults as well as the per-transaction SET LOCALs (belt and braces).
      options: '-c default_transaction_read_only=on -c search_path=public',
      // Every byte from the server passes the result filter before pg parses it (explorer-stream.ts):
      // no value larger than the byte cap is ever buffered or turned into a string.
      stream: () => (tls ? new ExplorerTlsSocket(tls) : new ExplorerSocket()),
    });
    pool.on('error', (err) =>
      deps.log.warn({ err: { message: err.message } }, 'idle explorer connection lost'),
    );
    pool.on('connect', (client) => {
      client.on('error', (err) =>
        deps.log.warn({ err: { message: err.message } }, 'explorer connection lost'),
      );
    });
    // A checked-out client whose backend dies (terminated, cancelled login) emits 'error': the
    // query promise already reports it; without a listener it would crash the agent.
    pool.on('connect', (client) => client.on('error', () => {}));
    return pool;
  };

  const prepare = async (databaseId: string, name: string): Promise<Entry> => {
    const roles = roleNames(name);
    const password = explorerPassword(deps.key, databaseId, roles.explorer);
    await prepareExplorerRole(deps, { databaseId, name, roles, password });
    let entry = entries.get(databaseId);
    if (!entry) {
      entry = {
        pool: newPool({
          host: deps.pgHost,
          port: deps.pgPort,
          database: name,
          user: roles.explorer,
          password,
        }),
        preparedAt: 0,
      };
      entries.set(databaseId, entry);
    }
    entry.preparedAt = Date.now();
    return entry;
  };

  const reset = async (client: pg.PoolClient, role: string): Promise<void> => {
    try {
      const [rollback, discard, check] = await pipelined(client, [
        { text: 'ROLLBACK' },
        { text: 'DISCARD ALL' },
        { text: LEFTOVERS, rowMode: 'object' },
      ]);
      for (const r of [rollback, discard, check]) if (r?.status !== 'fulfilled') throw r?.reason;
      const row = check?.status === 'fulfilled' ? (check.value.rows[0] as Leftovers | undefined) : undefined;
      if (
        !row ||
        Number(row.leftovers) !== 0 ||
        row.cur !== role ||
        row.sess !== role ||
        row.no_xact !== 't'
      ) {
        deps.log.warn({ role }, 'explorer session state survived DISCARD ALL; connection destroyed');
        client.release(new Error('explorer session not clean'));
        return;
      }
      client.release();
    } catch (err) {
      client.release(err instanceof Error ? err : new Error('explorer reset failed'));
    }
  };

  /** One preparation per database at a time: concurrent first queries wait for the same one. */
  const preparing = new Map<string, Promise<Entry>>();
  const prepareOnce = (databaseId: string, name: string): Promise<Entry> => {
    let p = preparing.get(databaseId);
    if (!p) {
      p = prepare(databaseId, name).finally(() => preparing.delete(databaseId));
      preparing.set(databaseId, p);
    }
    return p;
  };

  const lease = (client: pg.PoolClient, role: string, cancel: () => Promise<unknown>): ExplorerLease => ({
    client,
    role,
    cancel,
    reset: () => reset(client, role),
    // A connection whose statement was cancelled is never reused: a cancel still on its way
    // must not hit the next query. Waits (bounded) for the cancel, then closes the connection.
    discard: async (after) => {
      let timer: NodeJS.Timeout | undefined;
      const bounded = new Promise((res) => {
        timer = setTimeout(res, 5_000);
      });
      await Promise.race([after, bounded]).catch(() => {});
      clearTimeout(timer);
      client.release(new Error('explorer connection cancelled'));
    },
  });

  /**
   * An attached database's connection: the entry's reader at the entry's host, nothing prepared;
   * a refused login is an error (the operator's credentials, not ours to repair). The cancel goes
   * to the entry's server (attached-connect.ts), never through the agent's admin pool.
   */
  const acquireAttached = async (databaseId: string, db: AttachedDatabase): Promise<ExplorerLease> => {
    let entry = entries.get(databaseId);
    if (entry && entry.attached !== db) {
      entries.delete(databaseId);
      void entry.pool.end().catch(() => {});
      entry = undefined;
    }
    if (!entry) {
      const ssl = attachedSsl(db);
      entry = {
        pool: newPool({
          host: db.host,
          port: db.port,
          database: db.database,
          user: db.reader.user,
          password: db.reader.password,
          ...(ssl ? { tls: ssl } : {}),
        }),
        preparedAt: 0,
        attached: db,
      };
      entries.set(databaseId, entry);
    }
    let client: pg.PoolClient;
    try {
      client = await entry.pool.connect();
    } catch (err) {
      if (!LOGIN_ERRORS.has(String((err as { code?: unknown }).code))) throw err;
      throw attachedLoginError(db, err);
    }
    const secret = (client as unknown as { secretKey: number }).secretKey;
    return lease(client, db.reader.user, () => cancelAttachedBackend(db, backendPid(client), secret));
  };

  return {
    async acquire(databaseId: string, name: string): Promise<ExplorerLease> {
      const attached = deps.attached?.get(databaseId) ?? null;
      if (attached) return acquireAttached(databaseId, attached);
      const role = roleNames(name).explorer;
      let entry = entries.get(databaseId);
      if (entry?.attached) {
        // No longer attached under this id: its reader's pool is never used for a hosted database.
        entries.delete(databaseId);
        void entry.pool.end().catch(() => {});
        entry = undefined;
      }
      if (!entry || Date.now() - entry.preparedAt > reprepareMs) entry = await prepareOnce(databaseId, name);
      let client: pg.PoolClient;
      try {
        client = await entry.pool.connect();
      } catch (err) {
        // The role lost LOGIN or its password (e.g. the create job ran again): prepare once more.
        if (!LOGIN_ERRORS.has(String((err as { code?: unknown }).code))) throw err;
        entry = await prepareOnce(databaseId, name);
        client = await entry.pool.connect();
      }
      return lease(client, role, () =>
        deps.admin.query('SELECT pg_catalog.pg_cancel_backend($1)', [backendPid(client)]),
      );
    },

    async close(): Promise<void> {
      const all = [...entries.values()];
      entries.clear();
      await Promise.all(all.map((e) => e.pool.end().catch(() => {})));
    },
  };
}
