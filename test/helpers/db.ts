import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import pg from 'pg';
import { testEnv } from './env.ts';
import { waitFor } from './wait.ts';

export type TestDb = { name: string; url: string; pool: pg.Pool; drop(): Promise<void> };

function withDb(url: string, db: string): string {
  return url.replace(/\/[^/?]*(\?.*)?$/, `/${db}$1`).replace(/undefined$/, '');
}

/** A fresh control database cloned from the migrated template; dropped by `drop()`. */
export async function createTestDb(): Promise<TestDb> {
  const env = testEnv();
  const name = `t_${randomBytes(6).toString('hex')}`;
  const admin = new pg.Client({ connectionString: env.adminUrl });
  await admin.connect();
  try {
    await admin.query(`CREATE DATABASE ${name} TEMPLATE ${env.template} OWNER ${env.controlRole}`);
  } finally {
    await admin.end();
  }
  const url = withDb(env.controlUrl, name);
  const pool = new pg.Pool({ connectionString: url, max: 10 });
  pool.on('error', () => {});
  return {
    name,
    url,
    pool,
    async drop() {
      await pool.end();
      const a = new pg.Client({ connectionString: env.adminUrl });
      await a.connect();
      try {
        await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      } finally {
        await a.end();
      }
    },
  };
}

export async function adminQuery<T extends pg.QueryResultRow>(
  sql: string,
  params: unknown[] = [],
): Promise<T[]> {
  const a = new pg.Client({ connectionString: testEnv().adminUrl });
  await a.connect();
  try {
    return (await a.query<T>(sql, params)).rows;
  } finally {
    await a.end();
  }
}

export type SentQuery = { text: string; values: readonly unknown[] };

/**
 * Records every statement a pool sends (through `pool.query` and checked-out clients alike), as it
 * is sent: the real pool, watched, for tests that must show a query ran or did not (a lookup that
 * must not happen, a long-poll that reached its wait). `stop()` ends the recording.
 */
export function watchQueries(pool: pg.Pool) {
  const sent: SentQuery[] = [];
  let recording = true;
  const seen = new WeakSet<object>();
  const onAcquire = (client: pg.PoolClient) => {
    if (seen.has(client)) return;
    seen.add(client);
    const original = client.query;
    client.query = function (this: pg.PoolClient, ...args: unknown[]) {
      const [q, v] = args as [string | { text?: string; values?: unknown[] }, unknown];
      if (recording) {
        const text = typeof q === 'string' ? q : (q?.text ?? '');
        const values = Array.isArray(v)
          ? v
          : typeof q === 'object' && Array.isArray(q?.values)
            ? q.values
            : [];
        sent.push({ text, values });
      }
      return (original as (...a: unknown[]) => unknown).apply(this, args);
    } as typeof client.query;
  };
  pool.on('acquire', onAcquire);
  return {
    sent,
    /** How many statements sent so far match. */
    count: (match: (q: SentQuery) => boolean) => sent.filter(match).length,
    stop() {
      recording = false;
      pool.off('acquire', onAcquire);
    },
  };
}

const RUNNING = `SELECT pid FROM pg_stat_activity
  WHERE datname = $1 AND ($2::text IS NULL OR usename = $2) AND ($3::text IS NULL OR strpos(query, $3) > 0)
    AND state = 'active' AND backend_type = 'client backend' AND pid <> pg_backend_pid()`;

type StatementMatch = { user?: string; text?: string; timeoutMs?: number };
const runningArgs = (database: string, opts: StatementMatch) => [
  database,
  opts.user ?? null,
  opts.text ?? null,
];

/**
 * Waits (bounded) until another session is running a statement in `database` (as `user`, whose
 * text holds `text`, when given): the moment to cancel it, stop its agent or shut its server down.
 * Returns its pid. Give the statement a unique `text` (an alias will do) so that a statement of an
 * earlier test, still ending, is not taken for it.
 */
export async function waitForRunningStatement(database: string, opts: StatementMatch = {}): Promise<number> {
  return waitFor(
    `a running statement in ${database}${opts.text ? ` like ${opts.text}` : ''}`,
    async () => (await adminQuery<{ pid: number }>(RUNNING, runningArgs(database, opts)))[0]?.pid,
    { timeoutMs: opts.timeoutMs ?? 10_000, everyMs: 20 },
  );
}

/** Waits (bounded) until no other session runs such a statement (a cancel reached the backend). */
export async function waitForNoRunningStatement(database: string, opts: StatementMatch = {}): Promise<void> {
  await waitFor(
    `no running statement in ${database}${opts.text ? ` like ${opts.text}` : ''}`,
    async () => (await adminQuery(RUNNING, runningArgs(database, opts))).length === 0,
    { timeoutMs: opts.timeoutMs ?? 10_000, everyMs: 20 },
  );
}

/**
 * Waits until everything the cluster logged so far is in `logFile`: raises a line of its own and
 * waits for it. The logging collector reads one pipe in order, so every line raised before it is
 * there too. Read the log after this, never after a fixed wait.
 */
export async function waitForLogFlush(logFile: string, timeoutMs = 10_000): Promise<void> {
  const line = `BULWARK-LOG-BARRIER-${randomBytes(6).toString('hex')}`;
  await adminQuery(`DO $$ BEGIN RAISE LOG '${line}'; END $$`);
  await waitFor(
    `${line} in ${logFile}`,
    async () => (await fs.readFile(logFile, 'utf8').catch(() => '')).includes(line),
    { timeoutMs, everyMs: 20 },
  );
}

/**
 * Drops, from the shared cluster, every database a test server's control DB knows of (its name on
 * the node) and the five roles of each: what a file made leaves with it.
 */
export async function dropKnownDatabases(control: pg.Pool): Promise<void> {
  const made = await control
    .query<{ n: string }>('SELECT DISTINCT coalesce(pg_name, name) AS n FROM databases')
    .catch(() => ({ rows: [] as { n: string }[] }));
  for (const { n } of made.rows) {
    await adminQuery(`DROP DATABASE IF EXISTS "${n}" WITH (FORCE)`).catch(() => {});
    for (const r of ['owner', 'reader', 'migrator', 'explorer', 'steward'])
      await adminQuery(`DROP ROLE IF EXISTS "${n}_${r}"`).catch(() => {});
  }
}
