// Sample roll-ups (migration 0016, ADR 0017): past an hour a database's samples become 5-minute
// maxima, past a day 30-minute maxima. The charts keep their peaks, a week costs ~700 rows per
// database instead of ~10,000, concurrent passes never count a row twice, and a server's report
// handling runs them. Real control DB, fully wired server.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { rollUpSamples } from '../src/server/modules/databases/databases.samples.repo.ts';
import { ROLLUPS } from '../src/server/modules/databases/databases.samples.ts';
import { enrollFakeAgent, type FakeAgent } from './helpers/databases.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { waitFor } from './helpers/wait.ts';

let s: TestServer;
let admin: TestKey;
let agent: FakeAgent;
const ids = new Map<string, string>();

before(async () => {
  s = await createTestServer();
  agent = await enrollFakeAgent(s, 'n1');
  admin = await createTestKey(s, { account: 'acme' });
  for (const name of ['week', 'pair', 'served']) {
    const r = await s.app.inject({
      method: 'POST',
      url: '/v1/databases',
      headers: admin.headers as Record<string, string>,
      payload: { name, node: 'n1' },
    });
    assert.equal(r.statusCode, 202, r.body);
    ids.set(name, r.json().id);
  }
});
after(() => s?.stop());

const HOUR = 3_600_000;
const chart = async (name: string, window: string) => {
  const r = await s.app.inject({
    method: 'GET',
    url: `/v1/databases/${name}/samples?window=${window}`,
    headers: admin.headers as Record<string, string>,
  });
  assert.equal(r.statusCode, 200, r.body);
  return r.json().points as { at: string; size_bytes: number; connections: number }[];
};
const rows = async (id: string) =>
  (
    await s.db.pool.query<{ span_s: number; n: number }>(
      'SELECT span_s, count(*)::int AS n FROM database_samples WHERE database_id = $1 GROUP BY 1 ORDER BY 1',
      [id],
    )
  ).rows;
/** Every roll-up, pass after pass, until nothing is left to merge; returns the rows merged. */
async function rollUpAll(limit: number): Promise<number> {
  let total = 0;
  for (const r of ROLLUPS) {
    for (let pass = 0; pass < 1_000; pass++) {
      const n = await rollUpSamples(
        s.db.pool,
        new Date(Date.now() - r.afterSeconds * 1000),
        r.spanSeconds,
        limit,
      );
      total += n;
      if (n === 0) break;
    }
  }
  return total;
}

test('a week of 60 s samples becomes ~700 rows; the charts keep their peaks and their shape', async () => {
  const id = ids.get('week')!;
  // 7 days of samples every 60 s (10,080 rows): size grows, connections cycle, with one spike.
  await s.db.pool.query(
    `INSERT INTO database_samples (database_id, at, size_bytes, connections)
     SELECT $1, now() - g * interval '60 seconds', 10000000 - g, CASE WHEN g = 5000 THEN 99 ELSE g % 5 END
       FROM generate_series(1, 10079) g`,
    [id],
  );
  const before = {
    day: await chart('week', '24h'),
    week: await chart('week', '7d'),
    hour: await chart('week', '1h'),
  };
  const merged = await rollUpAll(3_000);
  assert.ok(merged > 9_000, `merged ${merged}`);
  const after = await rows(id);
  const total = after.reduce((a, r) => a + r.n, 0);
  assert.ok(total <= 720, `rows after roll-up: ${JSON.stringify(after)}`);
  assert.deepEqual(
    after.map((r) => r.span_s),
    [0, 300, 1800],
  );
  assert.ok(after[0]!.n <= 60, 'raw samples only for the last hour');
  const now = {
    day: await chart('week', '24h'),
    week: await chart('week', '7d'),
    hour: await chart('week', '1h'),
  };
  // The last hour is untouched (bucket starts move with the clock: compare the values, bar the
  // oldest bucket, which may have slid out of the window between the two reads).
  const values = (ps: typeof now.hour) => ps.slice(1).map((p) => [p.size_bytes, p.connections]);
  assert.deepEqual(values(now.hour), values(before.hour));
  for (const w of ['day', 'week'] as const) {
    const max = (ps: typeof now.day, k: 'size_bytes' | 'connections') => Math.max(...ps.map((p) => p[k]));
    assert.equal(max(now[w], 'size_bytes'), max(before[w], 'size_bytes'), `${w}: largest size kept`);
    assert.equal(max(now[w], 'connections'), max(before[w], 'connections'), `${w}: connection peak kept`);
    assert.ok(
      Math.abs(now[w].length - before[w].length) <= before[w].length * 0.15,
      `${w}: ${now[w].length} vs ${before[w].length} points`,
    );
  }
  assert.ok(
    now.week.some((p) => p.connections === 99),
    'the spike survives in the week chart',
  );
  // Nothing left to merge: a second round is a no-op.
  assert.equal(await rollUpAll(3_000), 0);
});

test('concurrent passes with small batches merge every row exactly once, keeping the maxima', async () => {
  const id = ids.get('pair')!;
  await s.db.pool.query(
    `INSERT INTO database_samples (database_id, at, size_bytes, connections)
     SELECT $1, to_timestamp(floor(extract(epoch FROM now() - interval '3 hours') / 300) * 300)
                + g * interval '7 seconds', g, g % 11
       FROM generate_series(0, 299) g`,
    [id],
  );
  const stamp = new Date(Date.now() - HOUR);
  const results = await Promise.all(
    Array.from({ length: 4 }, async () => {
      let n = 0;
      for (let i = 0; i < 200; i++) {
        const k = await rollUpSamples(s.db.pool, stamp, 300, 17);
        n += k;
        if (k === 0) break;
      }
      return n;
    }),
  );
  assert.equal(
    results.reduce((a, b) => a + b, 0),
    300,
    'each raw row merged once',
  );
  const left = await s.db.pool.query<{ at: Date; size_bytes: string; connections: number; span_s: number }>(
    'SELECT at, size_bytes, connections, span_s FROM database_samples WHERE database_id = $1 ORDER BY at',
    [id],
  );
  // 300 samples 7 s apart span 2093 s: 7 five-minute slots, each with its own largest values.
  assert.equal(left.rowCount, 7);
  assert.ok(left.rows.every((r) => r.span_s === 300 && r.at.getTime() % 300_000 === 0));
  assert.equal(Number(left.rows.at(-1)!.size_bytes), 299);
  assert.equal(Math.max(...left.rows.map((r) => r.connections)), 10);
});

test("the server rolls samples up when its node's agent reports", async () => {
  const id = ids.get('served')!;
  await s.db.pool.query(
    `INSERT INTO database_samples (database_id, at, size_bytes, connections)
     SELECT $1, now() - interval '2 days' - g * interval '60 seconds', g, 1 FROM generate_series(1, 90) g`,
    [id],
  );
  // A fresh server on the same control DB: its first report runs the roll-ups and the prune.
  const replica = await createTestServer({}, { db: s.db });
  try {
    const r = await replica.app.inject({
      method: 'POST',
      url: '/v1/agent/samples',
      headers: { authorization: `Bearer ${agent.token}` },
      payload: { samples: [{ database_id: id, size_bytes: 1000, connections: 2 }] },
    });
    assert.equal(r.statusCode, 200, r.body);
    // The roll-ups run beside the report (not in its way): wait for them.
    await waitFor('the roll-up', async () => (await rows(id)).every((x) => x.span_s !== 0 || x.n === 1), {
      timeoutMs: 15_000,
      everyMs: 50,
    });
  } finally {
    await replica.stop();
  }
  const after = await rows(id);
  assert.equal(after.find((r) => r.span_s === 0)?.n, 1, 'only the new sample is raw');
  assert.ok((after.find((r) => r.span_s === 1800)?.n ?? 0) <= 4, JSON.stringify(after));
});
