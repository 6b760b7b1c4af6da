import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import type { RunningAgent } from '../src/agent/main.ts';
import { startTestAgent } from './helpers/agent.ts';
import { adminQuery } from './helpers/db.ts';
import { testEnv } from './helpers/env.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { type PrivatePooler, startPrivatePooler } from './pooler-harness.ts';

// Drift end to end: HTTP (operator token) and `bulwark doctor [--fix]` → job → a real agent.
const CLI = path.resolve(import.meta.dirname, '../src/cli/index.ts');
const OPERATOR = `op_${randomBytes(24).toString('hex')}`;
let pooler: PrivatePooler;
let s: TestServer;
let agent: RunningAgent;
let key: TestKey;
let tmp: string;
let nodeId: string;
const cleanup: string[] = [];
before(async () => {
  pooler = await startPrivatePooler();
  s = await createTestServer({ poolerPort: pooler.port, poolerSslmode: 'disable', operatorToken: OPERATOR });
  const url = await s.app.listen({ host: '127.0.0.1', port: 0 });
  agent = await startTestAgent(s, url, { name: 'drift1', pooler });
  key = await createTestKey(s, { account: 'drift' });
  nodeId = (await s.db.pool.query("SELECT id FROM nodes WHERE name = 'drift1'")).rows[0].id;
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-doctor-'));
  await fs.mkdir(path.join(tmp, 'data', 'secrets'), { recursive: true, mode: 0o700 });
  await fs.writeFile(path.join(tmp, 'data', 'secrets', 'control-database-url'), `${s.db.url}\n`, {
    mode: 0o600,
  });
});
after(async () => {
  for (const sql of cleanup.reverse()) await adminQuery(sql).catch(() => {});
  await agent?.stop();
  s?.app.server.closeAllConnections();
  await s?.stop();
  await pooler?.stop();
  if (tmp) await fs.rm(tmp, { recursive: true, force: true });
});

type Finding = { kind: string; object: string; detail: string };
type Run = { code: number; stdout: string; stderr: string };
const doctor = (args: string[]): Promise<Run> =>
  new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, 'doctor', '--data-dir', path.join(tmp, 'data'), '--node', 'drift1', '--json', ...args],
      { env: { PATH: process.env.PATH ?? '', HOME: tmp }, timeout: 30_000 },
      (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });

test('drift: HTTP and `bulwark doctor` report what we did not make; --fix repairs only ours', async () => {
  const name = `dr_${randomBytes(4).toString('hex')}`;
  const api = (method: 'GET' | 'POST', url: string, payload?: Record<string, unknown>) =>
    s.app.inject({ method, url, headers: key.headers, ...(payload ? { payload } : {}) });
  assert.equal((await api('POST', '/v1/databases', { name })).statusCode, 202);
  const deadline = Date.now() + 15_000;
  for (;;) {
    const d = (await api('GET', `/v1/databases/${name}`)).json();
    assert.notEqual(d.status, 'failed', d.failure_reason);
    if (d.status === 'ready') break;
    assert.ok(Date.now() < deadline, 'database ready in time');
    await new Promise((r) => setTimeout(r, 20));
  }

  // Drift speaks of the names on the node: the generated one, never the label (ADR 0039).
  const db = (await api('GET', `/v1/databases/${name}/connection`)).json().database as string;
  assert.match(db, /^bulwark_db_/);

  const url = `/v1/nodes/${nodeId}/drift`;
  const drift = (token?: string) =>
    s.app.inject({ method: 'GET', url, headers: token ? { authorization: `Bearer ${token}` } : {} });
  // Only the operator token opens it: no token, a wrong one, or a tenant's admin API key → 401.
  assert.equal((await drift()).statusCode, 401);
  assert.equal((await drift(`${OPERATOR}x`)).statusCode, 401);
  assert.equal((await api('GET', url)).statusCode, 401);
  const mineOf = (f: Finding[], extra: string[]) =>
    f.filter((x) => x.object === db || x.object === `${db}.public` || extra.includes(x.object));
  const kinds = (f: Finding[]) => [...new Set(f.map((x) => `${x.kind}:${x.object}`))].sort();
  const clean = await drift(OPERATOR);
  assert.equal(clean.statusCode, 200, clean.body);
  assert.deepEqual(mineOf(clean.json().findings, []), [], 'a fresh database has no drift');

  const stray = `stray_${randomBytes(4).toString('hex')}`;
  const sneaky = `sneaky_${randomBytes(4).toString('hex')}`;
  const unknown = `unk_${randomBytes(4).toString('hex')}`;
  cleanup.push(`DROP ROLE IF EXISTS ${stray}`, `DROP ROLE IF EXISTS ${sneaky}`);
  cleanup.push(`REVOKE ALL ON DATABASE ${db} FROM ${stray}`, `DROP DATABASE IF EXISTS ${unknown}`);
  await adminQuery(`CREATE ROLE ${stray} LOGIN`);
  await adminQuery(`CREATE ROLE ${sneaky} SUPERUSER`);
  await adminQuery(`CREATE DATABASE ${unknown}`);
  await adminQuery(`GRANT CONNECT, TEMP ON DATABASE ${db} TO PUBLIC`);
  await adminQuery(`GRANT CONNECT ON DATABASE ${db} TO ${stray}`);
  await adminQuery(`REVOKE CONNECT ON DATABASE ${db} FROM ${db}_reader`);
  const dbUrl = new URL(testEnv().adminUrl);
  dbUrl.pathname = `/${db}`;
  const inDb = new pg.Client({ connectionString: dbUrl.toString() });
  await inDb.connect();
  await inDb.query('GRANT USAGE, CREATE ON SCHEMA public TO PUBLIC');
  await inDb.query(`REVOKE CREATE ON SCHEMA public FROM ${db}_migrator`);
  await inDb.end();
  const extra = [stray, sneaky, unknown];
  const expected = [
    `missing_grant:${db}`,
    `missing_grant:${db}.public`,
    `public_database_privilege:${db}`,
    `public_schema_privilege:${db}.public`,
    `unexpected_grant:${db}`,
    `unexpected_role:${sneaky}`,
    `unexpected_role:${stray}`,
    `unexpected_superuser:${sneaky}`,
    `unknown_database:${unknown}`,
  ].sort();
  const found = await drift(OPERATOR);
  assert.equal(found.statusCode, 200);
  assert.equal(found.json().clean, false);
  assert.deepEqual(kinds(mineOf(found.json().findings, extra)), expected);

  const report = await doctor([]);
  assert.equal(report.code, 1, `findings exit 1: ${report.stderr}`);
  const r1 = JSON.parse(report.stdout);
  assert.equal(r1.nodes[0].node.name, 'drift1');
  assert.deepEqual(kinds(mineOf(r1.nodes[0].findings, extra)), expected);

  const fixed = await doctor(['--fix']);
  const r2 = JSON.parse(fixed.stdout);
  assert.ok(r2.nodes[0].fixed.includes(db), 'our database was repaired');
  assert.deepEqual(
    kinds(mineOf(r2.nodes[0].findings, extra)),
    [
      `unexpected_role:${sneaky}`,
      `unexpected_role:${stray}`,
      `unexpected_superuser:${sneaky}`,
      `unknown_database:${unknown}`,
    ].sort(),
    'ours repaired; foreign objects only reported',
  );
  const still = await adminQuery(`SELECT 1 FROM pg_database WHERE datname = '${unknown}'`);
  assert.equal(still.length, 1, 'the unknown database is reported, never dropped');
  const after = await drift(OPERATOR);
  assert.deepEqual(kinds(mineOf(after.json().findings, [])), [], 'no drift left on our database');

  assert.equal((await doctor(['--node', 'nope'])).code, 6, 'unknown node: exit 6');
});

test("drift: a tenant's row on another database (`ALTER ROLE self IN DATABASE …`) is drift of its own role, never of that database", async () => {
  const other = await createTestKey(s, { account: 'drift-b' });
  const ready = async (k: TestKey, name: string) => {
    const r = await s.app.inject({
      method: 'POST',
      url: '/v1/databases',
      headers: k.headers,
      payload: { name, wait_ms: 30_000, reveal: true },
    });
    assert.equal(r.statusCode, 201, r.body);
    assert.equal(r.json().status, 'ready', r.body);
    return r.json().credentials as { password: string; connection: { user: string; database: string } };
  };
  const mine = await ready(key, `dra_${randomBytes(4).toString('hex')}`);
  const theirs = await ready(other, `drb_${randomBytes(4).toString('hex')}`);
  const c = new pg.Client({
    host: '127.0.0.1',
    port: pooler.port,
    user: mine.connection.user,
    database: mine.connection.database,
    password: mine.password,
  });
  await c.connect();
  try {
    // Vanilla PostgreSQL lets any role set its own defaults in any database.
    await c.query(
      `ALTER ROLE CURRENT_USER IN DATABASE "${theirs.connection.database}" SET work_mem = '1234kB'`,
    );
  } finally {
    await c.end();
  }
  const found = await s.app.inject({
    method: 'GET',
    url: `/v1/nodes/${nodeId}/drift`,
    headers: { authorization: `Bearer ${OPERATOR}` },
  });
  assert.equal(found.statusCode, 200, found.body);
  const findings = found.json().findings as Finding[];
  // It never applies there (no CONNECT): the other tenant's database shows nothing.
  assert.deepEqual(
    findings.filter((f) => f.object === theirs.connection.database),
    [],
  );
  assert.ok(
    findings.some(
      (f) =>
        f.kind === 'role_setting' &&
        f.object === mine.connection.user &&
        f.detail.includes(`in database ${theirs.connection.database}`),
    ),
    JSON.stringify(findings),
  );
});

test('drift: an unreachable node is a bounded 503, and the abandoned job never runs later', async () => {
  const ghost = await s.db.pool.query<{ id: string }>(
    "INSERT INTO nodes (name) VALUES ('ghost_node') RETURNING id",
  );
  const id = ghost.rows[0]!.id;
  const { createDriftService } = await import('../src/server/modules/drift/drift.service.ts');
  const t0 = Date.now();
  await assert.rejects(
    createDriftService({ db: s.db.pool }).check(id, { fix: true, timeoutMs: 300 }),
    /did not answer/,
  );
  assert.ok(Date.now() - t0 < 3_000, 'bounded wait');
  const j = await s.db.pool.query("SELECT status FROM jobs WHERE node_id = $1 AND kind = 'node.drift_fix'", [
    id,
  ]);
  assert.equal(j.rows[0].status, 'dead');
});
