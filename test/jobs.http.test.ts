import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { enqueueJob } from '../src/server/modules/jobs/jobs.repo.ts';
import { createTestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

let s: TestServer;
before(async () => {
  s = await createTestServer();
});
after(() => s.stop());

test("an account sees its own jobs' status, paginated; never another account's, never payloads", async () => {
  const mine = await createTestKey(s, { account: 'acme', level: 'read' });
  const other = await createTestKey(s, { account: 'globex' });
  const scoped = await createTestKey(s, { account: 'acme', level: 'read', databases: ['app_one'] });
  const node = (await s.db.pool.query<{ id: string }>("INSERT INTO nodes (name) VALUES ('n1') RETURNING id"))
    .rows[0]!;
  const ids: number[] = [];
  for (let i = 0; i < 5; i++) {
    const job = await enqueueJob(s.db.pool, {
      nodeId: node.id,
      kind: 'database.create',
      accountId: mine.accountId,
      payload: { name: i === 0 ? 'app_one' : `app_${i}x`, sql: 'secret payload' },
    });
    ids.push(job.id);
  }
  const foreign = await enqueueJob(s.db.pool, {
    nodeId: node.id,
    kind: 'database.create',
    accountId: other.accountId,
    payload: { name: 'theirs' },
  });

  const seen: number[] = [];
  let cursor: string | null = null;
  for (let page = 0; page < 10; page++) {
    const url: string = `/v1/jobs?limit=2${cursor ? `&cursor=${cursor}` : ''}`;
    const res = await s.app.inject({ url, headers: mine.headers });
    assert.equal(res.statusCode, 200);
    const body = res.json() as { items: { id: number; status: string }[]; next_cursor: string | null };
    assert.ok(!res.body.includes('secret payload'), 'payloads never leave the server');
    seen.push(...body.items.map((j) => j.id));
    cursor = body.next_cursor;
    if (!cursor) break;
  }
  assert.deepEqual(seen, [...ids].reverse(), 'newest first, each exactly once');

  const one = await s.app.inject({ url: `/v1/jobs/${ids[0]}`, headers: mine.headers });
  assert.equal(one.statusCode, 200);
  assert.equal(one.json().status, 'queued');
  assert.equal(one.json().database, 'app_one');

  const notMine = await s.app.inject({ url: `/v1/jobs/${foreign.id}`, headers: mine.headers });
  const missing = await s.app.inject({ url: '/v1/jobs/999999999', headers: mine.headers });
  assert.equal(notMine.statusCode, 404);
  assert.equal(missing.statusCode, 404);
  assert.equal(notMine.json().error.code, missing.json().error.code);

  const scopedList = await s.app.inject({ url: '/v1/jobs', headers: scoped.headers });
  assert.deepEqual(
    (scopedList.json() as { items: { id: number }[] }).items.map((j) => j.id),
    [ids[0]],
    'a database-scoped key sees only jobs about its databases',
  );
  assert.equal((await s.app.inject({ url: `/v1/jobs/${ids[1]}`, headers: scoped.headers })).statusCode, 404);
  assert.equal((await s.app.inject({ url: '/v1/jobs' })).statusCode, 401);
  assert.equal(
    (await s.app.inject({ url: '/v1/jobs?cursor=bm90LWEtY3Vyc29y', headers: mine.headers })).statusCode,
    400,
  );
});
