import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { loadExplorerKey } from '../src/agent/explorer/explorer-role.ts';
import type { RunningAgent } from '../src/agent/main.ts';
import { SPARE_PREFIX, spareTag } from '../src/agent/postgres/spare-sql.ts';
import { warmPools } from '../src/server/modules/metrics/metrics.repo.ts';
import { startTestAgent } from './helpers/agent.ts';
import { testEnv } from './helpers/env.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { drainSpares } from './helpers/reserve-stack.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { type PrivatePooler, startPrivatePooler, tryLogin } from './pooler-harness.ts';

// The warm pool through the whole path (ADR 0028): HTTP API with real keys → job → a real agent
// with a pool of 2 → PostgreSQL + PgBouncer. Spares are in no tenant's API and not reachable.
let pooler: PrivatePooler;
let s: TestServer;
let agent: RunningAgent;
let a: TestKey;
let b: TestKey;
let admin: pg.Pool;
let tag: string;
before(async () => {
  pooler = await startPrivatePooler();
  s = await createTestServer({ poolerPort: pooler.port, poolerSslmode: 'disable' });
  const url = await s.app.listen({ host: '127.0.0.1', port: 0 });
  agent = await startTestAgent(s, url, { name: 'warm', pooler, warmPoolSize: 2, explorerChannel: false });
  a = await createTestKey(s, { account: 'warm-a' });
  b = await createTestKey(s, { account: 'warm-b' });
  admin = new pg.Pool({ connectionString: testEnv().adminUrl, max: 2 });
  admin.on('error', () => {});
  tag = spareTag(await loadExplorerKey(pooler.stateDir));
});
after(async () => {
  await agent?.stop();
  // The agent's spares go with the test (its key, its tag).
  await drainSpares(pooler, admin);
  await admin?.end();
  s?.app.server.closeAllConnections();
  await s?.stop();
  await pooler?.stop();
});

async function spares(): Promise<string[]> {
  const r = await admin.query<{ n: string }>(
    `SELECT datname::text AS n FROM pg_database
      WHERE starts_with(datname::text, $1) AND shobj_description(oid, 'pg_database') LIKE 'bulwark:spare:ready:%'`,
    [`${SPARE_PREFIX}${tag}_`],
  );
  return r.rows.map((x) => x.n);
}

async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const v = await fn();
    if (v !== undefined) return v;
    await new Promise((r) => setTimeout(r, 25));
  }
  throw new Error(`timed out waiting for ${what}`);
}

test('a create through the API takes a spare; spares are in no tenant API and not reachable', async () => {
  const full = await waitFor('the pool full', async () => {
    const list = await spares();
    return list.length === 2 ? list : undefined;
  });
  const api = (k: TestKey, method: 'GET' | 'POST', url: string, payload?: Record<string, unknown>) =>
    s.app.inject({ method, url, headers: k.headers, ...(payload ? { payload } : {}) });
  const name = `wa_${randomBytes(4).toString('hex')}`;
  const created = await api(a, 'POST', '/v1/databases', { name });
  assert.equal(created.statusCode, 202, created.body);
  await waitFor('ready', async () => {
    const d = (await api(a, 'GET', `/v1/databases/${name}`)).json();
    assert.notEqual(d.status, 'failed', d.failure_reason);
    return d.status === 'ready' ? d : undefined;
  });
  const job = await s.db.pool.query<{ warm: number }>(
    // The create job names the database by id: its payload's name is a generated one (ADR 0039).
    "SELECT (result->'steps_ms'->>'warm')::int AS warm FROM jobs WHERE kind = 'database.create' AND payload->>'database_id' = $1",
    [created.json().id],
  );
  assert.equal(job.rows[0]!.warm, 1, 'made from a spare');
  const conn = (await api(a, 'GET', `/v1/databases/${name}/connection`)).json();
  // The spare's generated names are the database's physical names (ADR 0034): the connection
  // info carries them; the API name is the tenant's label.
  assert.ok(full.includes(conn.database), JSON.stringify(conn));
  assert.equal(conn.user, `${conn.database}_owner`);
  const { password } = (await api(a, 'POST', `/v1/databases/${name}/credentials/reveal`)).json();
  const login = new pg.Client({
    host: '127.0.0.1',
    port: pooler.port,
    user: conn.user,
    database: conn.database,
    password,
  });
  assert.equal(await tryLogin(login), null);

  // No tenant's API shows a spare: lists, lookups, and a create of a spare's name is refused.
  for (const k of [a, b]) {
    const listed = (await api(k, 'GET', '/v1/databases')).body;
    // The spares left (the one handed out is `a`'s database now, under its spare name).
    for (const spare of await spares()) assert.ok(!listed.includes(spare), 'a spare in a list');
    for (const spare of await spares()) {
      // A name no tenant may have: refused as such (400), never found.
      assert.ok([400, 404].includes((await api(k, 'GET', `/v1/databases/${spare}`)).statusCode));
      const taken = await api(k, 'POST', '/v1/databases', { name: spare });
      assert.ok([400, 422].includes(taken.statusCode), `create ${spare}: ${taken.statusCode}`);
    }
  }
  // Nor through PgBouncer, with any password.
  for (const spare of await spares()) {
    const c = new pg.Client({
      host: '127.0.0.1',
      port: pooler.port,
      user: `${spare}_owner`,
      database: spare,
      password: 'x',
    });
    assert.notEqual(await tryLogin(c), null);
  }
  // The pool refills to 2 after the create was reported.
  await waitFor('refilled', async () => ((await spares()).length === 2 ? true : undefined));
  // The heartbeat reported the pool (its first beat, at start-up); the metrics read it from there.
  const pools = await warmPools(s.db.pool);
  const mine = pools.find((n) => n.name === 'warm');
  assert.equal(mine?.size, 2, JSON.stringify(pools));
  assert.ok(mine.ready >= 0 && mine.ready <= 2);
});
