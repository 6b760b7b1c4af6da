// Review probes (issue 14): governed SQL, dry runs, approvals and scoping attacked through the real
// server, a real agent (executor over its channel) and a real tenant database with planted code
// (the canary fixture: a view, an operator, a domain and functions that write when run).
// Each test asserts the SAFE behaviour (or, where so marked, the accepted and documented one).
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import type { RunningAgent } from '../src/agent/main.ts';
import { startTestAgent } from './helpers/agent.ts';
import { createAccount } from './helpers/databases.ts';
import { adminPool } from './helpers/explorer.ts';
import { type ExplorerStack, startExplorerStack } from './helpers/explorer-stack.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { clientFrom, type PrivatePooler, startPrivatePooler } from './pooler-harness.ts';
import { api, expectStatus, type Person, person } from './requests-helpers.ts';

let stack: ExplorerStack;
let http: ReturnType<typeof api>;
let viewer: Person;
let member: Person;
let approver: Person;
let admin: Person;
let DB: string;

/** Rows the canary's planted code inserts when it runs (ids >= 1000 or secret 'pwned'). */
const pwned = async (): Promise<number> =>
  (await stack.t.asAdmin("SELECT count(*)::int AS n FROM canary WHERE id >= 1000 OR secret = 'pwned'"))
    .rows[0].n;

before(async () => {
  stack = await startExplorerStack({
    node: 'rga-node',
    account: 'rgaacct',
    explorerChannel: true,
    tenantPrefix: 'rga',
  });
  DB = stack.t.name;
  http = api(stack.s);
  const acct = stack.key.accountId;
  viewer = await person(stack.s, acct, 'viewer', 'rga-view');
  member = await person(stack.s, acct, 'member', 'rga-mem');
  approver = await person(stack.s, acct, 'member', 'rga-appr');
  admin = await person(stack.s, acct, 'admin', 'rga-admin');
});
after(() => stack?.stop());

/** Creates a request and, when it is approved at once, executes it; returns the final request. */
async function createAndRun(who: Person, body: object): Promise<Record<string, unknown> | null> {
  const res = await http.create(DB, who.headers, body);
  if (res.statusCode !== 201) return null;
  const created = res.json() as Record<string, unknown>;
  if (created.status !== 'approved') return created;
  return expectStatus(await http.act(DB, created.id as string, 'execute', who.headers), 200);
}

describe('a read request cannot run tenant code with write rights', () => {
  test('control: a viewer SELECT of a planted writing view runs read-only (reader)', async () => {
    const before = await pwned();
    const done = await createAndRun(viewer, { sql: 'SELECT id, e FROM v_evil', reason: 'look' });
    assert.ok(done, 'created');
    assert.equal(await pwned(), before, JSON.stringify(done?.last_execution));
  });

  test('a viewer read with capability migrator does not commit what a planted view writes', async () => {
    const before = await pwned();
    const done = await createAndRun(viewer, {
      sql: 'SELECT id, e FROM v_evil',
      reason: 'look',
      capability: 'migrator',
    });
    assert.equal(await pwned(), before, `planted writes committed: ${JSON.stringify(done?.last_execution)}`);
  });

  test('a viewer read with capability migrator through a user operator writes nothing', async () => {
    const before = await pwned();
    const done = await createAndRun(viewer, {
      sql: 'SELECT 1 === 1 AS x',
      reason: 'look',
      capability: 'migrator',
    });
    assert.equal(await pwned(), before, `planted writes committed: ${JSON.stringify(done)}`);
  });

  test('a viewer read with capability migrator through attribute notation writes nothing', async () => {
    const before = await pwned();
    const done = await createAndRun(viewer, {
      sql: 'SELECT c.evil FROM canary c WHERE c.id = 1',
      reason: 'look',
      capability: 'migrator',
    });
    assert.equal(await pwned(), before, `planted writes committed: ${JSON.stringify(done)}`);
  });
  test('a viewer read with capability migrator cannot read what the reader is not granted', async () => {
    await stack.t.asOwner(
      `CREATE TABLE IF NOT EXISTS rga_withheld (s text); INSERT INTO rga_withheld VALUES ('withheld-secret');
         REVOKE ALL ON rga_withheld FROM ${stack.t.roles.reader}`,
    );
    const asReader = await createAndRun(viewer, { sql: 'SELECT s FROM rga_withheld', reason: 'look' });
    assert.equal((asReader?.last_execution as { status: string } | undefined)?.status, 'failed');
    const done = await createAndRun(viewer, {
      sql: 'SELECT s FROM rga_withheld',
      reason: 'look',
      capability: 'migrator',
    });
    const res = done ? await http.result(DB, done.id as string, viewer.headers) : null;
    assert.ok(!res?.body.includes('withheld-secret'), `read as the migrator: ${res?.body}`);
  });
});

describe('dry runs leave nothing behind', () => {
  // Accepted and documented (docs/api.md "Dry runs", ADR 0026): sequences are not transactional in
  // PostgreSQL, so a dry run's nextval() stays advanced; the rows it inserted do not.
  test('a preflight dry run leaves no rows behind; only a sequence it called moves, as documented', async () => {
    const seq = async () =>
      (await stack.t.asAdmin('SELECT last_value::text || is_called::text AS v FROM seq')).rows[0].v;
    const before = await seq();
    const pre = expectStatus(
      await http.call('POST', `/v1/databases/${DB}/requests/preflight`, member.headers, {
        sql: "INSERT INTO canary SELECT nextval('seq')::int + 500, 'dry' FROM generate_series(1, 5)",
      }),
      200,
    );
    assert.ok(pre.dry_run, JSON.stringify(pre));
    assert.notEqual(await seq(), before, 'nextval() is not undone by a rollback');
    const dry = await stack.t.asAdmin("SELECT count(*)::int AS n FROM canary WHERE secret = 'dry'");
    assert.equal(dry.rows[0].n, 0, 'the dry run inserted nothing that stayed');
  });

  test('a preflight dry run through a planted trigger writes nothing', async () => {
    await stack.t.asOwner(`
      CREATE TABLE IF NOT EXISTS rga_log (n int);
      CREATE OR REPLACE FUNCTION rga_trg() RETURNS trigger LANGUAGE plpgsql AS
        $$ BEGIN INSERT INTO canary VALUES (5000 + (random() * 1000)::int, 'pwned'); RETURN NEW; END $$;
      DROP TRIGGER IF EXISTS rga_t ON rga_log;
      CREATE TRIGGER rga_t BEFORE INSERT ON rga_log FOR EACH ROW EXECUTE FUNCTION rga_trg();
    `);
    const before = await pwned();
    const pre = expectStatus(
      await http.call('POST', `/v1/databases/${DB}/requests/preflight`, member.headers, {
        sql: 'INSERT INTO rga_log VALUES (1)',
      }),
      200,
    );
    assert.ok(pre.dry_run, JSON.stringify(pre));
    assert.equal(await pwned(), before);
  });

  test('a viewer preflight of a write runs no dry run', async () => {
    const pre = expectStatus(
      await http.call('POST', `/v1/databases/${DB}/requests/preflight`, viewer.headers, {
        sql: 'INSERT INTO rga_log VALUES (2)',
      }),
      200,
    );
    assert.equal((pre.policy as { allowed: boolean }).allowed, false);
    assert.equal(pre.dry_run, null);
  });
});

describe('approvals', () => {
  const writeSql = 'UPDATE customers SET name = name WHERE id = 1';

  test('a member cannot approve a request made with an API key they created themselves', async () => {
    const created = expectStatus(
      await http.call('POST', '/v1/keys', member.headers, { name: 'rga-own-key', level: 'write' }),
      201,
    );
    const own = { authorization: `Bearer ${created.key as string}` };
    const req = expectStatus(await http.create(DB, own, { sql: writeSql, reason: 'mine' }), 201);
    assert.equal(req.status, 'pending', JSON.stringify(req));
    const res = await http.act(DB, req.id as string, 'approve', member.headers, { comment: 'self' });
    const after = expectStatus(await http.get(DB, req.id as string, admin.headers), 200);
    assert.notEqual(after.status, 'approved', `self-approved: ${res.statusCode} ${res.body}`);
    assert.equal(after.approvals_counted, 0);
  });

  test('editing an approved request starts it over; the old approval does not run the new SQL', async () => {
    const req = expectStatus(await http.create(DB, member.headers, { sql: writeSql, reason: 'edit' }), 201);
    const id = req.id as string;
    expectStatus(await http.act(DB, id, 'approve', approver.headers), 200);
    const edited = await http.call('PUT', `/v1/databases/${DB}/requests/${id}`, member.headers, {
      sql: "UPDATE customers SET name = 'edited' WHERE id = 2",
    });
    if (edited.statusCode === 200) {
      const body = edited.json() as Record<string, unknown>;
      assert.equal(body.status, 'pending', edited.body);
      assert.equal(body.approvals_counted, 0);
      expectStatus(await http.act(DB, id, 'execute', member.headers), 409, 'invalid_state');
    } else assert.ok([403, 409].includes(edited.statusCode), edited.body);
    const name = (await stack.t.asAdmin('SELECT name FROM customers WHERE id = 2')).rows[0].name;
    assert.equal(name, 'bob');
  });

  test('an approver removed from the account, or suspended, no longer counts at execution', async () => {
    for (const how of ['removed', 'suspended'] as const) {
      const gone = await person(stack.s, stack.key.accountId, 'member', `rga-gone-${how}`);
      const req = expectStatus(
        await http.create(DB, member.headers, {
          sql: "UPDATE customers SET name = 'x' WHERE id = 3",
          reason: how,
        }),
        201,
      );
      const id = req.id as string;
      assert.equal(expectStatus(await http.act(DB, id, 'approve', gone.headers), 200).status, 'approved');
      if (how === 'removed')
        await stack.s.db.pool.query('DELETE FROM memberships WHERE user_id = $1', [gone.id]);
      else
        await stack.s.db.pool.query(
          "UPDATE users SET status = 'suspended', suspended_at = now() WHERE id = $1",
          [gone.id],
        );
      const res = await http.act(DB, id, 'execute', member.headers);
      assert.notEqual(res.statusCode, 200, res.body);
      const name = (await stack.t.asAdmin('SELECT name FROM customers WHERE id = 3')).rows[0].name;
      assert.equal(name, 'cy', `${how}: ran`);
    }
  });

  test('a requester demoted to viewer after approval cannot execute the write', async () => {
    const m2 = await person(stack.s, stack.key.accountId, 'member', 'rga-demoted');
    const req = expectStatus(
      await http.create(DB, m2.headers, {
        sql: "UPDATE customers SET name = 'demoted' WHERE id = 2",
        reason: 'd',
      }),
      201,
    );
    const id = req.id as string;
    expectStatus(await http.act(DB, id, 'approve', approver.headers), 200);
    await stack.s.db.pool.query("UPDATE memberships SET role = 'viewer' WHERE user_id = $1", [m2.id]);
    const res = await http.act(DB, id, 'execute', m2.headers);
    const name = (await stack.t.asAdmin('SELECT name FROM customers WHERE id = 2')).rows[0].name;
    assert.equal(name, 'bob', `a viewer ran an approved write: ${res.statusCode}`);
  });

  for (const [label, sql] of [
    [
      'a data-modifying CTE',
      'WITH d AS (DELETE FROM orders WHERE amount > 15 RETURNING 1) SELECT count(*) FROM d',
    ],
    ['EXPLAIN ANALYZE', 'EXPLAIN ANALYZE DELETE FROM orders WHERE amount > 15'],
  ] as const) {
    test(`the approved row count binds ${label} too (more rows at execution roll back)`, async () => {
      await stack.t.asOwner('DELETE FROM orders WHERE id >= 100; INSERT INTO orders VALUES (100, 1, 50.00)');
      const req = expectStatus(await http.create(DB, member.headers, { sql, reason: label }), 201);
      const id = req.id as string;
      const approvedRows = req.approved_rows as number | null;
      expectStatus(await http.act(DB, id, 'approve', approver.headers), 200);
      // After approval, more rows match.
      await stack.t.asOwner('INSERT INTO orders SELECT g, 1, 99.00 FROM generate_series(101, 140) g');
      const before = (await stack.t.asAdmin('SELECT count(*)::int AS n FROM orders WHERE amount > 15'))
        .rows[0].n;
      const done = expectStatus(await http.act(DB, id, 'execute', member.headers), 200);
      const after = (await stack.t.asAdmin('SELECT count(*)::int AS n FROM orders WHERE amount > 15')).rows[0]
        .n;
      assert.equal(
        after,
        before,
        `approved ${approvedRows} rows; deleted ${before - after}: ${JSON.stringify(done.last_execution)}`,
      );
    });
  }

  test('a cancelled request cannot be executed or approved', async () => {
    const req = expectStatus(await http.create(DB, member.headers, { sql: writeSql, reason: 'cancel' }), 201);
    const id = req.id as string;
    expectStatus(await http.act(DB, id, 'cancel', member.headers), 200);
    expectStatus(await http.act(DB, id, 'approve', approver.headers), 409, 'invalid_state');
    expectStatus(await http.act(DB, id, 'execute', member.headers), 409, 'invalid_state');
    const bg = await http.act(DB, id, 'execute', admin.headers, {
      break_glass: { reason: 'production is down, fixing it now' },
    });
    assert.notEqual(bg.statusCode, 200, bg.body);
  });
});

describe('keys and other accounts', () => {
  let readKey: TestKey;
  let scopedKey: TestKey;
  let reqId: string;

  before(async () => {
    readKey = await createTestKey(stack.s, { account: 'rgaacct', level: 'read' });
    scopedKey = await createTestKey(stack.s, {
      account: 'rgaacct',
      level: 'write',
      databases: ['rga_other_db'],
    });
    const req = expectStatus(
      await http.create(DB, member.headers, {
        sql: 'UPDATE customers SET name = name WHERE id = 1',
        reason: 'k',
      }),
      201,
    );
    reqId = req.id as string;
  });

  test('a read key cannot create, preflight, execute, approve or break glass', async () => {
    expectStatus(await http.create(DB, readKey.headers, { sql: 'SELECT 1', reason: 'r' }), 403);
    expectStatus(
      await http.call('POST', `/v1/databases/${DB}/requests/preflight`, readKey.headers, {
        sql: 'DELETE FROM canary WHERE id = 1',
      }),
      403,
    );
    expectStatus(await http.act(DB, reqId, 'execute', readKey.headers), 403);
    expectStatus(await http.act(DB, reqId, 'approve', readKey.headers), 403);
    expectStatus(await http.call('PUT', '/v1/policy', readKey.headers, { source: 'version: 1\n' }), 403);
    // A member (session) and a database-scoped admin key cannot apply the account's policy either.
    expectStatus(await http.call('PUT', '/v1/policy', member.headers, { source: 'version: 1\n' }), 403);
    const scopedAdmin = await createTestKey(stack.s, { account: 'rgaacct', level: 'admin', databases: [DB] });
    expectStatus(await http.call('PUT', '/v1/policy', scopedAdmin.headers, { source: 'version: 1\n' }), 403);
  });

  test('a key scoped to another database sees none of this database’s requests', async () => {
    expectStatus(await http.get(DB, reqId, scopedKey.headers), 404);
    const list = expectStatus(await http.call('GET', '/v1/requests', scopedKey.headers), 200);
    assert.ok(!(list.items as { id: string }[]).some((r) => r.id === reqId), 'listed to a scoped key');
    expectStatus(
      await http.call('POST', `/v1/databases/${DB}/requests/preflight`, scopedKey.headers, {
        sql: 'SELECT 1',
      }),
      404,
    );
  });

  test('another account: requests, results, preflight, policy are 404 or its own', async () => {
    const other = await createAccount(stack.s, 'rga-strangers');
    const stranger = await person(stack.s, other, 'owner', 'rga-str');
    const strangerKey = await createTestKey(stack.s, { account: 'rga-strangers', level: 'admin' });
    for (const h of [stranger.headers, strangerKey.headers]) {
      expectStatus(await http.get(DB, reqId, h), 404);
      expectStatus(await http.result(DB, reqId, h), 404);
      expectStatus(await http.act(DB, reqId, 'approve', h), 404);
      expectStatus(await http.act(DB, reqId, 'cancel', h), 404);
      expectStatus(await http.act(DB, reqId, 'dry-run', h), 404);
      expectStatus(await http.create(DB, h, { sql: 'SELECT 1', reason: 'x' }), 404);
      expectStatus(
        await http.call('POST', `/v1/databases/${DB}/requests/preflight`, h, { sql: 'SELECT 1' }),
        404,
      );
      const list = expectStatus(await http.call('GET', '/v1/requests', h), 200);
      assert.ok(!(list.items as { id: string }[]).some((r) => r.id === reqId));
      const pol = expectStatus(await http.call('GET', '/v1/policy', h), 200);
      assert.equal(pol.version, 0);
    }
  });
});

describe('bounds', () => {
  test('an SQL text past the bound is refused before classification; a huge IN list is cheap', async () => {
    const huge = `SELECT 1 WHERE 1 IN (${Array.from({ length: 60_000 }, (_, i) => i).join(',')})`;
    const t0 = performance.now();
    const res = await http.call('POST', `/v1/databases/${DB}/requests/preflight`, member.headers, {
      sql: huge,
    });
    assert.ok([400, 413].includes(res.statusCode), `${res.statusCode} ${res.body.slice(0, 300)}`);
    const inList = `SELECT 1 WHERE 1 IN (${Array.from({ length: 5_000 }, (_, i) => i).join(',')})`;
    const pre = await http.call('POST', `/v1/databases/${DB}/requests/preflight`, member.headers, {
      sql: inList,
    });
    assert.ok(pre.statusCode === 200 || pre.statusCode === 400, pre.body.slice(0, 300));
    assert.ok(performance.now() - t0 < 10_000, 'bounded work');
  });

  test('a long statement is bounded by the dry run timeout', async () => {
    const t0 = performance.now();
    const pre = await http.call('POST', `/v1/databases/${DB}/requests/preflight`, member.headers, {
      sql: 'UPDATE customers SET name = name WHERE id = (SELECT count(*) FROM generate_series(1, 100000000))::int',
    });
    assert.ok(pre.statusCode < 500 || pre.statusCode === 502 || pre.statusCode === 503, pre.body);
    assert.ok(performance.now() - t0 < 30_000, `took ${performance.now() - t0} ms`);
  });
});

describe('load a member can put on the node', () => {
  test('a huge result is cut to the byte limit', async () => {
    const done = await createAndRun(member, { sql: "SELECT repeat('x', 40000000) AS big", reason: 'big' });
    assert.ok(done, 'created');
    const res = await http.result(DB, done.id as string, member.headers);
    assert.ok(res.body.length < 20_000_000, `result of ${res.body.length} bytes`);
  });

  test('concurrent long preflight dry runs are bounded per database', async () => {
    const slow =
      'UPDATE customers SET name = name WHERE id = (SELECT count(*) FROM generate_series(1, 200000000))::int';
    let peak = 0;
    let done = false;
    const sampler = (async () => {
      while (!done) {
        const r = await stack.t.asAdmin(
          "SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'bulwark-execution' AND state = 'active'",
        );
        peak = Math.max(peak, r.rows[0].n);
        await new Promise((r) => setTimeout(r, 200));
      }
    })();
    await Promise.all(
      Array.from({ length: 8 }, () =>
        http.call('POST', `/v1/databases/${DB}/requests/preflight`, member.headers, { sql: slow }),
      ),
    );
    done = true;
    await sampler;
    assert.ok(peak <= 4, `${peak} dry runs ran at once`);
  });
});

describe('the tenant owner and the platform logins', () => {
  test('the owner cannot read the verifiers of reader, migrator or any login', async () => {
    const r = await stack.t.asOwner(
      'SELECT rolname, rolpassword FROM pg_catalog.pg_roles WHERE rolname = ANY ($1)',
      [[stack.t.roles.reader, stack.t.roles.migrator, stack.t.roles.steward]],
    );
    for (const row of r.rows)
      assert.ok(row.rolpassword === null || row.rolpassword === '********', row.rolname);
    await assert.rejects(
      stack.t.asOwner('SELECT rolpassword FROM pg_catalog.pg_authid'),
      /permission denied/,
    );
  });

  test('the owner cannot change the migrator it is a member of, nor make the reader a writer', async () => {
    await assert.rejects(
      stack.t.asOwner(`ALTER ROLE ${stack.t.roles.migrator} PASSWORD 'x'`),
      /permission denied|must have|privilege/,
    );
    await assert.rejects(
      stack.t.asOwner(`ALTER ROLE ${stack.t.roles.reader} SET default_transaction_read_only = off`),
      /permission denied|must have|privilege/,
    );
  });
});

describe('just-in-time logins (a real agent owning a private PgBouncer)', () => {
  let pooler: PrivatePooler;
  let s: TestServer;
  let agent: RunningAgent;
  let key: TestKey;
  let cluster: pg.Pool;

  before(async () => {
    pooler = await startPrivatePooler();
    s = await createTestServer({ poolerPort: pooler.port, poolerSslmode: 'disable' });
    const url = await s.app.listen({ host: '127.0.0.1', port: 0 });
    agent = await startTestAgent(s, url, { name: 'rga-jit-node', pooler });
    key = await createTestKey(s, { account: 'rga-jit' });
    cluster = adminPool();
  });
  after(async () => {
    await agent?.stop();
    s?.app.server.closeAllConnections();
    await s?.stop();
    await pooler?.stop();
    await cluster?.end();
  });

  const waitFor = async <T>(what: string, fn: () => Promise<T | undefined>, ms = 20_000): Promise<T> => {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      const v = await fn();
      if (v !== undefined) return v;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`timed out waiting for ${what}`);
  };

  type Credentials = { login: string; password: string; connection_string: string; valid_until: string };
  const login = async (c: Credentials): Promise<pg.Client> => {
    const u = new URL(c.connection_string);
    const client = clientFrom('127.0.0.1', {
      port: Number(u.port),
      user: decodeURIComponent(u.username),
      password: c.password,
      database: u.pathname.slice(1),
    });
    await client.connect();
    return client;
  };

  /** A ready database; `physical` is its name on the node (generated, never its label). */
  async function readyDatabase(): Promise<{ name: string; id: string; physical: string }> {
    const name = `rgajit_${randomBytes(4).toString('hex')}`;
    const call = (method: 'GET' | 'POST', url: string) => s.app.inject({ method, url, headers: key.headers });
    const created = await s.app.inject({
      method: 'POST',
      url: '/v1/databases',
      headers: key.headers,
      payload: { name },
    });
    assert.equal(created.statusCode, 202, created.body);
    const ready = await waitFor('ready', async () => {
      const d = (await call('GET', `/v1/databases/${name}`)).json();
      assert.notEqual(d.status, 'failed', d.failure_reason);
      return d.status === 'ready' ? d : undefined;
    });
    const conn = (await call('GET', `/v1/databases/${name}/connection`)).json();
    const { password } = (await call('POST', `/v1/databases/${name}/credentials/reveal`)).json();
    const owner = new pg.Client({
      host: '127.0.0.1',
      port: pooler.port,
      user: conn.user,
      password,
      database: conn.database,
    });
    await owner.connect();
    await owner.query(
      'CREATE TABLE orders (id int PRIMARY KEY, total int); INSERT INTO orders VALUES (1, 42)',
    );
    await owner.end();
    return { name, id: ready.id as string, physical: conn.database as string };
  }

  const grant = async (
    db: { name: string; id: string },
    capability: 'reader' | 'migrator',
    durationS: number,
  ) => {
    const requester = await person(s, key.accountId, 'member', 'rga-jit');
    const created = expectStatus(
      await api(s).create(db.name, requester.headers, {
        access: { role: capability, duration_s: 3600 },
        reason: 'review probe',
      }),
      201,
    );
    return (await s.access.grantAccess({
      accountId: key.accountId,
      requestId: created.id as string,
      databaseId: db.id,
      capability,
      durationS,
      actor: { type: 'system', id: null },
    })) as Credentials;
  };

  test("an admin executing another person's approved access request does not receive that person's login", async () => {
    const db = await readyDatabase();
    const requester = await person(s, key.accountId, 'member', 'rga-acc-req');
    const approverP = await person(s, key.accountId, 'member', 'rga-acc-appr');
    const adminP = await person(s, key.accountId, 'admin', 'rga-acc-admin');
    const h = api(s);
    const created = expectStatus(
      await h.create(db.name, requester.headers, {
        access: { role: 'reader', duration_s: 600 },
        reason: 'look',
      }),
      201,
    );
    const id = created.id as string;
    if (created.status === 'pending')
      expectStatus(await h.act(db.name, id, 'approve', approverP.headers), 200);
    for (const who of [adminP.headers, key.headers]) {
      const res = await h.act(db.name, id, 'execute', who);
      const body = res.json() as { credentials?: unknown };
      assert.equal(body.credentials, undefined, `credentials given to a non-requester: ${res.statusCode}`);
    }
  });

  test('a JIT login cannot extend its own validity', async () => {
    const db = await readyDatabase();
    const w = await grant(db, 'migrator', 600);
    const c = await login(w);
    try {
      await assert.rejects(
        c.query(`ALTER ROLE CURRENT_USER VALID UNTIL 'infinity'`),
        /permission denied|must/,
      );
      await assert.rejects(c.query('ALTER ROLE CURRENT_USER CONNECTION LIMIT -1'), /permission denied|must/);
    } finally {
      await c.end().catch(() => {});
    }
  });

  /** The `orders` rows a reader login writes through `jit_door()` after the migrator login ended. */
  const doorAfterEnd = async (asItself: boolean) => {
    const db = await readyDatabase();
    const w = await grant(db, 'migrator', 5);
    const c = await login(w);
    // Stepping out of the migrator role (the login's default) makes the function the login's own.
    if (asItself) await c.query(`SET ROLE ${w.login}`);
    await c.query(
      `CREATE FUNCTION public.jit_door() RETURNS int LANGUAGE sql SECURITY DEFINER
           AS $$ INSERT INTO public.orders VALUES (99, 0) RETURNING 1 $$`,
    );
    const owner = (
      await c.query("SELECT proowner::regrole::text AS o FROM pg_proc WHERE proname = 'jit_door'")
    ).rows[0].o;
    await c.end().catch(() => {});
    await waitFor('the migrator login ended (no login, no membership)', async () => {
      const r = await cluster.query(
        `SELECT rolcanlogin AS l, (SELECT count(*)::int FROM pg_auth_members WHERE member = a.oid OR roleid = a.oid) AS m
           FROM pg_roles a WHERE rolname = $1`,
        [w.login],
      );
      return r.rows.length === 0 || (r.rows[0].l === false && r.rows[0].m === 0) ? true : undefined;
    });
    const r = await grant(db, 'reader', 600);
    const reader = await login(r);
    try {
      const denied = await reader
        .query('SELECT public.jit_door()')
        .then(() => null)
        .catch((err: Error) => err.message);
      const rows = (await reader.query('SELECT count(*)::int AS n FROM orders WHERE id = 99')).rows[0].n;
      return { rows, denied, owner, login: w.login, physical: db.physical };
    } finally {
      await reader.end().catch(() => {});
    }
  };

  test("a SECURITY DEFINER function a JIT login owns runs with no more than PUBLIC's rights after it ends", async () => {
    const door = await doorAfterEnd(true);
    assert.equal(door.owner, door.login, 'the login owns its function (so it is left NOLOGIN, not dropped)');
    assert.equal(door.rows, 0, `a reader login wrote through the ended login's function (${door.denied})`);
    assert.match(door.denied ?? '', /permission denied/);
  });

  // Accepted (ADR 0024): what a migrator login creates as `<physical>_migrator` (its default role)
  // is the migrator's, like a governed migration's, and stays when the login ends: the migrator
  // grant is the review. What is checked: the function is the migrator's, not a stranded login's.
  test("what a migrator JIT login creates belongs to the database's migrator, and the login itself ends", async () => {
    const door = await doorAfterEnd(false);
    assert.equal(door.owner, `${door.physical}_migrator`, `the function is owned by ${door.owner}`);
    await waitFor('the login, owning nothing, is dropped at its end', async () =>
      (await cluster.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [door.login])).rowCount === 0
        ? true
        : undefined,
    );
  });
});
