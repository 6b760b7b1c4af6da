import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import type pg from 'pg';
import { WebSocketServer, type WebSocket as WsSocket } from 'ws';
import { type ExplorerChannelClient, startExplorerChannel } from '../src/agent/explorer/explorer-channel.ts';
import type { ExecutionOutcome } from '../src/shared/contracts/execution.ts';
import {
  CHANNEL_PROTOCOL_VERSION,
  CHANNEL_VERSION_HEADER,
  channelAgentMessageSchema,
  type ExplorerOutcome,
} from '../src/shared/contracts/explorer-channel.ts';
import { createLogger } from '../src/shared/logger.ts';
import { loadExplorerParser } from '../src/shared/sql/explorer-validator.ts';
import { createExecutionHarness, signedRequest } from './helpers/execution-agent.ts';
import { adminPool, createTenant, type Tenant } from './helpers/explorer.ts';

// The agent's side of the channel with a real executor: a WebSocket server speaking the frame
// contract (version 2) sends `execute` frames and reads `execution` answers.
let admin: pg.Pool;
let t: Tenant;
let h: Awaited<ReturnType<typeof createExecutionHarness>>;
let wss: WebSocketServer;
let channel: ExplorerChannelClient;
let agentSocket: Promise<WsSocket>;
const answers = new Map<string, (o: ExecutionOutcome) => void>();
/** Explorer queries hold their slot until released (the node's one explorer slot). */
const heldQueries: (() => void)[] = [];

before(async () => {
  await loadExplorerParser();
  admin = adminPool();
  t = await createTenant(admin, 'xc');
  await t.asOwner(
    'CREATE TABLE items (id int PRIMARY KEY, qty int NOT NULL); INSERT INTO items VALUES (1, 0), (2, 0)',
  );
  h = await createExecutionHarness(admin);
  const executor = await h.executor();
  wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((resolve) => wss.once('listening', resolve));
  agentSocket = new Promise((resolve) => {
    wss.on('connection', (ws, req) => {
      assert.equal(req.headers[CHANNEL_VERSION_HEADER], CHANNEL_PROTOCOL_VERSION);
      assert.equal(req.headers.authorization, 'Bearer bwa_test');
      ws.on('message', (data) => {
        const msg = channelAgentMessageSchema.parse(JSON.parse(data.toString()));
        if (msg.type === 'execution') answers.get(msg.id)?.(msg.outcome);
      });
      resolve(ws);
    });
  });
  const port = (wss.address() as AddressInfo).port;
  channel = startExplorerChannel({
    serverUrl: `http://127.0.0.1:${port}`,
    token: () => 'bwa_test',
    // The explorer is not under test here: its queries only occupy the explorer's slots.
    executor: {
      runQuery: (_p, signal) =>
        new Promise<ExplorerOutcome>((resolve) => {
          const done = () =>
            resolve({
              kind: 'error',
              error: { sqlstate: '57014', message: 'x', position: null },
              duration_ms: 0,
            });
          heldQueries.push(done);
          signal.addEventListener('abort', done, { once: true });
        }),
      readSchema: async () => ({ tables: [], truncated: false }),
    },
    execution: executor,
    maxConcurrent: 1,
    log: createLogger('channel-test', 'silent'),
  });
  await channel.opened();
});

after(async () => {
  for (const release of heldQueries) release();
  await channel?.stop();
  await new Promise((r) => wss?.close(r));
  await h?.close();
  await t?.drop();
  await admin?.end();
});

const send = async (frame: unknown) => (await agentSocket).send(JSON.stringify(frame));
const execute = async (payload: ReturnType<typeof signedRequest>, id = randomUUID()) => {
  const answered = new Promise<ExecutionOutcome>((resolve) => answers.set(id, resolve));
  await send({ type: 'execute', id, payload });
  return { id, answered };
};

test('an execute frame runs on the executor and is answered, even while the explorer slots are full', async () => {
  // The node's only explorer slot is taken by a query that does not end.
  await send({
    type: 'query',
    id: randomUUID(),
    payload: {
      database_id: t.id,
      name: t.name,
      sql: 'select 1',
      sql_redacted: 'select ?',
      row_limit: 10,
      byte_limit: 4096,
      statement_timeout_ms: 1_000,
    },
  });
  const { answered } = await execute(
    signedRequest(h.ring, t, { sql: 'UPDATE items SET qty = 7 WHERE id = 1', approvedRows: 1 }),
  );
  const o = await answered;
  assert.equal(o.kind, 'executed', JSON.stringify(o));
  const r = await t.asAdmin('SELECT qty FROM items WHERE id = 1');
  assert.equal(r.rows[0].qty, 7);
});

test('a refused token is answered as refused over the channel; nothing ran', async () => {
  const p = signedRequest(h.ring, t, { sql: 'UPDATE items SET qty = 9 WHERE id = 2', approvedRows: 1 });
  const { answered } = await execute({ ...p, sql: 'UPDATE items SET qty = 9' });
  const o = await answered;
  assert.equal(o.kind, 'refused');
  if (o.kind === 'refused') assert.equal(o.refusal.reason, 'sql_mismatch');
  const r = await t.asAdmin('SELECT qty FROM items WHERE id = 2');
  assert.equal(r.rows[0].qty, 0);
});

test('a cancel frame stops a running execution, which is rolled back and answered', async () => {
  const { id, answered } = await execute(
    signedRequest(h.ring, t, {
      sql: 'UPDATE items SET qty = 5 WHERE id = 2; SELECT pg_sleep(20)',
      approvedRows: 1,
    }),
  );
  await new Promise((r) => setTimeout(r, 300));
  const t0 = Date.now();
  await send({ type: 'cancel', id });
  const o = await answered;
  assert.equal(o.kind, 'failed', JSON.stringify(o));
  if (o.kind === 'failed') assert.equal(o.error.sqlstate, '57014');
  assert.ok(Date.now() - t0 < 5_000);
  const r = await t.asAdmin('SELECT qty FROM items WHERE id = 2');
  assert.equal(r.rows[0].qty, 0);
});
