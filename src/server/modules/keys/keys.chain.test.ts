import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createTestKey, type TestKey } from '../../../../test/helpers/keys.ts';
import { createTestServer, type TestServer } from '../../../../test/helpers/server.ts';
import { generateApiKey, hashApiKey } from '../../../shared/api-key.ts';
import * as repo from './keys.repo.ts';
import { MAX_KEY_CHAIN_DEPTH } from './keys.service.ts';

let s: TestServer;
let admin: TestKey;
before(async () => {
  s = await createTestServer();
  await s.keyAuth.listenerReady();
  admin = await createTestKey(s, { account: 'acme' });
});
after(() => s.stop());

const call = (method: 'GET' | 'POST' | 'DELETE', url: string, key: string, payload?: object) =>
  s.app.inject({ method, url, headers: { authorization: `Bearer ${key}` }, ...(payload ? { payload } : {}) });

/**
 * A chain of admin keys `depth` levels below `root`, written straight to the control DB (as a
 * chain made before the creation bound existed would be). Returns the keys, top first.
 */
async function deepChain(root: TestKey, depth: number): Promise<{ id: string; key: string }[]> {
  const chain: { id: string; key: string }[] = [];
  let parent = root.id;
  for (let i = 0; i < depth; i++) {
    const { key, lookupPrefix } = generateApiKey();
    const row = await repo.insertKey(s.db.pool, {
      accountId: root.accountId,
      name: `level ${i + 1}`,
      lookupPrefix,
      keyHash: hashApiKey(key),
      level: 'admin',
      databases: null,
      explorer: true,
      decoy: false,
      createdByKeyId: parent,
      expiresAt: new Date(Date.now() + 86_400_000),
    });
    chain.push({ id: row.id, key });
    parent = row.id;
  }
  return chain;
}

test('revoking a key stops every descendant however deep (70 levels, cached and uncached)', async () => {
  const top = await createTestKey(s, { account: 'acme' });
  const chain = await deepChain(top, 70);
  const deepest = chain.at(-1)!;
  const cachedDeep = chain.at(-2)!;
  // Both work before; one of them is now in the auth cache (eviction must reach it).
  assert.equal((await call('GET', '/v1/whoami', cachedDeep.key)).statusCode, 200);
  assert.equal((await call('GET', '/v1/whoami', deepest.key)).statusCode, 200);

  assert.equal((await call('DELETE', `/v1/keys/${top.id}`, admin.key)).statusCode, 200);

  for (const k of [chain[0]!, chain[63]!, chain[64]!, chain[65]!, cachedDeep, deepest]) {
    assert.equal((await call('GET', '/v1/whoami', k.key)).statusCode, 401, 'a descendant is refused');
  }
  const minted = await call('POST', '/v1/keys', deepest.key, { name: 'escape', level: 'admin' });
  assert.equal(minted.statusCode, 401, 'the deepest key mints nothing');
  const refused = await s.db.pool.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM api_keys WHERE name = 'escape'",
  );
  assert.equal(refused.rows[0]!.n, 0);

  // Revoking a key in the middle of another deep chain reaches the bottom too (cache evicted).
  const other = await deepChain(await createTestKey(s, { account: 'acme' }), 80);
  assert.equal((await call('GET', '/v1/whoami', other.at(-1)!.key)).statusCode, 200);
  assert.equal((await call('DELETE', `/v1/keys/${other[2]!.id}`, admin.key)).statusCode, 200);
  assert.equal((await call('GET', '/v1/whoami', other.at(-1)!.key)).statusCode, 401);
  assert.equal((await call('GET', '/v1/whoami', other[1]!.key)).statusCode, 200, 'ancestors keep working');
});

test(`keys cannot be minted more than ${MAX_KEY_CHAIN_DEPTH} levels below an operator key: a clear 400`, async () => {
  let by = admin.key;
  for (let depth = 1; depth <= MAX_KEY_CHAIN_DEPTH; depth++) {
    const res = await call('POST', '/v1/keys', by, { name: `depth ${depth}`, level: 'admin' });
    assert.equal(res.statusCode, 201, `depth ${depth}: ${res.body}`);
    by = (res.json() as { key: string }).key;
  }
  const tooDeep = await call('POST', '/v1/keys', by, { name: 'one too deep', level: 'read' });
  assert.equal(tooDeep.statusCode, 400, tooDeep.body);
  const err = (tooDeep.json() as { error: { code: string; message: string; details: unknown } }).error;
  assert.equal(err.code, 'bad_request');
  assert.match(err.message, new RegExp(`more than ${MAX_KEY_CHAIN_DEPTH} levels`));
  assert.deepEqual(err.details, { max_chain_depth: MAX_KEY_CHAIN_DEPTH });
  // A legacy chain already past the bound cannot grow either.
  const legacy = await deepChain(admin, MAX_KEY_CHAIN_DEPTH + 3);
  const grow = await call('POST', '/v1/keys', legacy.at(-1)!.key, { name: 'grow', level: 'read' });
  assert.equal(grow.statusCode, 400);
});
