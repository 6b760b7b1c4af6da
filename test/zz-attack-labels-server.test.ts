/**
 * Attacks on labels unique per account only (migration 0038), server side with fake agents: two
 * accounts' databases sharing a label on one node must never be confused (every job names the
 * right physical database and id), concurrent creates of one label in several accounts all succeed
 * under distinct names on the node, and no answer tells an account that another uses a label there.
 */
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { enrollFakeAgent, type FakeAgent } from './helpers/databases.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';

let s: TestServer;
let n1: FakeAgent;
let a: TestKey;
let b: TestKey;

before(async () => {
  s = await createTestServer({ nodeAssumedMaxConnections: 100_000 });
  n1 = await enrollFakeAgent(s, 'lbl-n1');
  await enrollFakeAgent(s, 'lbl-n2');
  a = await createTestKey(s, { account: 'lbl-a' });
  b = await createTestKey(s, { account: 'lbl-b' });
});
after(async () => {
  s?.app.server.closeAllConnections();
  await s?.stop();
});

const api = (k: TestKey, method: string, url: string, payload?: object) =>
  s.app.inject({ method: method as 'GET', url, headers: k.headers, ...(payload ? { payload } : {}) });

type Job = { id: number; kind: string; payload: Record<string, unknown>; attempt: number };

/** Polls the node until a job of this kind shows (others are completed well-formed); bounded. */
async function nextJob(kind: string): Promise<Job> {
  for (let i = 0; i < 60; i++) {
    const job = await n1.poll();
    if (!job) continue;
    if (job.kind === kind) return job;
    assert.equal(await n1.complete(job.id, job.attempt, {}), 200, `completing ${job.kind}`);
  }
  throw new Error(`no ${kind} job`);
}

/** Completes every queued job of the node (bounded). */
async function drain(): Promise<void> {
  for (let i = 0; i < 60; i++) {
    const job = await n1.poll();
    if (!job) return;
    assert.equal(await n1.complete(job.id, job.attempt, {}), 200, `completing ${job.kind}`);
  }
}

const row = async (accountId: string, label: string) =>
  (
    await s.db.pool.query<{ id: string; physical: string; status: string; node_id: string }>(
      `SELECT id, coalesce(pg_name, name) AS physical, status, node_id FROM databases
        WHERE account_id = $1 AND name = $2 AND deleted_at IS NULL`,
      [accountId, label],
    )
  ).rows[0];

async function createReady(k: TestKey, label: string, node = 'lbl-n1') {
  const r = await api(k, 'POST', '/v1/databases', { name: label, node });
  assert.equal(r.statusCode, 202, r.body);
  await drain();
  const got = await row(k.accountId, label);
  assert.equal(got?.status, 'ready');
  return got!;
}

test('two accounts, one label, one node: every job of each database names its own physical name and id', async () => {
  const label = `shared_${randomBytes(3).toString('hex')}`;
  const mine = await createReady(a, label);
  const theirs = await createReady(b, label);
  // Each under its own generated name on the node (ADR 0039), neither under the label.
  assert.match(mine.physical, /^bulwark_db_p_[0-9a-f]{16}$/);
  assert.match(theirs.physical, /^bulwark_db_p_[0-9a-f]{16}$/);
  assert.notEqual(mine.physical, theirs.physical);
  assert.equal(mine.node_id, theirs.node_id);

  // Connection info and passwords are each account's own.
  const ca = (await api(a, 'GET', `/v1/databases/${label}/connection`)).json();
  const cb = (await api(b, 'GET', `/v1/databases/${label}/connection`)).json();
  assert.equal(ca.database, mine.physical);
  assert.equal(ca.user, `${mine.physical}_owner`);
  assert.equal(cb.database, theirs.physical);
  assert.equal(cb.user, `${theirs.physical}_owner`);
  const pa = (await api(a, 'POST', `/v1/databases/${label}/credentials/reveal`)).json().password;
  const pb = (await api(b, 'POST', `/v1/databases/${label}/credentials/reveal`)).json().password;
  assert.ok(pa && pb && pa !== pb);

  const expectJob = async (kind: string, who: { id: string; physical: string }) => {
    const job = await nextJob(kind);
    assert.equal(job.payload.database_id, who.id, `${kind}: the database's own id`);
    assert.equal(job.payload.name, who.physical, `${kind}: its own name on the node`);
    assert.equal(await n1.complete(job.id, job.attempt, {}), 200);
  };
  // B's operations act on B's physical database only; A's on A's.
  assert.equal((await api(b, 'POST', `/v1/databases/${label}/credentials/rotate`)).statusCode, 202);
  await expectJob('database.rotate', theirs);
  assert.equal(
    (
      await api(b, 'PUT', `/v1/databases/${label}/allowlist`, {
        entries: [{ cidr: '198.51.100.7/32' }],
      })
    ).statusCode,
    200,
  );
  await expectJob('database.allowlist', theirs);
  const limits = {
    owner_connection_limit: 5,
    reader_connection_limit: 2,
    statement_timeout_ms: 1000,
    idle_in_transaction_timeout_ms: 1000,
  };
  const lim = await api(b, 'PUT', `/v1/databases/${label}/limits`, limits);
  assert.ok([200, 202].includes(lim.statusCode), lim.body);
  await expectJob('database.limits', theirs);
  assert.equal((await api(a, 'POST', `/v1/databases/${label}/credentials/rotate`)).statusCode, 202);
  await expectJob('database.rotate', mine);
  // A's allowlist is untouched by B's change.
  const al = (await api(a, 'GET', `/v1/databases/${label}/allowlist`)).json();
  assert.ok(!al.entries.some((e: { cidr: string }) => e.cidr === '198.51.100.7/32'));

  // A backup of B's database names B's database.
  const bk = await api(b, 'POST', `/v1/databases/${label}/backups`);
  assert.equal(bk.statusCode, 202, bk.body);
  const bjob = await nextJob('backup.create');
  assert.equal(bjob.payload.database_id, theirs.id);
  assert.equal(bjob.payload.name, theirs.physical);
  assert.equal(await n1.fail(bjob.id, bjob.attempt, 'not in this test', false), 200);

  // B deletes: the job drops B's physical database, never A's.
  assert.equal((await api(b, 'DELETE', `/v1/databases/${label}`, { confirm: label })).statusCode, 202);
  await expectJob('database.delete', theirs);
  assert.equal((await row(a.accountId, label))?.status, 'ready', "A's database is untouched");
  assert.equal((await api(b, 'GET', `/v1/databases/${label}`)).statusCode, 404);
  assert.equal((await api(a, 'GET', `/v1/databases/${label}`)).statusCode, 200);
  // A deletes its own: its own name on the node.
  assert.equal((await api(a, 'DELETE', `/v1/databases/${label}`, { confirm: label })).statusCode, 202);
  await expectJob('database.delete', mine);
});

test('concurrent creates of one label in several accounts on one node: all succeed, distinct names on the node', async () => {
  const label = `race_${randomBytes(3).toString('hex')}`;
  const keys = await Promise.all(
    Array.from({ length: 6 }, (_, i) => createTestKey(s, { account: `lbl-race-${i}` })),
  );
  const answers = await Promise.all(
    keys.map((k) => api(k, 'POST', '/v1/databases', { name: label, node: 'lbl-n1' })),
  );
  for (const r of answers) assert.equal(r.statusCode, 202, r.body);
  const rows = await Promise.all(keys.map((k) => row(k.accountId, label)));
  const physical = rows.map((r) => r!.physical);
  assert.equal(new Set(physical).size, keys.length, 'distinct names on the node');
  for (const p of physical) assert.match(p, /^bulwark_db_p_[0-9a-f]{16}$/, 'none keeps the label');
  const jobs = await s.db.pool.query<{ name: string }>(
    `SELECT payload->>'name' AS name FROM jobs WHERE kind = 'database.create'
        AND payload->>'database_id' = ANY($1::text[])`,
    [rows.map((r) => r!.id)],
  );
  assert.deepEqual(jobs.rows.map((j) => j.name).sort(), [...physical].sort());
  // Twice in one account at once: one database, the other a 409 — and nothing half made.
  const twice = await Promise.all(
    [0, 1].map(() => api(keys[0]!, 'POST', '/v1/databases', { name: `${label}_t`, node: 'lbl-n1' })),
  );
  assert.deepEqual(twice.map((r) => r.statusCode).sort(), [202, 409]);
  const n = await s.db.pool.query<{ n: number }>(
    'SELECT count(*)::int AS n FROM databases WHERE account_id = $1 AND name = $2',
    [keys[0]!.accountId, `${label}_t`],
  );
  assert.equal(n.rows[0]!.n, 1);
  await drain();
});

test('reserved prefixes (generated names, spares) are refused as labels: 400, nothing made', async () => {
  for (const name of [
    `bulwark_db_p_${randomBytes(8).toString('hex')}`,
    'bulwark_db_abcdef_0123456789',
    'pg_x',
  ]) {
    const r = await api(b, 'POST', '/v1/databases', { name, node: 'lbl-n1' });
    assert.equal(r.statusCode, 400, `${name}: ${r.body}`);
  }
});

test('a restore into a new database whose name another account uses on the node is not refused (no 409 that tells of it)', async () => {
  const src = `src_${randomBytes(3).toString('hex')}`;
  const taken = `taken_${randomBytes(3).toString('hex')}`;
  await createReady(a, taken);
  const source = await createReady(b, src);
  const backupId = randomUUID();
  await s.db.pool.query(
    `INSERT INTO backups (id, account_id, database_id, node_id, database_name, status, trigger, size_bytes, sha256,
                          wrapped_key, storage_key, manifest, completed_at, expires_at)
     VALUES ($1::uuid, $2, $3::uuid, $4, $5, 'completed', 'manual', 1, repeat('a', 64), 'sealed',
             $3::text || '/' || $1::text || '.bulwark-backup',
             '{"tables":[],"tables_total":0,"objects":{}}', now(), now() + interval '30 days')`,
    [backupId, b.accountId, source.id, source.node_id, src],
  );
  const r = await api(b, 'POST', `/v1/databases/${src}/restore`, { backup_id: backupId, new_name: taken });
  // The same answer as for a name free on the node: each account its own label (migration 0038).
  assert.equal(r.statusCode, 202, r.body);
  const target = await row(b.accountId, taken);
  assert.ok(target, 'the new database is listed');
  assert.notEqual(target.physical, taken, 'under a generated name on the node');
  const job = await nextJob('backup.restore');
  assert.equal(job.payload.database_id, target.id);
  assert.equal(job.payload.name, target.physical, 'the agent makes it under its own name there');
  assert.equal((job.payload.create as { name: string }).name, target.physical);
  assert.equal(await n1.fail(job.id, job.attempt, 'not in this test', false), 200);
  assert.equal((await row(a.accountId, taken))?.status, 'ready', "A's database untouched");
});

// Closed by a generated name for every new database (ADR 0039): a used label and a free one look
// alike in the connection info.
test('the connection info of a create does not tell whether another account uses the label on the node', async () => {
  const used = `probe_${randomBytes(3).toString('hex')}`;
  const free = `probe_${randomBytes(3).toString('hex')}`;
  await createReady(a, used);
  await createReady(b, used);
  await createReady(b, free);
  const cUsed = (await api(b, 'GET', `/v1/databases/${used}/connection`)).json();
  const cFree = (await api(b, 'GET', `/v1/databases/${free}/connection`)).json();
  // A label kept as the name on the node for a free label but not for a used one is an oracle:
  // create, read the connection, delete — and the account knows another uses that label there.
  assert.equal(
    cUsed.database === used,
    cFree.database === free,
    `connection names differ in kind: ${cUsed.database} vs ${cFree.database}`,
  );
  for (const c of [cUsed, cFree]) assert.match(c.database, /^bulwark_db_p_[0-9a-f]{16}$/);
});

test('the database.ready event (create_done audit) of a database under a generated name carries its label', async () => {
  const label = `evt_${randomBytes(3).toString('hex')}`;
  await createReady(a, label);
  const theirs = await createReady(b, label);
  const ev = await s.db.pool.query<{ name: string | null }>(
    `SELECT details->>'name' AS name FROM audit_events
      WHERE action = 'database.create_done' AND target_id = $1`,
    [theirs.id],
  );
  assert.equal(ev.rows.length, 1);
  assert.equal(ev.rows[0]!.name, label, 'the account sees its label, not the generated name on the node');
});

// Closed by a generated name for every new database (ADR 0039): no new database is named by its
// label on the node, so no move needs a label free on its target.
test("a move's answer does not tell whether another account uses the database's name on the target node", async () => {
  const taken = `mv_${randomBytes(3).toString('hex')}`;
  const free = `mv_${randomBytes(3).toString('hex')}`;
  // A's two databases on n1 under generated names; B's database of A's first label on n2.
  await createReady(a, taken);
  await createReady(a, free);
  const r = await api(b, 'POST', '/v1/databases', { name: taken, node: 'lbl-n2' });
  assert.equal(r.statusCode, 202, r.body);
  const moveFree = await api(a, 'POST', `/v1/databases/${free}/move`, { node: 'lbl-n2' });
  const moveTaken = await api(a, 'POST', `/v1/databases/${taken}/move`, { node: 'lbl-n2' });
  // The same node, the same account, the same kind of database: one answer whoever else is there.
  assert.equal(
    moveTaken.statusCode,
    moveFree.statusCode,
    `free: ${moveFree.statusCode} ${moveFree.body} / taken: ${moveTaken.statusCode} ${moveTaken.body}`,
  );
});
