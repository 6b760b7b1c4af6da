// The whole samples path with the real agent: it reads each tenant database's size and its own
// connections from the cluster, reports them, and the list and chart routes show them. A hostile
// tenant owner plants catalog-named functions, changes its role's settings and disguises its
// sessions as the platform's: the sampler runs none of its code, counts exactly its connections,
// and no tenant moves another database's numbers. Real PostgreSQL, PgBouncer, agent and server.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import pg from 'pg';
import type { RunningAgent } from '../src/agent/main.ts';
import { startTestAgent } from './helpers/agent.ts';
import { adminQuery } from './helpers/db.ts';
import { testEnv } from './helpers/env.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { waitFor } from './helpers/wait.ts';
import { type PrivatePooler, startPrivatePooler } from './pooler-harness.ts';

let pooler: PrivatePooler;
let s: TestServer;
let agent: RunningAgent;
let key: TestKey;
let stranger: TestKey;
const open: pg.Client[] = [];

before(async () => {
  pooler = await startPrivatePooler();
  s = await createTestServer({ poolerPort: pooler.port, poolerSslmode: 'disable' });
  const url = await s.app.listen({ host: '127.0.0.1', port: 0 });
  agent = await startTestAgent(s, url, { name: 'local', pooler, sampleIntervalMs: 500 });
  key = await createTestKey(s, { account: 'acme' });
  stranger = await createTestKey(s, { account: 'evil' });
});
after(async () => {
  for (const c of open) await c.end().catch(() => {});
  await agent?.stop();
  s?.app.server.closeAllConnections();
  await s?.stop();
  await pooler?.stop();
});

const api = (url: string, k: TestKey = key, method: 'GET' | 'POST' = 'GET', payload?: object) =>
  s.app.inject({ method, url, headers: k.headers, ...(payload ? { payload } : {}) });

type Item = {
  name: string;
  size_bytes: number | null;
  connections: number | null;
  sampled_at: string | null;
};
const item = async (name: string): Promise<Item> => (await api(`/v1/databases/${name}`)).json();

type Tenant = { name: string; database: string; user: string; password: string };

/** A ready database: its label (`name`) and its generated name on the node (`database`, ADR 0039). */
async function createReady(prefix: string): Promise<Tenant> {
  const name = `${prefix}_${randomBytes(4).toString('hex')}`;
  assert.equal((await api('/v1/databases', key, 'POST', { name })).statusCode, 202);
  await waitFor(
    `${name} ready`,
    async () => {
      const d = (await api(`/v1/databases/${name}`)).json();
      assert.notEqual(d.status, 'failed', d.failure_reason);
      return d.status === 'ready';
    },
    { timeoutMs: 30_000, everyMs: 50 },
  );
  const { database, user } = (await api(`/v1/databases/${name}/connection`)).json();
  assert.notEqual(database, name);
  const { password } = (await api(`/v1/databases/${name}/credentials/reveal`, key, 'POST')).json();
  return { name, database, user, password };
}

/** A session straight to PostgreSQL's loopback port as the tenant's owner. */
async function connectOwner(t: Tenant, database = t.database) {
  const c = new pg.Client({
    host: '127.0.0.1',
    port: testEnv().pgPort,
    database,
    user: t.user,
    password: t.password,
    connectionTimeoutMillis: 5_000,
  });
  c.on('error', () => {});
  await c.connect();
  open.push(c);
  return c;
}

/**
 * Ends every session of the database's owner role: the pooler keeps a server session of the owner
 * from the create's login probe (one of the tenant's own connections, and counted as such), which
 * it may close at any time; the tests start from none.
 */
async function endOwnerSessions(t: Tenant): Promise<void> {
  // Waits (up to 5 s each) until the backends have exited: a sample read right after must not
  // still count one that was only signalled.
  await adminQuery(
    'SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = $1 AND usename = $2',
    [t.database, t.user],
  );
}

/** Waits for a sample taken after `since` that satisfies `ok`. */
function sampleAfter(name: string, since: number, ok: (i: Item) => boolean): Promise<Item> {
  return waitFor(
    `a sample of ${name}`,
    async () => {
      const i = await item(name);
      return i.sampled_at && Date.parse(i.sampled_at) > since && ok(i) ? i : undefined;
    },
    { timeoutMs: 45_000, everyMs: 100 },
  );
}

test("the agent samples each database's size and its own connections; the routes show them", async () => {
  const a = await createReady('sampled');
  await endOwnerSessions(a);
  // A sample is stamped when the server stores it: one read while the sessions were still ending
  // can arrive after this point; the next one counts none.
  const first = await sampleAfter(a.name, Date.now(), (i) => i.connections === 0);
  const size = (await adminQuery<{ size: string }>('SELECT pg_database_size($1) AS size', [a.database]))[0]!
    .size;
  assert.ok(first.size_bytes !== null && first.size_bytes > 1_000_000, String(first.size_bytes));
  assert.ok(
    Math.abs(first.size_bytes - Number(size)) <= Number(size) * 0.05,
    `${first.size_bytes} vs ${size}`,
  );
  assert.equal(first.connections, 0);

  const clients = [await connectOwner(a), await connectOwner(a)];
  await clients[0]!.query(
    'CREATE TABLE filler AS SELECT g, repeat(md5(g::text), 20) AS pad FROM generate_series(1, 20000) g',
  );
  const since = Date.now();
  const grown = await sampleAfter(a.name, since, (i) => i.connections === 2);
  assert.ok(
    grown.size_bytes! > first.size_bytes + 5_000_000,
    `${grown.size_bytes} after ${first.size_bytes}`,
  );
  const listed = (await api(`/v1/databases?q=${a.name}`)).json().items[0];
  assert.equal(listed.connections, 2);
  const chart = (await api(`/v1/databases/${a.name}/samples?window=1h`)).json();
  assert.ok(chart.points.length >= 1);
  assert.ok(chart.points.some((p: { connections: number }) => p.connections === 2));
  assert.equal((await api(`/v1/databases/${a.name}/samples`, stranger)).statusCode, 404);

  for (const c of clients) await c.end();
  await sampleAfter(a.name, Date.now(), (i) => i.connections === 0);
});

test('a hostile tenant cannot make the sampler run its code or lie beyond its own numbers', async () => {
  const a = await createReady('hostile');
  const b = await createReady('bystander');
  await endOwnerSessions(a);
  await endOwnerSessions(b);
  const owner = await connectOwner(a);
  await owner.query('CREATE TABLE public.trap_log (at timestamptz DEFAULT now(), who text, what text)');
  await owner.query('GRANT ALL ON public.trap_log TO PUBLIC');
  // Catalog-named functions the sampler's statements would call if they resolved names through
  // the tenant's search_path; each one, if it ever ran, leaves a row and lies.
  for (const [sig, ret, value] of [
    ['pg_database_size(oid)', 'bigint', '1'],
    ['pg_database_size(name)', 'bigint', '1'],
    ['starts_with(text, text)', 'boolean', 'true'],
    ['current_setting(text)', 'text', "'1'"],
    ['version()', 'text', "'x'"],
  ] as const)
    await owner.query(
      `CREATE FUNCTION public.${sig} RETURNS ${ret} LANGUAGE sql VOLATILE AS $$
         INSERT INTO public.trap_log (who, what) VALUES (current_user, '${sig}');
         SELECT ${value}::${ret} $$`,
    );
  await owner.query(`CREATE FUNCTION public.count(anyelement) RETURNS bigint LANGUAGE sql AS $$
      INSERT INTO public.trap_log (who, what) VALUES (current_user, 'count'); SELECT 999999::bigint $$`);
  // Settings the tenant controls: its roles' (allowed), its database's (refused: the steward owns it).
  await owner.query(`ALTER ROLE ${a.user} SET search_path = public, pg_catalog`);
  await assert.rejects(owner.query(`ALTER DATABASE ${a.database} SET search_path = public, pg_catalog`));
  // The trap is live: a new session of the tenant's role that calls the name unqualified runs it.
  const probe = await connectOwner(a);
  assert.equal(
    String((await probe.query('SELECT pg_database_size(current_database()::name) AS n')).rows[0].n),
    '1',
    'the planted function answers an unqualified call',
  );
  await probe.end();
  open.splice(open.indexOf(probe), 1);
  await owner.query('DELETE FROM public.trap_log');
  // Sessions dressed as the platform's: the application name proves nothing.
  await owner.query("SET application_name = 'bulwark-agent'");
  const disguised = [await connectOwner(a), await connectOwner(a)];
  for (const c of disguised) await c.query("SET application_name = 'bulwark-steward'");
  // Its roles reach no other database: it cannot add to the bystander's count.
  await assert.rejects(
    connectOwner(a, b.database),
    /permission denied|not permitted|does not exist|no pg_hba/,
  );

  const since = Date.now();
  const hostile = await sampleAfter(a.name, since, (i) => i.connections === 3);
  const bystander = await sampleAfter(b.name, since, () => true);
  assert.equal(hostile.connections, 3, 'its own three sessions, disguised or not');
  assert.ok(hostile.size_bytes! > 1_000_000, `a real size, not the planted answer: ${hostile.size_bytes}`);
  assert.equal(bystander.connections, 0);
  // Several more rounds, then: not one planted function ran, as anyone.
  await sampleAfter(a.name, Date.now(), () => true);
  const trapped = await owner.query('SELECT who, what FROM public.trap_log');
  assert.deepEqual(trapped.rows, [], 'no planted function ran');
  // And no platform session entered the tenant database to sample it.
  const inside = await adminQuery<{ usename: string }>(
    "SELECT usename FROM pg_stat_activity WHERE datname = $1 AND usename <> $2 AND backend_type = 'client backend'",
    [a.database, a.user],
  );
  assert.deepEqual(inside, []);
});
