import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import path from 'node:path';
import pg from 'pg';
import type { Logger } from 'pino';
import { assertValidName } from '../../shared/identifiers.ts';
import { type HbaRule, POOLER_LIMITS, type PoolerSettings } from './pgbouncer.config.ts';
import { createPoolerRenderer, PROBE_PREFIX, type Probe, type Rendered } from './pooler-render.ts';
import { nextExpiry, type PoolerState, pruneExpired, readPoolerState } from './pooler-state.ts';

export { PoolerConfigError } from './pooler-render.ts';

/**
 * The longest a cut waits for a database's clients to finish logging in: PgBouncer closes a
 * client that has not logged in after `client_login_timeout`, plus a margin for its janitor.
 */
export const CUT_WAIT_MS = POOLER_LIMITS.clientLoginTimeoutS * 1000 + 3_000;

/** File names inside the pooler dir (the same names src/embedded/data-plane.ts writes first). */
export function poolerPaths(dir: string) {
  return {
    ini: path.join(dir, 'pgbouncer.ini'),
    auth: path.join(dir, 'auth.txt'),
    hba: path.join(dir, 'hba.txt'),
    pid: path.join(dir, 'pgbouncer.pid'),
  };
}

export type PoolerManagerOptions = {
  /** The pooler dir (PgBouncer's ini, auth and hba files). */
  dir: string;
  /** The desired-state file, e.g. `<stateDir>/pooler-state.json`. */
  stateFile: string;
  settings: Omit<PoolerSettings, 'authFile' | 'hbaFile' | 'pidFile' | 'probeUser'>;
  adminPassword: string;
  /** Where the admin console is reached; PgBouncer must listen there. */
  consoleHost?: string;
  /** TLS for the manager's own console connections (when PgBouncer serves TLS). */
  clientSsl?: pg.ClientConfig['ssl'];
  log: Logger;
  now?: () => number;
  /** Upper bound between two expiry sweeps (the sweep also runs at the exact next expiry). */
  sweepMs?: number;
  /**
   * Ends these users' PostgreSQL sessions in this database (PgBouncer's server connections
   * there): a cut makes sure none is left before its KILL (see `disconnect`).
   */
  endServerSessions: (database: string, users: readonly string[]) => Promise<unknown>;
};

/** How long an apply took (ms), in total and per phase. */
export type ApplyTiming = {
  ms: number;
  phases: { render: number; write: number; reload: number; probe: number };
};

/**
 * Owns PgBouncer's config: renders it from the desired state, refuses an invalid render,
 * writes the files atomically, RELOADs, and then proves the reload took effect.
 *
 * The proof (PgBouncer 1.18 answers RELOAD with success even when loading failed): every
 * render carries a fresh one-time probe user `bulwark_probe_<random>` with a random password.
 * It is named in the ini (`stats_users`), has its SCRAM verifier in the auth file and its
 * rule as the LAST line of the hba file. After RELOAD the manager logs in as that user to the
 * `pgbouncer` console: the login can only succeed if PgBouncer loaded this ini, this auth
 * file and this hba file to its end. On any failure the last good files are written back and
 * reloaded, and the error is raised: a bad render never stays live.
 */
export function createPoolerManager(opts: PoolerManagerOptions) {
  const files = poolerPaths(opts.dir);
  const now = opts.now ?? Date.now;
  const host = opts.consoleHost ?? '127.0.0.1';
  const renderer = createPoolerRenderer({
    settings: opts.settings,
    files,
    adminPassword: opts.adminPassword,
    now,
  });
  /**
   * Databases every login to which is refused: those with a cut in progress (how many at once)
   * and those a held cut left paused until `resume`.
   */
  const closing = new Map<string, number>();
  /** A cut's last reload failed: PgBouncer may still refuse a database no cut holds (re-applied soon). */
  let staleRefusal = false;
  const held = new Set<string>();
  const render = (s: PoolerState, probe: Probe): Rendered =>
    renderer.render(
      s,
      probe,
      [...probeAccess].filter(([name]) => s.databases[name]).map(([, rule]) => rule),
      new Set([...closing.keys(), ...held]),
    );
  let state: PoolerState = { version: 1, databases: {} };
  let lastGood: { rendered: Rendered; probe: Probe | null } | null = null;
  let chain: Promise<unknown> = Promise.resolve();
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  /** In-memory, short-lived loopback rules for the agent's own proving logins (never persisted). */
  const probeAccess = new Map<string, HbaRule>();

  const connectConsole = async (user: string, password: string, tls: boolean): Promise<pg.Client> => {
    const client = new pg.Client({
      host,
      port: opts.settings.listenPort,
      user,
      password,
      database: 'pgbouncer',
      connectionTimeoutMillis: 5_000,
      // RELOAD/KILL/RESUME answer in milliseconds; a wedged PgBouncer must not hang the agent.
      query_timeout: 30_000,
      ...(tls && opts.clientSsl ? { ssl: opts.clientSsl } : {}),
    });
    client.on('error', () => {});
    await client.connect();
    return client;
  };
  /** The admin's console: TLS when PgBouncer serves it, plain while it does not yet (first start). */
  const connectAdmin = async (): Promise<pg.Client> => {
    try {
      return await connectConsole(opts.settings.adminUser, opts.adminPassword, true);
    } catch (err) {
      if (!opts.clientSsl || !/does not support SSL/i.test((err as Error).message)) throw err;
      return connectConsole(opts.settings.adminUser, opts.adminPassword, false);
    }
  };
  const consoleQuery = async (user: string, password: string, sql: string): Promise<pg.QueryResult> => {
    // With TLS configured the proving login must use it: that proves TLS is live as well.
    const client = await connectConsole(user, password, true);
    try {
      return await client.query(sql);
    } finally {
      await client.end().catch(() => {});
    }
  };
  /**
   * One kept admin console connection, re-opened after a connection error. A console error
   * (`no such database`, `is not paused`: an ErrorResponse, with a severity) leaves it usable,
   * and other queries may be queued on it (a cut polls the console while others run): it stays.
   */
  let adminConn: Promise<pg.Client> | null = null;
  const admin = async (sql: string): Promise<pg.QueryResult> => {
    adminConn ??= connectAdmin();
    const conn = adminConn;
    try {
      return await (await conn).query(sql);
    } catch (err) {
      if (typeof (err as { severity?: unknown }).severity !== 'string') {
        if (adminConn === conn) adminConn = null;
        void conn.then((c) => c.end()).catch(() => {});
      }
      throw err;
    }
  };

  /** Whether a client of `database` is between naming it and finishing its login. */
  const authenticating = async (database: string): Promise<boolean> => {
    // SHOW CLIENTS leaves out clients still logging in; SHOW SOCKETS lists them (`cl_login`,
    // with the database of the pool they are tied to).
    const r = await admin('SHOW SOCKETS');
    return r.rows.some(
      (c: Record<string, unknown>) => c.type === 'C' && c.database === database && c.state === 'cl_login',
    );
  };

  /**
   * What PgBouncer's pools for `database` still hold that a KILL must not meet: server
   * connections in any state (a client can be linked to one in an instant, and only a linked
   * client's cancel request joins the pool) and cancel requests under way. Returns the users of
   * the pools that hold server connections, and whether anything at all is left.
   */
  const unquiet = async (database: string): Promise<{ busy: boolean; users: string[] }> => {
    const r = await admin('SHOW POOLS');
    const n = (row: Record<string, unknown>, k: string) => Number(row[k] ?? 0);
    const servers = [
      'sv_active',
      'sv_active_cancel',
      'sv_being_canceled',
      'sv_idle',
      'sv_used',
      'sv_tested',
      'sv_login',
    ];
    const cancels = ['cl_active_cancel_req', 'cl_waiting_cancel_req'];
    let busy = false;
    const users: string[] = [];
    for (const row of r.rows as Record<string, unknown>[]) {
      if (row.database !== database) continue;
      const withServers = servers.some((k) => n(row, k) > 0);
      if (withServers) users.push(String(row.user));
      if (withServers || cancels.some((k) => n(row, k) > 0)) busy = true;
    }
    return { busy, users };
  };

  /** Owner of the pooler dir: the files must belong to the user PgBouncer runs as. */
  const owner = async () => {
    if (typeof process.getuid !== 'function' || process.getuid() !== 0) return null;
    const st = await fs.stat(opts.dir);
    return { uid: st.uid, gid: st.gid };
  };

  /** Writes a private temp file next to `file`; `rename` makes it live atomically. */
  const stage = async (file: string, text: string | Buffer, sync = false): Promise<string> => {
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
    const fh = await fs.open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(text);
      if (sync) await fh.sync();
    } finally {
      await fh.close();
    }
    const o = file.startsWith(opts.dir) ? await owner() : null;
    if (o) await fs.chown(tmp, o.uid, o.gid);
    return tmp;
  };
  const writeAtomic = async (file: string, text: string | Buffer, sync = false) => {
    await fs.rename(await stage(file, text, sync), file);
  };

  /**
   * PgBouncer re-reads the auth file at RELOAD only when its inode, mtime (whole seconds) or size
   * changed since it last read it. Each write is a new file (a new inode), but after a write that
   * was never reloaded (an apply that failed half-way) the next one may get back the inode
   * PgBouncer remembers, within the same second and at the same size (every probe line is as
   * long as the last): PgBouncer would then keep the old users. What PgBouncer last read (as far
   * as this manager knows: the auth file of the last proven reload) is kept, and a new file that
   * looks the same to PgBouncer gets its mtime moved on by a second.
   */
  let loadedAuth: { ino: number; mtimeS: number; size: number } | null = null;
  const statAuth = async () => {
    const st = await fs.stat(files.auth);
    return { ino: st.ino, mtimeS: Math.floor(st.mtimeMs / 1000), size: st.size };
  };
  const writeAll = async (r: Rendered) => {
    // Auth and hba first: the ini (which names the probe user) is the last to change.
    await writeAtomic(files.auth, r.auth);
    const st = await statAuth();
    if (
      loadedAuth &&
      st.ino === loadedAuth.ino &&
      st.mtimeS === loadedAuth.mtimeS &&
      st.size === loadedAuth.size
    ) {
      const later = new Date((st.mtimeS + 1) * 1000);
      await fs.utimes(files.auth, later, later);
    }
    await writeAtomic(files.hba, r.hba);
    await writeAtomic(files.ini, r.ini);
  };

  const probeLogin = async (p: Probe) => {
    const r = await consoleQuery(p.user, p.password, 'SHOW VERSION');
    if (r.rows.length === 0) throw new Error('probe login returned nothing');
  };

  const readDisk = async (): Promise<Rendered> => ({
    ini: await fs.readFile(files.ini, 'utf8'),
    auth: await fs.readFile(files.auth),
    hba: await fs.readFile(files.hba),
  });

  /** Renders, writes, reloads and proves `next`; restores the last good files on failure. */
  const apply = async (next: PoolerState): Promise<ApplyTiming> => {
    const t0 = performance.now();
    const probe = {
      user: PROBE_PREFIX + randomBytes(6).toString('hex'),
      password: randomBytes(24).toString('base64url'),
    };
    const rendered = render(next, probe);
    const previous = lastGood ?? { rendered: await readDisk(), probe: null };
    const t1 = performance.now();
    let t2 = t1;
    let t3: number;
    try {
      // Inside the try: a write that fails half-way (a full disk) puts the last good files back too.
      await writeAll(rendered);
      t2 = performance.now();
      await admin('RELOAD');
      // PgBouncer remembers the auth file it saw at this RELOAD, proven or not.
      loadedAuth = await statAuth().catch(() => null);
      t3 = performance.now();
      await probeLogin(probe);
    } catch (err) {
      opts.log.error({ err: { message: (err as Error).message } }, 'pooler reload not live; restoring');
      try {
        await writeAll(previous.rendered);
        await admin('RELOAD');
        loadedAuth = await statAuth().catch(() => null);
        if (previous.probe) await probeLogin(previous.probe);
      } catch (restoreErr) {
        opts.log.error({ err: { message: (restoreErr as Error).message } }, 'pooler restore failed');
      }
      throw new Error(`pooler reload did not take effect: ${(err as Error).message}`);
    }
    lastGood = { rendered, probe };
    staleRefusal = false;
    const t4 = performance.now();
    return { ms: t4 - t0, phases: { render: t1 - t0, write: t2 - t1, reload: t3 - t2, probe: t4 - t3 } };
  };

  /**
   * Applies `next` and saves it as the state file only once it is live. The state file is
   * staged (serialised and fsynced) while PgBouncer reloads, and renamed into place after.
   */
  const applyAndPersist = async (next: PoolerState): Promise<ApplyTiming> => {
    const staged = stage(opts.stateFile, `${JSON.stringify(next)}\n`, true);
    staged.catch(() => {});
    let timing: ApplyTiming;
    try {
      timing = await apply(next);
    } catch (err) {
      await staged.then((tmp) => fs.rm(tmp, { force: true })).catch(() => {});
      throw err;
    }
    await fs.rename(await staged, opts.stateFile);
    return timing;
  };

  const serial = <T>(fn: () => Promise<T>): Promise<T> => {
    const run = chain.then(fn, fn);
    chain = run.catch(() => {});
    return run;
  };

  const schedule = () => {
    clearTimeout(timer);
    if (stopped) return;
    const t = now();
    const next = nextExpiry(state, t);
    const sweep = opts.sweepMs ?? 30_000;
    const due = next === null ? sweep : Math.max(0, Math.min(sweep, next - t + 1));
    const wait = staleRefusal ? Math.min(due, 1_000) : due;
    timer = setTimeout(() => {
      void sweepExpired().catch((err: Error) => {
        opts.log.warn({ err: { message: err.message } }, 'allowlist expiry sweep failed; will retry');
      });
    }, wait);
    timer.unref();
  };

  /**
   * Applies `fn(state)` (expired entries pruned) and persists it only once it is live.
   * `loopbackFor` adds a temporary rule letting the owner of that database in from 127.0.0.1
   * (for the agent's proving login when the allowlist does not cover loopback) until
   * `endLoopback` — or an agent restart — removes it.
   */
  const update = (
    fn: (s: PoolerState) => PoolerState,
    opts2: { loopbackFor?: { database: string; user: string } } = {},
  ): Promise<{ state: PoolerState } & ApplyTiming> =>
    serial(async () => {
      const lb = opts2.loopbackFor;
      if (lb) probeAccess.set(lb.database, { database: lb.database, user: lb.user, cidr: '127.0.0.1/32' });
      // The state is immutable: fn returns a new object for what it changes (never mutates).
      const next = pruneExpired(fn(state), now());
      const timing = next === state ? await apply(next) : await applyAndPersist(next);
      state = next;
      schedule();
      return { state: next, ...timing };
    });

  const sweepExpired = () =>
    serial(async () => {
      try {
        const pruned = pruneExpired(state, now());
        if (pruned !== state) {
          await applyAndPersist(pruned);
          state = pruned;
          opts.log.info('expired allowlist entries removed from the pooler');
        } else if (staleRefusal) await apply(state);
      } finally {
        schedule();
      }
    });

  return {
    files,
    /** Loads the saved state and makes it live (expired entries dropped); starts the expiry timer. */
    start: () =>
      serial(async () => {
        state = await readPoolerState(opts.stateFile);
        stopped = false;
      }).then(() => update((s) => s)),
    stop() {
      stopped = true;
      clearTimeout(timer);
      const conn = adminConn;
      adminConn = null;
      void conn?.then((c) => c.end()).catch(() => {});
    },
    /** The live desired state. Read-only: change it through `update`. */
    state: (): Readonly<PoolerState> => state,
    update,
    /** Re-applies the state unchanged (a reload with proof). */
    reload: () => update((s) => s),
    hasLoopback: (database: string) => probeAccess.has(database),
    /** Removes a temporary loopback rule (a reload only if there was one). */
    async endLoopback(database: string): Promise<void> {
      if (!probeAccess.delete(database)) return;
      await update((s) => s);
    },
    /**
     * Drops every client and server connection PgBouncer holds for one database, then lets
     * new ones in again. Returns false when PgBouncer does not know the database (with the
     * wildcard entry it always does: KILL registers it).
     *
     * PgBouncer (1.18, and later releases alike) ties a client to its database's pool as soon
     * as the client names database and user, before authenticating it; `KILL` frees the pools,
     * and a client still in its authentication exchange then uses freed memory: PgBouncer
     * crashes, and every tenant of the node loses its connections. A tenant that reconnects in
     * a loop while its password is rotated hits that within a few dozen cuts. So a cut is:
     *   1. refuse every login to the database (reject rules first in hba, reload proven):
     *      PgBouncer refuses a client at once, before any exchange, so no new one is pending;
     *   2. wait until no client of the database is still authenticating (`SHOW SOCKETS`; a
     *      client that stalls is closed by PgBouncer at `client_login_timeout`);
     *   3. end the database's server connections in PostgreSQL until `SHOW POOLS` shows none
     *      and no cancel request under way (a cancel request joins the pool of the client it
     *      cancels, only while that client is linked to a server connection, and KILL crashes
     *      on it too);
     *   4. `KILL`, `RESUME`;
     *   5. let logins in again (reload; if that fails the cut fails, and the config is
     *      re-applied within a second of a working reload).
     * Steps 2 and 3 are bounded by `CUT_WAIT_MS`, past which the cut fails rather than risk the
     * crash (its job is retried). While it runs (milliseconds, unless a client stalls) new
     * logins to the database are refused; every cut ends every session of the database anyway.
     *
     * With `hold` (a move's freeze, a restore's swap) the database stays paused and its logins
     * refused until `resume`. (Letting clients log in to a paused database is worse than
     * refusing them: PgBouncer 1.18 then gives up on the pool's first server login and holds
     * every login to it for `server_login_retry`, 15 s, after the RESUME.) A plain cut of a
     * held database keeps the hold.
     */
    async disconnect(database: string, opts2: { hold?: boolean } = {}): Promise<boolean> {
      assertValidName(database, 'database name');
      closing.set(database, (closing.get(database) ?? 0) + 1);
      const lift = async () => {
        const n = (closing.get(database) ?? 1) - 1;
        if (n > 0) closing.set(database, n);
        else closing.delete(database);
        await update((s) => s).catch((err: Error) => {
          // The refusal stays live until a reload works: the sweep retries soon (staleRefusal),
          // and the cut reports the failure (its job is retried).
          staleRefusal = true;
          schedule();
          throw new Error(`the reload ending the cut of ${database} failed: ${err.message}`);
        });
      };
      let killed: boolean;
      let resumeDue = false;
      try {
        await update((s) => s);
        const deadline = performance.now() + CUT_WAIT_MS;
        const overdue = (what: string) => {
          if (performance.now() > deadline)
            throw new Error(`${what} for ${database} after ${CUT_WAIT_MS} ms; not cut`);
        };
        while (await authenticating(database)) {
          overdue('clients still logging in');
          await new Promise((res) => setTimeout(res, 25));
        }
        for (;;) {
          const left = await unquiet(database);
          if (!left.busy) break;
          overdue('server connections or cancel requests still open');
          if (left.users.length > 0) await opts.endServerSessions(database, left.users);
          await new Promise((res) => setTimeout(res, 10));
        }
        try {
          await admin(`KILL ${database}`);
          killed = true;
        } catch (err) {
          if (!/no such database/i.test((err as Error).message)) throw err;
          killed = false;
        }
        if (killed && (opts2.hold || held.has(database))) held.add(database);
        else if (killed) {
          resumeDue = true;
          await admin(`RESUME ${database}`);
          resumeDue = false;
        }
      } catch (err) {
        // Never let logins in to a database left paused: one more RESUME first.
        if (resumeDue) await admin(`RESUME ${database}`).catch(() => {});
        await lift().catch(() => {});
        throw err;
      }
      // A held cut keeps its refusal through `held` whatever this reload does.
      if (held.has(database)) await lift().catch(() => {});
      else await lift();
      return killed;
    },
    /** Ends a held cut: `RESUME` (a database PgBouncer does not know or has not paused is fine), logins let in. */
    async resume(database: string): Promise<void> {
      assertValidName(database, 'database name');
      try {
        await admin(`RESUME ${database}`);
      } catch (err) {
        if (!/no such database|is not paused/i.test((err as Error).message)) throw err;
      }
      if (!held.delete(database)) return;
      try {
        await update((s) => s);
      } catch (err) {
        // Still refused (the reload's failure put the last good files back): held until a retry.
        held.add(database);
        throw err;
      }
    },
    /**
     * Closes PgBouncer's PostgreSQL sessions for one database (idle ones at once, the others when
     * released; none is handed to a client again) without touching its clients or pools — for a
     * database no client can be logged in to (a spare: its owner's password is the agent's
     * alone), where `disconnect`'s refusal of logins is not needed.
     */
    async reconnect(database: string): Promise<void> {
      assertValidName(database, 'database name');
      await admin(`RECONNECT ${database}`);
    },
    /**
     * Whether PgBouncer holds a PostgreSQL session for this database and user that a new client
     * of theirs would be given (idle or just released, not closing): such a login does not make
     * PgBouncer open one.
     */
    async serverHeld(database: string, user: string): Promise<boolean> {
      const r = await admin('SHOW SERVERS');
      return r.rows.some(
        (s: Record<string, unknown>) =>
          s.database === database &&
          s.user === user &&
          (s.state === 'idle' || s.state === 'used') &&
          String(s.close_needed ?? '0') === '0',
      );
    },
    /** A query on the admin console (SHOW …); for tests and diagnostics. */
    admin,
  };
}

export type PoolerManager = ReturnType<typeof createPoolerManager>;
