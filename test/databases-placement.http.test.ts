import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { enrollFakeAgent } from './helpers/databases.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

// Two nodes through the HTTP API: fewest databases first unless one is named; the node is shown.
let s: TestServer;
let key: TestKey;
before(async () => {
  s = await createTestServer();
  await enrollFakeAgent(s, 'n1');
  await enrollFakeAgent(s, 'n2');
  key = await createTestKey(s, { account: 'place' });
});
after(() => s.stop());

const api = (method: 'GET' | 'POST', url: string, payload?: Record<string, unknown>) =>
  s.app.inject({ method, url, headers: key.headers, ...(payload ? { payload } : {}) });

test('placement over HTTP: the emptier node, or the named one; an unknown node is the one 409 for an account key', async () => {
  const first = await api('POST', '/v1/databases', { name: 'place_a' });
  assert.equal(first.statusCode, 202, first.body);
  const second = await api('POST', '/v1/databases', { name: 'place_b' });
  assert.equal(second.statusCode, 202, second.body);
  assert.notEqual(first.json().node, second.json().node, 'the second goes to the emptier node');
  assert.deepEqual([first.json().node, second.json().node].sort(), ['n1', 'n2']);

  const named = await api('POST', '/v1/databases', { name: 'place_c', node: 'n1' });
  assert.equal(named.statusCode, 202, named.body);
  assert.equal(named.json().node, 'n1');
  // n1 now holds two, n2 one: an unnamed one goes to n2.
  assert.equal((await api('POST', '/v1/databases', { name: 'place_d' })).json().node, 'n2');
  assert.equal((await api('GET', '/v1/databases/place_c')).json().node, 'n1', 'shown on GET');
  const listed = (await api('GET', '/v1/databases')).json().items as { name: string; node: string }[];
  assert.equal(listed.find((d) => d.name === 'place_d')?.node, 'n2');

  const unknown = await api('POST', '/v1/databases', { name: 'place_e', node: 'nope' });
  // Node names are platform-admin data: unknown or unable to take it, one answer (ADR 0030).
  assert.equal(unknown.statusCode, 409, unknown.body);
  assert.equal(unknown.json().error.message, 'The node named is unknown or cannot take this database now');
  const jobs = await s.db.pool.query(
    "SELECT n.name, count(*)::int AS c FROM jobs j JOIN nodes n ON n.id = j.node_id WHERE kind = 'database.create' GROUP BY n.name ORDER BY n.name",
  );
  assert.deepEqual(
    jobs.rows.map((r) => [r.name, r.c]),
    [
      ['n1', 2],
      ['n2', 2],
    ],
    'each create job queued for the node the database was placed on',
  );
});
