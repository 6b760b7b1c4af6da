/**
 * Attached databases end to end (issue 17, ADR 0031): a listening test server and a real agent
 * started with an attached-databases file (BULWARK_AGENT_ATTACHED_CONFIG's setting) naming a
 * database on the test cluster that Bulwark did not make. The agent checks the roles, reports,
 * the server registers it as `attached` on the agent's node, where it waits (`provisioning`,
 * `attached.accepted_at` null; the explorer answers 409) until an admin key of the account accepts
 * it (`ready`); then the explorer queries it through
 * the API (the explorer channel and the job queue) as its read-only role: rows come back, the
 * schema lists its table, a write is refused and the table is unchanged.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { agentConfigSchema } from '../src/agent/config.ts';
import { type RunningAgent, startAgent } from '../src/agent/main.ts';
import { createLogger } from '../src/shared/logger.ts';
import { testEnv } from './helpers/env.ts';
import { until } from './helpers/explorer-stack.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { api, expectStatus, person } from './requests-helpers.ts';

const tag = `ae_${randomBytes(4).toString('hex')}`;
const R = { owner: `${tag}_owner`, reader: `${tag}_reader`, migrator: `${tag}_migrator` };
const DB = `${tag}_pgdb`;
const NAME = `legacy_${randomBytes(3).toString('hex')}`;
const NODE = `${tag}-node`;
const pw = { reader: randomBytes(18).toString('base64url'), migrator: randomBytes(18).toString('base64url') };

let s: TestServer;
let url: string;
let key: TestKey;
let agent: RunningAgent | null = null;
let root: string;
let config: string;

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

async function startAttachedAgent(explorerChannel: boolean): Promise<RunningAgent> {
  const { token } = await s.nodes.createEnrollment(NODE, 10);
  const stateDir = await fs.mkdtemp(path.join(root, 'agent-'));
  const started = await startAgent(
    agentConfigSchema.parse({
      serverUrl: url,
      stateDir,
      enrollmentToken: token,
      adminDatabaseUrl: testEnv().adminUrl,
      logLevel: 'silent',
      pollWaitMs: 20_000,
      explorerChannel,
      warmPoolSize: 0,
      attachedConfig: config,
    }),
    { log: createLogger('agent', 'silent') },
  );
  if (explorerChannel) await started.explorerChannelOpen();
  return started;
}

before(async () => {
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
     CREATE TABLE ledger (id int PRIMARY KEY, amount numeric(10, 2) NOT NULL);
     INSERT INTO ledger VALUES (1, 10.50), (2, 20.00), (3, 7.25);
     ALTER TABLE ledger OWNER TO "${R.owner}";
     GRANT USAGE ON SCHEMA public TO "${R.reader}", "${R.migrator}";
     GRANT SELECT ON ledger TO "${R.reader}";
     GRANT SELECT, INSERT, UPDATE ON ledger TO "${R.migrator}";`,
  );
  s = await createTestServer({});
  url = await s.app.listen({ host: '127.0.0.1', port: 0 });
  key = await createTestKey(s, { account: `${tag}_acct` });
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-attached-e2e-'));
  const pwFile = async (role: 'reader' | 'migrator') => {
    const file = path.join(root, `${role}.pw`);
    await fs.writeFile(file, `${pw[role]}\n`, { mode: 0o600 });
    return file;
  };
  const db = {
    name: NAME,
    account_id: key.accountId,
    host: '127.0.0.1',
    port: testEnv().pgPort,
    database: DB,
    reader: { user: R.reader, password_file: await pwFile('reader') },
    migrator: { user: R.migrator, password_file: await pwFile('migrator') },
  };
  config = path.join(root, 'attached.json');
  await fs.writeFile(config, JSON.stringify({ databases: [db] }), { mode: 0o600 });
});

after(async () => {
  await agent?.stop();
  await s?.stop();
  await asAdmin('postgres', `DROP DATABASE IF EXISTS "${DB}" WITH (FORCE)`).catch(() => {});
  for (const r of Object.values(R)) await asAdmin('postgres', `DROP ROLE IF EXISTS "${r}"`).catch(() => {});
  if (root) await fs.rm(root, { recursive: true, force: true });
});

const call = (method: 'GET' | 'POST', route: string, payload?: object) =>
  s.app.inject({
    method,
    url: route,
    headers: key.headers as Record<string, string>,
    ...(payload ? { payload } : {}),
  });

const ledger = async () => JSON.stringify((await asAdmin(DB, 'SELECT * FROM ledger ORDER BY id')).rows);

async function explorerWorks(): Promise<void> {
  const before = await ledger();
  const r = await call('POST', `/v1/databases/${NAME}/explorer/query`, {
    sql: 'select id, amount from ledger order by id',
  });
  assert.equal(r.statusCode, 200, r.body);
  assert.deepEqual(r.json().rows, [
    [1, '10.50'],
    [2, '20.00'],
    [3, '7.25'],
  ]);
  const schema = await call('GET', `/v1/databases/${NAME}/explorer/schema`);
  assert.equal(schema.statusCode, 200, schema.body);
  assert.deepEqual(
    (schema.json().tables as { name: string }[]).map((t) => t.name),
    ['ledger'],
  );
  const write = await call('POST', `/v1/databases/${NAME}/explorer/query`, {
    sql: 'update ledger set amount = 0',
  });
  assert.equal(write.statusCode, 400, write.body);
  const locked = await call('POST', `/v1/databases/${NAME}/explorer/query`, {
    sql: 'select * from ledger for update',
  });
  assert.equal(locked.statusCode, 400, locked.body);
  assert.equal(await ledger(), before);
}

test('a real agent reports its attached database; the server registers it on the node; the explorer queries it', async () => {
  agent = await startAttachedAgent(true);
  await until(
    'the attached database offered',
    async () => {
      const r = await call('GET', `/v1/databases/${NAME}`);
      return r.statusCode === 200 && r.json().kind === 'attached';
    },
    30_000,
  );
  // A node offers, the account decides: it waits, and nothing reaches the node meanwhile.
  const waiting = (await call('GET', `/v1/databases/${NAME}`)).json();
  assert.equal(waiting.status, 'provisioning');
  assert.equal(waiting.attached.accepted_at, null);
  const early = await call('POST', `/v1/databases/${NAME}/explorer/query`, { sql: 'select 1 as one' });
  assert.equal(early.statusCode, 409, early.body);
  const accepted = await call('POST', `/v1/databases/${NAME}/attachment/accept`);
  assert.equal(accepted.statusCode, 200, accepted.body);
  assert.equal(accepted.json().status, 'ready', 'its checks passed');
  assert.ok(accepted.json().attached.accepted_at);
  const one = (await call('GET', `/v1/databases/${NAME}`)).json();
  assert.equal(one.status, 'ready');
  assert.equal(one.node, NODE);
  assert.ok(
    !JSON.stringify(one).includes(pw.reader) && !JSON.stringify(one).includes(root),
    'a secret left the agent',
  );
  await explorerWorks();
});

test('after an agent restart (the report again, same id), through the job queue', async () => {
  const id = (await call('GET', `/v1/databases/${NAME}`)).json().id as string;
  await agent?.stop();
  agent = null;
  // Same node name, a new enrollment is a new node: the restart keeps the state dir instead.
  agent = await startAttachedAgentAgain(false);
  await until(
    'the attached database served again',
    async () => {
      const r = await call('POST', `/v1/databases/${NAME}/explorer/query`, { sql: 'select 1 as one' });
      return r.statusCode === 200;
    },
    30_000,
  );
  assert.equal((await call('GET', `/v1/databases/${NAME}`)).json().id, id);
  await explorerWorks();
});

let firstStateDir: string | null = null;
async function startAttachedAgentAgain(
  explorerChannel: boolean,
  recheckSeconds?: number,
): Promise<RunningAgent> {
  firstStateDir ??= (await fs.readdir(root)).find((d) => d.startsWith('agent-')) ?? null;
  assert.ok(firstStateDir);
  return startAgent(
    agentConfigSchema.parse({
      serverUrl: url,
      stateDir: path.join(root, firstStateDir),
      adminDatabaseUrl: testEnv().adminUrl,
      logLevel: 'silent',
      pollWaitMs: 20_000,
      explorerChannel,
      warmPoolSize: 0,
      attachedConfig: config,
      ...(recheckSeconds ? { attachedRecheckSeconds: recheckSeconds } : {}),
    }),
    { log: createLogger('agent', 'silent') },
  );
}

test('governed SQL on the attached database: dry run and execution as its migrator, reads as its reader', async () => {
  const http = api(s);
  const requester = await person(s, key.accountId, 'member', `${tag}-req`);
  const approver = await person(s, key.accountId, 'member', `${tag}-appr`);
  const before = await ledger();
  const created = expectStatus(
    await http.create(NAME, requester.headers, {
      sql: 'UPDATE ledger SET amount = amount + 1 WHERE id <= 2',
      reason: 'correction',
    }),
    201,
  );
  assert.equal(created.dry_run_error, null, JSON.stringify(created.dry_run_error));
  assert.equal((created.dry_run as { affected_rows: number }).affected_rows, 2);
  assert.equal(await ledger(), before, 'the dry run changed nothing');
  const id = created.id as string;
  expectStatus(await http.act(NAME, id, 'approve', approver.headers, { comment: 'ok' }), 200);
  const done = expectStatus(await http.act(NAME, id, 'execute', requester.headers), 200);
  assert.equal(done.status, 'executed', JSON.stringify(done.last_execution));
  assert.deepEqual((await asAdmin(DB, 'SELECT amount FROM ledger ORDER BY id')).rows, [
    { amount: '11.50' },
    { amount: '21.00' },
    { amount: '7.25' },
  ]);
  // A read runs as the reader (its session is read only, and it is that role).
  const read = expectStatus(
    await http.create(NAME, requester.headers, { sql: 'SELECT current_user::text AS who', reason: 'look' }),
    201,
  );
  const ran =
    read.status === 'executed'
      ? read
      : expectStatus(await http.act(NAME, read.id as string, 'execute', requester.headers), 200);
  assert.equal(ran.status, 'executed', JSON.stringify(ran));
  const result = expectStatus(await http.result(NAME, read.id as string, requester.headers), 200);
  assert.deepEqual(result.rows, [[R.reader]]);
});

test('the roles are checked again while the agent runs: a write granted to the reader later fails the database, revoking it brings it back', async () => {
  await agent?.stop();
  agent = null;
  agent = await startAttachedAgentAgain(false, 1);
  const status = async () => (await call('GET', `/v1/databases/${NAME}`)).json().status as string;
  await until('served again', async () => (await status()) === 'ready', 30_000);
  // Another administrator of that database grants the read-only role a write, after the start.
  await asAdmin(DB, `GRANT UPDATE ON ledger TO "${R.reader}"`);
  try {
    await until('failed by the next check', async () => (await status()) === 'failed', 30_000);
    const one = (await call('GET', `/v1/databases/${NAME}`)).json();
    assert.ok(
      (one.attached.findings as { kind: string; severity: string }[]).some(
        (f) => f.kind === 'table_write' && f.severity === 'refuse',
      ),
      JSON.stringify(one.attached.findings),
    );
    const q = await call('POST', `/v1/databases/${NAME}/explorer/query`, { sql: 'select 1 as one' });
    assert.equal(q.statusCode, 409, q.body);
  } finally {
    await asAdmin(DB, `REVOKE UPDATE ON ledger FROM "${R.reader}"`);
  }
  await until('ready again after the revoke', async () => (await status()) === 'ready', 30_000);
  // A file refused as a whole (here: readable by others) says nothing about its entries: the next
  // checks report nothing, and the accepted database is neither detached nor offered again.
  await fs.chmod(config, 0o644);
  try {
    await new Promise((r) => setTimeout(r, 3_000)); // at least two recheck rounds of 1 s
    const one = (await call('GET', `/v1/databases/${NAME}`)).json();
    assert.equal(one.status, 'ready', JSON.stringify(one));
    assert.ok(one.attached.accepted_at, 'still the accepted database');
  } finally {
    await fs.chmod(config, 0o600);
  }
  await until(
    'served again',
    async () =>
      (await call('POST', `/v1/databases/${NAME}/explorer/query`, { sql: 'select 1 as one' })).statusCode ===
      200,
    30_000,
  );
});
