import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import type { ExplorerExecutor } from '../src/agent/explorer/explorer-executor.ts';
import type { DatabaseJobDeps } from '../src/agent/jobs/database-common.ts';
import { defaultHandlers } from '../src/agent/jobs/registry.ts';
import type { RunningAgent } from '../src/agent/main.ts';
import { runDoctor } from '../src/cli/commands/doctor.ts';
import { enqueueJob } from '../src/server/modules/jobs/jobs.repo.ts';
import { roleNames } from '../src/shared/identifiers.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import { startTestAgent } from './helpers/agent.ts';
import { adminQuery, waitForLogFlush } from './helpers/db.ts';
import { testEnv } from './helpers/env.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { platformSqlCatalog, siteOf } from './helpers/platform-sql-catalog.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { type Planted, plantShadows, SHADOW_MARK, shadowRuns } from './helpers/shadow-plant.ts';
import { type PrivatePooler, startPrivatePooler } from './pooler-harness.ts';

// Issue 10, critical: a tenant owner plants shadows of every catalog function and operator the
// platform's SQL uses (the list is generated from the source) in `public` and in a schema of its
// own, points the database's and its own role's search_path (and other settings) at them, and then
// every agent job kind, the explorer (channel and queue, query and schema), drift and
// `doctor --fix` run against that database. Nothing planted may run as any role but the tenant's.
const ROOT = path.resolve(import.meta.dirname, '..');
const OPERATOR = `op_${randomBytes(24).toString('hex')}`;
const NODE = 'shadow1';
const TOKEN = `t${randomBytes(6).toString('hex')}`;
let pooler: PrivatePooler;
let s: TestServer;
let url: string;
let agent: RunningAgent;
let key: TestKey;
let nodeId: string;
let touchDir: string;
let logFile: string;
let logStart = 0;
let tenant: string | undefined;
const report = (line: string) => process.stdout.write(`[shadow] ${line}\n`);

before(async () => {
  logFile = path.join(testEnv().dataDir, 'logs', 'postgres.log');
  logStart = (await fs.stat(logFile)).size;
  touchDir = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-shadow-'));
  await fs.chmod(touchDir, 0o777);
  pooler = await startPrivatePooler();
  s = await createTestServer({ poolerPort: pooler.port, poolerSslmode: 'disable', operatorToken: OPERATOR });
  url = await s.app.listen({ host: '127.0.0.1', port: 0 });
  agent = await startTestAgent(s, url, { name: NODE, pooler });
  await agent.explorerChannelOpen();
  key = await createTestKey(s, { account: 'shadow' });
  nodeId = (await s.db.pool.query('SELECT id FROM nodes WHERE name = $1', [NODE])).rows[0].id;
});

after(async () => {
  await agent?.stop();
  s?.app.server.closeAllConnections();
  await s?.stop();
  await pooler?.stop();
  const pwned = await adminQuery<{ rolname: string }>(
    "SELECT rolname FROM pg_roles WHERE rolname LIKE 'bulwark\\_pwned\\_%'",
  ).catch(() => []);
  for (const r of pwned) await adminQuery(`DROP ROLE IF EXISTS "${r.rolname}"`).catch(() => {});
  // A run that failed before its delete leaves the tenant database and roles: they go too.
  if (tenant) {
    await adminQuery(`DROP DATABASE IF EXISTS "${tenant}" WITH (FORCE)`).catch(() => {});
    const left = await adminQuery<{ rolname: string }>(
      'SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1)',
      [`${tenant}_`],
    ).catch(() => []);
    for (const r of left) await adminQuery(`DROP ROLE IF EXISTS "${r.rolname}"`).catch(() => {});
  }
  if (touchDir) await fs.rm(touchDir, { recursive: true, force: true });
});

const api = (method: 'GET' | 'POST' | 'PUT' | 'DELETE', u: string, payload?: Record<string, unknown>) =>
  s.app.inject({ method, url: u, headers: key.headers, ...(payload ? { payload } : {}) });

/** Waits (bounded) until no job of this node is queued or running. */
async function settle(ms = 30_000): Promise<void> {
  const end = Date.now() + ms;
  for (;;) {
    const r = await s.db.pool.query(
      "SELECT count(*)::int AS n FROM jobs WHERE node_id = $1 AND status IN ('queued', 'running')",
      [nodeId],
    );
    if (r.rows[0].n === 0) return;
    assert.ok(Date.now() < end, 'jobs finished in time');
    await new Promise((res) => setTimeout(res, 25));
  }
}

async function lastJob(kind: string): Promise<{ status: string; last_error: string | null } | undefined> {
  const r = await s.db.pool.query(
    'SELECT status, last_error FROM jobs WHERE node_id = $1 AND kind = $2 ORDER BY id DESC LIMIT 1',
    [nodeId, kind],
  );
  return r.rows[0];
}

/** The tenant owner's session, through PgBouncer, as a tenant would log in (`physical`: its name on the node). */
async function ownerClient(physical: string, password: string): Promise<pg.Client> {
  const c = new pg.Client({
    host: '127.0.0.1',
    port: pooler.port,
    user: roleNames(physical).owner,
    password,
    database: physical,
    connectionTimeoutMillis: 5_000,
  });
  c.on('error', () => {});
  await c.connect();
  return c;
}

/** Every job kind this agent can run (the registry, with placeholder deps: handlers are only built). */
function registryKinds(): string[] {
  const stub = {} as DatabaseJobDeps;
  return [...defaultHandlers({ database: stub, explorer: {} as ExplorerExecutor }).keys()].sort();
}

test('shadows planted by a tenant owner never run as anyone but the tenant', async () => {
  // 1. The list, generated from the source.
  const cat = await platformSqlCatalog(ROOT);
  const known = await adminQuery<{ proname: string }>(
    "SELECT DISTINCT proname FROM pg_proc WHERE pronamespace = 'pg_catalog'::regnamespace",
  );
  const inCatalog = new Set(known.map((r) => r.proname));
  const functions = [...cat.functions.keys()].filter((n) => inCatalog.has(n)).sort();
  const knownOps = await adminQuery<{ oprname: string }>(
    "SELECT DISTINCT oprname FROM pg_operator WHERE oprnamespace = 'pg_catalog'::regnamespace",
  );
  const opsInCatalog = new Set(knownOps.map((r) => r.oprname));
  const operators = [...cat.operators.keys()].filter((o) => opsInCatalog.has(o)).sort();
  report(
    `generator: ${cat.files.length} files, ${cat.parsed} SQL texts parsed, ${cat.unparsed.length} by regex`,
  );
  report(`functions (${functions.length}): ${functions.join(' ')}`);
  report(`operators (${operators.length}): ${operators.join(' ')}`);
  // Cast types resolved through search_path (written unqualified somewhere): shadowed by domains.
  const types = [...cat.types].filter(([, sites]) => sites.some((x) => x.qualified === null)).map(([t]) => t);
  report(`cast types (${types.length}): ${types.join(' ')}`);
  assert.ok(cat.files.length >= 10, `the generator scanned only ${cat.files.length} files`);
  assert.ok(
    functions.length + operators.length >= 15,
    `suspiciously few names (${functions.length} functions, ${operators.length} operators): the generator scans nothing`,
  );
  for (const must of ['format_type', 'pg_get_userbyid', '='])
    assert.ok(functions.includes(must) || operators.includes(must), `the generator misses ${must}`);

  // 2. A tenant database made through the platform, reached by its owner through PgBouncer.
  const name = `sh_${randomBytes(4).toString('hex')}`;
  assert.equal((await api('POST', '/v1/databases', { name })).statusCode, 202);
  await settle();
  const db = (await api('GET', `/v1/databases/${name}`)).json();
  assert.equal(db.status, 'ready', db.failure_reason);
  // `name` is the label (the API's); `phys` its generated name on the node (ADR 0039).
  const phys = (await api('GET', `/v1/databases/${name}/connection`)).json().database as string;
  assert.match(phys, /^bulwark_db_/);
  const roles = roleNames(phys);
  tenant = phys;
  const put = await api('PUT', `/v1/databases/${name}/allowlist`, { entries: [{ cidr: '127.0.0.1/32' }] });
  assert.equal(put.statusCode, 200, put.body);
  await settle();
  const password = (await api('POST', `/v1/databases/${name}/credentials/reveal`)).json().password as string;
  const owner = await ownerClient(phys, password);

  // 3. Plant the shadows (public and a schema of the tenant's own), then the settings.
  let planted: Planted;
  let plantInput: Parameters<typeof plantShadows>[1] | undefined;
  try {
    // A schema of its own, and schemas named like the platform's roles: `"$user"`, first in the
    // default search_path, then finds them for a platform session that pins nothing.
    const adminRole = decodeURIComponent(new URL(testEnv().adminUrl).username);
    const schemas = ['public', 'evil', adminRole, `${phys}_steward`];
    for (const schema of schemas.slice(1)) {
      const made = await owner.query(`CREATE SCHEMA "${schema}"`).then(
        () => 'made',
        (e: Error) => `refused (${e.message})`,
      );
      if (made === 'made') await owner.query(`GRANT USAGE ON SCHEMA "${schema}" TO PUBLIC`);
      else schemas.splice(schemas.indexOf(schema), 1);
      report(`schema ${schema}: ${made}`);
    }
    // A table, so the schema read has columns to format.
    await owner.query(
      "CREATE TABLE public.canary (id int PRIMARY KEY, secret text); INSERT INTO canary VALUES (1, 'alpha')",
    );
    const arities = new Map(
      functions.map((f) => [
        f,
        [...new Set((cat.functions.get(f) ?? []).flatMap((x) => (x.arity === null ? [] : [x.arity])))],
      ]),
    );
    plantInput = {
      names: functions,
      operators,
      types,
      arities,
      schemas,
      token: TOKEN,
      touchDir,
    };
    planted = await plantShadows(owner, plantInput);
    report(
      `planted: ${planted.functions} functions, ${planted.aggregates} aggregates, ${planted.operators} operators, ${planted.types} domains; refused ${planted.refused.length}`,
    );
    for (const r of planted.refused) report(`  refused ${r.object}: ${r.reason}`);
    assert.ok(planted.functions + planted.operators >= 30, 'most shadows were planted');

    const settings: [string, string][] = [
      [`ALTER DATABASE ${phys} SET search_path = public, evil, pg_catalog`, 'keep'],
      [`ALTER ROLE ${roles.owner} SET search_path = public, evil, pg_catalog`, 'keep'],
      [`ALTER ROLE ${roles.owner} IN DATABASE ${phys} SET search_path = public, evil, pg_catalog`, 'keep'],
      [`ALTER ROLE ALL IN DATABASE ${phys} SET search_path = public, evil, pg_catalog`, 'keep'],
      [`ALTER ROLE ${roles.explorer} SET search_path = public, evil, pg_catalog`, 'keep'],
      [`ALTER ROLE ${roles.reader} SET search_path = public, evil, pg_catalog`, 'keep'],
      [`ALTER DATABASE ${phys} SET standard_conforming_strings = off`, 'keep'],
      [`ALTER DATABASE ${phys} SET transform_null_equals = on`, 'keep'],
      [`ALTER DATABASE ${phys} SET DateStyle = 'SQL, DMY'`, 'keep'],
      [`ALTER DATABASE ${phys} SET IntervalStyle = 'postgres_verbose'`, 'keep'],
      [`ALTER ROLE ${roles.owner} SET statement_timeout = 0`, 'keep'],
      // Allowed or not is recorded; these only deny service (or demote), so they are undone.
      [`ALTER DATABASE ${phys} SET role = ${roles.owner}`, 'undo'],
      [`ALTER DATABASE ${phys} SET default_transaction_read_only = on`, 'undo'],
      [`ALTER DATABASE ${phys} SET statement_timeout = 1`, 'undo'],
      [`ALTER DATABASE ${phys} SET lock_timeout = 1`, 'undo'],
      [`ALTER DATABASE ${phys} SET session_replication_role = replica`, 'undo'],
    ];
    for (const [sql, mode] of settings) {
      const r = await owner.query(sql).then(
        () => 'ALLOWED',
        (e: Error) => `refused (${e.message})`,
      );
      report(`setting ${r}: ${sql}`);
      if (mode === 'undo' && r === 'ALLOWED') {
        const reset = sql.replace(/ SET (\w+) = .*$/, ' RESET $1');
        await owner.query(reset);
      }
    }
    // Through any other role of the database the owner can become (e.g. one that owns it).
    const others = await adminQuery<{ rolname: string }>(
      'SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1) AND rolname <> $2 ORDER BY 1',
      [`${phys}_`, roles.owner],
    );
    for (const { rolname } of others) {
      const r = await owner
        .query(`SET ROLE "${rolname}"`)
        .then(() => owner.query(`ALTER DATABASE ${phys} SET search_path = public, evil, pg_catalog`))
        .then(
          () => 'ALLOWED',
          (e: Error) => `refused (${e.message})`,
        );
      await owner.query('RESET ROLE').catch(() => {});
      report(`setting ${r}: SET ROLE ${rolname}; ALTER DATABASE ${phys} SET search_path = …`);
    }
  } finally {
    await owner.end().catch(() => {});
  }
  // The maintenance database: can the owner plant there too (direct port)?
  const direct = new pg.Client({
    host: '127.0.0.1',
    port: testEnv().pgPort,
    user: roles.owner,
    password,
    database: 'postgres',
  });
  direct.on('error', () => {});
  const maint = await direct
    .connect()
    .then(() => direct.query('CREATE SCHEMA evil_maint'))
    .then(
      () => 'ALLOWED',
      (e: Error) => `refused (${e.message})`,
    );
  await direct.end().catch(() => {});
  report(`planting in database postgres: ${maint}`);
  if (maint === 'ALLOWED') await adminQuery('DROP SCHEMA IF EXISTS evil_maint CASCADE');

  // 4. Every agent job kind, the explorer on both paths, drift and doctor --fix.
  const ran = new Set<string>();
  const outcomes: string[] = [];
  const expectJob = async (kind: string) => {
    await settle();
    const j = await lastJob(kind);
    outcomes.push(
      `${kind}: ${j?.status ?? 'never ran'}${j?.last_error ? ` (${j.last_error.slice(0, 200)})` : ''}`,
    );
    if (j) ran.add(kind);
  };
  const explorer = async (label: string) => {
    const q = await api('POST', `/v1/databases/${name}/explorer/query`, {
      sql: "select id, secret, count(*) over () from canary where secret <> 'x' and id > 0",
    });
    const q2 = await api('POST', `/v1/databases/${name}/explorer/query`, { sql: 'select 1 as one' });
    const sc = await api('GET', `/v1/databases/${name}/explorer/schema`);
    outcomes.push(`explorer ${label}: query ${q.statusCode}/${q2.statusCode}, schema ${sc.statusCode}`);
    assert.equal(q2.statusCode, 200, `${label} explorer query: ${q2.body}`);
    assert.equal(sc.statusCode, 200, `${label} explorer schema: ${sc.body}`);
  };

  await explorer('channel');
  // create, run again (the same payload the server would queue, with the current password).
  const idRow = await s.db.pool.query('SELECT id FROM databases WHERE name = $1', [name]);
  await enqueueJob(s.db.pool, {
    nodeId,
    accountId: key.accountId,
    kind: 'database.create',
    payload: {
      database_id: idRow.rows[0].id,
      name: phys,
      generated_name: true,
      verifier: scramVerifier(password),
      allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
      limits: (await api('GET', `/v1/databases/${name}/limits`)).json(),
    },
  });
  await expectJob('database.create');
  assert.equal((await api('POST', `/v1/databases/${name}/credentials/rotate`)).statusCode, 202);
  await expectJob('database.rotate');
  const limits = (await api('GET', `/v1/databases/${name}/limits`)).json();
  assert.equal(
    (await api('PUT', `/v1/databases/${name}/limits`, { ...limits, statement_timeout_ms: 30_000 }))
      .statusCode,
    200,
  );
  await expectJob('database.limits');
  await api('PUT', `/v1/databases/${name}/allowlist`, {
    entries: [{ cidr: '127.0.0.1/32' }, { cidr: '127.0.0.2/32' }],
  });
  await expectJob('database.allowlist');
  await enqueueJob(s.db.pool, { nodeId, kind: 'node.ping', payload: {} });
  await expectJob('node.ping');
  const drift = await s.app.inject({
    method: 'GET',
    url: `/v1/nodes/${nodeId}/drift`,
    headers: { authorization: `Bearer ${OPERATOR}` },
  });
  outcomes.push(`drift (HTTP): ${drift.statusCode}`);
  await expectJob('node.drift');
  // The explorer through the job queue: the same agent without its channel.
  await agent.stop();
  agent = await startTestAgent(s, url, { name: NODE, pooler, explorerChannel: false });
  await explorer('queue');
  await expectJob('explorer.query');
  await expectJob('explorer.schema');
  // doctor --fix last but one (a repair may drop shadows): whatever it dropped is planted again
  // before the delete, which runs last.
  const doctor = await runDoctor(s.db.pool, { node: NODE, fix: true, timeoutMs: 30_000 });
  outcomes.push(
    `doctor --fix: fixed ${JSON.stringify(doctor.reports[0]?.fixed)}, errors ${JSON.stringify(doctor.errors)}`,
  );
  const findings = new Map<string, number>();
  for (const f of doctor.reports[0]?.findings ?? [])
    if (f.object.startsWith(phys)) findings.set(f.kind, (findings.get(f.kind) ?? 0) + 1);
  report(`doctor --fix findings on the tenant database: ${JSON.stringify(Object.fromEntries(findings))}`);
  await expectJob('node.drift_fix');
  const settingsLeft = await adminQuery<{ who: string; config: string[] }>(
    `SELECT coalesce(r.rolname, '(all roles)') || coalesce(' in ' || d.datname, '') AS who, s.setconfig AS config
       FROM pg_db_role_setting s LEFT JOIN pg_roles r ON r.oid = s.setrole LEFT JOIN pg_database d ON d.oid = s.setdatabase
      WHERE starts_with(r.rolname, $1) OR d.datname = $2`,
    [`${phys}_`, phys],
  );
  report(`settings left after doctor --fix: ${JSON.stringify(settingsLeft)}`);
  const again = await ownerClient(
    phys,
    (await api('POST', `/v1/databases/${name}/credentials/reveal`)).json().password,
  );
  try {
    const left = await again.query(
      `SELECT pg_catalog.count(*)::int AS n FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid OPERATOR(pg_catalog.=) p.pronamespace
        WHERE n.nspname OPERATOR(pg_catalog.=) ANY ($1::pg_catalog.name[])`,
      [plantInput?.schemas ?? []],
    );
    // The owner's own role-level search_path (public first) would turn `text` into its domain.
    await again.query('SET search_path = pg_catalog, pg_temp');
    assert.ok(plantInput);
    const replanted = await plantShadows(again, plantInput);
    report(
      `after doctor --fix: ${left.rows[0].n} routines left in the planted schemas; planted again ${replanted.functions} functions, ${replanted.aggregates} aggregates, ${replanted.operators} operators, ${replanted.types} domains`,
    );
  } finally {
    await again.end().catch(() => {});
  }
  // Positive control: a shadow the tenant runs itself must show in the log, or detection is blind.
  const control = await ownerClient(
    phys,
    (await api('POST', `/v1/databases/${name}/credentials/reveal`)).json().password,
  );
  try {
    await control.query('SET search_path = public, pg_catalog');
    await control.query('SELECT format_type(23, -1) AS bulwark_shadow_control');
  } finally {
    await control.end().catch(() => {});
  }
  // The tenant's own roles, as they are before the delete removes them.
  const ownRoles = new Set(
    (
      await adminQuery<{ rolname: string }>(
        "SELECT rolname FROM pg_roles WHERE starts_with(rolname, $1) AND shobj_description(oid, 'pg_authid') = $2",
        [`${phys}_`, `bulwark:database:${idRow.rows[0].id}`],
      )
    ).map((r) => r.rolname),
  );
  for (const r of Object.values(roles)) ownRoles.add(r);
  assert.equal(
    (await api('DELETE', `/v1/databases/${name}`, { confirm: name })).statusCode,
    202,
    'delete accepted',
  );
  await expectJob('database.delete');
  for (const o of outcomes) report(`ran ${o}`);

  // 5. What ran, as whom (once every line raised so far is in the file).
  await waitForLogFlush(logFile);
  const log = (await fs.readFile(logFile)).subarray(logStart).toString('utf8');
  const all = shadowRuns(log, TOKEN);
  assert.ok(
    all.some((r) => r.current === roles.owner && r.query.includes('bulwark_shadow_control')),
    'the shadow the tenant ran itself is in postgres.log (otherwise this test cannot see anything)',
  );
  const runs = all.filter((r) => !r.query.includes('bulwark_shadow_control'));
  const foreign = runs.filter((r) => !ownRoles.has(r.current) || !ownRoles.has(r.session));
  const summary = new Map<string, number>();
  for (const r of runs) {
    const k = `${r.current}/${r.session} ${r.shadow} ← ${siteOf(cat, r.query) ?? '(site not found)'}: ${r.query.slice(0, 240)}`;
    summary.set(k, (summary.get(k) ?? 0) + 1);
  }
  for (const [k, n] of summary) report(`fired ${n}× ${k}`);
  const pwned = await adminQuery<{ rolname: string }>(
    "SELECT rolname FROM pg_roles WHERE rolname LIKE 'bulwark\\_pwned\\_%'",
  );
  const touched = await fs.readdir(touchDir);
  report(`superuser roles created by shadows: ${pwned.map((r) => r.rolname).join(' ') || 'none'}`);
  report(`OS commands run by shadows: ${touched.join(' ') || 'none'}`);

  const missing = registryKinds().filter((k) => !ran.has(k));
  assert.deepEqual(
    [
      ...new Set(
        foreign.map(
          (r) => `${r.current}/${r.session} ${r.shadow} ← ${siteOf(cat, r.query) ?? r.query.slice(0, 160)}`,
        ),
      ),
    ],
    [],
    `${SHADOW_MARK} as a role that is not the tenant's`,
  );
  assert.deepEqual(pwned, [], 'no shadow created a superuser role');
  assert.deepEqual(touched, [], 'no shadow ran an OS command');
  assert.deepEqual(missing, [], 'every job kind of the registry ran against the tenant database');
  for (const o of outcomes.filter((x) => /^(database|node|explorer)\.[a-z_]+: /.test(x)))
    assert.match(o, /: succeeded$/, 'every job succeeded (so its SQL really ran)');
});
