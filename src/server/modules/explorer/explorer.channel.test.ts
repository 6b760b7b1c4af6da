import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { after, before, test } from 'node:test';
import { WebSocket, WebSocketServer } from 'ws';
import { waitFor } from '../../../../test/helpers/wait.ts';
import { CHANNEL_CLOSE } from '../../../shared/contracts/explorer-channel.ts';
import { createLogger } from '../../../shared/logger.ts';
import { createExplorerChannels, type ExplorerChannels } from './explorer.channel.ts';

// The server half of the explorer channel over a real WebSocket on loopback; the test plays the agent.

const log = createLogger('test', 'silent');
const HASH = Buffer.alloc(32, 1);
const payload = {
  database_id: randomUUID(),
  name: 'shop',
  sql: 'select 1',
  sql_redacted: 'select ?',
  row_limit: 10,
  byte_limit: 1024 * 1024,
  statement_timeout_ms: 1_000,
};
const rows = {
  kind: 'rows' as const,
  output: {
    columns: [{ name: 'one', type: 'integer' }],
    rows: [[1]],
    row_count: 1,
    truncated: false,
    truncated_by: null,
    duration_ms: 0.5,
  },
};
const never = new AbortController().signal;

let wss: WebSocketServer;
let url: string;
let onConnection: (socket: WebSocket) => void = () => {};

before(async () => {
  wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  wss.on('connection', (socket) => onConnection(socket));
  await new Promise((resolve) => wss.once('listening', resolve));
  url = `ws://127.0.0.1:${(wss.address() as AddressInfo).port}`;
});
after(async () => {
  for (const c of wss.clients) c.terminate();
  await new Promise((resolve) => wss.close(resolve));
});

/** A connected pair: the channel the server attached, and the test's agent end. */
async function pair(channels: ExplorerChannels, nodeId = randomUUID()) {
  const attached = new Promise<void>((resolve) => {
    onConnection = (socket) => {
      channels.attach(nodeId, HASH, socket);
      resolve();
    };
  });
  const agent = new WebSocket(url);
  await new Promise((resolve, reject) => agent.once('open', resolve).once('error', reject));
  await attached;
  const inbox: Record<string, unknown>[] = [];
  const waiting: (() => void)[] = [];
  agent.on('message', (d) => {
    inbox.push(JSON.parse(d.toString()));
    for (const w of waiting.splice(0)) w();
  });
  const next = async (): Promise<Record<string, unknown>> => {
    const deadline = Date.now() + 2_000;
    while (inbox.length === 0) {
      if (Date.now() > deadline) throw new Error('no message from the server');
      await new Promise<void>((resolve) => {
        waiting.push(resolve);
        setTimeout(resolve, 100);
      });
    }
    return inbox.shift()!;
  };
  const closed = new Promise<number>((resolve) => agent.once('close', (code) => resolve(code)));
  return { nodeId, agent, next, closed, channel: channels.pick(nodeId)! };
}

test('a request goes down the channel and its outcome comes back on the same connection', async () => {
  const channels = createExplorerChannels({ log, tokenCurrent: async () => true });
  const { agent, next, channel } = await pair(channels);
  const pending = channel.request('query', payload, 2_000, never);
  const msg = await next();
  assert.equal(msg.type, 'query');
  assert.deepEqual(msg.payload, payload);
  agent.send(JSON.stringify({ type: 'result', id: msg.id, outcome: rows }));
  assert.deepEqual(await pending, rows);
  agent.close();
});

test('a request given up on (client gone, timeout) is cancelled on the agent; a late answer is dropped', async () => {
  const channels = createExplorerChannels({ log, tokenCurrent: async () => true });
  const { agent, next, channel } = await pair(channels);
  const controller = new AbortController();
  const aborted = channel.request('query', payload, 5_000, controller.signal);
  const sent = await next();
  controller.abort();
  assert.equal(await aborted, 'aborted');
  assert.deepEqual(await next(), { type: 'cancel', id: sent.id });

  const timedOut = channel.request('schema', { database_id: payload.database_id, name: 'shop' }, 50, never);
  const sent2 = await next();
  assert.equal(sent2.type, 'schema');
  assert.equal(await timedOut, 'timeout');
  assert.deepEqual(await next(), { type: 'cancel', id: sent2.id });
  // The late answer, and one for an id never sent, change nothing and keep the channel open.
  agent.send(JSON.stringify({ type: 'result', id: sent2.id, outcome: rows }));
  agent.send(JSON.stringify({ type: 'result', id: randomUUID(), outcome: rows }));
  const again = channel.request('query', payload, 2_000, never);
  const msg = await next();
  agent.send(JSON.stringify({ type: 'result', id: msg.id, outcome: rows }));
  assert.deepEqual(await again, rows);
  agent.close();
});

test('a malformed message from the agent ends the channel; its waiting requests fail at once', async () => {
  const channels = createExplorerChannels({ log, tokenCurrent: async () => true });
  for (const bad of [
    'not json',
    JSON.stringify({ type: 'result', id: 'x', outcome: rows }),
    JSON.stringify({ type: 'result', id: randomUUID(), outcome: { kind: 'rows', output: { rows: 'all' } } }),
    JSON.stringify({ type: 'hello', extra: true }),
  ]) {
    const { nodeId, agent, next, closed, channel } = await pair(channels);
    const pending = channel.request('query', payload, 5_000, never);
    await next();
    const t0 = Date.now();
    agent.send(bad);
    assert.deepEqual(await pending, { died: 'the node channel broke the protocol' });
    assert.ok(Date.now() - t0 < 1_000);
    assert.equal(await closed, CHANNEL_CLOSE.protocol);
    assert.equal(channels.pick(nodeId), null);
  }
});

test('a channel is bounded in requests in flight', async () => {
  const channels = createExplorerChannels({ log, tokenCurrent: async () => true, maxInFlight: 2 });
  const { agent, channel } = await pair(channels);
  const a = channel.request('query', payload, 200, never);
  const b = channel.request('query', payload, 200, never);
  assert.deepEqual(await channel.request('query', payload, 200, never), { died: 'busy' });
  assert.equal(await a, 'timeout');
  assert.equal(await b, 'timeout');
  agent.close();
});

test('a channel whose token is no longer current is closed; one that stops answering pings is cut', async () => {
  let current = true;
  let checks = 0;
  const tokenCurrent = async () => {
    checks++;
    return current;
  };
  const channels = createExplorerChannels({ log, tokenCurrent, pingMs: 50 });
  const revoked = await pair(channels);
  let pings = 0;
  revoked.agent.on('ping', () => pings++);
  // A ping sent after a token check proves the check passed and the ping before it was answered
  // (an unanswered ping is cut at the next tick instead).
  await waitFor('a token check, then another ping', () => checks >= 1 && pings >= 4, { timeoutMs: 3_000 });
  assert.ok(channels.pick(revoked.nodeId), 'answers pings with a current token: stays open');
  current = false;
  assert.equal(await revoked.closed, CHANNEL_CLOSE.tokenRevoked);
  assert.equal(channels.pick(revoked.nodeId), null);

  current = true;
  const silent = await pair(channels);
  const pending = silent.channel.request('query', payload, 5_000, never);
  await silent.next();
  // The agent's end stops reading: no pong comes back.
  (silent.agent as unknown as { _socket: { pause(): void } })._socket.pause();
  const t0 = Date.now();
  assert.deepEqual(await pending, { died: 'the node channel stopped answering' });
  assert.ok(Date.now() - t0 < 1_000);
  assert.equal(channels.pick(silent.nodeId), null);
  silent.agent.terminate();
});

test('the newest channel of a node is used; when it closes, the older one takes over', async () => {
  const channels = createExplorerChannels({ log, tokenCurrent: async () => true });
  const nodeId = randomUUID();
  const older = await pair(channels, nodeId);
  const newer = await pair(channels, nodeId);
  assert.equal(channels.pick(nodeId), newer.channel);
  assert.equal(channels.count(), 2);
  newer.agent.close();
  await newer.closed;
  for (let i = 0; i < 50 && channels.pick(nodeId) !== older.channel; i++)
    await new Promise((resolve) => setTimeout(resolve, 10));
  assert.equal(channels.pick(nodeId), older.channel);
  older.agent.close();
  await older.closed;
});

test('a request on a closed channel is reported unsent (nothing ran); one aborted before sending sends no cancel', async () => {
  const channels = createExplorerChannels({ log, tokenCurrent: async () => true });
  const { agent, next, closed, channel } = await pair(channels);
  const gone = new AbortController();
  gone.abort();
  assert.equal(await channel.request('query', payload, 1_000, gone.signal), 'aborted');
  const live = channel.request('query', payload, 2_000, never);
  const msg = await next();
  assert.equal(msg.type, 'query', 'the first frame the agent sees is the live request, not a cancel');
  agent.send(JSON.stringify({ type: 'result', id: msg.id, outcome: rows }));
  assert.deepEqual(await live, rows);
  agent.close();
  await closed;
  assert.equal(await channel.request('query', payload, 1_000, never), 'unsent');
});

test('a node keeps at most two channels; closeNode closes them all at once', async () => {
  const channels = createExplorerChannels({ log, tokenCurrent: async () => true });
  const nodeId = randomUUID();
  const first = await pair(channels, nodeId);
  const second = await pair(channels, nodeId);
  const third = await pair(channels, nodeId);
  assert.equal(await first.closed, CHANNEL_CLOSE.replaced);
  assert.equal(channels.count(), 2);
  assert.equal(channels.pick(nodeId), third.channel);
  channels.closeNode(nodeId);
  assert.equal(await second.closed, CHANNEL_CLOSE.tokenRevoked);
  assert.equal(await third.closed, CHANNEL_CLOSE.tokenRevoked);
  assert.equal(channels.pick(nodeId), null);
});
