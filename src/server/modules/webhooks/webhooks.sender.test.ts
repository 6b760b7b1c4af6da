// The keep-alive pools' bound: past it, idle pools are closed least recently used first, and a
// pool with a delivery in flight (perhaps another account's) is never closed under it.
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import type { Destination } from './ssrf.ts';
import { ConnectionPools, sendDelivery } from './webhooks.sender.ts';

test('past the bound: least recently used idle pools close, a pool with a request in flight stays', async () => {
  let release: (() => void) | null = null;
  const server = http.createServer((req, res) => {
    if (req.url === '/hold') release = () => res.writeHead(204).end();
    else res.writeHead(204).end();
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as AddressInfo).port;
  const dest = (path: string): Destination => ({
    url: new URL(`http://127.0.0.1:${port}${path}`),
    host: '127.0.0.1',
    port,
    address: '127.0.0.1',
    family: 4,
  });
  const pools = new ConnectionPools(3);
  try {
    const send = (account: string, path: string) =>
      sendDelivery({
        destination: dest(path),
        agent: pools.agentFor(account, dest(path)),
        body: '{}',
        headers: {},
        timeoutMs: 5_000,
      });
    // Account a's delivery is held by the receiver (in flight); b and c have finished theirs.
    const held = send('a', '/hold');
    assert.equal((await send('b', '/')).statusCode, 204);
    assert.equal((await send('c', '/')).statusCode, 204);
    const a = pools.agentFor('a', dest('/'));
    const c = pools.agentFor('c', dest('/')); // c used after b: b is the least recently used
    assert.equal(pools.size, 3);
    // A fourth pool: the oldest pool (a) is busy and stays; b, idle and least recently used, goes.
    pools.agentFor('d', dest('/'));
    assert.equal(pools.size, 3);
    assert.equal(pools.agentFor('a', dest('/')), a, "a's pool (a request in flight) is kept");
    assert.equal(pools.agentFor('c', dest('/')), c, "c's pool (used recently) is kept");
    assert.equal(pools.size, 3, 'b was the one closed');
    await new Promise((r) => setTimeout(r, 20));
    assert.ok(release, 'the held request reached the receiver');
    (release as () => void)();
    const r = await held;
    assert.equal(r.statusCode, 204, `the in-flight delivery completes (${r.error})`);
  } finally {
    pools.close();
    await new Promise((r) => server.close(r));
  }
});
