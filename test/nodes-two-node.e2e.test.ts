// Two nodes on one machine, real processes (issue 17): the embedded node of a `bulwark up` and a
// second started with `bulwark node up` on other ports, its PgBouncer on 127.0.0.2. The second
// enrolls with a token from `bulwark admin enroll-node` (a reused token is refused), keeps its own
// credentials (0600) and reuses them on restart without a token. A database on each node is
// reached through that node's own PgBouncer (connection info names it); placement avoids a
// cordoned node; decommission is refused while databases remain; a stopped node is marked
// unhealthy with an alert event and its databases say so, and it recovers when it comes back.
import assert from 'node:assert/strict';
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { freePort } from './helpers/ports.ts';
import { startUpStack, type UpStack } from './helpers/up-stack.ts';
import { waitUntil } from './helpers/wait.ts';

const CLI = path.resolve(import.meta.dirname, '../src/cli/index.ts');
const FAST = { BULWARK_UNSAFE_FAST: '1', BULWARK_AGENT_HEARTBEAT_MS: '1000' };

let stack: UpStack;
let admin: { authorization: string };
let nodeDir: string;
let node: ChildProcess | null = null;
let nodeOut = '';
const nodePorts = { pooler: 0, pg: 0 };

// biome-ignore lint/suspicious/noExplicitAny: API answers are read loosely
async function asAdmin(method: string, url: string, body?: unknown): Promise<{ status: number; json: any }> {
  const res = await fetch(`http://127.0.0.1:${stack.ports.server}${url}`, {
    method,
    headers: { ...admin, ...(body ? { 'content-type': 'application/json' } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  return { status: res.status, json: text ? JSON.parse(text) : null };
}

function cli(args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(process.execPath, [CLI, ...args], { timeout: 30_000 }, (err, stdout, stderr) =>
      err ? reject(new Error(`${err.message}\n${stderr}`)) : resolve(stdout),
    ),
  );
}

/** `bulwark node up` for the second node; resolves once it says it is ready. */
async function startNode(token: string | null): Promise<void> {
  const args = ['node', 'up', '--server', `http://127.0.0.1:${stack.ports.server}`, '--data-dir', nodeDir];
  args.push('--pooler-host', '127.0.0.2', '--pooler-port', String(nodePorts.pooler));
  args.push('--pg-port', String(nodePorts.pg));
  if (token) args.push('--token', token);
  nodeOut = '';
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, ...FAST },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  node = child;
  child.stdout?.on('data', (d: Buffer) => {
    nodeOut += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    nodeOut += d.toString();
  });
  await waitUntil(
    'bulwark node up ready',
    async () => {
      if (child.exitCode !== null) throw new Error(`node up exited ${child.exitCode}:\n${nodeOut}`);
      return /Bulwark node is ready/.test(nodeOut) ? true : undefined;
    },
    120_000,
  );
}

async function stopNode(): Promise<void> {
  const child = node;
  node = null;
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGINT');
  const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
  await exited;
  clearTimeout(timer);
}

before(async () => {
  stack = await startUpStack({ env: { ...FAST, BULWARK_NODE_UNHEALTHY_AFTER_SECONDS: '6' } });
  // The first platform admin, through the one-time link `up` printed.
  const code = /#invite=(bwi_[\w-]{43})/.exec(stack.output())?.[1];
  assert.ok(code, stack.output());
  const base = `http://127.0.0.1:${stack.ports.server}`;
  const post = (url: string, body: unknown) =>
    fetch(`${base}${url}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  const password = 'a long enough passphrase';
  assert.equal((await post('/v1/auth/invites/redeem', { code, username: 'root', password })).status, 201);
  const login = await post('/v1/auth/login', { username: 'root', password });
  assert.equal(login.status, 200);
  admin = { authorization: `Bearer ${((await login.json()) as { access_token: string }).access_token}` };
  nodeDir = await fs.mkdtemp(path.join(os.tmpdir(), 'bulwark-node-'));
  nodePorts.pooler = await freePort();
  nodePorts.pg = await freePort();
});

after(async () => {
  await stopNode();
  await stack?.destroy();
  if (nodeDir) await fs.rm(nodeDir, { recursive: true, force: true });
});

test('a second node enrolls with `bulwark node up`, keeps its own credentials, and a reused token is refused', async () => {
  const out = await cli(['admin', 'enroll-node', '--name', 'second', '--data-dir', stack.dir, '--json']);
  const { token, expires_at } = JSON.parse(out) as { token: string; expires_at: string };
  assert.match(token, /^bwe_/);
  const lifetime = Date.parse(expires_at) - Date.now();
  assert.ok(lifetime > 55 * 60_000 && lifetime <= 60 * 60_000, 'one hour by default');
  await startNode(token);
  assert.match(nodeOut, /PgBouncer on 127\.0\.0\.2:/);
  assert.match(nodeOut, /enrolled now/);
  const tokenFile = path.join(nodeDir, 'agent', 'agent-token');
  assert.equal(statSync(tokenFile).mode & 0o077, 0, 'the agent token is 0600');
  assert.ok(!readFileSync(path.join(nodeDir, 'logs', 'agent.log'), 'utf8').includes(token));
  // No control database on the node: only the maintenance databases and the tenant template.
  const adminUrl = readFileSync(path.join(nodeDir, 'secrets', 'admin-database-url'), 'utf8').trim();
  const c = new pg.Client({ connectionString: adminUrl });
  await c.connect();
  try {
    const dbs = await c.query("SELECT 1 FROM pg_database WHERE datname = 'bulwark_control'");
    assert.equal(dbs.rowCount, 0);
  } finally {
    await c.end();
  }

  const reused = await fetch(`http://127.0.0.1:${stack.ports.server}/v1/agent/enroll`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ enrollment_token: token, agent_version: 'test' }),
  });
  assert.equal(reused.status, 401);

  const nodes = await asAdmin('GET', '/v1/nodes');
  assert.equal(nodes.status, 200);
  const second = nodes.json.items.find((n: { name: string }) => n.name === 'second');
  assert.ok(second, JSON.stringify(nodes.json));
  assert.equal(second.health, 'healthy');
  assert.deepEqual(second.pooler, { host: '127.0.0.2', port: nodePorts.pooler });
  assert.ok(second.capacity.budget > 0);
});

test('a database on each node, each reached through its own PgBouncer; placement avoids a cordoned node', async () => {
  const create = async (name: string, nodeName?: string) => {
    const r = await stack.api('POST', '/v1/databases', { name, ...(nodeName ? { node: nodeName } : {}) });
    assert.equal(r.status, 202, JSON.stringify(r.json));
    return r.json as { node: string };
  };
  const ready = (name: string) =>
    waitUntil(`${name} ready`, async () => {
      const d = (await stack.api('GET', `/v1/databases/${name}`)).json;
      if (d.status === 'failed') throw new Error(`${name} failed: ${d.failure_reason}`);
      return d.status === 'ready' ? d : undefined;
    });
  assert.equal((await create('alpha', 'local')).node, 'local');
  assert.equal((await create('beta', 'second')).node, 'second');
  for (const [name, host, port] of [
    ['alpha', '127.0.0.1', stack.ports.pooler],
    ['beta', '127.0.0.2', nodePorts.pooler],
  ] as const) {
    await ready(name);
    const conn = (await stack.api('GET', `/v1/databases/${name}/connection`)).json;
    assert.equal(conn.host, host, name);
    assert.equal(conn.port, port, name);
    const { password } = (await stack.api('POST', `/v1/databases/${name}/credentials/reveal`)).json;
    // The connection info's names: the physical ones (a spare's when the node's warm pool gave one).
    const client = new pg.Client({ host, port, user: conn.user, database: conn.database, password });
    client.on('error', () => {});
    await client.connect();
    try {
      await client.query('CREATE TABLE t (v text)');
      await client.query('INSERT INTO t VALUES ($1)', [name]);
      assert.deepEqual((await client.query('SELECT v FROM t')).rows, [{ v: name }]);
    } finally {
      await client.end();
    }
  }
  // beta is not on the embedded node's PgBouncer.
  const { password } = (await stack.api('POST', '/v1/databases/beta/credentials/reveal')).json;
  const betaConn = (await stack.api('GET', '/v1/databases/beta/connection')).json;
  const wrong = new pg.Client({
    host: '127.0.0.1',
    port: stack.ports.pooler,
    user: betaConn.user,
    database: betaConn.database,
    password,
  });
  wrong.on('error', () => {});
  await assert.rejects(wrong.connect());
  await wrong.end().catch(() => {});

  // Cordon the embedded node: new databases go to the second node.
  assert.equal((await asAdmin('POST', '/v1/nodes/local/cordon')).json.cordoned, true);
  for (const name of ['gamma', 'delta']) assert.equal((await create(name)).node, 'second', name);
  const refused = await stack.api('POST', '/v1/databases', { name: 'epsilon', node: 'local' });
  assert.equal(refused.status, 409);
  assert.equal((await asAdmin('POST', '/v1/nodes/local/uncordon')).json.cordoned, false);
  await ready('gamma');
  await ready('delta');

  const decommission = await asAdmin('POST', '/v1/nodes/second/decommission');
  assert.equal(decommission.status, 409);
  assert.equal(decommission.json.error.details.databases, 3);
});

test('a stopped node is marked unhealthy with an alert event, its databases say so; it recovers on restart without a token', async () => {
  await stopNode();
  const unhealthy = await waitUntil('second unhealthy', async () => {
    const n = (await asAdmin('GET', '/v1/nodes/second')).json;
    return n.health === 'unhealthy' ? n : undefined;
  });
  assert.ok(unhealthy.heartbeat_age_seconds >= 6);
  assert.equal((await stack.api('GET', '/v1/databases/beta')).json.node_status, 'unhealthy');
  assert.equal((await stack.api('GET', '/v1/databases/alpha')).json.node_status, 'healthy');
  const control = await stack.control();
  try {
    const events = await control.query<{ account_id: string | null; payload: { node_name: string } }>(
      "SELECT account_id, payload FROM event_outbox WHERE kind = 'node.unhealthy'",
    );
    assert.equal(events.rowCount, 2, 'the platform and the account with databases there');
    assert.ok(events.rows.every((e) => e.payload.node_name === 'second'));
    const audited = await control.query("SELECT 1 FROM audit_events WHERE action = 'node.unhealthy'");
    assert.equal(audited.rowCount, 1);
  } finally {
    await control.end();
  }
  // Placement avoids it while it is down.
  const r = await stack.api('POST', '/v1/databases', { name: 'zeta' });
  assert.equal(r.json.node, 'local');

  // Back with the same data dir and no token: the stored credentials.
  await startNode(null);
  assert.match(nodeOut, /enrolled earlier/);
  await waitUntil('second healthy again', async () =>
    (await asAdmin('GET', '/v1/nodes/second')).json.health === 'healthy' ? true : undefined,
  );
  assert.equal((await stack.api('GET', '/v1/databases/beta')).json.node_status, 'healthy');
});
