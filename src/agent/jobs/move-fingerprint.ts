/**
 * A database's change fingerprint (ADR 0031, amended): what lets a move copy a database while it
 * still serves and freeze it only for a check. Taken before the pre-copy's dump snapshot and again
 * after the freeze ended every session of the database; equal fingerprints mean nothing the dump
 * holds changed in between, so the copy on the target is the database and the switch is at once.
 *
 * What it hashes, read by the database's steward inside the database (and by the admin outside it):
 * - every table's tuple counters (`n_tup_ins`, `n_tup_upd`, `n_tup_del` of pg_stat_all_tables:
 *   user tables, TOAST tables, materialized views and this database's own catalogs — so DDL,
 *   grants, comments and large objects count too) and its file node (TRUNCATE, VACUUM FULL,
 *   CLUSTER and REFRESH change it without counting a row). Left out: the planner's statistics
 *   (pg_statistic, pg_statistic_ext_data and their TOAST tables: autovacuum's ANALYZE writes
 *   them — wide histograms go to TOAST; the dump holds none of it) and the shared catalogs (every database's roles and settings change them);
 * - the settings made for this database (`ALTER DATABASE … SET`, `ALTER ROLE … IN DATABASE …
 *   SET`: its rows of pg_db_role_setting themselves);
 * - every sequence's whole state, `(last_value, is_called)`, read from the sequence (nextval and
 *   setval count no row; pg_sequences hides the value of a sequence not yet called);
 * - what would make the counters unreliable: the postmaster's start (a crash discards them), the
 *   database's stats reset, `track_counts`, and prepared transactions of the database (they
 *   commit without a session).
 *
 * Why the counters can be trusted here: a backend adds a transaction's counts to the shared
 * statistics after the transaction ends, and at the latest when the backend exits; the freeze
 * terminates every session of the database and waits for each to be gone
 * (`pg_terminate_backend(pid, timeout)` returns once the backend left the process array, after
 * its statistics were flushed). A write committed after the dump's snapshot was therefore counted
 * after the first fingerprint and before the second. The counters only grow (a reset or a crash is
 * in the hash), and a tenant cannot stop them (`track_counts` and the reset functions are a
 * superuser's). A write that committed before the snapshot but was counted after the first
 * fingerprint makes them differ too: a second, frozen copy, never a lost write.
 */
import { createHash } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { quoteIdent } from '../../shared/identifiers.ts';
import { effectiveSetting } from '../postgres/tenant-sql.ts';

type Queryable = { query<R extends object>(sql: string, values?: unknown[]): Promise<{ rows: R[] }> };

/** Read inside the database by its steward: its tables' counters and file nodes, its sequences. */
const DATABASE_SQL = `
SELECT pg_catalog.json_build_object(
  'track_counts', pg_catalog.current_setting('track_counts'),
  'tables', (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(
                      s.relid::pg_catalog.int8, pg_catalog.pg_relation_filenode(s.relid),
                      s.n_tup_ins, s.n_tup_upd, s.n_tup_del) ORDER BY s.relid)
               FROM pg_catalog.pg_stat_all_tables s JOIN pg_catalog.pg_class c ON c.oid OPERATOR(pg_catalog.=) s.relid
              WHERE s.relid OPERATOR(pg_catalog.<>) ALL (ARRAY(
                      SELECT x.oid FROM pg_catalog.pg_class x
                       WHERE x.oid OPERATOR(pg_catalog.=) ANY (ARRAY['pg_catalog.pg_statistic'::pg_catalog.regclass,
                                       'pg_catalog.pg_statistic_ext_data'::pg_catalog.regclass]::pg_catalog.oid[])
                      UNION ALL
                      SELECT x.reltoastrelid FROM pg_catalog.pg_class x
                       WHERE x.oid OPERATOR(pg_catalog.=) ANY (ARRAY['pg_catalog.pg_statistic'::pg_catalog.regclass,
                                       'pg_catalog.pg_statistic_ext_data'::pg_catalog.regclass]::pg_catalog.oid[])))
                AND NOT c.relisshared),
  'sequences', (SELECT pg_catalog.json_agg(c.oid::pg_catalog.int8 ORDER BY c.oid) FROM pg_catalog.pg_class c
                 WHERE c.relkind OPERATOR(pg_catalog.=) 'S')
)::pg_catalog.text AS f`;

/**
 * The client sessions of database $1 other than ours and its steward's ($2): the tenant's (and
 * the platform's tenant roles'). Shared by the freeze check and the pre-copy's watch and wait.
 */
const TENANT_SESSIONS = `FROM pg_catalog.pg_stat_activity a
  WHERE a.datname OPERATOR(pg_catalog.=) $1
    AND a.pid OPERATOR(pg_catalog.<>) pg_catalog.pg_backend_pid()
    AND a.backend_type OPERATOR(pg_catalog.=) 'client backend'
    AND a.usename OPERATOR(pg_catalog.<>) $2`;

/** Sequences read per statement (one UNION ALL each). */
const SEQUENCE_BATCH = 200;

/**
 * Every sequence's whole state, `(last_value, is_called)`, read from the sequence itself: pg_sequences
 * shows no last value when `is_called` is false, so a `setval(s, n, false)` of a fresh or restarted
 * sequence would not show there. A sequence the steward may not read fails the fingerprint (its
 * dump would fail too); nothing unreadable passes as "unchanged".
 */
async function sequenceStates(inside: Queryable): Promise<string> {
  const list = await inside.query<{ oid: string; nspname: string; relname: string }>(
    `SELECT c.oid::pg_catalog.int8::pg_catalog.text AS oid, n.nspname, c.relname
       FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) c.relnamespace
      WHERE c.relkind OPERATOR(pg_catalog.=) 'S' ORDER BY c.oid`,
  );
  const states: string[] = [];
  for (let i = 0; i < list.rows.length; i += SEQUENCE_BATCH) {
    const batch = list.rows.slice(i, i + SEQUENCE_BATCH);
    const sql = batch
      .map(
        (q, j) =>
          `SELECT ${j}::pg_catalog.int4 AS i, s.last_value::pg_catalog.text AS v, s.is_called AS c FROM ${quoteIdent(q.nspname)}.${quoteIdent(q.relname)} s`,
      )
      .join(' UNION ALL ');
    const r = await inside.query<{ i: number; v: string; c: boolean }>(sql);
    for (const row of r.rows.sort((a, b) => a.i - b.i))
      states.push(`${batch[row.i]!.oid}:${row.v}:${row.c ? 't' : 'f'}`);
  }
  return states.join(',');
}

/**
 * Read by the admin on the maintenance database (a tenant database hides these from everyone in
 * it, catalog-visibility.ts): what would make the counters unreliable.
 */
const CLUSTER_SQL = `
SELECT pg_catalog.json_build_object(
  'started', pg_catalog.pg_postmaster_start_time(),
  'reset', (SELECT d.stats_reset FROM pg_catalog.pg_stat_database d WHERE d.datname OPERATOR(pg_catalog.=) $1),
  'prepared', (SELECT pg_catalog.count(*) FROM pg_catalog.pg_prepared_xacts x WHERE x.database OPERATOR(pg_catalog.=) $1),
  'settings', (SELECT pg_catalog.json_agg(pg_catalog.json_build_array(r.setrole::pg_catalog.int8, r.setconfig)
                 ORDER BY r.setrole)
                 FROM pg_catalog.pg_db_role_setting r JOIN pg_catalog.pg_database d ON d.oid OPERATOR(pg_catalog.=) r.setdatabase
                WHERE d.datname OPERATOR(pg_catalog.=) $1 AND ${effectiveSetting('r')})
)::pg_catalog.text AS f`;

/**
 * The change fingerprint of database `name` (`inside`: its steward's session in it), hex SHA-256.
 * Read in one READ ONLY transaction whose waits are bounded: reading a sequence takes a lock a
 * tenant can hold (`BEGIN; ALTER SEQUENCE …` and sleep), so a lock not granted within
 * `lockTimeoutMs` fails the fingerprint instead of hanging the node's job (the pre-copy then copies
 * frozen: the freeze ends the session holding it).
 */
export async function databaseFingerprint(
  admin: Queryable,
  inside: Queryable,
  name: string,
  opts: { lockTimeoutMs?: number; statementTimeoutMs?: number } = {},
): Promise<string> {
  const cluster = await admin.query<{ f: string }>(CLUSTER_SQL, [name]);
  await inside.query('BEGIN ISOLATION LEVEL READ COMMITTED, READ ONLY');
  try {
    await inside.query(
      `SELECT pg_catalog.set_config('lock_timeout', $1, true), pg_catalog.set_config('statement_timeout', $2, true)`,
      [`${opts.lockTimeoutMs ?? 5_000}ms`, `${opts.statementTimeoutMs ?? 60_000}ms`],
    );
    const database = await inside.query<{ f: string }>(DATABASE_SQL);
    const sequences = await sequenceStates(inside);
    await inside.query('COMMIT');
    return createHash('sha256')
      .update(`${cluster.rows[0]!.f}\n${database.rows[0]!.f}\n${sequences}`)
      .digest('hex');
  } catch (err) {
    await inside.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

/**
 * Sessions of database `name` that are not its steward's (autovacuum's workers write nothing the
 * dump holds): after the freeze there must be none, or the fingerprint proves nothing.
 */
export async function otherSessions(admin: Queryable, name: string, steward: string): Promise<number> {
  const r = await admin.query<{ n: number }>(
    `SELECT pg_catalog.count(*)::pg_catalog.int4 AS n ${TENANT_SESSIONS}`,
    [name, steward],
  );
  return r.rows[0]?.n ?? 0;
}

/**
 * A backend adds its counts to the shared statistics when it goes idle — but at most once a second;
 * counts made sooner wait for the next flush, up to 10 s later when the backend stays idle
 * (PGSTAT_MIN_INTERVAL, PGSTAT_IDLE_INTERVAL) — and at its exit. A fingerprint taken before a
 * write's counts arrived misses it: never unsafely (the write is in the dump, the later fingerprint
 * differs), but at the price of a frozen second copy. So a pre-copy first has PgBouncer close the
 * database's server connections as they are released (`RECONNECT`: idle ones at once; clients keep
 * theirs), then waits, at most `maxMs`, until the sessions left have been idle for `settledMs`
 * (one in a transaction is not waited for: its writes would change the fingerprint anyway).
 * Returns how long it waited.
 */
export async function waitForSettledCounts(
  admin: Queryable,
  name: string,
  steward: string,
  opts: { settledMs: number; maxMs: number; sleep: (ms: number) => Promise<void> },
): Promise<number> {
  const started = performance.now();
  for (;;) {
    const r = await admin.query<{ busy: boolean | null; idle_ms: number | null }>(
      `SELECT pg_catalog.bool_or(a.state OPERATOR(pg_catalog.<>) 'idle') AS busy,
              pg_catalog.min(pg_catalog.date_part('epoch', pg_catalog.now() OPERATOR(pg_catalog.-) a.state_change)
                OPERATOR(pg_catalog.*) 1000)::pg_catalog.float8 AS idle_ms
         ${TENANT_SESSIONS}`,
      [name, steward],
    );
    const { busy, idle_ms: idleMs } = r.rows[0] ?? { busy: null, idle_ms: null };
    const waited = performance.now() - started;

    if (busy || idleMs === null || idleMs >= opts.settledMs) return waited;
    const left = opts.maxMs - waited;
    if (left <= 0) return waited;
    // Sessions PgBouncer closes are gone within milliseconds; the others may settle meanwhile.
    await opts.sleep(Math.min(left, 50));
  }
}

/**
 * Does any session of database `name` (not its steward's) do anything within `watchMs`: still in
 * a statement or a transaction at the end, or active at some point since the watch began?
 */
export async function sessionsAtWork(
  admin: Queryable,
  name: string,
  steward: string,
  opts: { watchMs: number; sleep: (ms: number) => Promise<void> },
): Promise<boolean> {
  const begun = await admin.query<{ t: string }>('SELECT pg_catalog.clock_timestamp()::pg_catalog.text AS t');
  await opts.sleep(opts.watchMs);
  const r = await admin.query<{ busy: boolean | null }>(
    `SELECT pg_catalog.bool_or(a.state OPERATOR(pg_catalog.<>) 'idle'
              OR a.state_change OPERATOR(pg_catalog.>) $3::pg_catalog.timestamptz) AS busy
       ${TENANT_SESSIONS}`,
    [name, steward, begun.rows[0]!.t],
  );
  return r.rows[0]?.busy === true;
}
