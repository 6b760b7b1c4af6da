import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import { appendFileSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import pg from 'pg';
import { DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import { accountApi, operatorKey, sleep, startUpStack, type UpStack } from './helpers/up-stack.ts';

// Node connection capacity end to end on a real `bulwark up`: the agent reports the cluster's
// max_connections (1000 for the embedded cluster), and the server holds every tenant's limits
// together below it by the platform reserve (100): budget 1000 − 3 superuser slots − 100 = 897.

const CLI = path.resolve(import.meta.dirname, '../src/cli/index.ts');
const BUDGET = 897;

let stack: UpStack;
let api: ReturnType<typeof accountApi>;
before(async () => {
  stack = await startUpStack();
  api = accountApi(stack, await operatorKey(stack, 'cap'), { json: 'strict' });
});
after(async () => {
  await stack?.destroy();
});

async function ready(name: string): Promise<void> {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const d = (await api('GET', `/v1/databases/${name}`)).json;
    if (d.status === 'ready') return;
    assert.notEqual(d.status, 'failed', d.failure_reason);
    assert.ok(Date.now() < deadline, `${name} not ready: ${d.status}`);
    await sleep(100);
  }
}

test('the agent reports the embedded max_connections and the server holds tenants to the budget', async () => {
  const control = await stack.control();
  try {
    const node = (await control.query('SELECT max_connections, reserved_connections FROM nodes')).rows;
    assert.deepEqual(node, [{ max_connections: 1000, reserved_connections: 3 }]);
  } finally {
    await control.end();
  }
  assert.equal((await api('POST', '/v1/databases', { name: 'cap_a' })).status, 202);
  await ready('cap_a');
  const limits = (await api('GET', '/v1/databases/cap_a/limits')).json;
  assert.deepEqual(limits, DEFAULT_LIMITS);

  // The API maximum for one owner does not fit: refused with the stable code, nothing queued.
  const over = await api('PUT', '/v1/databases/cap_a/limits', { ...limits, owner_connection_limit: 10_000 });
  assert.equal(over.status, 409, JSON.stringify(over.json));
  assert.equal(over.json.error.code, 'capacity_exceeded');
  assert.deepEqual(over.json.error.details, {
    node: 'local',
    requested: 10_000 - limits.owner_connection_limit,
  });

  // Exactly the budget fits (every other database of this stack counts too) …
  const committed = (
    await Promise.all(
      ((await api('GET', '/v1/databases?limit=100')).json.items as { name: string }[]).map(
        async (d) => (await api('GET', `/v1/databases/${d.name}/limits`)).json,
      ),
    )
  ).reduce((n, l) => n + l.owner_connection_limit + l.reader_connection_limit, 0);
  const fill = limits.owner_connection_limit + (BUDGET - committed);
  const full = await api('PUT', '/v1/databases/cap_a/limits', { ...limits, owner_connection_limit: fill });
  assert.equal(full.status, 200, JSON.stringify(full.json));
  // … and then the node takes no new database, whoever asks.
  const refused = await api('POST', '/v1/databases', { name: 'cap_b' });
  assert.equal(refused.status, 409, JSON.stringify(refused.json));
  assert.equal(refused.json.error.code, 'capacity_exceeded');
  const viaOther = await stack.api('POST', '/v1/databases', { name: 'cap_c' });
  assert.equal(viaOther.status, 409, JSON.stringify(viaOther.json));

  // A cut is accepted at once; its room comes back when a rotation has ended the sessions
  // opened under the old limit.
  assert.equal((await api('PUT', '/v1/databases/cap_a/limits', limits)).status, 200);
  assert.equal((await api('POST', '/v1/databases', { name: 'cap_b' })).json.error?.code, 'capacity_exceeded');
  assert.equal((await api('POST', '/v1/databases/cap_a/credentials/rotate')).status, 202);
  const deadline = Date.now() + 60_000;
  while ((await api('GET', '/v1/databases/cap_a')).json.rotation_pending !== false) {
    assert.ok(Date.now() < deadline, 'rotation did not finish');
    await sleep(100);
  }
  assert.equal((await api('POST', '/v1/databases', { name: 'cap_b' })).status, 202);
  await ready('cap_b');
});

/** `bulwark up` again on the stack's data dir and ports; resolves once it is ready. */
async function upAgain(): Promise<{ child: ChildProcess; stop(): Promise<void> }> {
  const { server, pooler, pg: pgPort } = stack.ports;
  const args = ['up', '--data-dir', stack.dir, '--port', String(server)];
  args.push('--pooler-port', String(pooler), '--pg-port', String(pgPort));
  const child = spawn(process.execPath, [CLI, ...args], {
    env: { ...process.env, BULWARK_UNSAFE_FAST: '1' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGINT');
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    await exited;
    clearTimeout(timer);
  };
  const deadline = Date.now() + 90_000;
  while (!/Bulwark is ready/.test(out)) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      assert.fail(`bulwark up did not start again:\n${out}`);
    }
    await sleep(50);
  }
  return { child, stop };
}

/** What the node's agent reported last, waiting for a heartbeat after `since`. */
async function reported(since: Date): Promise<number> {
  const url = readFileSync(path.join(stack.dir, 'secrets', 'control-database-url'), 'utf8').trim();
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    const deadline = Date.now() + 30_000;
    for (;;) {
      const r = await c.query('SELECT max_connections FROM nodes WHERE last_heartbeat_at > $1', [since]);
      if (r.rows[0]) return r.rows[0].max_connections;
      assert.ok(Date.now() < deadline, 'no heartbeat');
      await sleep(200);
    }
  } finally {
    await c.end();
  }
}

test('a cluster made with a lower max_connections is raised at start (from the next restart)', async () => {
  assert.equal(await stack.stop(), 0);
  // As clusters made before this change: max_connections = 300 in the managed block.
  appendFileSync(path.join(stack.dir, 'pg', 'data', 'postgresql.conf'), 'max_connections = 300\n');
  let since = new Date();
  const second = await upAgain();
  try {
    // Running with 300 until restarted: the agent reports what is in force, and the budget follows.
    assert.equal(await reported(since), 300);
    const over = await api('PUT', '/v1/databases/cap_a/limits', {
      ...DEFAULT_LIMITS,
      owner_connection_limit: 200,
    });
    assert.equal(over.json.error?.code, 'capacity_exceeded', JSON.stringify(over.json));
  } finally {
    await second.stop();
  }
  since = new Date();
  const third = await upAgain();
  try {
    assert.equal(await reported(since), 1000);
  } finally {
    await third.stop();
  }
});
