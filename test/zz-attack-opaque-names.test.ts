// Attack round on ADR 0039 (a generated name on its node for every new database; a create with
// `generated_name: true` may be served by a warm-pool spare; `claimedSpareOf` excludes the job's
// own name; the delete always looks for a claimed spare under another name). As a tenant holding
// its owner password (real cluster, PgBouncer, warm pool) and as a low-level API key (server with
// a fake agent). Every test here is a refused attack (a regression guard).
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { databaseHandlers } from '../src/agent/jobs/database-handlers.ts';
import type { JobContext, JobHandler } from '../src/agent/jobs/job-context.ts';
import type { PoolerManager } from '../src/agent/pgbouncer/pooler-manager.ts';
import type { WarmPool } from '../src/agent/pool/warm-pool.ts';
import { SPARE_PREFIX } from '../src/agent/postgres/spare-sql.ts';
import { DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import { roleNames } from '../src/shared/identifiers.ts';
import { scramVerifier } from '../src/shared/scram.ts';
import { enrollFakeAgent, type FakeAgent } from './helpers/databases.ts';
import { testEnv } from './helpers/env.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import {
  type databaseJobKit,
  newPassword,
  type PrivatePooler,
  startNodeKit,
  startWarmPool,
} from './pooler-harness.ts';

let p: PrivatePooler;
let pooler: PoolerManager;
let kit: ReturnType<typeof databaseJobKit>;
let pool: WarmPool;
let crashAt: string | null = null;
class Killed extends Error {}
const made = new Set<string>();

before(async () => {
  ({ p, pooler, kit } = await startNodeKit());
  pool = await startWarmPool(kit, pooler, { size: 1, keepWarmMs: 0, refillDelayMs: 0 });
});

after(async () => {
  await pool?.drain().catch(() => {});
  // Whatever a failed assertion left behind: this test's databases and roles only.
  const left = await kit.admin.query<{ n: string }>(
    `SELECT datname::text AS n FROM pg_database WHERE starts_with(datname::text, $1) OR datname = ANY($2)`,
    [`${SPARE_PREFIX}${pool.tag}_`, [...made]],
  );
  for (const n of new Set([...left.rows.map((r) => r.n), ...made])) {
    await kit.admin.query(`DROP DATABASE IF EXISTS "${n}" WITH (FORCE)`).catch(() => {});
    for (const r of Object.values(roleNames(n)))
      await kit.admin.query(`DROP ROLE IF EXISTS "${r}"`).catch(() => {});
  }
  await kit?.close();
  await p?.stop();
});

function handlers(warm = true): Map<string, JobHandler> {
  return new Map(
    databaseHandlers({
      ...kit.deps,
      ...(warm ? { warmPool: pool } : {}),
      platform: { databases: ['bulwark'], roles: [] },
      onStep: (kind: string, step: string) => {
        if (crashAt === `${kind}/${step}`) {
          crashAt = null;
          throw new Killed(`killed at ${step}`);
        }
      },
    }),
  );
}

/** Called once the job ended, as the agent does after its report (the pool refills then). */
let reported: (() => void)[] = [];
const ctx = (password: string, attempt = 1): JobContext => ({
  ...kit.ctx(password),
  attempt,
  afterReport: (fn: () => void) => {
    reported.push(fn);
  },
});
const report = () => {
  const fns = reported;
  reported = [];
  for (const fn of fns) fn();
};

const generated = () => `bulwark_db_p_${randomBytes(8).toString('hex')}`;

type Made = { id: string; name: string; physical: string; password: string };

/** A create as the server now queues it (generated name, `generated_name: true`). */
async function create(
  opts: { warm?: boolean; attempt?: number; id?: string; name?: string; password?: string } = {},
) {
  const id = opts.id ?? randomUUID();
  const name = opts.name ?? generated();
  const password = opts.password ?? newPassword();
  made.add(name);
  const payload = {
    database_id: id,
    name,
    generated_name: true,
    verifier: scramVerifier(password),
    allowlist: [{ cidr: '127.0.0.1/32', expires_at: null }],
    limits: DEFAULT_LIMITS,
  };
  const r = (await handlers(opts.warm ?? true).get('database.create')!(
    payload,
    ctx(password, opts.attempt),
  ).finally(report)) as {
    physical_name: string;
    owner_password?: string;
  };
  made.add(r.physical_name);
  return { id, name, physical: r.physical_name, password: r.owner_password ?? password } satisfies Made;
}

const del = async (d: { id: string; name: string }) =>
  (await handlers().get('database.delete')!({ database_id: d.id, name: d.name }, ctx('x'))) as {
    dropped: boolean;
  };

const exists = async (name: string) =>
  ((await kit.admin.query('SELECT 1 FROM pg_database WHERE datname = $1', [name])).rowCount ?? 0) > 0;

const readySpares = async () =>
  (
    await kit.admin.query<{ n: string }>(
      `SELECT datname::text AS n FROM pg_database WHERE starts_with(datname::text, $1)
          AND shobj_description(oid, 'pg_database') LIKE 'bulwark:spare:ready:%'`,
      [`${SPARE_PREFIX}${pool.tag}_`],
    )
  ).rows.map((r) => r.n);

async function ownerLogin(d: Made): Promise<pg.Client> {
  const c = new pg.Client({
    host: '127.0.0.1',
    port: testEnv().pgPort,
    database: d.physical,
    user: roleNames(d.physical).owner,
    password: d.password,
    connectionTimeoutMillis: 5_000,
  });
  c.on('error', () => {});
  await c.connect();
  return c;
}

test('a tenant owner cannot plant another database id marker (comment, rename, new database): the victim delete drops only the victim', async () => {
  // The attacker gets the warm spare; the victim (pool empty until the refill) the cold path.
  assert.equal((await readySpares()).length, 1, 'one ready spare');
  const attacker = await create();
  const victim = await create();
  assert.notEqual(attacker.physical, victim.physical);
  const c = await ownerLogin(attacker);
  const refused: string[] = [];
  try {
    // What the catalogs tell a tenant: the victim's name on the node and its id in its comment
    // (opaque, no label), which is what it would need to plant the victim's marker.
    const seen = await c.query<{ datname: string; d: string | null }>(
      `SELECT datname::text AS datname, shobj_description(oid, 'pg_database') AS d FROM pg_database WHERE datname = $1`,
      [victim.physical],
    );
    assert.equal(seen.rows[0]?.d, `bulwark:database:${victim.id}`, 'the id is readable (known, not a label)');
    const marker = `bulwark:database:${victim.id}`;
    const spare = `bulwark_db_${pool.tag}_${randomBytes(5).toString('hex')}`;
    const me = roleNames(attacker.physical).owner;
    for (const sql of [
      `COMMENT ON DATABASE "${attacker.physical}" IS '${marker}'`,
      `ALTER DATABASE "${attacker.physical}" RENAME TO "${spare}"`,
      `CREATE DATABASE "${spare}"`,
      `CREATE DATABASE "${generated()}"`,
      `COMMENT ON ROLE "${me}" IS '${marker}'`,
      `ALTER ROLE "${me}" CREATEDB`,
      `ALTER DATABASE "${victim.physical}" OWNER TO "${me}"`,
    ]) {
      const err = await c.query(sql).then(
        () => null,
        (e: Error) => e.message,
      );
      if (err === null) refused.push(`ALLOWED: ${sql}`);
    }
  } finally {
    await c.end().catch(() => {});
  }
  assert.deepEqual(refused, [], 'every planting statement is refused');
  // The victim's delete drops the victim's database, never the attacker's.
  assert.equal((await del({ id: victim.id, name: victim.physical })).dropped, true);
  assert.equal(await exists(victim.physical), false, "the victim's database is gone");
  assert.equal(await exists(attacker.physical), true, "the attacker's is untouched");
  // The attacker's delete, sent with the name the server stored first (its generated one,
  // never made), finds the spare it got by its marker.
  assert.equal((await del({ id: attacker.id, name: attacker.name })).dropped, true);
  assert.equal(await exists(attacker.physical), false);
  await pool.settled();
});

test('a create rerun after a cold attempt died: claimedSpareOf skips its own generated name, the rerun finishes cold and takes no spare', async () => {
  const spares = await readySpares();
  const id = randomUUID();
  const name = generated();
  const password = newPassword();
  // Attempt 1 on the cold path (no spare served it), killed after its database exists.
  crashAt = 'database.create/schema';
  await assert.rejects(create({ warm: false, id, name, password }), Killed);
  assert.equal(await exists(name), true, 'attempt 1 made the database under its generated name');
  // Attempt 2 with the pool: its own database (marker, spare prefix) is not a "claimed spare" of
  // another name, and a rerun never claims a new spare.
  const again = await create({ id, name, password, attempt: 2 });
  assert.equal(again.physical, name, 'finished under its own name');
  assert.deepEqual(await readySpares(), spares, 'the spare is not taken');
  const c = await ownerLogin(again);
  await c.end();
  // Its delete drops it (and not the spare).
  assert.equal((await del({ id, name })).dropped, true);
  assert.equal(await exists(name), false);
  assert.deepEqual(await readySpares(), spares);
});

test("a delete drops both copies when an attempt's claimed spare and a cold copy of the same database exist", async () => {
  await pool.settled();
  assert.equal((await readySpares()).length, 1, 'one ready spare');
  const id = randomUUID();
  const name = generated();
  const password = newPassword();
  // One attempt made the database cold under its generated name and died; another (its claim in
  // flight meanwhile) claimed a spare for the same id and died: the id's marker is on both.
  crashAt = 'database.create/schema';
  await assert.rejects(create({ warm: false, id, name, password }), Killed);
  crashAt = 'database.create/claimed';
  await assert.rejects(create({ id, name, password }), Killed);
  const marked = await kit.admin.query<{ n: string }>(
    `SELECT datname::text AS n FROM pg_database WHERE shobj_description(oid, 'pg_database') = $1`,
    [`bulwark:database:${id}`],
  );
  assert.equal(marked.rows.length, 2, `two copies: ${marked.rows.map((r) => r.n).join(', ')}`);
  for (const r of marked.rows) made.add(r.n);
  // The delete (with the name the server knows) drops both, and every role of each.
  assert.equal((await del({ id, name })).dropped, true);
  for (const r of marked.rows) {
    assert.equal(await exists(r.n), false, `${r.n} is gone`);
    const roles = await kit.admin.query('SELECT 1 FROM pg_roles WHERE rolname = ANY($1)', [
      Object.values(roleNames(r.n)),
    ]);
    assert.equal(roles.rowCount, 0, `no role of ${r.n} left`);
  }
  await pool.settled();
});

test('API: a read key learns nothing of another account by names on the node; a physical name reported twice is refused', async () => {
  const s: TestServer = await createTestServer({ nodeAssumedMaxConnections: 100_000 });
  try {
    const n1: FakeAgent = await enrollFakeAgent(s, 'opq-n1');
    const a: TestKey = await createTestKey(s, { account: 'opq-a' });
    const b: TestKey = await createTestKey(s, { account: 'opq-b' });
    const bRead: TestKey = await createTestKey(s, { account: 'opq-b', level: 'read' });
    const api = (k: TestKey, method: string, url: string, payload?: object) =>
      s.app.inject({ method: method as 'GET', url, headers: k.headers, ...(payload ? { payload } : {}) });
    const spare = `bulwark_db_abcdef_${randomBytes(5).toString('hex')}`;
    // A's database: the agent hands it a spare.
    assert.equal((await api(a, 'POST', '/v1/databases', { name: 'shop', node: 'opq-n1' })).statusCode, 202);
    const ja = await n1.poll();
    assert.equal(ja?.kind, 'database.create');
    const r = roleNames(spare);
    const warmResult = (label: string) => ({
      name: label,
      roles: { owner: r.owner, reader: r.reader, migrator: r.migrator, explorer: r.explorer },
      physical_name: spare,
      owner_password: 'warm-spare-owner-password-0123456789abcdef',
      pooler_probe_ms: 1,
    });
    assert.equal(await n1.complete(ja!.id, ja!.attempt, warmResult('shop')), 200);
    const aRow = (
      await s.db.pool.query<{ pg_name: string; status: string }>(
        'SELECT pg_name, status FROM databases WHERE account_id = $1 AND name = $2',
        [a.accountId, 'shop'],
      )
    ).rows[0];
    assert.deepEqual(aRow, { pg_name: spare, status: 'ready' });
    // B's database with the same label; the agent (wrongly) reports A's spare: refused.
    assert.equal((await api(b, 'POST', '/v1/databases', { name: 'shop', node: 'opq-n1' })).statusCode, 202);
    const jb = await n1.poll();
    assert.equal(jb?.kind, 'database.create');
    assert.notEqual(jb!.payload.name, spare);
    await n1.complete(jb!.id, jb!.attempt, warmResult('shop'));
    const bRow = (
      await s.db.pool.query<{ pg_name: string; status: string }>(
        'SELECT pg_name, status FROM databases WHERE account_id = $1 AND name = $2',
        [b.accountId, 'shop'],
      )
    ).rows[0];
    assert.notEqual(bRow?.pg_name, spare, 'never two databases under one name on the node');
    assert.notEqual(bRow?.status, 'ready');
    // B's read key: A's physical name, A's generated name, a made-up one all answer alike (404).
    // (Reserved-prefix names are refused before any lookup: the same 400 for all of them.)
    const answers = new Set<string>();
    for (const name of [spare, String(ja!.payload.name), `bulwark_db_p_${randomBytes(8).toString('hex')}`]) {
      for (const url of [`/v1/databases/${name}`, `/v1/databases/${name}/connection`]) {
        const res = await api(bRead, 'GET', url);
        assert.ok([400, 404].includes(res.statusCode), `${url}: ${res.body}`);
        answers.add(
          `${url.endsWith('/connection')}:${res.statusCode}:${res.body.replaceAll(name, 'NAME').replace(/"request_id":"[^"]*"/, '')}`,
        );
      }
    }
    assert.equal(answers.size, 2, `one answer per route, whatever the name: ${[...answers].join(' | ')}`);
    // B's own connection info (if any) names B's own generated name, never A's.
    const conn = await api(bRead, 'GET', '/v1/databases/shop/connection');
    assert.ok(!conn.body.includes(spare), conn.body);
    // A read key cannot create (nor pick a name on the node).
    const w = await api(bRead, 'POST', '/v1/databases', { name: 'other', node: 'opq-n1' });
    assert.equal(w.statusCode, 403, w.body);
  } finally {
    s.app.server.closeAllConnections();
    await s.stop();
  }
});
