import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import { type WebSocket, WebSocketServer } from 'ws';
import { settles } from '../../../test/helpers/wait.ts';
import {
  CHANNEL_PROTOCOL_VERSION,
  CHANNEL_VERSION_HEADER,
  type ExplorerOutcome,
} from '../../shared/contracts/explorer-channel.ts';
import { createLogger } from '../../shared/logger.ts';
import { startExplorerChannel } from './explorer-channel.ts';

// The agent half of the explorer channel against a real WebSocket server played by the test.

const rows = (n: number): ExplorerOutcome => ({
  kind: 'rows',
  output: {
    columns: [{ name: 'n', type: 'integer' }],
    rows: [[n]],
    row_count: 1,
    truncated: false,
    truncated_by: null,
    duration_ms: 1,
  },
});
const payload = (sql: string) => ({
  database_id: randomUUID(),
  name: 'shop',
  sql,
  sql_redacted: 'select ?',
  row_limit: 10,
  byte_limit: 1024 * 1024,
  statement_timeout_ms: 1_000,
});

test('the agent sends its contract version; a request cancelled while queued gives its turn to the next', async () => {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((resolve) => wss.once('listening', resolve));
  const url = `http://127.0.0.1:${(wss.address() as AddressInfo).port}`;
  let version: string | undefined;
  const connected = new Promise<WebSocket>((resolve) =>
    wss.once('connection', (socket, req) => {
      version = req.headers[CHANNEL_VERSION_HEADER] as string | undefined;
      resolve(socket);
    }),
  );
  // The executor: each query waits until the test releases it by its SQL.
  const started: string[] = [];
  const release = new Map<string, () => void>();
  const client = startExplorerChannel({
    serverUrl: url,
    token: () => 'bwa_test',
    maxConcurrent: 1,
    log: createLogger('test', 'silent'),
    executor: {
      runQuery: (p) => {
        started.push(p.sql);
        return new Promise((resolve) => release.set(p.sql, () => resolve(rows(started.length))));
      },
      readSchema: () => Promise.reject(new Error('not used')),
    },
  });
  try {
    await client.opened();
    const server = await connected;
    assert.equal(version, CHANNEL_PROTOCOL_VERSION);
    const answers = new Map<string, unknown>();
    server.on('message', (d) => {
      const m = JSON.parse(d.toString()) as { id: string; outcome: unknown };
      answers.set(m.id, m.outcome);
    });
    const ids = { a: randomUUID(), b: randomUUID(), c: randomUUID() };
    for (const [k, id] of Object.entries(ids))
      server.send(JSON.stringify({ type: 'query', id, payload: payload(`select '${k}'`) }));
    const until = async (what: string, fn: () => boolean) => {
      for (let i = 0; i < 200 && !fn(); i++) await new Promise((r) => setTimeout(r, 10));
      assert.ok(fn(), what);
    };
    await until('a runs', () => started.length === 1);
    server.send(JSON.stringify({ type: 'cancel', id: ids.b })); // b is still waiting for a slot
    // Frames are handled in order: once a malformed frame sent after the cancel is answered, the
    // cancel has been handled too.
    const marker = randomUUID();
    server.send(JSON.stringify({ type: 'query', id: marker, payload: { sql: 1 } }));
    await until('the cancel is handled', () => answers.has(marker));
    release.get("select 'a'")?.();
    await until('c runs once a is done', () => started.includes("select 'c'"));
    assert.deepEqual(started, ["select 'a'", "select 'c'"], 'the cancelled b never ran');
    release.get("select 'c'")?.();
    await until('a and c are answered', () => answers.has(ids.a) && answers.has(ids.c));
    assert.equal(answers.has(ids.b), false, 'a cancelled request is not answered');

    // A frame the agent cannot read, but whose id it can: answered at once with an error.
    const bad = randomUUID();
    server.send(JSON.stringify({ type: 'query', id: bad, payload: { sql: 1 } }));
    await until('the bad frame is answered', () => answers.has(bad));
    assert.equal((answers.get(bad) as { kind: string }).kind, 'error');
  } finally {
    await client.stop();
    for (const c of wss.clients) c.terminate();
    await new Promise((resolve) => wss.close(resolve));
  }
});

test('a server that speaks another contract version (426) stops the agent from reopening the channel', async () => {
  let attempts = 0;
  const wss = new WebSocketServer({
    host: '127.0.0.1',
    port: 0,
    verifyClient: (_info, cb) => {
      attempts++;
      cb(false, 426, 'Upgrade Required');
    },
  });
  await new Promise((resolve) => wss.once('listening', resolve));
  const client = startExplorerChannel({
    serverUrl: `http://127.0.0.1:${(wss.address() as AddressInfo).port}`,
    token: () => 'bwa_test',
    log: createLogger('test', 'silent'),
    executor: {
      runQuery: () => Promise.reject(new Error('not used')),
      readSchema: () => Promise.reject(new Error('not used')),
    },
  });
  try {
    // opened() rejects only once the client has stopped for good (its reconnect loop has ended).
    await settles(
      'the client to give up',
      assert.rejects(client.opened(), /refused the explorer channel \(426\)/),
      5_000,
    );
    assert.equal(attempts, 1, 'one upgrade request, no reconnect');
  } finally {
    await client.stop();
    await new Promise((resolve) => wss.close(resolve));
  }
});

test('an execute frame to an agent without an executor is answered refused, at once', async () => {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((resolve) => wss.once('listening', resolve));
  const url = `http://127.0.0.1:${(wss.address() as AddressInfo).port}`;
  const connected = new Promise<WebSocket>((resolve) => wss.once('connection', resolve));
  const client = startExplorerChannel({
    serverUrl: url,
    token: () => 'bwa_test',
    log: createLogger('test', 'silent'),
    executor: { runQuery: async () => rows(1), readSchema: async () => ({ tables: [], truncated: false }) },
  });
  try {
    await client.opened();
    const socket = await connected;
    const id = randomUUID();
    const answer = new Promise<unknown>((resolve) =>
      socket.once('message', (d) => resolve(JSON.parse(d.toString()))),
    );
    socket.send(
      JSON.stringify({
        type: 'execute',
        id,
        payload: {
          database_id: randomUUID(),
          name: 'shop',
          request_id: randomUUID(),
          token: 'x.y.z',
          sql: 'UPDATE t SET a = 1 WHERE id = 1',
          mode: 'execute',
          capability: 'migrator',
          statement_timeout_ms: 1_000,
          lock_timeout_ms: 1_000,
          row_limit: 10,
          byte_limit: 4096,
          explain: false,
        },
      }),
    );
    assert.deepEqual(await answer, {
      type: 'execution',
      id,
      outcome: {
        kind: 'refused',
        refusal: { reason: 'config', message: 'this agent does not run governed SQL' },
      },
    });
  } finally {
    await client.stop();
    await new Promise((resolve) => wss.close(resolve));
  }
});
