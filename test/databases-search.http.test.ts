// The databases list for the dashboard: a name search (literal, case-insensitive, bounded), a
// status filter, cursor paging under both, the latest sample and allowlist size on each item; the
// agent's sample reports (its own node's databases only, bounded) and a database's chart data
// (bucketed, bounded, another account's a 404). Fully wired server, real keys, real control DB.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { createAccount, enrollFakeAgent, type FakeAgent } from './helpers/databases.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { waitFor } from './helpers/wait.ts';

let s: TestServer;
let admin: TestKey;
let stranger: TestKey;
let scoped: TestKey;
let agent: FakeAgent;
let otherAgent: FakeAgent;
const NAMES = ['alpha_one', 'alpha_two', 'beta', 'ab', 'x1'];
const ids = new Map<string, string>();

before(async () => {
  s = await createTestServer({ defaultAllowlist: ['10.0.0.0/8', '192.0.2.1/32'] });
  agent = await enrollFakeAgent(s, 'n1');
  admin = await createTestKey(s, { account: 'acme' });
  stranger = await createTestKey(s, { account: 'evil' });
  scoped = await createTestKey(s, { account: 'acme', level: 'read', databases: ['beta'] });
  for (const name of NAMES) {
    const r = await get('POST', '/v1/databases', admin, { name, node: 'n1' });
    assert.equal(r.statusCode, 202, r.body);
    ids.set(name, r.json().id);
  }
  // A second node, for the "another node's database" report.
  otherAgent = await enrollFakeAgent(s, 'n2');
});
after(() => s?.stop());

function get(method: 'GET' | 'POST', url: string, key: TestKey | { headers: object }, payload?: object) {
  return s.app.inject({
    method,
    url,
    headers: key.headers as Record<string, string>,
    ...(payload ? { payload } : {}),
  });
}
const names = (r: { json(): { items: { name: string }[] } }) =>
  r
    .json()
    .items.map((i) => i.name)
    .sort();
const report = (a: FakeAgent, samples: unknown[]) =>
  s.app.inject({
    method: 'POST',
    url: '/v1/agent/samples',
    headers: { authorization: `Bearer ${a.token}` },
    payload: { samples },
  });

test('q: a case-insensitive, literal substring of the name; % _ and \\ match only themselves', async () => {
  assert.deepEqual(names(await get('GET', '/v1/databases?q=ALPHA', admin)), ['alpha_one', 'alpha_two']);
  assert.deepEqual(names(await get('GET', '/v1/databases?q=a', admin)), [
    'ab',
    'alpha_one',
    'alpha_two',
    'beta',
  ]);
  // Unescaped, `_` would match any one character and `%` anything: every name.
  assert.deepEqual(names(await get('GET', '/v1/databases?q=_', admin)), ['alpha_one', 'alpha_two']);
  assert.deepEqual(names(await get('GET', '/v1/databases?q=a_', admin)), ['alpha_one', 'alpha_two']);
  assert.deepEqual(names(await get('GET', '/v1/databases?q=%25', admin)), []);
  assert.deepEqual(names(await get('GET', '/v1/databases?q=a%25', admin)), []);
  assert.deepEqual(names(await get('GET', `/v1/databases?q=${encodeURIComponent('\\')}`, admin)), []);
  assert.deepEqual(names(await get('GET', `/v1/databases?q=${encodeURIComponent("'; --")}`, admin)), []);
  // Bounded: a name has at most 63 characters, so a longer search is refused, not run.
  assert.deepEqual(names(await get('GET', `/v1/databases?q=${'a'.repeat(63)}`, admin)), []);
  for (const q of ['a'.repeat(64), 'a'.repeat(10_000), '%0A', '']) {
    const r = await get('GET', `/v1/databases?q=${q}`, admin);
    assert.equal(r.statusCode, 400, `q of ${q.length}: ${r.body.slice(0, 200)}`);
    assert.equal(r.json().error.code, 'validation_failed');
  }
  // A database-scoped caller searches within its grants only.
  assert.deepEqual(names(await get('GET', '/v1/databases?q=a', scoped)), ['beta']);
  assert.deepEqual(names(await get('GET', '/v1/databases?q=a', stranger)), []);
});

test('status filters; paging keeps the filters', async () => {
  await s.db.pool.query("UPDATE databases SET status = 'failed', failure_reason = 'x' WHERE name = 'beta'");
  try {
    assert.deepEqual(names(await get('GET', '/v1/databases?status=failed', admin)), ['beta']);
    assert.equal((await get('GET', '/v1/databases?status=ready', admin)).json().items.length, 0);
    assert.equal((await get('GET', '/v1/databases?status=deleted', admin)).statusCode, 400);
    assert.equal((await get('GET', '/v1/databases?status=READY', admin)).statusCode, 400);
    assert.deepEqual(names(await get('GET', '/v1/databases?status=failed&q=et', admin)), ['beta']);
    assert.deepEqual(names(await get('GET', '/v1/databases?status=provisioning&q=et', admin)), []);
  } finally {
    await s.db.pool.query(
      "UPDATE databases SET status = 'provisioning', failure_reason = NULL WHERE name = 'beta'",
    );
  }
  const seen: string[] = [];
  let cursor: string | null = null;
  for (let i = 0; i < 5; i++) {
    const page = await get('GET', `/v1/databases?q=a&limit=1${cursor ? `&cursor=${cursor}` : ''}`, admin);
    assert.equal(page.statusCode, 200, page.body);
    seen.push(...page.json().items.map((d: { name: string }) => d.name));
    cursor = page.json().next_cursor;
    if (!cursor) break;
  }
  assert.deepEqual(seen.sort(), ['ab', 'alpha_one', 'alpha_two', 'beta']);
});

test('items keep every existing field and add the latest sample and the allowlist size', async () => {
  const before = (await get('GET', '/v1/databases?q=alpha_one', admin)).json().items[0];
  for (const k of [
    'id',
    'name',
    'status',
    'node',
    'failure_reason',
    'password_version',
    'rotation_pending',
    'created_at',
    'ready_at',
    'rotated_at',
    'updated_at',
    'last_rotation',
  ])
    assert.ok(k in before, k);
  assert.equal(before.node, 'n1');
  assert.equal(before.size_bytes, null);
  assert.equal(before.connections, null);
  assert.equal(before.sampled_at, null);
  assert.equal(before.allowlist_count, 2);
  // An expired entry is not counted (the row may still hold it until the sweep).
  await s.db.pool.query(
    `UPDATE databases SET allowlist = allowlist || '[{"cidr":"198.51.100.0/24","expires_at":"2000-01-01T00:00:00Z","note":null}]'::jsonb
      WHERE name = 'alpha_one'`,
  );
  const r = await report(agent, [
    { database_id: ids.get('alpha_one'), size_bytes: 8_000_000, connections: 3 },
  ]);
  assert.equal(r.statusCode, 200, r.body);
  assert.equal(r.json().accepted, 1);
  const item = (await get('GET', '/v1/databases?q=alpha_one', admin)).json().items[0];
  assert.equal(item.size_bytes, 8_000_000);
  assert.equal(item.connections, 3);
  assert.ok(Date.now() - Date.parse(item.sampled_at) < 60_000);
  assert.equal(item.allowlist_count, 2);
  const one = (await get('GET', '/v1/databases/alpha_one', admin)).json();
  assert.equal(one.size_bytes, 8_000_000);
  assert.equal(one.connections, 3);
});

test("an agent reports only its own node's databases, within bounds", async () => {
  const beta = ids.get('beta');
  const r = await report(otherAgent, [{ database_id: beta, size_bytes: 1, connections: 99 }]);
  assert.equal(r.statusCode, 200, r.body);
  assert.equal(r.json().accepted, 0, "another node's database is not taken");
  const unknown = await report(agent, [
    { database_id: '00000000-0000-4000-8000-000000000000', size_bytes: 1, connections: 1 },
  ]);
  assert.equal(unknown.json().accepted, 0);
  assert.equal((await get('GET', '/v1/databases/beta', admin)).json().connections, null);
  const bad: unknown[][] = [
    [{ database_id: beta, size_bytes: -1, connections: 0 }],
    [{ database_id: beta, size_bytes: 1.5, connections: 0 }],
    [{ database_id: beta, size_bytes: 1, connections: 262_144 }],
    [{ database_id: 'beta', size_bytes: 1, connections: 0 }],
    [{ database_id: beta, size_bytes: 1, connections: 0, extra: 1 }],
    Array.from({ length: 1001 }, () => ({ database_id: beta, size_bytes: 1, connections: 0 })),
  ];
  for (const samples of bad) assert.equal((await report(agent, samples)).statusCode, 400);
  const noToken = await s.app.inject({ method: 'POST', url: '/v1/agent/samples', payload: { samples: [] } });
  assert.equal(noToken.statusCode, 401);
  const withKey = await get('POST', '/v1/agent/samples', admin, { samples: [] });
  assert.equal(withKey.statusCode, 401, 'an API key is no agent token');
});

test('samples: bucketed to at most 300 points per window, the largest values of each bucket', async () => {
  const id = ids.get('alpha_two')!;
  // A sample every 10 s over the last 2 days (17 280 rows), growing.
  await s.db.pool.query(
    `INSERT INTO database_samples (database_id, at, size_bytes, connections)
     SELECT $1, now() - g * interval '10 seconds', 1000000 - g, g % 7 FROM generate_series(1, 17280) g`,
    [id],
  );
  for (const [window, bucket] of [
    ['1h', 12],
    ['24h', 288],
    ['7d', 2016],
  ] as const) {
    const r = await get('GET', `/v1/databases/alpha_two/samples?window=${window}`, admin);
    assert.equal(r.statusCode, 200, r.body);
    const body = r.json();
    assert.equal(body.window, window);
    assert.equal(body.bucket_seconds, bucket);
    assert.ok(body.points.length > 0 && body.points.length <= 300, `${window}: ${body.points.length}`);
    const ats = body.points.map((p: { at: string }) => Date.parse(p.at));
    assert.deepEqual(
      ats,
      [...ats].sort((a, b) => a - b),
      'oldest first',
    );
    const last = body.points.at(-1);
    assert.equal(last.size_bytes, 999_999, 'the newest (largest) size is in the last bucket');
    assert.ok(body.points.every((p: { connections: number }) => p.connections <= 6));
  }
  assert.equal((await get('GET', '/v1/databases/alpha_two/samples', admin)).json().window, '24h');
  assert.equal((await get('GET', '/v1/databases/alpha_two/samples?window=30d', admin)).statusCode, 400);
  assert.equal((await get('GET', '/v1/databases/beta/samples', admin)).json().points.length, 0);
  // Another account's database, or one outside a scoped key's grants, does not exist.
  assert.equal((await get('GET', '/v1/databases/alpha_two/samples', stranger)).statusCode, 404);
  assert.equal((await get('GET', '/v1/databases/alpha_two/samples', scoped)).statusCode, 404);
  assert.equal((await get('GET', '/v1/databases/nothere/samples', admin)).statusCode, 404);
});

test('samples older than the retention are pruned when reports come in', async () => {
  const id = ids.get('x1')!;
  await s.db.pool.query(
    `INSERT INTO database_samples (database_id, at, size_bytes, connections)
     VALUES ($1, now() - interval '8 days', 1, 0), ($1, now() - interval '6 days', 2, 0)`,
    [id],
  );
  // A fresh server on the same control DB: its first report prunes (at most once a minute after).
  const replica = await createTestServer({ sampleRetentionDays: 7 }, { db: s.db });
  try {
    const r = await replica.app.inject({
      method: 'POST',
      url: '/v1/agent/samples',
      headers: { authorization: `Bearer ${agent.token}` },
      payload: { samples: [{ database_id: id, size_bytes: 3, connections: 0 }] },
    });
    assert.equal(r.statusCode, 200, r.body);
    // The prune runs beside the report (not in its way): wait for it.
    await waitFor(
      'the prune',
      async () =>
        (
          await s.db.pool.query(
            "SELECT 1 FROM database_samples WHERE database_id = $1 AND at < now() - interval '7 days'",
            [id],
          )
        ).rowCount === 0,
      { timeoutMs: 15_000, everyMs: 50 },
    );
  } finally {
    await replica.stop();
  }
  const left = await s.db.pool.query<{ size_bytes: string }>(
    'SELECT size_bytes FROM database_samples WHERE database_id = $1 ORDER BY at',
    [id],
  );
  assert.deepEqual(
    left.rows.map((r) => Number(r.size_bytes)),
    [2, 3],
  );
});

test('10,000 databases in one account: first page, search, status and a deep page stay fast', async (t) => {
  const account = await createAccount(s, 'big');
  const big = await createTestKey(s, { account: 'big', level: 'read' });
  await s.db.pool.query(
    `INSERT INTO databases (id, account_id, node_id, name, password_sealed, limits, status, created_at)
     SELECT gen_random_uuid(), $1, $2, 'tenant_' || lpad(g::text, 5, '0'), 'x', '{}'::jsonb,
            CASE WHEN g % 10 = 0 THEN 'failed' ELSE 'ready' END, now() - g * interval '1 second'
       FROM generate_series(1, 10000) g`,
    [account, agent.nodeId],
  );
  // Three samples per database (30 000 rows): the list probes only the latest of each listed one.
  await s.db.pool.query(
    `INSERT INTO database_samples (database_id, at, size_bytes, connections)
     SELECT d.id, now() - k * interval '1 minute', 1000 * k, k FROM databases d, generate_series(0, 2) k
      WHERE d.account_id = $1`,
    [account],
  );
  await s.db.pool.query('ANALYZE databases');
  await s.db.pool.query('ANALYZE database_samples');
  const timed = async (what: string, url: string) => {
    await get('GET', url, big); // warm
    const runs: number[] = [];
    let last: Awaited<ReturnType<typeof get>> | undefined;
    for (let i = 0; i < 5; i++) {
      const t0 = performance.now();
      last = await get('GET', url, big);
      runs.push(performance.now() - t0);
    }
    assert.equal(last?.statusCode, 200, last?.body);
    const median = runs.sort((a, b) => a - b)[2]!;
    t.diagnostic(`${what}: median ${median.toFixed(1)} ms over 5 (${url})`);
    return { median, body: last!.json() };
  };
  const first = await timed('first page of 50', '/v1/databases?limit=50');
  assert.equal(first.body.items.length, 50);
  assert.equal(first.body.items[0].name, 'tenant_00001');
  assert.equal(first.body.items[0].size_bytes, 0);
  assert.equal(first.body.items[0].connections, 0);
  const hit = await timed('search, 1 match', '/v1/databases?limit=50&q=tenant_09999');
  assert.deepEqual(
    hit.body.items.map((i: { name: string }) => i.name),
    ['tenant_09999'],
  );
  const none = await timed('search, no match (scans the account)', '/v1/databases?limit=50&q=zzz');
  assert.equal(none.body.items.length, 0);
  const failed = await timed('status=failed', '/v1/databases?limit=50&status=failed');
  assert.ok(failed.body.items.every((i: { status: string }) => i.status === 'failed'));
  // A deep page: walk 100 pages of 100 with the cursor, then time the last one.
  let cursor: string | null = null;
  for (let i = 0; i < 99; i++) {
    const page = await get('GET', `/v1/databases?limit=100${cursor ? `&cursor=${cursor}` : ''}`, big);
    cursor = page.json().next_cursor as string | null;
  }
  const deep = await timed('page 100 of 100 (cursor)', `/v1/databases?limit=100&cursor=${cursor}`);
  assert.equal(deep.body.items.at(-1).name, 'tenant_10000');
  assert.equal(deep.body.next_cursor, null);
  for (const [what, m] of [
    ['first page', first.median],
    ['search hit', hit.median],
    ['search miss', none.median],
    ['status', failed.median],
    ['deep page', deep.median],
  ] as const)
    assert.ok(m < 250, `${what}: ${m.toFixed(1)} ms`);
  // One sampling round of the node: 10 reports of 1000 samples (its agent's batch size).
  const ids10k = (
    await s.db.pool.query<{ id: string }>('SELECT id FROM databases WHERE account_id = $1', [account])
  ).rows.map((r) => r.id);
  const t0 = performance.now();
  for (let i = 0; i < ids10k.length; i += 1000) {
    const r = await report(
      agent,
      ids10k.slice(i, i + 1000).map((id) => ({ database_id: id, size_bytes: 7_000_000, connections: 1 })),
    );
    assert.equal(r.json().accepted, 1000, r.body);
  }
  const ingest = performance.now() - t0;
  t.diagnostic(`one sampling round of 10 000 databases (10 reports of 1000): ${ingest.toFixed(0)} ms`);
  assert.ok(ingest < 5_000, `${ingest.toFixed(0)} ms`);
  assert.equal((await get('GET', '/v1/databases?limit=1', big)).json().items[0].size_bytes, 7_000_000);
  const footprint = await s.db.pool.query<{ per_row: string; rows: string }>(
    `SELECT (pg_total_relation_size('database_samples') / count(*))::text AS per_row, count(*)::text AS rows
       FROM database_samples`,
  );
  t.diagnostic(
    `database_samples: ${footprint.rows[0]!.per_row} bytes per row with its indexes (${footprint.rows[0]!.rows} rows)`,
  );
  // The plan reads the account's rows in index order (no sort of 10 000 rows).
  const plan = await s.db.pool.query<{ 'QUERY PLAN': string }>(
    `EXPLAIN SELECT id FROM databases d WHERE d.account_id = $1 AND d.deleted_at IS NULL
      ORDER BY d.created_at DESC, d.id DESC LIMIT 51`,
    [account],
  );
  const text = plan.rows.map((r) => r['QUERY PLAN']).join('\n');
  assert.match(text, /databases_account_created_idx/, text);
  assert.doesNotMatch(text, /Sort/, text);
});
