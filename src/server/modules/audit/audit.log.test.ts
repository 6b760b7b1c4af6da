import assert from 'node:assert/strict';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, test } from 'node:test';
import type pg from 'pg';
import { createTestDb, type TestDb } from '../../../../test/helpers/db.ts';
import { createLogger } from '../../../shared/logger.ts';
import { loadExplorerParser } from '../../../shared/sql/explorer-validator.ts';
import { withTx } from '../../db/pool.ts';
import { chainAll, createAuditChainer, pruneBefore } from './audit.chainer.ts';
import { type Checkpointer, createCheckpointer, keyMap } from './audit.checkpoints.ts';
import { exportLines, parseExport, verifyDatabase, verifyExport } from './audit.export.ts';
import { type AuditService, createAuditService } from './audit.service.ts';

const log = createLogger('test', 'silent');
let db: TestDb;
let client: pg.PoolClient;
let cp: Checkpointer;
let keys: Map<string, string>;
let audit: AuditService;

beforeEach(async () => {
  await loadExplorerParser();
  db = await createTestDb();
  audit = createAuditService({ db: db.pool });
  client = await db.pool.connect();
  cp = createCheckpointer({ db: db.pool, log, dataDir: mkdtempSync(path.join(tmpdir(), 'bulwark-audit-')) });
  keys = keyMap(cp.publicKeys());
});
afterEach(async () => {
  client.release();
  await db.drop();
});

const ACCOUNT = '00000000-0000-4000-8000-000000000001';

async function seed(n: number, extra: { occurredAt?: string } = {}): Promise<void> {
  for (let i = 0; i < n; i++) {
    await audit.recordNow({
      action: 'key.created',
      actorType: 'key',
      actorId: `k${i}`,
      accountId: ACCOUNT,
      targetType: 'key',
      targetId: `t${i}`,
      details: { i, z: 'last', a: { nested: true } },
      ...extra,
    });
  }
  await chainAll(client);
}

const verify = () => verifyDatabase(db.pool, keys);

test('100 concurrent writers, chained while they write → one gap-free valid chain', async () => {
  const chaining = (async () => {
    for (let i = 0; i < 50; i++) {
      await chainAll(client, 7);
      await new Promise((r) => setTimeout(r, 2));
    }
  })();
  await Promise.all(
    Array.from({ length: 100 }, (_, i) =>
      withTx(db.pool, (tx) => audit.record(tx, { action: 'test.write', details: { writer: i } })),
    ),
  );
  await chaining;
  await chainAll(client);
  const r = await verify();
  assert.equal(r.ok, true, JSON.stringify(r.failure));
  assert.equal(r.events, 100);
  assert.equal(r.head_seq, 100);
  assert.equal(r.pending, 0);
  const seqs = (await db.pool.query<{ seq: number }>('SELECT seq FROM audit_events ORDER BY seq')).rows;
  assert.deepEqual(
    seqs.map((s) => s.seq),
    Array.from({ length: 100 }, (_, i) => i + 1),
  );
});

test('a field edited in a column, or in the hashed text, is detected at that event', async () => {
  await seed(10);
  assert.equal((await verify()).ok, true);
  await db.pool.query("UPDATE audit_events SET action = 'key.revoked' WHERE seq = 4");
  let r = await verify();
  assert.equal(r.ok, false);
  assert.deepEqual([r.failure?.reason, r.failure?.seq], ['content_mismatch', 4]);
  await db.pool.query("UPDATE audit_events SET action = 'key.created' WHERE seq = 4");
  await db.pool.query(`UPDATE audit_events SET canonical = replace(canonical, '"t5"', '"t9"') WHERE seq = 6`);
  r = await verify();
  assert.deepEqual([r.failure?.reason, r.failure?.seq], ['hash_mismatch', 6]);
});

test('an event deleted in the middle is a gap named at the next seq', async () => {
  await seed(10);
  await db.pool.query('DELETE FROM audit_events WHERE seq = 5');
  const r = await verify();
  assert.deepEqual([r.ok, r.failure?.reason, r.failure?.seq], [false, 'gap', 6]);
});

test('a deleted tail (head row rewritten too) is caught by the signed checkpoint', async () => {
  await seed(10);
  const c = await cp.checkpoint();
  assert.equal(c?.seq, '10');
  await db.pool.query('DELETE FROM audit_events WHERE seq > 7');
  await db.pool.query('UPDATE audit_head SET seq = 7, hash = (SELECT hash FROM audit_events WHERE seq = 7)');
  const r = await verify();
  assert.deepEqual([r.ok, r.failure?.reason, r.failure?.seq], [false, 'tail_truncated', 8]);
  // Without the head rewrite the head row alone already names it.
  await db.pool.query('DELETE FROM audit_checkpoints');
  await db.pool.query('UPDATE audit_head SET seq = 10');
  assert.equal((await verify()).failure?.reason, 'tail_truncated');
});

test('two events swapped are detected at the first of them; a forged checkpoint is refused', async () => {
  await seed(10);
  await withTx(db.pool, async (tx) => {
    await tx.query('UPDATE audit_events SET seq = 1000 WHERE seq = 4');
    await tx.query('UPDATE audit_events SET seq = 4 WHERE seq = 5');
    await tx.query('UPDATE audit_events SET seq = 5 WHERE seq = 1000');
  });
  const r = await verify();
  assert.deepEqual([r.ok, r.failure?.seq], [false, 4]);
  assert.equal(r.failure?.reason, 'seq_mismatch');

  await withTx(db.pool, async (tx) => {
    await tx.query('UPDATE audit_events SET seq = 1000 WHERE seq = 4');
    await tx.query('UPDATE audit_events SET seq = 4 WHERE seq = 5');
    await tx.query('UPDATE audit_events SET seq = 5 WHERE seq = 1000');
  });
  assert.equal((await verify()).ok, true);
  await cp.checkpoint();
  await db.pool.query("UPDATE audit_checkpoints SET at = '2020-01-01T00:00:00.000Z'");
  assert.equal((await verify()).failure?.reason, 'bad_signature');
});

test('fail closed: an event the database refuses rolls the whole change back', async () => {
  const count = async () =>
    (await db.pool.query<{ n: number }>("SELECT count(*)::int AS n FROM accounts WHERE name = 'acme'"))
      .rows[0]!.n;
  // Refused by a CHECK constraint (target id longer than 200) inside the same transaction.
  await assert.rejects(
    withTx(db.pool, async (tx) => {
      await tx.query("INSERT INTO accounts (name) VALUES ('acme')");
      await audit.record(tx, { action: 'account.created', targetType: 'account', targetId: 'x'.repeat(201) });
    }),
    (err: { code?: string }) => err.code === '23514',
  );
  assert.equal(await count(), 0);
  // Refused before the insert (not encodable).
  await assert.rejects(
    withTx(db.pool, async (tx) => {
      await tx.query("INSERT INTO accounts (name) VALUES ('acme')");
      await audit.record(tx, { action: 'account.created', details: { at: new Date() } });
    }),
    TypeError,
  );
  assert.equal(await count(), 0);
  assert.equal((await db.pool.query('SELECT 1 FROM audit_events')).rowCount, 0);
  // SQL in details is redacted before it is stored.
  await audit.recordNow({
    action: 'explorer.query',
    details: { sql: "SELECT * FROM t WHERE pw = 'hunter2'" },
  });
  const row = (await db.pool.query<{ details: { sql: string } }>('SELECT details FROM audit_events')).rows[0];
  assert.equal(row?.details.sql, 'SELECT * FROM t WHERE pw = ?');
});

test('pending rows left by a dead chainer are chained by the next; one leader per cluster', async () => {
  for (let i = 0; i < 5; i++) await audit.recordNow({ action: 'test.pending' });
  assert.equal((await verify()).pending, 5);
  const opts = {
    databaseUrl: db.url,
    db: db.pool,
    log,
    audit,
    checkpointer: cp,
    checkpointIntervalMs: 3_600_000,
    retentionDays: 365,
    standbyRetryMs: 50,
  };
  const a = createAuditChainer(opts);
  const b = createAuditChainer(opts);
  try {
    const deadline = Date.now() + 5_000;
    while (Date.now() < deadline && (await verify()).pending > 0) await new Promise((r) => setTimeout(r, 10));
    assert.equal([a.isLeader(), b.isLeader()].filter(Boolean).length, 1);
    // New writes are chained within milliseconds (NOTIFY wake-up).
    await audit.recordNow({ action: 'test.after' });
    const t0 = Date.now();
    while (Date.now() - t0 < 3_000 && (await verify()).pending > 0)
      await new Promise((r) => setTimeout(r, 5));
    assert.ok(Date.now() - t0 < 500, 'chained promptly');
    const r = await verify();
    assert.deepEqual([r.ok, r.events, r.pending], [true, 6, 0]);
  } finally {
    await a.close();
    await b.close();
  }
});

test('retention prunes old events behind a signed anchor; verification stays green', async () => {
  const old = new Date(Date.now() - 400 * 86_400_000).toISOString();
  await seed(6, { occurredAt: old });
  await cp.checkpoint();
  await seed(4);
  await cp.checkpoint();
  const pruned = await pruneBefore(client, cp, new Date(Date.now() - 365 * 86_400_000));
  assert.equal(pruned, 6);
  const r = await verify();
  assert.deepEqual([r.ok, r.anchor_seq, r.events, r.head_seq], [true, 6, 4, 10], JSON.stringify(r.failure));
  // The full export verifies offline too, starting from the anchor.
  const ex = await parseExport(exportLines(db.pool, { accountId: null, publicKeys: cp.publicKeys() }));
  assert.equal((await verifyExport(ex)).ok, true);
  // Deleting the first kept event is still a gap after the anchor.
  await db.pool.query('DELETE FROM audit_events WHERE seq = 7');
  assert.deepEqual([(await verify()).failure?.reason, (await verify()).failure?.seq], ['gap', 8]);
});

test('an exported file verifies offline; a tampered one does not', async () => {
  await seed(12);
  await cp.checkpoint();
  const lines: string[] = [];
  for await (const l of exportLines(db.pool, { accountId: null, publicKeys: cp.publicKeys() })) lines.push(l);
  const from = async function* (ls: string[]) {
    yield* ls;
  };
  const ok = await verifyExport(await parseExport(from(lines)));
  assert.deepEqual([ok.ok, ok.complete, ok.events, ok.checkpoints_checked], [true, true, 12, 1]);

  const tampered = lines.map((l) =>
    l.includes('"seq":"5"') && l.includes('"type":"event"') ? l.replace('t4', 't8') : l,
  );
  const bad = await verifyExport(await parseExport(from(tampered)));
  assert.deepEqual([bad.ok, bad.failure?.reason, bad.failure?.seq], [false, 'hash_mismatch', 5]);

  // Tail cut off (events and end line gone): the checkpoint in the file names it.
  const cut = lines.filter((l) => !/"seq":"1[12]"/.test(l) || !l.includes('"type":"event"')).slice(0, -1);
  const short = await verifyExport(await parseExport(from(cut)));
  assert.deepEqual([short.ok, short.failure?.reason, short.failure?.seq], [false, 'tail_truncated', 11]);

  // An account export: each event's link checks out, completeness is not claimed.
  const acc = await parseExport(exportLines(db.pool, { accountId: ACCOUNT, publicKeys: cp.publicKeys() }));
  const accR = await verifyExport(acc);
  assert.deepEqual([accR.ok, accR.complete, accR.events], [true, false, 12]);
});

test('verification while writers and the chainer run never reports a false break', async () => {
  const chainer = createAuditChainer({
    databaseUrl: db.url,
    db: db.pool,
    log,
    audit,
    checkpointer: cp,
    checkpointIntervalMs: 3_600_000,
    retentionDays: 365,
  });
  try {
    let writing = true;
    const writers = Array.from({ length: 4 }, async (_, w) => {
      for (let i = 0; writing && i < 500; i++)
        await audit.recordNow({ action: 'test.live', details: { w, i } });
    });
    const reports = [];
    for (let i = 0; i < 8; i++) {
      reports.push(await verify());
      if (i % 3 === 0) await cp.checkpoint();
    }
    writing = false;
    await Promise.all(writers);
    for (const r of reports) assert.equal(r.ok, true, JSON.stringify(r.failure));
    // However far the chainer had got during the run, once flushed everything is chained.
    await chainer.flush();
    const last = await verify();
    assert.equal(last.ok, true);
    assert.ok(last.head_seq > 0);
  } finally {
    await chainer.close();
  }
});

test('standalone events are group-committed: 300 concurrent callers, each resumes once durable, one valid chain', async () => {
  await Promise.all(
    Array.from({ length: 300 }, (_, i) =>
      audit.recordNow({
        action: 'explorer.query',
        actorType: 'key',
        actorId: `k${i}`,
        accountId: ACCOUNT,
      }),
    ),
  );
  // Each caller resumed only after its row committed: all 300 are visible now.
  const rows = await db.pool.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM audit_events WHERE action = 'explorer.query'",
  );
  assert.equal(rows.rows[0]!.n, 300);
  // Far fewer transactions than events. Counted exactly: rows one transaction wrote share its xmin
  // (pg_stat_database's xact_commit is flushed lazily, so a count read from it could lag to zero).
  const writers = (actor: string) =>
    db.pool
      .query<{ n: number }>(
        "SELECT count(DISTINCT xmin::text)::int AS n FROM audit_events WHERE action = 'explorer.query' AND actor_id LIKE $1",
        [actor],
      )
      .then((r) => r.rows[0]!.n);
  const shared = await writers('k%');
  assert.ok(shared >= 1 && shared < 150, `300 events took ${shared} transactions`);
  // The control: events recorded one after another take one transaction each, and the count sees it.
  for (const i of [0, 1, 2])
    await audit.recordNow({
      action: 'explorer.query',
      actorType: 'key',
      actorId: `c${i}`,
      accountId: ACCOUNT,
    });
  assert.equal(await writers('c%'), 3);
  await chainAll(client);
  const v = await verify();
  assert.equal(v.ok, true);
  // An invalid event is refused before it joins a batch; the others are unaffected.
  await assert.rejects(audit.recordNow({ action: 'Not An Action' }), TypeError);
});
