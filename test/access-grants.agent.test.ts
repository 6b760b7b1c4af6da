/**
 * Just-in-time credentials on the agent (issue 14), against the run's real PostgreSQL and a
 * private PgBouncer: the `access.grant` / `access.revoke` handlers with a real token verifier
 * (pinned key, node, replay cache) and the agent's own expiry timer.
 */
import assert from 'node:assert/strict';
import { generateKeyPairSync, randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { type AccessExpiry, createAccessExpiry } from '../src/agent/execution/access-expiry.ts';
import { createAgentVerifier } from '../src/agent/execution/agent-verifier.ts';
import { createReplayCache, type ReplayCache } from '../src/agent/execution/replay-cache.ts';
import { accessHandlers } from '../src/agent/jobs/access-grant.ts';
import { databaseHandlers } from '../src/agent/jobs/database-handlers.ts';
import { type JobHandler, PermanentJobError } from '../src/agent/jobs/job-context.ts';
import type { PoolerManager } from '../src/agent/pgbouncer/pooler-manager.ts';
import { createPoolerRenderer } from '../src/agent/pgbouncer/pooler-render.ts';
import { nextExpiry, type PoolerState, pruneExpired } from '../src/agent/pgbouncer/pooler-state.ts';
import type { DriftFinding } from '../src/agent/postgres/drift.ts';
import { jitLoginName } from '../src/shared/access-login.ts';
import { accessGrantText, type GrantAccessPayload } from '../src/shared/contracts/execution.ts';
import { DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import {
  type ExecutionCapability,
  type ExecutionMode,
  jwkThumbprint,
  signExecutionToken,
  sqlSha256,
} from '../src/shared/execution-token.ts';
import { roleNames } from '../src/shared/identifiers.ts';
import { createLogger } from '../src/shared/logger.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import {
  clientFrom,
  databaseJobKit,
  newPassword,
  type PrivatePooler,
  startPrivatePooler,
  tryLogin,
  uniqueName,
} from './pooler-harness.ts';

const NODE = randomUUID();
const log = createLogger('access', 'silent');
const { publicKey, privateKey } = generateKeyPairSync('ed25519');
const x = publicKey.export({ format: 'jwk' }).x as string;
const signer = { kid: jwkThumbprint(x), privateKey };

let p: PrivatePooler;
let pooler: PoolerManager;
let kit: ReturnType<typeof databaseJobKit>;
let jobs: Map<string, JobHandler>;
let expiry: AccessExpiry;
let replay: ReplayCache;
let tmp: string;

before(async () => {
  p = await startPrivatePooler();
  pooler = p.manager({ sweepMs: 5_000 });
  await pooler.start();
  kit = databaseJobKit(p, pooler);
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-access-'));
  replay = createReplayCache({ file: path.join(tmp, 'replay.log'), maxEntries: 1_000 });
  const verifier = createAgentVerifier({
    keys: { keys: () => new Map([[signer.kid, publicKey]]), refresh: async () => false },
    nodeId: NODE,
    capabilities: ['reader', 'migrator'],
    replay,
  });
  expiry = createAccessExpiry({ pooler, admin: kit.admin, log });
  jobs = new Map([
    ...databaseHandlers(kit.deps),
    ...accessHandlers({ pooler, verify: verifier.verify, onGranted: () => expiry.poke() }),
  ]);
  await expiry.start();
});
after(async () => {
  await expiry.stop();
  replay.close();
  await kit.close();
  await p.stop();
  await fs.rm(tmp, { recursive: true, force: true });
});

const run = (kind: string, payload: Record<string, unknown>, password?: string) =>
  jobs.get(kind)!(payload, kit.ctx(password));

async function createDb(allowlist = [{ cidr: '127.0.0.1/32', expires_at: null as string | null }]) {
  const name = uniqueName('jit');
  const password = newPassword();
  const id = randomUUID();
  await run(
    'database.create',
    { database_id: id, name, verifier: scramVerifier(password), allowlist, limits: DEFAULT_LIMITS },
    password,
  );
  const owner = clientFrom('127.0.0.1', {
    port: p.port,
    user: roleNames(name).owner,
    password,
    database: name,
  });
  await owner.connect();
  await owner.query(
    "CREATE TABLE items (id int PRIMARY KEY, label text); INSERT INTO items VALUES (1, 'one')",
  );
  await owner.end();
  return { name, id, password };
}

type Grant = { payload: GrantAccessPayload; password: string };

/** A grant as the server makes one: fresh login and password, a token binding accessGrantText(). */
function makeGrant(
  db: { name: string; id: string },
  opts: {
    capability?: ExecutionCapability;
    seconds?: number;
    mode?: ExecutionMode;
    /** The token's database claim (default: the payload's). */
    tokenDatabase?: string;
    /** Sign for these fields instead of the payload's (a tampered job). */
    signFor?: Partial<Pick<GrantAccessPayload, 'name' | 'login' | 'capability' | 'valid_until'>>;
  } = {},
): Grant {
  const password = randomBytes(24).toString('base64url');
  const payload = {
    database_id: db.id,
    name: db.name,
    grant_id: randomUUID(),
    login: jitLoginName(db.name, randomBytes(4).toString('hex')),
    capability: opts.capability ?? 'reader',
    verifier: scramVerifier(password),
    valid_until: new Date(Date.now() + (opts.seconds ?? 3600) * 1000).toISOString(),
    token: '',
  };
  const iat = Math.floor(Date.now() / 1000);
  payload.token = signExecutionToken(signer, {
    request_id: randomUUID(),
    database: opts.tokenDatabase ?? db.name,
    node: NODE,
    capability: payload.capability,
    mode: opts.mode ?? 'access',
    sql_sha256: sqlSha256(accessGrantText({ ...payload, ...opts.signFor })),
    approved_rows: null,
    jti: randomUUID(),
    iat,
    exp: iat + 300,
  });
  return { payload, password };
}

const viaPooler = (g: Grant, from = '127.0.0.1') =>
  clientFrom(from, { port: p.port, user: g.payload.login, password: g.password, database: g.payload.name });

const roleExists = async (login: string) =>
  (await kit.admin.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [login])).rows.length > 0;
const inPooler = (login: string) =>
  Object.values(pooler.state().databases).some((d) => d.access?.some((l) => l.login === login));

/** Polls `fn` every 100 ms until it is true or `ms` pass; returns whether it became true. */
async function eventually(fn: () => Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await fn()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return fn();
}

test('a reader grant works through PgBouncer in its window, cannot write, and ends on time: new logins refused, an open session cut', async () => {
  const db = await createDb();
  const g = makeGrant(db, { seconds: 4 });
  const until = Date.parse(g.payload.valid_until);
  const result = await run('access.grant', g.payload);
  assert.deepEqual(result, { login: g.payload.login, valid_until: g.payload.valid_until });
  assert.ok(inPooler(g.payload.login), 'the login is in the pooler state');

  const open = viaPooler(g);
  await open.connect();
  assert.equal((await open.query('SELECT label FROM items')).rows[0].label, 'one');
  assert.equal((await open.query('SELECT current_user AS u')).rows[0].u, g.payload.login);
  await assert.rejects(open.query("INSERT INTO items VALUES (2, 'two')"), /permission denied/);
  await assert.rejects(open.query('CREATE TABLE mine (x int)'), /permission denied/);
  assert.equal(await tryLogin(viaPooler(g)), null, 'a second session in the window');

  // The open session is cut at expiry: its next query fails (bounded wait past valid_until).
  let cutAt: number | null = null;
  const deadline = until + 8_000;
  while (Date.now() < deadline) {
    try {
      await open.query('SELECT 1');
    } catch {
      cutAt = Date.now();
      break;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  await open.end().catch(() => {});
  assert.ok(cutAt !== null, 'the open session was cut');
  assert.ok(cutAt >= until - 50, `not cut before its time (${until - cutAt} ms early)`);
  assert.ok(cutAt <= until + 5_000, `cut within 5 s of valid_until (${cutAt - until} ms)`);

  assert.notEqual(await tryLogin(viaPooler(g)), null, 'a new login after expiry is refused');
  assert.ok(await eventually(async () => !(await roleExists(g.payload.login)), 5_000), 'the role is dropped');
  assert.equal(inPooler(g.payload.login), false, 'and gone from the pooler');
});

test('the allowlist applies to the login: an address outside it is refused', async () => {
  const db = await createDb([{ cidr: '127.0.0.1/32', expires_at: null }]);
  const g = makeGrant(db);
  await run('access.grant', g.payload);
  assert.equal(await tryLogin(viaPooler(g, '127.0.0.1')), null);
  assert.notEqual(await tryLogin(viaPooler(g, '127.0.0.2')), null, '127.0.0.2 is outside the allowlist');
  // The hba file holds the login's rule for the allowlist only.
  const hba = await fs.readFile(pooler.files.hba, 'utf8');
  const rules = hba.split('\n').filter((l) => l.includes(` "${g.payload.login}" `));
  assert.deepEqual(rules, [`host "${db.name}" "${g.payload.login}" 127.0.0.1/32 scram-sha-256`]);
  await run('access.revoke', {
    database_id: db.id,
    name: db.name,
    grant_id: g.payload.grant_id,
    login: g.payload.login,
  });
});

test('a job whose token binds other fields is refused and creates nothing', async () => {
  const db = await createDb();
  const later = new Date(Date.now() + 48 * 3600 * 1000).toISOString();
  const cases: [string, Grant, RegExp][] = [
    ['valid_until', makeGrant(db, { signFor: { valid_until: later } }), /sql_mismatch/],
    ['login', makeGrant(db, { signFor: { login: jitLoginName(db.name, 'deadbeef') } }), /sql_mismatch/],
    ['capability', makeGrant(db, { signFor: { capability: 'migrator' } }), /sql_mismatch/],
    ['mode', makeGrant(db, { mode: 'execute' }), /wrong_mode/],
  ];
  for (const [what, g, reason] of cases) {
    await assert.rejects(
      run('access.grant', g.payload),
      (err: Error) => err instanceof PermanentJobError && reason.test(err.message),
      `tampered ${what} refused`,
    );
    assert.equal(await roleExists(g.payload.login), false, `no role for tampered ${what}`);
    assert.equal(inPooler(g.payload.login), false, `no pooler entry for tampered ${what}`);
  }
  // A login not shaped for this database (e.g. one of its own roles) is refused before the token.
  const own = makeGrant(db);
  await assert.rejects(
    run('access.grant', { ...own.payload, login: roleNames(db.name).owner }),
    /not a just-in-time login name/,
  );
  // A token signed for another database: refused.
  const other = await createDb();
  const g = makeGrant(other, { tokenDatabase: db.name });
  await assert.rejects(run('access.grant', g.payload), /wrong_database/);
  assert.equal(await roleExists(g.payload.login), false);
});

test('grant and revoke are idempotent; a replayed token only finishes its own grant', async () => {
  const db = await createDb();
  const g = makeGrant(db);
  await run('access.grant', g.payload);
  // The retried job (same token): the replay cache refuses the token, but the login it made is this grant's.
  await run('access.grant', g.payload);
  assert.equal(await tryLogin(viaPooler(g)), null);
  // The same token with another verifier is a replay that finishes nothing.
  await assert.rejects(
    run('access.grant', { ...g.payload, verifier: scramVerifier('another password') }),
    /replayed/,
  );
  assert.equal(await tryLogin(viaPooler(g)), null, 'the password is unchanged');

  // An open session that has run a query holds its server connection: revoking cuts it.
  const open = viaPooler(g);
  await open.connect();
  await open.query('SELECT 1');
  const revoke = { database_id: db.id, name: db.name, grant_id: g.payload.grant_id, login: g.payload.login };
  const first = await run('access.revoke', revoke);
  assert.deepEqual(first, { dropped: true, terminated_sessions: 1, owns_objects: false });
  await assert.rejects(open.query('SELECT 1'), 'the open session is cut at revocation');
  await open.end().catch(() => {});
  const again = await run('access.revoke', revoke);
  assert.deepEqual(again, { dropped: false, terminated_sessions: 0, owns_objects: false });
  assert.notEqual(await tryLogin(viaPooler(g)), null);

  // A role that is not a just-in-time login of this grant is never touched by a revoke.
  const foreign = jitLoginName(db.name, 'feedface');
  await kit.admin.query(`CREATE ROLE ${foreign} LOGIN`);
  try {
    await assert.rejects(
      run('access.revoke', { ...revoke, grant_id: randomUUID(), login: foreign }),
      (err: Error) => err instanceof PermanentJobError,
    );
    assert.equal(await roleExists(foreign), true);
  } finally {
    await kit.admin.query(`DROP ROLE ${foreign}`);
  }
});

test('a migrator grant acts as the migrator, so what it creates outlives the dropped login', async () => {
  const db = await createDb();
  const g = makeGrant(db, { capability: 'migrator' });
  await run('access.grant', g.payload);
  const c = viaPooler(g);
  await c.connect();
  assert.equal((await c.query('SELECT current_user AS u')).rows[0].u, roleNames(db.name).migrator);
  await c.query('CREATE TABLE made_by_jit (x int)');
  await c.end();
  const out = await run('access.revoke', {
    database_id: db.id,
    name: db.name,
    grant_id: g.payload.grant_id,
    login: g.payload.login,
  });
  assert.equal(out.dropped, true);
  assert.equal(await roleExists(g.payload.login), false);
  const kept = await kit.connectAdmin(db.name);
  try {
    assert.equal(
      (await kept.query("SELECT tableowner FROM pg_tables WHERE tablename = 'made_by_jit'")).rows[0]
        .tableowner,
      roleNames(db.name).migrator,
    );
  } finally {
    await kept.end();
  }

  // One that steps out of the migrator role and owns something is left NOLOGIN, not dropped.
  const g2 = makeGrant(db, { capability: 'migrator' });
  await run('access.grant', g2.payload);
  const c2 = viaPooler(g2);
  await c2.connect();
  // RESET ROLE goes back to the migrator (the login's default); naming itself does not.
  await c2.query(`SET ROLE ${g2.payload.login}`);
  await c2.query('CREATE TABLE own_table (x int)');
  await c2.end();
  const revoke2 = {
    database_id: db.id,
    name: db.name,
    grant_id: g2.payload.grant_id,
    login: g2.payload.login,
  };
  const out2 = await run('access.revoke', revoke2);
  assert.equal(out2.dropped, false);
  assert.equal(out2.owns_objects, true);
  // The grant job sent again (same token) does not bring the revoked login back.
  await assert.rejects(run('access.grant', g2.payload), /replayed/);
  const left = await kit.admin.query('SELECT rolcanlogin FROM pg_roles WHERE rolname = $1', [
    g2.payload.login,
  ]);
  assert.deepEqual(left.rows, [{ rolcanlogin: false }]);
  // …and a member of nothing, nor anything a member of it: what it owns has PUBLIC's rights only.
  const edges = await kit.admin.query(
    'SELECT count(*)::int AS n FROM pg_auth_members a JOIN pg_roles r ON r.oid IN (a.member, a.roleid) WHERE r.rolname = $1',
    [g2.payload.login],
  );
  assert.equal(edges.rows[0].n, 0);
  assert.notEqual(await tryLogin(viaPooler(g2)), null);
  const inside = await kit.connectAdmin(db.name);
  try {
    await inside.query('DROP TABLE own_table');
  } finally {
    await inside.end();
  }
  assert.equal((await run('access.revoke', revoke2)).dropped, true, 'dropped once it owns nothing');
});

test('drift knows live logins, and the agent ends an expired one at start even with no server', async () => {
  const db = await createDb();
  const g = makeGrant(db, { seconds: 2 });
  // The agent's expiry is "down": a second module on the same cluster starts after the expiry.
  await expiry.stop();
  try {
    await run('access.grant', g.payload);
    const drift = async () =>
      (
        (await run('node.drift', { known_databases: [db.name] })) as { findings: DriftFinding[] }
      ).findings.filter((f) => f.object === g.payload.login);
    assert.deepEqual(await drift(), [], 'a live login is not drift');
    await new Promise((r) => setTimeout(r, Date.parse(g.payload.valid_until) - Date.now() + 200));
    const found = await drift();
    assert.equal(found.length, 1);
    assert.match(found[0]!.detail, /past its VALID UNTIL/);
    assert.notEqual(await tryLogin(viaPooler(g)), null, 'PostgreSQL and the pooler refuse it already');
  } finally {
    expiry = createAccessExpiry({ pooler, admin: kit.admin, log });
    await expiry.start();
  }
  assert.equal(await roleExists(g.payload.login), false, 'revoked at start');
  assert.equal(inPooler(g.payload.login), false);
});

test('the pooler state keeps logins across an agent restart', async () => {
  const db = await createDb();
  const g = makeGrant(db);
  await run('access.grant', g.payload);
  const restarted = p.manager();
  await restarted.start();
  assert.ok(restarted.state().databases[db.name]?.access?.some((l) => l.login === g.payload.login));
  restarted.stop();
  const c = new pg.Client({
    host: '127.0.0.1',
    port: p.port,
    user: g.payload.login,
    password: g.password,
    database: db.name,
  });
  c.on('error', () => {});
  assert.equal(await tryLogin(c), null);
  await run('access.revoke', {
    database_id: db.id,
    name: db.name,
    grant_id: g.payload.grant_id,
    login: g.payload.login,
  });
});

test('rendering: a login is in the auth and hba files under every allowlist entry until its expiry, then gone', () => {
  let t = Date.parse('2030-01-01T00:00:00Z');
  const renderer = createPoolerRenderer({
    settings: {
      listenAddr: '127.0.0.1',
      listenPort: 6432,
      pgHost: '127.0.0.1',
      pgPort: 5432,
      adminUser: 'pgbouncer_admin',
      poolMode: 'session',
      maxClientConn: 100,
      defaultPoolSize: 20,
      tls: null,
    },
    files: { auth: '/x/auth.txt', hba: '/x/hba.txt', pid: '/x/pid' },
    adminPassword: 'admin password for the render test',
    now: () => t,
  });
  const at = (s: number) => new Date(t + s * 1000).toISOString();
  const login = (name: string, seconds: number) => ({
    login: name,
    verifier: scramVerifier('pw', 1),
    valid_until: at(seconds),
    grant_id: randomUUID(),
  });
  const state: PoolerState = {
    version: 1,
    databases: {
      shop: {
        name: 'shop',
        owner: 'shop_owner',
        verifier: scramVerifier('owner', 1),
        allowlist: [
          { cidr: '10.0.0.0/8', expires_at: null },
          { cidr: '192.0.2.7/32', expires_at: at(30) },
        ],
        access: [login('shop_jit_0000000a', 60), login('shop_jit_0000000b', 120)],
      },
    },
  };
  const probe = { user: 'bulwark_probe_test', password: 'probe' };
  const lines = (b: Buffer, user: string) =>
    b
      .toString()
      .split('\n')
      .filter((l) => l.includes(`"${user}"`) || l.includes(` ${user} `));
  let r = renderer.render(state, probe, []);
  assert.equal(lines(r.auth, 'shop_jit_0000000a').length, 1);
  assert.deepEqual(lines(r.hba, 'shop_jit_0000000a'), [
    'host "shop" "shop_jit_0000000a" 10.0.0.0/8 scram-sha-256',
    'host "shop" "shop_jit_0000000a" 192.0.2.7/32 scram-sha-256',
  ]);
  assert.equal(nextExpiry(state, t), t + 30_000);
  t += 61_000; // past the allowlist entry and the first login, not the second
  r = renderer.render(state, probe, []);
  assert.deepEqual(lines(r.auth, 'shop_jit_0000000a'), [], 'the expired login left the auth file');
  assert.deepEqual(lines(r.hba, 'shop_jit_0000000a'), []);
  assert.deepEqual(lines(r.hba, 'shop_jit_0000000b'), [
    'host "shop" "shop_jit_0000000b" 10.0.0.0/8 scram-sha-256',
  ]);
  const pruned = pruneExpired(state, t);
  assert.deepEqual(
    pruned.databases.shop?.access?.map((l) => l.login),
    ['shop_jit_0000000b'],
  );
  assert.equal(nextExpiry(pruned, t), Date.parse(state.databases.shop!.access![1]!.valid_until));
  // A login named like another pooler user is refused before anything is written.
  assert.throws(
    () =>
      renderer.render(
        { version: 1, databases: { shop: { ...state.databases.shop!, access: [login('shop_owner', 600)] } } },
        probe,
        [],
      ),
    /duplicate or reserved pooler user/,
  );
});
