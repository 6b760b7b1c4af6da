import assert from 'node:assert/strict';
import fs from 'node:fs/promises';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { WebSocket } from 'ws';
import { channelUrl, startExplorerChannel } from '../src/agent/explorer/explorer-channel.ts';
import * as databasesRepo from '../src/server/modules/databases/databases.repo.ts';
import {
  CHANNEL_PROTOCOL_VERSION,
  CHANNEL_VERSION_HEADER,
} from '../src/shared/contracts/explorer-channel.ts';
import { DEFAULT_LIMITS } from '../src/shared/contracts/jobs.ts';
import { createLogger } from '../src/shared/logger.ts';
import { waitForNoRunningStatement, waitForRunningStatement } from './helpers/db.ts';
import { createTenant, explorerAudit, type Tenant } from './helpers/explorer.ts';
import { assertDisconnectCancels, type ExplorerStack, startExplorerStack } from './helpers/explorer-stack.ts';
import type { TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

// The explorer's fast path end to end: a real agent holds its explorer channel (a WebSocket it
// opened to the listening server), and API requests go down it instead of through the job queue.
let stack: ExplorerStack;
let s: TestServer;
let url: string;
let t: Tenant;
let key: TestKey;
let stateDir: string;
let nodeId: string;

before(async () => {
  stack = await startExplorerStack({
    node: 'channel-node',
    account: 'channel',
    explorerChannel: true,
    tenantPrefix: 'ch',
    server: { explorerMaxInFlight: 6 },
  });
  ({ s, url, t, key, stateDir, nodeId } = stack);
});

after(async () => {
  await stack?.stop();
});

const query = (body: Record<string, unknown>) =>
  s.app.inject({
    method: 'POST',
    url: `/v1/databases/${t.name}/explorer/query`,
    headers: key.headers,
    payload: body,
  });

const explorerJobs = async () =>
  (await s.db.pool.query("SELECT count(*)::int AS n FROM jobs WHERE kind LIKE 'explorer.%'")).rows[0]
    .n as number;

test('queries and the schema go down the channel: rows, errors and audit, and no job or stored row', async () => {
  const r = await query({ sql: "select id, secret from canary where secret <> 'zeta' order by id" });
  assert.equal(r.statusCode, 200, r.body);
  assert.deepEqual(r.json().rows, [
    [1, 'alpha'],
    [2, 'beta'],
    [3, 'gamma'],
  ]);
  assert.deepEqual(r.json().columns, [
    { name: 'id', type: 'integer' },
    { name: 'secret', type: 'text' },
  ]);
  const failing = await query({ sql: 'select id / 0 from canary' });
  assert.equal(failing.statusCode, 400);
  assert.equal(failing.json().error.details.sqlstate, '22012');
  const hidden = await query({ sql: 'select c.evil from canary c' });
  assert.equal(hidden.json().error.details.sqlstate, '42501');
  const schema = await s.app.inject({
    method: 'GET',
    url: `/v1/databases/${t.name}/explorer/schema`,
    headers: key.headers,
  });
  assert.equal(schema.statusCode, 200, schema.body);
  assert.ok(schema.json().tables.some((x: { name: string }) => x.name === 'canary'));

  assert.equal(await explorerJobs(), 0, 'the channel path queues no job');
  assert.equal((await s.db.pool.query('SELECT count(*)::int AS n FROM explorer_results')).rows[0].n, 0);
  const audit = await explorerAudit(s.db.pool);
  assert.equal(audit.rows.length, 3);
  assert.equal(audit.results.length, 3);
  for (const q of audit.rows) {
    assert.equal(q.outcome, 'success');
    const result = audit.results.find((x) => x.request_id === q.request_id);
    assert.ok(result, 'each query has its outcome event, linked by request id');
  }
  assert.ok(
    audit.rows.some((a) => a.details.sql === 'select id, secret from canary where secret <> ? order by id'),
  );
  assert.ok(audit.results.some((a) => a.outcome === 'success' && a.details.row_count === 3));
  assert.ok(audit.results.some((a) => a.outcome === 'failure' && a.details.sqlstate === '22012'));
  assert.ok(!JSON.stringify(audit).includes('alpha'), 'no result data in the audit log');
});

test('concurrent queries run side by side, each answered with its own rows; past 4 per database: 503', async () => {
  const outs = await Promise.all(
    Array.from({ length: 4 }, (_, i) => query({ sql: `select ${i} as n, count(*) as c from canary` })),
  );
  outs.forEach((r, i) => {
    assert.equal(r.statusCode, 200, r.body);
    assert.deepEqual(r.json().rows, [[i, 3]]);
  });
  // Five at once: four take this database's share of the node, the fifth is refused at once.
  const slow = await Promise.all(
    Array.from({ length: 5 }, async () => {
      const t0 = Date.now();
      const r = await query({ sql: 'select count(*) from generate_series(1, 1e9)', timeout_ms: 1_000 });
      return { status: r.statusCode, body: r.body, ms: Date.now() - t0 };
    }),
  );
  const refused = slow.filter((r) => r.status === 503);
  assert.equal(refused.length, 1, JSON.stringify(slow));
  assert.match(refused[0]!.body, /Too many explorer queries/);
  // At once: before any of the four admitted queries (each runs into its 1 s timeout) is over —
  // not after waiting for a slot. (A fixed bound fails on a loaded host, where the request's own
  // handling alone can take most of a second.)
  const admitted = slow.filter((r) => r.status !== 503);
  assert.ok(
    refused[0]!.ms < Math.min(...admitted.map((r) => r.ms)),
    `refused after ${refused[0]!.ms} ms: ${JSON.stringify(slow.map((r) => [r.status, r.ms]))}`,
  );
  for (const r of slow.filter((x) => x.status !== 503)) assert.equal(r.status, 400, r.body); // statement timeout

  // Across databases, the process holds at most `explorerMaxInFlight` (6 here): 4 on this database
  // and 2 on another fill it; one more on the other database is refused.
  const other = await createTenant(stack.admin, 'ch2');
  try {
    await databasesRepo.insertDatabase(s.db.pool, {
      id: other.id,
      accountId: key.accountId,
      nodeId,
      name: other.name,
      passwordSealed: 'unused-in-this-test',
      allowlist: [],
      limits: { ...DEFAULT_LIMITS },
    });
    await databasesRepo.markReady(s.db.pool, other.id);
    const on = (db: string) => async () => {
      const r = await s.app.inject({
        method: 'POST',
        url: `/v1/databases/${db}/explorer/query`,
        headers: key.headers,
        payload: { sql: 'select count(*) from generate_series(1, 1e9)', timeout_ms: 1_000 },
      });
      return { status: r.statusCode, body: r.body };
    };
    const all = await Promise.all([
      ...Array.from({ length: 4 }, on(t.name)),
      ...Array.from({ length: 3 }, on(other.name)),
    ]);
    const busy = all.filter((r) => r.status === 503);
    assert.equal(busy.length, 1, JSON.stringify(all));
    assert.match(busy[0]!.body, /The server is running too many explorer queries/);
  } finally {
    await other.drop();
  }
  assert.equal((await query({ sql: 'select 1 as one' })).statusCode, 200);
});

test('a client that disconnects cancels its query on the database (the cancel goes down the channel)', async () => {
  await assertDisconnectCancels(stack);
  assert.equal(await explorerJobs(), 0);
  assert.equal((await query({ sql: 'select 2 as two' })).json().rows[0][0], 2);
});

test('without a current agent token, an Origin header, or a valid token, the channel is refused', async () => {
  const target = channelUrl(url);
  const attempt = (headers: Record<string, string>) =>
    new Promise<number>((resolve) => {
      const ws = new WebSocket(target, {
        headers: { [CHANNEL_VERSION_HEADER]: CHANNEL_PROTOCOL_VERSION, ...headers },
      });
      ws.on('unexpected-response', (_req, res) => {
        resolve(res.statusCode ?? 0);
        ws.terminate();
      });
      ws.on('open', () => {
        resolve(101);
        ws.close();
      });
      ws.on('error', () => {});
    });
  assert.equal(await attempt({}), 401);
  assert.equal(await attempt({ authorization: `Bearer bwa_${'A'.repeat(43)}` }), 401);
  assert.equal(
    await attempt({ authorization: key.headers.authorization! }),
    401,
    'an API key is not an agent token',
  );
  const token = (await fs.readFile(path.join(stateDir, 'agent-token'), 'utf8')).trim();
  assert.equal(await attempt({ authorization: `Bearer ${token}`, origin: 'https://evil.example' }), 403);
  assert.equal(await attempt({ authorization: `Bearer ${token}` }), 101);
  // Another version of the frame contract is refused, so that agent's requests use the queue.
  assert.equal(await attempt({ authorization: `Bearer ${token}`, [CHANNEL_VERSION_HEADER]: '0' }), 426);
  // A plain GET (no upgrade) on the channel's path is no API.
  const plain = await s.app.inject({
    method: 'GET',
    url: '/v1/agent/explorer/channel',
    headers: { authorization: `Bearer ${token}` },
  });
  assert.notEqual(plain.statusCode, 200);
});

test('an agent whose token is refused stops opening its channel (no reconnect storm)', async () => {
  const refusedToken = `bwa_${'Z'.repeat(43)}`;
  // The server's side of each attempt: every upgrade request authenticates its token first.
  let attempts = 0;
  const authenticate = s.nodes.authenticateAgent;
  s.nodes.authenticateAgent = (token, ctx) => {
    if (token === refusedToken) attempts++;
    return authenticate(token, ctx);
  };
  try {
    const client = startExplorerChannel({
      serverUrl: url,
      token: () => refusedToken,
      executor: {
        runQuery: () => Promise.reject(new Error('never called')),
        readSchema: () => Promise.reject(new Error('never called')),
      },
      log: createLogger('test', 'silent'),
    });
    const t0 = Date.now();
    // opened() rejects once the client has stopped for good (its reconnect loop has ended).
    await assert.rejects(client.opened(), /refused the explorer channel \(401\)/);
    assert.ok(Date.now() - t0 < 2_000);
    assert.equal(attempts, 1, 'one attempt, no reconnect');
    await client.stop();
  } finally {
    s.nodes.authenticateAgent = authenticate;
  }
});

test('a refused upgrade leaves nothing open: the server still shuts down at once', async () => {
  const other = await createTestServer();
  const otherUrl = await other.app.listen({ host: '127.0.0.1', port: 0 });
  const status = await new Promise<number>((resolve) => {
    const ws = new WebSocket(channelUrl(otherUrl));
    ws.on('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.on('error', () => {});
  });
  assert.equal(status, 401);
  const t0 = Date.now();
  await other.stop();
  assert.ok(Date.now() - t0 < 2_000, `shutdown took ${Date.now() - t0} ms`);
});

test('when the audit event cannot be recorded, the rows are withheld (fail closed)', async () => {
  await s.db.pool.query(
    "ALTER TABLE audit_events ADD CONSTRAINT test_no_explorer CHECK (action <> 'explorer.query') NOT VALID",
  );
  try {
    const r = await query({ sql: 'select secret from canary' });
    assert.equal(r.statusCode, 503);
    assert.ok(!r.body.includes('alpha'), r.body);
    // A long query is not waited for: the request is answered at once (its statement is stopped on
    // the database: the next test).
    const t0 = Date.now();
    const slow = await query({ sql: 'select count(*) from generate_series(1, 1e10)', timeout_ms: 6_000 });
    assert.equal(slow.statusCode, 503, slow.body);
    assert.ok(Date.now() - t0 < 3_000, `answered after ${Date.now() - t0} ms`);
  } finally {
    await s.db.pool.query('ALTER TABLE audit_events DROP CONSTRAINT test_no_explorer');
  }
  assert.equal((await query({ sql: 'select 1 as one' })).statusCode, 200);
});

test('when the audit event cannot be recorded, the withheld statement is cancelled on the database', async () => {
  await s.db.pool.query(
    "ALTER TABLE audit_events ADD CONSTRAINT test_no_explorer CHECK (action <> 'explorer.query') NOT VALID",
  );
  try {
    const slow = await query({
      sql: 'select count(*) from generate_series(1, 1e10) as withheld',
      timeout_ms: 6_000,
    });
    assert.equal(slow.statusCode, 503, slow.body);
    await waitForNoRunningStatement(t.name, { text: 'withheld', timeoutMs: 2_000 });
  } finally {
    await s.db.pool.query('ALTER TABLE audit_events DROP CONSTRAINT test_no_explorer');
  }
});

test('without a channel the queue serves; when the channel dies mid-query the request fails at once', async () => {
  const pending = query({
    sql: 'select count(*) from generate_series(1, 1e10) as dies_mid_query',
    timeout_ms: 30_000,
  });
  await waitForRunningStatement(t.name, { user: t.roles.explorer, text: 'dies_mid_query' });
  const t0 = Date.now();
  await stack.agent.stop();
  const r = await pending;
  assert.equal(r.statusCode, 503, r.body);
  assert.ok(Date.now() - t0 < 5_000);
  assert.equal(s.explorerChannels.pick(nodeId), null);

  // The same node without its channel: the request is queued as a job and still answered.
  await stack.restartAgent({ explorerChannel: false });
  const queued = await query({ sql: 'select 3 as three' });
  assert.equal(queued.statusCode, 200, queued.body);
  assert.equal(queued.json().rows[0][0], 3);
  assert.equal(await explorerJobs(), 1);
});
