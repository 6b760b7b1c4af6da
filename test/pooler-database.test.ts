import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { databaseHandlers } from '../src/agent/jobs/database-handlers.ts';
import { type JobHandler, PermanentJobError } from '../src/agent/jobs/job-context.ts';
import type { PoolerManager } from '../src/agent/pgbouncer/pooler-manager.ts';
import { DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import { roleNames } from '../src/shared/identifiers.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import { testEnv } from './helpers/env.ts';
import {
  clientFrom,
  databaseJobKit,
  newPassword,
  type PrivatePooler,
  startPrivatePooler,
  tryLogin,
  uniqueName,
} from './pooler-harness.ts';

let p: PrivatePooler;
let pooler: PoolerManager;
let kit: ReturnType<typeof databaseJobKit>;
let jobs: Map<string, JobHandler>;
before(async () => {
  p = await startPrivatePooler();
  pooler = p.manager({ sweepMs: 5_000 });
  await pooler.start();
  kit = databaseJobKit(p, pooler);
  jobs = new Map(databaseHandlers(kit.deps));
});
after(async () => {
  await kit.close();
  await p.stop();
});

const run = (kind: string, payload: Record<string, unknown>, password?: string) =>
  jobs.get(kind)!(payload, kit.ctx(password));

async function createDb(allowlist = [{ cidr: '127.0.0.1/32', expires_at: null as string | null }]) {
  const name = uniqueName('pd');
  const password = newPassword();
  const id = randomUUID();
  const result = await run(
    'database.create',
    { database_id: id, name, verifier: scramVerifier(password), allowlist, limits: DEFAULT_LIMITS },
    password,
  );
  return { name, id, password, roles: roleNames(name), result };
}

const viaPooler = (name: string, user: string, password: string, from = '127.0.0.1') =>
  clientFrom(from, { port: p.port, user, password, database: name });
const direct = (name: string, user: string, password: string) =>
  new pg.Client({ host: '127.0.0.1', port: testEnv().pgPort, user, password, database: name });

test('create → connect through PgBouncer → data persists across a reload and an agent restart', async () => {
  const db = await createDb();
  assert.equal(db.result.name, db.name);
  assert.deepEqual(db.result.roles, db.roles);
  assert.ok(Number(db.result.pooler_probe_ms) > 0);

  const c = viaPooler(db.name, db.roles.owner, db.password);
  await c.connect();
  await c.query('CREATE TABLE notes (id int PRIMARY KEY, body text)');
  await c.query("INSERT INTO notes VALUES (1, 'kept')");
  await c.end();

  await pooler.reload();
  const restarted = p.manager();
  await restarted.start();
  assert.ok(restarted.state().databases[db.name], 'state survives the restart');
  const c2 = viaPooler(db.name, db.roles.owner, db.password);
  await c2.connect();
  assert.equal((await c2.query('SELECT body FROM notes')).rows[0].body, 'kept');
  await c2.end();
  restarted.stop();

  // Running the same job again after success is a no-op that succeeds.
  const again = await run(
    'database.create',
    {
      database_id: db.id,
      name: db.name,
      verifier: scramVerifier(db.password),
      allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
      limits: DEFAULT_LIMITS,
    },
    db.password,
  );
  assert.equal(again.name, db.name);
});

test('least privilege: other tenants, the reader and the explorer', async () => {
  const a = await createDb();
  const b = await createDb();
  // b's owner cannot reach a's database, not even directly on the PostgreSQL port.
  assert.match((await tryLogin(direct(a.name, b.roles.owner, b.password))) ?? '', /permission denied/);
  assert.notEqual(await tryLogin(viaPooler(a.name, b.roles.owner, b.password)), null);
  // … while its own works directly too (so the refusal above is about privileges).
  assert.equal(await tryLogin(direct(b.name, b.roles.owner, b.password)), null);

  const owner = viaPooler(a.name, a.roles.owner, a.password);
  await owner.connect();
  await owner.query('CREATE TABLE t (x int)');
  await owner.query('INSERT INTO t VALUES (1)');
  await owner.end();

  const readerPw = newPassword();
  await kit.admin.query(`ALTER ROLE ${a.roles.reader} PASSWORD '${scramVerifier(readerPw)}'`);
  const reader = direct(a.name, a.roles.reader, readerPw);
  await reader.connect();
  assert.equal((await reader.query('SELECT count(*)::int AS n FROM t')).rows[0].n, 1);
  await assert.rejects(reader.query('INSERT INTO t VALUES (2)'), /permission denied/);
  await assert.rejects(reader.query('CREATE TABLE r (x int)'), /permission denied/);
  await reader.end();

  const explorerPw = newPassword();
  await kit.admin.query(`ALTER ROLE ${a.roles.explorer} PASSWORD '${scramVerifier(explorerPw)}'`);
  assert.notEqual(await tryLogin(viaPooler(a.name, a.roles.explorer, explorerPw)), null);
  assert.match(
    (await tryLogin(direct(a.name, a.roles.explorer, explorerPw))) ?? '',
    /not permitted to log in/,
  );

  const priv = await kit.admin.query<{ acl: string }>(
    'SELECT datacl::text AS acl FROM pg_database WHERE datname = $1',
    [a.name],
  );
  assert.ok(
    !/(^|[{,])=/.test(priv.rows[0]!.acl),
    `no PUBLIC privileges on the database: ${priv.rows[0]!.acl}`,
  );
});

test('allowlist enforced at the pool by source address, and an expired entry stops working', async () => {
  const db = await createDb([{ cidr: '127.0.0.2/32', expires_at: null }]);
  const from = (addr: string) => tryLogin(viaPooler(db.name, db.roles.owner, db.password, addr));
  assert.equal(await from('127.0.0.2'), null);
  assert.notEqual(await from('127.0.0.3'), null);
  assert.notEqual(await from('127.0.0.1'), null, 'the proving-login rule is gone after create');

  const open = viaPooler(db.name, db.roles.owner, db.password, '127.0.0.2');
  await open.connect();
  const only3 = await run('database.allowlist', {
    database_id: db.id,
    name: db.name,
    allowlist: [{ cidr: '127.0.0.3/32', expires_at: null }],
  });
  assert.deepEqual(only3.entries, [{ cidr: '127.0.0.3/32', expires_at: null }]);
  assert.notEqual(await from('127.0.0.2'), null);
  assert.equal(await from('127.0.0.3'), null);
  await assert.rejects(open.query('SELECT 1'), 'a session from a range no longer allowed is cut');
  await open.end().catch(() => {});

  const soon = new Date(Date.now() + 400).toISOString();
  await run('database.allowlist', {
    database_id: db.id,
    name: db.name,
    allowlist: [{ cidr: '127.0.0.2/32', expires_at: soon }],
  });
  assert.equal(await from('127.0.0.2'), null, 'allowed until it expires');
  const deadline = Date.now() + 3_000;
  let refused: string | null = null;
  while (Date.now() < deadline && refused === null) {
    await new Promise((r) => setTimeout(r, 50));
    refused = await from('127.0.0.2');
  }
  assert.notEqual(refused, null, 'the expired entry stopped working');
  // The sweep saves the pruned state right after the reload it proved.
  while (Date.now() < deadline && pooler.state().databases[db.name]?.allowlist.length !== 0) {
    await new Promise((r) => setTimeout(r, 10));
  }
  assert.deepEqual(pooler.state().databases[db.name]?.allowlist, []);
});

test('rotation: the new password works, the old one fails, and open sessions are gone', async () => {
  const db = await createDb();
  const pooled = viaPooler(db.name, db.roles.owner, db.password);
  await pooled.connect();
  const raw = direct(db.name, db.roles.owner, db.password);
  raw.on('error', () => {});
  await raw.connect();

  const next = newPassword();
  const t0 = performance.now();
  const r = await run(
    'database.rotate',
    { database_id: db.id, name: db.name, verifier: scramVerifier(next) },
    next,
  );
  const ms = performance.now() - t0;
  assert.ok(Number(r.terminated_sessions) >= 2, `terminated ${r.terminated_sessions}`);
  assert.ok(ms < 2_000, `rotation took ${ms} ms`);
  await assert.rejects(pooled.query('SELECT 1'));
  await assert.rejects(raw.query('SELECT 1'));
  await pooled.end().catch(() => {});
  await raw.end().catch(() => {});
  assert.notEqual(await tryLogin(viaPooler(db.name, db.roles.owner, db.password)), null);
  assert.notEqual(await tryLogin(direct(db.name, db.roles.owner, db.password)), null);
  assert.equal(await tryLogin(viaPooler(db.name, db.roles.owner, next)), null);
});

test('limits are applied to the roles', async () => {
  const db = await createDb();
  const limits = { ...DEFAULT_LIMITS, owner_connection_limit: 7, statement_timeout_ms: 1234 };
  await run('database.limits', { database_id: db.id, name: db.name, limits });
  const r = await kit.admin.query<{ rolconnlimit: number; rolconfig: string[] }>(
    'SELECT rolconnlimit, rolconfig FROM pg_roles WHERE rolname = $1',
    [db.roles.owner],
  );
  assert.equal(r.rows[0]!.rolconnlimit, 7);
  assert.ok(r.rows[0]!.rolconfig.includes('statement_timeout=1234'), String(r.rows[0]!.rolconfig));
});

test('delete cuts open sessions and logins, drops the database and the roles; again, it drops nothing', async () => {
  const db = await createDb();
  const open = viaPooler(db.name, db.roles.owner, db.password);
  await open.connect();
  const r = await run('database.delete', { database_id: db.id, name: db.name });
  assert.deepEqual(r, { dropped: true });
  await assert.rejects(open.query('SELECT 1'));
  await open.end().catch(() => {});
  assert.notEqual(await tryLogin(viaPooler(db.name, db.roles.owner, db.password)), null);
  const left = await kit.admin.query(
    'SELECT 1 FROM pg_roles WHERE rolname = ANY($1) UNION ALL SELECT 1 FROM pg_database WHERE datname = $2',
    [Object.values(db.roles), db.name],
  );
  assert.equal(left.rowCount, 0);
  assert.ok(!pooler.state().databases[db.name]);
  // Idempotent: deleting again reports nothing dropped.
  assert.deepEqual(await run('database.delete', { database_id: db.id, name: db.name }), { dropped: false });
});

test('hostile names and a name that is not ours fail permanently and leave nothing behind', async () => {
  for (const name of ['a;drop', '"x"', 'a'.repeat(64), 'dаta', '../x', 'postgres', 'bulwark_x']) {
    await assert.rejects(
      run(
        'database.create',
        {
          database_id: randomUUID(),
          name,
          verifier: scramVerifier('x'),
          allowlist: [],
          limits: DEFAULT_LIMITS,
        },
        'x',
      ),
      PermanentJobError,
      name,
    );
  }
  const name = uniqueName('pd_foreign');
  await kit.admin.query(`CREATE DATABASE ${name}`);
  try {
    await assert.rejects(
      run(
        'database.create',
        {
          database_id: randomUUID(),
          name,
          verifier: scramVerifier('x'),
          allowlist: [],
          limits: DEFAULT_LIMITS,
        },
        'x',
      ),
      (err: Error) => err instanceof PermanentJobError && /not ours/.test(err.message),
    );
    const roles = await kit.admin.query('SELECT 1 FROM pg_roles WHERE rolname = ANY($1)', [
      Object.values(roleNames(name)),
    ]);
    assert.equal(roles.rowCount, 0, 'the roles made by the failed job were removed');
    assert.ok(!pooler.state().databases[name]);
    // Delete never drops a database that is not ours, but succeeds (so the failed record can go).
    assert.deepEqual(await run('database.delete', { database_id: randomUUID(), name }), { dropped: false });
    const still = await kit.admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name]);
    assert.equal(still.rowCount, 1, 'the foreign database is untouched');
  } finally {
    await kit.admin.query(`DROP DATABASE IF EXISTS ${name}`);
  }
});
