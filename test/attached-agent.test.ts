/**
 * Attached databases, agent side after the server's answer (ADR 0031): a database on the test
 * cluster that Bulwark did not make (its own owner, a reader with SELECT only, a migrator that owns
 * nothing and may SELECT/INSERT/UPDATE one table), loaded from a 0600 config file, checked, reported
 * (the report carries no password and no password file path) and registered from a server answer
 * (a plain object: the server is not under test here). Then the explorer reads it as the reader
 * (under the Bulwark name, not the PostgreSQL one), cannot write, lists its schema and is cancelled
 * on that server; governed execution runs an approved UPDATE as the migrator, a reader-capability
 * request cannot write, and a refused login is a `database` refusal that names no password.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import type { AttachedDatabase } from '../src/agent/attached/attached-config.ts';
import { cancelAttachedBackend } from '../src/agent/attached/attached-connect.ts';
import { type AttachedRegistry, createAttachedRegistry } from '../src/agent/attached/attached-registry.ts';
import { buildAttachedReport, reportAttached } from '../src/agent/attached/attached-report.ts';
import { type AttachedStart, startAttached } from '../src/agent/attached/attached-startup.ts';
import { createAgentVerifier } from '../src/agent/execution/agent-verifier.ts';
import { openPinnedKeys } from '../src/agent/execution/execution-keys.ts';
import { createExecutionRoles } from '../src/agent/execution/execution-role.ts';
import { REPLAY_CACHE_FILE } from '../src/agent/execution/execution-setup.ts';
import { createExecutionExecutor, type ExecutionExecutor } from '../src/agent/execution/executor.ts';
import { createReplayCache, type ReplayCache } from '../src/agent/execution/replay-cache.ts';
import type { ExplorerExecutor } from '../src/agent/explorer/explorer-executor.ts';
import { ServerError } from '../src/agent/server-client.ts';
import { type AttachedReportAnswer, attachedReportSchema } from '../src/shared/contracts/attached.ts';
import type { ExecutionOutcome } from '../src/shared/contracts/execution.ts';
import { createLogger } from '../src/shared/logger.ts';
import { loadExplorerParser } from '../src/shared/sql/explorer-validator.ts';
import { testEnv } from './helpers/env.ts';
import { createExecutionHarness, signedRequest, TEST_NODE } from './helpers/execution-agent.ts';
import {
  adminPool,
  clusterAccess,
  createTenant,
  queryPayload,
  TEST_AGENT_KEY,
  type Tenant,
  testExecutor,
} from './helpers/explorer.ts';
import { freePort } from './helpers/ports.ts';

const tag = `aa_${randomBytes(4).toString('hex')}`;
const R = { owner: `${tag}_owner`, reader: `${tag}_reader`, migrator: `${tag}_migrator` };
const DB = `${tag}_pgdb`;
const ACCOUNT = randomUUID();
const pw = { reader: randomBytes(18).toString('base64url'), migrator: randomBytes(18).toString('base64url') };
const log = createLogger('attached-agent-test', 'silent');

let admin: pg.Pool;
let root: string;
let start: AttachedStart;
let registry: AttachedRegistry;
/** The id the (fake) server gave the good entry, and the Bulwark name it is shown under. */
const SHOP_ID = randomUUID();
const SHOP = 'shop';
let explorer: ExplorerExecutor;
let h: Awaited<ReturnType<typeof createExecutionHarness>>;
let replay: ReplayCache | null = null;

async function asAdmin(database: string, sql: string): Promise<pg.QueryResult> {
  const u = new URL(testEnv().adminUrl);
  u.pathname = `/${database}`;
  const c = new pg.Client({ connectionString: u.toString() });
  await c.connect();
  try {
    return await c.query(sql);
  } finally {
    await c.end();
  }
}

const contents = async () =>
  JSON.stringify((await asAdmin(DB, 'SELECT id, qty FROM items ORDER BY id')).rows);

before(async () => {
  await loadExplorerParser();
  admin = adminPool();
  await asAdmin(
    'postgres',
    `CREATE ROLE "${R.owner}" NOLOGIN;
     CREATE ROLE "${R.reader}" LOGIN PASSWORD '${pw.reader}';
     CREATE ROLE "${R.migrator}" LOGIN PASSWORD '${pw.migrator}';`,
  );
  await asAdmin('postgres', `CREATE DATABASE "${DB}" OWNER "${R.owner}"`);
  await asAdmin(
    DB,
    `REVOKE CREATE ON SCHEMA public FROM PUBLIC;
     CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL);
     INSERT INTO items SELECT g, 0 FROM generate_series(1, 10) g;
     ALTER TABLE items OWNER TO "${R.owner}";
     GRANT USAGE ON SCHEMA public TO "${R.reader}", "${R.migrator}";
     GRANT SELECT ON items TO "${R.reader}";
     GRANT SELECT, INSERT, UPDATE ON items TO "${R.migrator}";`,
  );
  // The agent's own files: the config and the password files, 0600.
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-attached-agent-'));
  const pwFile = async (role: 'reader' | 'migrator') => {
    const file = path.join(root, `${role}.pw`);
    await fs.writeFile(file, `${pw[role]}\n`, { mode: 0o600 });
    return file;
  };
  const readerFile = await pwFile('reader');
  const migratorFile = await pwFile('migrator');
  const entry = (name: string, reader: string, readerPw: string) => ({
    name,
    account_id: ACCOUNT,
    host: '127.0.0.1',
    port: testEnv().pgPort,
    database: DB,
    reader: { user: reader, password_file: readerPw },
    migrator: { user: R.migrator, password_file: migratorFile },
  });
  const config = path.join(root, 'attached.json');
  await fs.writeFile(
    config,
    JSON.stringify({
      databases: [
        entry(SHOP, R.reader, readerFile),
        // A "reader" that can write: loaded, refused by its checks, still reported.
        entry('sloppy', R.migrator, migratorFile),
        // A password file that is not there: refused by the loader, not reported.
        entry('lost', R.reader, path.join(root, 'missing.pw')),
      ],
    }),
    { mode: 0o600 },
  );
  start = await startAttached(config, log);
  registry = createAttachedRegistry();
  explorer = testExecutor(admin, { attached: registry });
  h = await createExecutionHarness(admin);
});

after(async () => {
  await explorer?.close();
  replay?.close();
  await h?.close();
  await admin?.end();
  await asAdmin('postgres', `DROP DATABASE IF EXISTS "${DB}" WITH (FORCE)`).catch(() => {});
  for (const r of Object.values(R)) await asAdmin('postgres', `DROP ROLE IF EXISTS "${r}"`).catch(() => {});
  if (root) await fs.rm(root, { recursive: true, force: true });
});

/** What the server would answer: both reported entries registered, with ids. */
const answer = (): AttachedReportAnswer => ({
  databases: [
    { name: SHOP, account_id: ACCOUNT, database_id: SHOP_ID, status: 'attached', reason: null },
    { name: 'sloppy', account_id: ACCOUNT, database_id: randomUUID(), status: 'attached', reason: null },
  ],
});

describe('report and registry', () => {
  test('the report lists every loaded entry with its findings, and no secret at all', () => {
    const report = buildAttachedReport(start);
    assert.ok(attachedReportSchema.safeParse(report).success);
    assert.deepEqual(
      report.databases.map((d) => [d.name, d.account_id, d.ok]),
      [
        [SHOP, ACCOUNT, true],
        ['sloppy', ACCOUNT, false],
      ],
    );
    const sloppy = report.databases.find((d) => d.name === 'sloppy');
    assert.ok(
      sloppy?.findings.some(
        (f) => f.role === 'reader' && f.kind === 'table_write' && f.severity === 'refuse',
      ),
      JSON.stringify(sloppy),
    );
    assert.match(report.databases[0]?.server_version ?? '', /^\d+/);
    const json = JSON.stringify(report);
    for (const secret of [pw.reader, pw.migrator, root, '.pw', 'password', '127.0.0.1'])
      assert.ok(!json.includes(secret), `the report carries ${secret}`);
  });

  test('the report is retried until the server answers; only passed and registered entries are served', async () => {
    let calls = 0;
    const r = createAttachedRegistry();
    const got = await reportAttached(start, {
      send: async (report) => {
        calls++;
        assert.equal(report.databases.length, 2);
        if (calls < 3) throw new ServerError(503, 'unavailable');
        return answer();
      },
      registry: r,
      log,
      signal: new AbortController().signal,
      minBackoffMs: 5,
    });
    assert.equal(calls, 3);
    assert.equal(got?.databases.length, 2);
    // `sloppy` failed its checks: registered by the server or not, it is never queried.
    assert.deepEqual(
      r.describe().map((d) => [d.database_id, d.name]),
      [[SHOP_ID, SHOP]],
    );
    assert.equal(r.get(SHOP_ID)?.reader.user, R.reader);
    // A 404 (an older server) stops at once; a stopped agent stops retrying.
    let tries = 0;
    const none = await reportAttached(start, {
      send: async () => {
        tries++;
        throw new ServerError(404, 'not found');
      },
      registry: createAttachedRegistry(),
      log,
      signal: new AbortController().signal,
      minBackoffMs: 5,
    });
    assert.equal(none, null);
    assert.equal(tries, 1);
    const stop = new AbortController();
    const stopped = reportAttached(start, {
      send: async () => {
        setImmediate(() => stop.abort());
        throw new ServerError(500, 'down');
      },
      registry: createAttachedRegistry(),
      log,
      signal: stop.signal,
      minBackoffMs: 60_000,
    });
    assert.equal(await stopped, null);
    // A confused answer (one id for two names) serves neither under it.
    const confused = createAttachedRegistry();
    confused.apply(start.databases, {
      databases: [
        { name: SHOP, account_id: ACCOUNT, database_id: SHOP_ID, status: 'attached', reason: null },
        { name: SHOP, account_id: ACCOUNT, database_id: randomUUID(), status: 'attached', reason: null },
      ],
    });
    assert.equal(confused.size(), 0);
    // A refused entry, or one under another account, is not served.
    const refused = createAttachedRegistry();
    refused.apply(start.databases, {
      databases: [
        { name: SHOP, account_id: randomUUID(), database_id: SHOP_ID, status: 'attached', reason: null },
        { name: SHOP, account_id: ACCOUNT, database_id: null, status: 'refused', reason: 'name taken' },
      ],
    });
    assert.equal(refused.size(), 0);
    registry.apply(start.databases, answer());
  });
});

describe('explorer on the attached database', () => {
  test('a SELECT under the Bulwark name reads the attached database as its reader', async () => {
    assert.equal(registry.size(), 1);
    const o = await explorer.runQuery(
      queryPayload({ id: SHOP_ID, name: SHOP }, 'SELECT id, qty FROM items ORDER BY id'),
      new AbortController().signal,
    );
    assert.equal(o.kind, 'rows', JSON.stringify(o));
    if (o.kind !== 'rows') return;
    assert.equal(o.output.row_count, 10);
    assert.deepEqual(o.output.rows[0], [1, 0]);
    await explorer.settled();
    const probe = await explorer.probeSession({ database_id: SHOP_ID, name: SHOP });
    assert.deepEqual(probe, {
      prepared: 0,
      advisory: 0,
      listening: 0,
      cursors: 0,
      temp: 0,
      readOnlyDefault: 'on',
      user: R.reader,
    });
  });

  test('a write is refused by the gate, and by the read-only session when the gate is bypassed', async () => {
    const before = await contents();
    const gated = await explorer.runQuery(
      queryPayload({ id: SHOP_ID, name: SHOP }, 'UPDATE items SET qty = 9'),
      new AbortController().signal,
    );
    assert.equal(gated.kind, 'error');
    if (gated.kind === 'error') assert.equal(gated.error.refused, true);
    const open = testExecutor(admin, {
      attached: registry,
      validate: () => ({ ok: true as const, kind: 'select' as const, redacted: '' }),
    });
    try {
      const locked = await open.runQuery(
        queryPayload({ id: SHOP_ID, name: SHOP }, 'SELECT * FROM items FOR UPDATE'),
        new AbortController().signal,
      );
      assert.equal(locked.kind, 'error', JSON.stringify(locked));
      if (locked.kind === 'error') assert.equal(locked.error.sqlstate, '25006');
    } finally {
      await open.close();
    }
    assert.equal(await contents(), before);
  });

  test('the schema lists the attached table; a cancel reaches the attached server', async () => {
    const schema = await explorer.readSchema({ database_id: SHOP_ID, name: SHOP });
    assert.deepEqual(
      schema.tables.map((t) => [t.name, t.columns.map((c) => c.name)]),
      [['items', ['id', 'qty']]],
    );
    // pg_sleep is refused by the gate: the run-time layers alone (the cancel) are tested here.
    const open = testExecutor(admin, {
      attached: registry,
      validate: () => ({ ok: true as const, kind: 'select' as const, redacted: '' }),
    });
    try {
      const ac = new AbortController();
      const started = Date.now();
      setTimeout(() => ac.abort(), 300);
      const o = await open.runQuery(
        queryPayload({ id: SHOP_ID, name: SHOP }, 'SELECT pg_sleep(20)', { statement_timeout_ms: 20_000 }),
        ac.signal,
      );
      assert.equal(o.kind, 'error', JSON.stringify(o));
      if (o.kind === 'error') assert.equal(o.error.sqlstate, '57014');
      assert.ok(Date.now() - started < 15_000, 'the statement ran to its end: the cancel never reached it');
    } finally {
      await open.close();
    }
  });
});

test('a refused reader login is an error naming the attached database, never the password', async () => {
  const db = registry.get(SHOP_ID) as AttachedDatabase;
  const wrong = `not-the-password-${randomBytes(6).toString('hex')}`;
  const broken: AttachedDatabase = { ...db, reader: { user: R.reader, password: wrong } };
  const e = testExecutor(admin, { attached: { get: (id) => (id === SHOP_ID ? broken : null) } });
  try {
    const says = (err: unknown) => {
      const message = (err as Error).message;
      assert.match(
        message,
        new RegExp(`attached database ${SHOP}: its read-only role ${R.reader} could not log in`),
      );
      assert.ok(!message.includes(wrong) && !message.includes(pw.reader), message);
      return true;
    };
    await assert.rejects(
      e.runQuery(queryPayload({ id: SHOP_ID, name: SHOP }, 'SELECT 1'), new AbortController().signal),
      says,
    );
    await assert.rejects(e.readSchema({ database_id: SHOP_ID, name: SHOP }), says);
  } finally {
    await e.close();
  }
});

test('an id the registry does not hold is never served under a hosted database of the same name', async () => {
  // An attached database's Bulwark name may be a hosted database's name on this node; asked before
  // the server's answer registered it, neither its schema nor a query reaches the hosted one.
  const t = await createTenant(admin, 'aa');
  try {
    await t.asOwner('CREATE TABLE private_stuff (x int)');
    const stranger = randomUUID();
    await assert.rejects(explorer.readSchema({ database_id: stranger, name: t.name }), /is not ours/);
    await assert.rejects(
      explorer.runQuery(
        queryPayload({ id: stranger, name: t.name }, 'SELECT 1'),
        new AbortController().signal,
      ),
      /not this database's|is not ours/,
    );
    // Its own id still reads it (the hosted path is unchanged).
    const own = await explorer.readSchema({ database_id: t.id, name: t.name });
    assert.deepEqual(
      own.tables.map((x) => x.name),
      ['private_stuff'],
    );
    await explorer.settled();
  } finally {
    await explorer.close();
    explorer = testExecutor(admin, { attached: registry });
    await t.drop();
  }
});

test('a cancel to an attached server is never sent in clear text when TLS is asked for', async () => {
  const ssl = (await asAdmin('postgres', 'SHOW ssl')).rows[0]?.ssl;
  const target = { host: '127.0.0.1', port: testEnv().pgPort, sslmode: 'require' as const };
  if (ssl === 'off')
    await assert.rejects(cancelAttachedBackend(target, 1, 1), /refused TLS: cancel not sent/);
  else await cancelAttachedBackend(target, 1, 1);
  // Nor a login: a server without TLS gets no startup packet when TLS is asked for.
  if (ssl === 'off') {
    const db = registry.get(SHOP_ID) as AttachedDatabase;
    const e = testExecutor(admin, {
      attached: { get: (id) => (id === SHOP_ID ? { ...db, sslmode: 'require' } : null) },
    });
    try {
      await assert.rejects(
        e.runQuery(queryPayload({ id: SHOP_ID, name: SHOP }, 'SELECT 1'), new AbortController().signal),
        /does not offer TLS/,
      );
    } finally {
      await e.close();
    }
  }
  // Nothing listens: an error, not a hang.
  await assert.rejects(
    cancelAttachedBackend({ ...target, port: await freePort(), sslmode: 'disable' }, 1, 1),
  );
});

describe('governed execution on the attached database', () => {
  let ex: ExecutionExecutor;
  const executor = async (attached: Pick<AttachedRegistry, 'get'>): Promise<ExecutionExecutor> => {
    replay?.close();
    replay = createReplayCache({ file: path.join(h.stateDir, REPLAY_CACHE_FILE), maxEntries: 1_000 });
    const keys = await openPinnedKeys({ stateDir: h.stateDir, fetchKeys: null, log });
    const access = clusterAccess(TEST_AGENT_KEY);
    return createExecutionExecutor({
      verifier: createAgentVerifier({
        keys,
        nodeId: TEST_NODE,
        capabilities: ['reader', 'migrator'],
        replay,
      }),
      roles: createExecutionRoles({ admin, key: TEST_AGENT_KEY }),
      admin,
      pgHost: access.pgHost,
      pgPort: access.pgPort,
      log,
      attached,
    });
  };
  const shop = { id: SHOP_ID, name: SHOP } as Tenant;
  const WRITE = 'UPDATE items SET qty = qty + 1 WHERE id <= 3';

  test('an approved UPDATE runs as the migrator; a reader-capability request cannot write', async () => {
    ex = await executor(registry);
    const o: ExecutionOutcome = await ex.execute(
      signedRequest(h.ring, shop, { sql: WRITE, approvedRows: 3 }),
      new AbortController().signal,
    );
    assert.equal(o.kind, 'executed', JSON.stringify(o));
    if (o.kind === 'executed') {
      assert.equal(o.committed, true);
      assert.equal(o.affected_rows, 3);
    }
    const who = await ex.execute(
      signedRequest(h.ring, shop, { sql: 'SELECT current_user::text AS who', capability: 'migrator' }),
      new AbortController().signal,
    );
    assert.equal(who.kind, 'executed', JSON.stringify(who));
    if (who.kind === 'executed') assert.deepEqual(who.result?.rows, [[R.migrator]]);
    const after = await contents();
    assert.deepEqual(JSON.parse(after).slice(0, 4), [
      { id: 1, qty: 1 },
      { id: 2, qty: 1 },
      { id: 3, qty: 1 },
      { id: 4, qty: 0 },
    ]);
    const r = await ex.execute(
      signedRequest(h.ring, shop, { sql: WRITE, capability: 'reader', approvedRows: 3 }),
      new AbortController().signal,
    );
    assert.equal(r.kind, 'failed', JSON.stringify(r));
    if (r.kind === 'failed') assert.equal(r.error.sqlstate, '25006');
    assert.equal(await contents(), after);
    await ex.close();
  });

  test('a cancel stops an attached execution on its own server', async () => {
    ex = await executor(registry);
    const ac = new AbortController();
    const started = Date.now();
    setTimeout(() => ac.abort(), 300);
    const o = await ex.execute(
      signedRequest(h.ring, shop, {
        sql: 'SELECT pg_sleep(20)',
        capability: 'reader',
        statementTimeoutMs: 30_000,
      }),
      ac.signal,
    );
    assert.equal(o.kind, 'failed', JSON.stringify(o));
    if (o.kind === 'failed') assert.equal(o.error.sqlstate, '57014');
    assert.ok(Date.now() - started < 15_000, 'the statement ran to its end: the cancel never reached it');
    await ex.close();
  });

  test('a refused login on an attached database is a `database` refusal naming no password', async () => {
    const db = registry.get(SHOP_ID) as AttachedDatabase;
    const wrong = `not-the-password-${randomBytes(6).toString('hex')}`;
    const broken: AttachedDatabase = { ...db, migrator: { user: R.migrator, password: wrong } };
    ex = await executor({ get: (id) => (id === SHOP_ID ? broken : null) });
    const before = await contents();
    const o = await ex.execute(
      signedRequest(h.ring, shop, { sql: WRITE, approvedRows: 3 }),
      new AbortController().signal,
    );
    assert.equal(o.kind, 'refused', JSON.stringify(o));
    if (o.kind === 'refused') {
      assert.equal(o.refusal.reason, 'database');
      assert.match(o.refusal.message, new RegExp(`attached database ${SHOP}`));
      assert.ok(!o.refusal.message.includes(wrong));
      assert.ok(!o.refusal.message.includes(pw.migrator));
    }
    assert.equal(await contents(), before);
    await ex.close();
  });
});
