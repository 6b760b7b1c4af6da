/**
 * The control plane of backups on a fully wired server and its real control database, with the
 * agent API driven by hand (a fake agent: the test decides when a job succeeds or fails): on-demand
 * backups and their jobs, results recorded, another account's backup a 404, download links bound
 * to their backup, caller and expiry, retention pruning exactly the expired ones, the schedule and
 * the freshness alert, the data key handed only to the lease holder.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, test } from 'node:test';
import { createZstdCompress } from 'node:zlib';
import { signLink, verifyLink } from '../src/server/modules/backups/backups.download.ts';
import {
  checkFreshness,
  runDrills,
  runScheduledBackups,
  sweepExpiredBackups,
} from '../src/server/modules/backups/backups.scheduler.ts';
import { createArchiveEncryptor } from '../src/shared/backup-archive.ts';
import { backupStorageKey } from '../src/shared/contracts/backups.ts';
import { createAccount, enrollFakeAgent, type FakeAgent } from './helpers/databases.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { createTestUser, signIn } from './helpers/session-users.ts';

let s: TestServer;
let agent: FakeAgent;
let acme: TestKey;
let reader: TestKey;
let writer2: TestKey;
let other: TestKey;
let backupDir: string;
const DB = 'shop';
/** acme's shop on its node: a generated name, never the label (ADR 0039). */
let dbPhysical: string;
const METRICS_TOKEN = 'm'.repeat(40);

const defaults = {
  enabled: true,
  schedule_minute: 120,
  retention_days: 30,
  rpo_hours: 26,
  drill_interval_days: 7,
};
const schedulerDeps = () => ({ db: s.db.pool, box: null, log: s.app.log as never, audit: s.audit, defaults });

/** Polls until the fake agent gets a job of this kind (others are completed as they come). */
async function nextJob(kind: string) {
  for (let i = 0; i < 50; i++) {
    const job = await agent.poll();
    if (!job) continue;
    if (job.kind === kind) return job;
    // Others are done as a well-behaved agent would (a backup with a result of its own).
    const result =
      job.kind === 'backup.create'
        ? createResult(String(job.payload.backup_id), randomBytes(32).toString('hex'))
        : {};
    assert.equal(await agent.complete(job.id, job.attempt, result), 200);
  }
  throw new Error(`no ${kind} job`);
}

function createResult(backupId: string, sha256: string, size = 1234) {
  return {
    backup_id: backupId,
    sha256,
    tables: [{ schema: 'public', name: 't', rows: 3, rows_estimate: 3 }],
    tables_total: 1,
    objects: {
      schemas: 1,
      tables: 1,
      views: 0,
      materialized_views: 0,
      sequences: 0,
      indexes: 0,
      functions: 0,
      large_objects: 0,
    },
    size_bytes: size,
    dump_bytes: size,
    duration_ms: 12,
    pg_version: '15.0',
    server_version_num: 150000,
    format_version: 1,
    verified: true,
  };
}

/** A database's name on its node (what the agent's jobs name it by). */
async function physicalName(accountId: string, label: string): Promise<string> {
  const r = await s.db.pool.query<{ name: string }>(
    'SELECT coalesce(pg_name, name) AS name FROM databases WHERE account_id = $1 AND name = $2',
    [accountId, label],
  );
  return r.rows[0]!.name;
}

const api = (key: TestKey, method: string, url: string, payload?: object) =>
  s.app.inject({
    method: method as 'GET',
    url,
    headers: key.headers,
    ...(payload ? { payload } : {}),
  });

before(async () => {
  backupDir = fs.mkdtempSync(path.join(os.tmpdir(), 'bulwark-backups-'));
  s = await createTestServer({ metricsToken: METRICS_TOKEN, backupDownloadWaitMs: 5_000 });
  await createAccount(s, 'acme');
  await createAccount(s, 'other');
  agent = await enrollFakeAgent(s, 'backup-node');
  acme = await createTestKey(s, { account: 'acme' });
  reader = await createTestKey(s, { account: 'acme', level: 'read' });
  writer2 = await createTestKey(s, { account: 'acme', level: 'write' });
  other = await createTestKey(s, { account: 'other' });
  // Both accounts have a database named shop (on two nodes: names are per cluster).
  const second = await enrollFakeAgent(s, 'backup-node-b');
  for (const [key, node, a] of [
    [acme, 'backup-node', agent],
    [other, 'backup-node-b', second],
  ] as const) {
    const r = await api(key, 'POST', '/v1/databases', { name: DB, node });
    assert.equal(r.statusCode, 202, r.body);
    const job = await a.poll();
    assert.equal(job?.kind, 'database.create');
    assert.equal(await a.complete(job!.id, job!.attempt, {}), 200);
  }
  dbPhysical = await physicalName(acme.accountId, DB);
  assert.match(dbPhysical, /^bulwark_db_/);
});
after(async () => {
  s?.app.server.closeAllConnections();
  await s?.stop();
  fs.rmSync(backupDir, { recursive: true, force: true });
});

test('an on-demand backup is queued as a job, and its result shows in GET (size, sha256, times)', async () => {
  const created = await api(acme, 'POST', `/v1/databases/${DB}/backups`);
  assert.equal(created.statusCode, 202, created.body);
  const b = created.json();
  assert.equal(b.status, 'pending');
  assert.equal(b.trigger, 'manual');
  assert.equal(b.sha256, null);

  const job = await nextJob('backup.create');
  assert.deepEqual(Object.keys(job.payload).sort(), ['backup_id', 'database_id', 'name']);
  assert.equal(job.payload.backup_id, b.id);
  // The agent gets the database's name on its node, never its label.
  assert.equal(job.payload.name, dbPhysical);
  const running = (await api(reader, 'GET', `/v1/databases/${DB}/backups/${b.id}`)).json();
  assert.equal(running.status, 'running');
  assert.ok(running.started_at);

  // Not completed yet: no download, no delete.
  assert.equal(
    (await api(acme, 'POST', `/v1/databases/${DB}/backups/${b.id}/download-link`)).statusCode,
    409,
  );
  assert.equal((await api(acme, 'DELETE', `/v1/databases/${DB}/backups/${b.id}`)).statusCode, 409);

  const sha = 'ab'.repeat(32);
  assert.equal(await agent.complete(job.id, job.attempt, createResult(b.id, sha, 4321)), 200);
  const done = (await api(reader, 'GET', `/v1/databases/${DB}/backups/${b.id}`)).json();
  assert.equal(done.status, 'completed');
  assert.equal(done.size_bytes, 4321);
  assert.equal(done.sha256, sha);
  assert.equal(done.pg_version, '15.0');
  assert.equal(done.tables_total, 1);
  assert.ok(Date.parse(done.completed_at) >= Date.parse(done.started_at));
  assert.ok(Date.parse(done.expires_at) > Date.now() + 29 * 86_400_000);

  const list = (await api(reader, 'GET', `/v1/databases/${DB}/backups?status=completed`)).json();
  assert.ok(list.items.some((i: { id: string }) => i.id === b.id));
  // The database's detail shows its last good backup.
  const detail = (await api(reader, 'GET', `/v1/databases/${DB}`)).json();
  assert.equal(detail.backup.last_good_at, done.completed_at);
  assert.equal(detail.backup.stale, false);
  assert.ok(detail.backup.age_seconds >= 0 && detail.backup.age_seconds < 60);

  // And in the metrics: its age, labelled by the database id.
  const metrics = await s.app.inject({
    url: '/metrics',
    headers: { authorization: `Bearer ${METRICS_TOKEN}` },
  });
  assert.equal(metrics.statusCode, 200);
  const age = new RegExp(
    `^bulwark_backup_last_good_age_seconds\\{database_id="${job.payload.database_id}"\\} ([0-9.e+-]+)$`,
    'm',
  ).exec(metrics.body);
  assert.ok(age && Number(age[1]) >= 0 && Number(age[1]) < 60, metrics.body.slice(0, 2000));
  assert.match(metrics.body, /^bulwark_backups\{status="completed"\} 1$/m);

  const events = await s.db.pool.query<{ action: string }>(
    `SELECT action FROM audit_events WHERE target_id = $1 ORDER BY id`,
    [b.id],
  );
  assert.deepEqual(
    events.rows.map((e) => e.action),
    ['backup.created', 'backup.completed'],
  );
});

test('DELETE hides a finished backup at once; its row goes when the agent has removed the file', async () => {
  const b = (await api(acme, 'POST', `/v1/databases/${DB}/backups`)).json();
  const job = await nextJob('backup.create');
  assert.equal(await agent.complete(job.id, job.attempt, createResult(b.id, '12'.repeat(32))), 200);
  // A reader may not; a restore reading it holds it.
  assert.equal((await api(reader, 'DELETE', `/v1/databases/${DB}/backups/${b.id}`)).statusCode, 403);
  const restoreId = randomUUID();
  await s.db.pool.query(
    `INSERT INTO restores (id, account_id, backup_id, source_database_id, target, status)
     SELECT $1, account_id, id, database_id, 'drill', 'running' FROM backups WHERE id = $2`,
    [restoreId, b.id],
  );
  assert.equal((await api(acme, 'DELETE', `/v1/databases/${DB}/backups/${b.id}`)).statusCode, 409);
  await s.db.pool.query(`UPDATE restores SET status = 'completed' WHERE id = $1`, [restoreId]);
  const del = await api(acme, 'DELETE', `/v1/databases/${DB}/backups/${b.id}`);
  assert.equal(del.statusCode, 202, del.body);
  assert.deepEqual(del.json(), { id: b.id, deleted: true });
  assert.equal((await api(acme, 'GET', `/v1/databases/${DB}/backups/${b.id}`)).statusCode, 404);
  assert.equal((await api(acme, 'DELETE', `/v1/databases/${DB}/backups/${b.id}`)).statusCode, 404);
  const delJob = await nextJob('backup.delete');
  assert.deepEqual(delJob.payload, { backup_id: b.id, database_id: job.payload.database_id });
  assert.equal((await s.db.pool.query('SELECT 1 FROM backups WHERE id = $1', [b.id])).rowCount, 1);
  assert.equal(await agent.complete(delJob.id, delJob.attempt, { deleted: true }), 200);
  assert.equal((await s.db.pool.query('SELECT 1 FROM backups WHERE id = $1', [b.id])).rowCount, 0);
  const audited = await s.db.pool.query(
    `SELECT actor_type FROM audit_events WHERE action = 'backup.deleted' AND target_id = $1`,
    [b.id],
  );
  assert.deepEqual(audited.rows, [{ actor_type: 'key' }]);
});

test('a failed backup job is retried, and marked failed with the reason only when the queue gives up', async () => {
  const b = (await api(acme, 'POST', `/v1/databases/${DB}/backups`)).json();
  let job = await nextJob('backup.create');
  assert.equal(await agent.fail(job.id, job.attempt, 'pg_dump: error: connection refused', true), 200);
  const retrying = (await api(acme, 'GET', `/v1/databases/${DB}/backups/${b.id}`)).json();
  assert.equal(retrying.status, 'pending');
  // The last attempt: no retry left.
  await s.db.pool.query('UPDATE jobs SET run_after = now(), max_attempts = attempts + 1 WHERE id = $1', [
    job.id,
  ]);
  job = await nextJob('backup.create');
  assert.equal(await agent.fail(job.id, job.attempt, 'write: ENOSPC: no space left on device', true), 200);
  const failed = (await api(acme, 'GET', `/v1/databases/${DB}/backups/${b.id}`)).json();
  assert.equal(failed.status, 'failed');
  assert.match(failed.failure_reason, /ENOSPC/);
  assert.equal(failed.sha256, null);
});

test("another account's backup is a 404 to every backup route", async () => {
  const b = (await api(acme, 'POST', `/v1/databases/${DB}/backups`)).json();
  const job = await nextJob('backup.create');
  assert.equal(await agent.complete(job.id, job.attempt, createResult(b.id, 'cd'.repeat(32))), 200);
  // `other` has a database of the same name: the backup id alone never reaches across.
  for (const [method, url, body] of [
    ['GET', `/v1/databases/${DB}/backups/${b.id}`],
    ['DELETE', `/v1/databases/${DB}/backups/${b.id}`],
    ['POST', `/v1/databases/${DB}/backups/${b.id}/download-link`],
    ['GET', `/v1/databases/${DB}/backups/${b.id}/download?expires=1&sig=x`],
    ['POST', `/v1/databases/${DB}/restore`, { backup_id: b.id, target: 'in_place' }],
    ['POST', `/v1/databases/${DB}/restore`, { backup_id: b.id, new_name: 'stolen' }],
  ] as const) {
    const r = await api(other, method, url, body);
    assert.equal(r.statusCode, 404, `${method} ${url}: ${r.body}`);
  }
  const list = (await api(other, 'GET', `/v1/databases/${DB}/backups`)).json();
  assert.ok(!list.items.some((i: { id: string }) => i.id === b.id));
  // A key scoped to another database of the same account does not see it either.
  const scoped = await createTestKey(s, { account: 'acme', databases: ['elsewhere'] });
  assert.equal((await api(scoped, 'GET', `/v1/databases/${DB}/backups/${b.id}`)).statusCode, 404);
});

/** A completed backup whose archive really exists in the backup dir (the agent's format). */
async function archivedBackup(plain: Buffer): Promise<{ id: string; sha256: string }> {
  const b = (await api(acme, 'POST', `/v1/databases/${DB}/backups`)).json();
  const job = await nextJob('backup.create');
  const keyRes = await s.app.inject({
    method: 'POST',
    url: `/v1/agent/jobs/${job.id}/backup-key`,
    headers: { authorization: `Bearer ${agent.token}` },
    payload: { attempt: job.attempt },
  });
  assert.equal(keyRes.statusCode, 200, keyRes.body);
  assert.equal(keyRes.headers['cache-control'], 'no-store');
  const key = Buffer.from(keyRes.json().data_key, 'base64url');
  const file = path.join(backupDir, backupStorageKey(String(job.payload.database_id), b.id));
  fs.mkdirSync(path.dirname(file), { recursive: true });
  await pipeline(
    Readable.from([plain]),
    createZstdCompress(),
    createArchiveEncryptor(
      key,
      { backupId: b.id, databaseId: String(job.payload.database_id) },
      { chunkSize: 4096 },
    ),
    fs.createWriteStream(file),
  );
  const sha256 = createHash('sha256').update(plain).digest('hex');
  assert.equal(
    await agent.complete(job.id, job.attempt, createResult(b.id, sha256, fs.statSync(file).size)),
    200,
  );
  return { id: b.id, sha256 };
}

/** The archive file the fake agent holds for a backup (the server never reads it: ADR 0023). */
async function archiveFile(backupId: string): Promise<string> {
  const dbId = (
    await s.db.pool.query<{ database_id: string }>('SELECT database_id FROM backups WHERE id = $1', [
      backupId,
    ])
  ).rows[0]!.database_id;
  return path.join(backupDir, backupStorageKey(dbId, backupId));
}

/** The fake agent's half of a download: takes the `backup.download` job and posts `bytes` with its token. */
async function agentSends(bytes: Buffer, opts: { token?: (t: string) => string } = {}) {
  const job = await nextJob('backup.download');
  assert.deepEqual(Object.keys(job.payload).sort(), ['backup_id', 'database_id', 'stream_token']);
  const token = String(job.payload.stream_token);
  const res = await s.app.inject({
    method: 'POST',
    url: `/v1/agent/jobs/${job.id}/archive?attempt=${job.attempt}`,
    headers: {
      authorization: `Bearer ${agent.token}`,
      'content-type': 'application/octet-stream',
      'x-bulwark-stream-token': opts.token ? opts.token(token) : token,
    },
    payload: bytes,
  });
  return { job, token, res };
}

const jobRow = async (id: number) =>
  (
    await s.db.pool.query<{ status: string; payload: Record<string, unknown> }>(
      'SELECT status, payload FROM jobs WHERE id = $1',
      [id],
    )
  ).rows[0]!;

test('a download link streams the plain archive (sent by the agent, decrypted here), for its backup and its caller only, and expires', async () => {
  const plain = randomBytes(100_000);
  const b = await archivedBackup(plain);
  const link = await api(acme, 'POST', `/v1/databases/${DB}/backups/${b.id}/download-link`);
  assert.equal(link.statusCode, 200, link.body);
  const { url, expires_at } = link.json();
  const ttl = Date.parse(expires_at) - Date.now();
  assert.ok(ttl > 590_000 && ttl <= 600_000, `ttl ${ttl}`);
  assert.match(url, new RegExp(`^/v1/databases/${DB}/backups/${b.id}/download\\?expires=\\d+&sig=v1\\.`));

  const pending = api(acme, 'GET', url);
  const sent = await agentSends(fs.readFileSync(await archiveFile(b.id)));
  const got = await pending;
  assert.equal(got.statusCode, 200, got.body.slice(0, 200));
  assert.equal(got.headers['content-type'], 'application/octet-stream');
  assert.equal(got.headers['x-backup-sha256'], b.sha256);
  assert.ok(got.rawPayload.equals(plain), 'the plain archive, byte for byte');
  assert.equal(sent.res.statusCode, 200, sent.res.body);
  assert.equal(sent.res.json().bytes, fs.statSync(await archiveFile(b.id)).size);
  // The job is done, and its token is gone from the row; the token opens nothing any more.
  const row = await jobRow(sent.job.id);
  assert.equal(row.status, 'succeeded');
  assert.equal(row.payload.stream_token, undefined);
  const replay = await s.app.inject({
    method: 'POST',
    url: `/v1/agent/jobs/${sent.job.id}/archive?attempt=${sent.job.attempt}`,
    headers: {
      authorization: `Bearer ${agent.token}`,
      'content-type': 'application/octet-stream',
      'x-bulwark-stream-token': sent.token,
    },
    payload: Buffer.from('x'),
  });
  assert.equal(replay.statusCode, 404);

  // Another caller of the same account (even a writer), a tampered signature, another backup's id,
  // a later expiry: all 403, before any job is queued.
  const jobsBefore = (
    await s.db.pool.query(`SELECT count(*)::int AS n FROM jobs WHERE kind = 'backup.download'`)
  ).rows[0].n;
  assert.equal((await api(writer2, 'GET', url)).statusCode, 403);
  const u = new URL(url, 'http://x');
  const sig = u.searchParams.get('sig')!;
  const flipped = sig.slice(0, -2) + (sig.at(-2) === 'A' ? 'B' : 'A') + sig.at(-1);
  u.searchParams.set('sig', flipped);
  assert.equal((await api(acme, 'GET', u.pathname + u.search)).statusCode, 403);
  const later = new URL(url, 'http://x');
  later.searchParams.set('expires', String(Number(later.searchParams.get('expires')) + 60));
  assert.equal((await api(acme, 'GET', later.pathname + later.search)).statusCode, 403);
  const second = await archivedBackup(randomBytes(10));
  const moved = url.replace(b.id, second.id);
  assert.equal((await api(acme, 'GET', moved)).statusCode, 403);
  assert.equal((await api(acme, 'GET', `/v1/databases/${DB}/backups/${b.id}/download`)).statusCode, 403);
  // Another account's key with the link: its backup is a 404.
  assert.equal((await api(other, 'GET', url)).statusCode, 404);
  assert.equal(
    (await s.db.pool.query(`SELECT count(*)::int AS n FROM jobs WHERE kind = 'backup.download'`)).rows[0].n,
    jobsBefore,
    'a refused link queues nothing',
  );
  // A read key may not download at all.
  assert.equal(
    (await api(reader, 'POST', `/v1/databases/${DB}/backups/${b.id}/download-link`)).statusCode,
    403,
  );

  // Expiry, by the verifier's clock: valid until its second, refused after; never more than 10 minutes ahead.
  const key = Buffer.alloc(32, 7);
  const claims = { backupId: b.id, accountId: acme.accountId, caller: 'key:x', expires: 1_000_600 };
  const good = signLink(key, claims);
  assert.equal(verifyLink(key, claims, good, 1_000_000), true);
  assert.equal(verifyLink(key, claims, good, 1_000_600), true);
  assert.equal(verifyLink(key, claims, good, 1_000_601), false);
  assert.equal(
    verifyLink(
      key,
      { ...claims, expires: 1_000_601 },
      signLink(key, { ...claims, expires: 1_000_601 }),
      1_000_000,
    ),
    false,
  );
  assert.equal(verifyLink(key, { ...claims, caller: 'key:y' }, good, 1_000_000), false);
  assert.equal(verifyLink(key, { ...claims, accountId: randomUUID() }, good, 1_000_000), false);
  assert.equal(verifyLink(key, claims, `${good}.x`, 1_000_000), false);

  const audited = await s.db.pool.query(
    `SELECT 1 FROM audit_events WHERE action = 'backup.download_link' AND target_id = $1`,
    [b.id],
  );
  assert.equal(audited.rowCount, 1);
});

test('the stream token: a wrong one, or another node, opens nothing; the download then ends with 503 in bounded time', async () => {
  const b = await archivedBackup(randomBytes(20_000));
  const { url } = (await api(acme, 'POST', `/v1/databases/${DB}/backups/${b.id}/download-link`)).json();
  const started = Date.now();
  const pending = api(acme, 'GET', url);
  // Another node with the right token: no lease of that job, nothing opened (and nothing used up).
  const stranger = await enrollFakeAgent(s, 'stream-stranger');
  const sneak = async (jobId: number, attempt: number, token: string) =>
    s.app.inject({
      method: 'POST',
      url: `/v1/agent/jobs/${jobId}/archive?attempt=${attempt}`,
      headers: {
        authorization: `Bearer ${stranger.token}`,
        'content-type': 'application/octet-stream',
        'x-bulwark-stream-token': token,
      },
      payload: Buffer.from('not an archive'),
    });
  const wrong = await agentSends(fs.readFileSync(await archiveFile(b.id)), {
    token: (t) => (t[0] === 'A' ? 'B' : 'A') + t.slice(1),
  });
  assert.equal(wrong.res.statusCode, 404, wrong.res.body);
  assert.equal((await sneak(wrong.job.id, wrong.job.attempt, wrong.token)).statusCode, 404);
  const got = await pending;
  assert.equal(got.statusCode, 503, got.body);
  assert.match(got.json().error.message, /did not start sending/);
  assert.ok(Date.now() - started < 15_000, 'bounded by the wait (5 s here)');
  assert.equal((await jobRow(wrong.job.id)).status, 'dead');
  assert.equal((await jobRow(wrong.job.id)).payload.stream_token, undefined);
});

test('an agent that cannot send (the archive is not on its node) ends the download at once with 503', async () => {
  const b = await archivedBackup(randomBytes(1_000));
  const { url } = (await api(acme, 'POST', `/v1/databases/${DB}/backups/${b.id}/download-link`)).json();
  const started = Date.now();
  const pending = api(acme, 'GET', url);
  const job = await nextJob('backup.download');
  assert.equal(
    await agent.fail(job.id, job.attempt, 'the archive of this backup is not on its node', false),
    200,
  );
  const got = await pending;
  assert.equal(got.statusCode, 503, got.body);
  assert.match(got.json().error.message, /not on its node/);
  assert.ok(
    Date.now() - started < 4_000,
    `answered before the 5 s wait ran out (${Date.now() - started} ms)`,
  );
});

test('a damaged archive never downloads whole: a bad first chunk is a 409 before any byte, a later one cuts the transfer', async () => {
  const plain = randomBytes(50_000);
  const b = await archivedBackup(plain);
  const bytes = fs.readFileSync(await archiveFile(b.id));
  const { url } = (await api(acme, 'POST', `/v1/databases/${DB}/backups/${b.id}/download-link`)).json();

  // A flipped byte in the last chunk: the first chunks go out, then the transfer is cut.
  const late = Buffer.from(bytes);
  late.writeUInt8(late.readUInt8(late.length - 40) ^ 1, late.length - 40);
  let complete = false;
  const pending = api(acme, 'GET', url).then(
    (r) => {
      complete = r.statusCode === 200 && r.rawPayload.equals(plain);
    },
    () => {},
  );
  const sent = await agentSends(late);
  await pending;
  assert.equal(complete, false);
  assert.equal(sent.res.statusCode, 409, sent.res.body);
  assert.equal((await jobRow(sent.job.id)).status, 'dead');

  // A flipped byte in the first chunk: nothing was sent yet, so the answer is a clean 409.
  const early = Buffer.from(bytes);
  early.writeUInt8(early.readUInt8(100) ^ 1, 100);
  const pendingEarly = api(acme, 'GET', url);
  const sentEarly = await agentSends(early);
  const got = await pendingEarly;
  assert.equal(got.statusCode, 409, got.body);
  assert.match(got.json().error.message, /authenticity/);
  assert.equal(sentEarly.res.statusCode, 409);
});

test('the agent lost mid-stream (its connection cut): the client download fails, bounded, never completes', async () => {
  const plain = randomBytes(400_000);
  const b = await archivedBackup(plain);
  const bytes = fs.readFileSync(await archiveFile(b.id));
  const base = (await s.app.listen({ host: '127.0.0.1', port: 0 })).replace('localhost', '127.0.0.1');
  const { url } = (await api(acme, 'POST', `/v1/databases/${DB}/backups/${b.id}/download-link`)).json();
  const started = Date.now();
  const download = fetch(base + url, { headers: acme.headers }).then(async (r) => ({
    status: r.status,
    body: Buffer.from(await r.arrayBuffer()),
  }));
  download.catch(() => {});
  const job = await nextJob('backup.download');
  // The agent: half the archive over a real connection, then the connection is gone (as on kill -9).
  const req = http.request(`${base}/v1/agent/jobs/${job.id}/archive?attempt=${job.attempt}`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${agent.token}`,
      'content-type': 'application/octet-stream',
      'x-bulwark-stream-token': String(job.payload.stream_token),
    },
  });
  req.on('error', () => {});
  req.write(bytes.subarray(0, Math.floor(bytes.length / 2)));
  await new Promise((r) => setTimeout(r, 300));
  req.destroy();
  await assert.rejects(download, 'the transfer is cut, not completed');
  assert.ok(Date.now() - started < 15_000, `no hang (${Date.now() - started} ms)`);
  for (let i = 0; i < 50 && (await jobRow(job.id)).status !== 'dead'; i++)
    await new Promise((r) => setTimeout(r, 100));
  assert.equal((await jobRow(job.id)).status, 'dead');
});

test('progress: what the agent reports shows on the running backup, moving, and only while it runs', async () => {
  const b = (await api(acme, 'POST', `/v1/databases/${DB}/backups`)).json();
  const job = await nextJob('backup.create');
  const report = (body: Record<string, unknown>, token = agent.token, id = job.id) =>
    s.app.inject({
      method: 'POST',
      url: `/v1/agent/jobs/${id}/progress`,
      headers: { authorization: `Bearer ${token}` },
      payload: { attempt: job.attempt, ...body },
    });
  const seen = async () => (await api(reader, 'GET', `/v1/databases/${DB}/backups/${b.id}`)).json().progress;
  assert.equal(await seen(), null, 'nothing reported yet');
  assert.equal((await report({ phase: 'dump', done_bytes: 1000, total_bytes: null })).statusCode, 200);
  const first = await seen();
  assert.equal(first.phase, 'dump');
  assert.equal(first.done_bytes, 1000);
  assert.equal(first.total_bytes, null);
  assert.equal((await report({ phase: 'verify', done_bytes: 700, total_bytes: 2000 })).statusCode, 200);
  const second = await seen();
  assert.deepEqual([second.phase, second.done_bytes, second.total_bytes], ['verify', 700, 2000]);
  assert.ok(Date.parse(second.updated_at) >= Date.parse(first.updated_at));
  // Bounded input; only the lease holder; only backup/restore/drill jobs.
  assert.equal((await report({ phase: 'nonsense', done_bytes: 1, total_bytes: null })).statusCode, 400);
  assert.equal((await report({ phase: 'dump', done_bytes: -1, total_bytes: null })).statusCode, 400);
  const stranger = await enrollFakeAgent(s, 'progress-stranger');
  assert.equal(
    (await report({ phase: 'dump', done_bytes: 5, total_bytes: null }, stranger.token)).statusCode,
    404,
  );
  assert.equal(await agent.complete(job.id, job.attempt, createResult(b.id, 'ab'.repeat(32))), 200);
  assert.equal(await seen(), null, 'a finished backup shows no progress');
  assert.equal((await report({ phase: 'dump', done_bytes: 5, total_bytes: null })).statusCode, 404);
});

test('the data key goes only to the agent holding a backup job of that backup', async () => {
  const b = (await api(acme, 'POST', `/v1/databases/${DB}/backups`)).json();
  const job = await nextJob('backup.create');
  const ask = (id: number, attempt: number, token = agent.token) =>
    s.app.inject({
      method: 'POST',
      url: `/v1/agent/jobs/${id}/backup-key`,
      headers: { authorization: `Bearer ${token}` },
      payload: { attempt },
    });
  assert.equal((await ask(job.id, job.attempt)).statusCode, 200);
  assert.equal((await ask(job.id, job.attempt + 1)).statusCode, 404);
  const stranger = await enrollFakeAgent(s, 'stranger-node');
  assert.equal((await ask(job.id, job.attempt, stranger.token)).statusCode, 404);
  assert.equal(await agent.complete(job.id, job.attempt, createResult(b.id, 'ef'.repeat(32))), 200);
  // Finished: no lease, no key.
  assert.equal((await ask(job.id, job.attempt)).statusCode, 404);
  // A database job never gets one.
  await api(acme, 'PUT', `/v1/databases/${DB}/allowlist`, { entries: [] });
  const dbJob = await nextJob('database.allowlist');
  assert.equal((await ask(dbJob.id, dbJob.attempt)).statusCode, 404);
  assert.equal(await agent.complete(dbJob.id, dbJob.attempt, {}), 200);
});

test('retention deletes exactly the expired backups, never the newest good one nor one a restore reads', async () => {
  const dbId = (
    await s.db.pool.query<{ id: string; account_id: string; node_id: string }>(
      `SELECT id, account_id, node_id FROM databases WHERE name = $1 AND account_id = $2`,
      [DB, acme.accountId],
    )
  ).rows[0]!;
  // Older rows, straight in the table: dates decide, not the API.
  const insert = async (o: { status: string; completedDaysAgo: number | null; expiresDaysAgo: number }) => {
    const id = randomUUID();
    await s.db.pool.query(
      `INSERT INTO backups (id, account_id, database_id, node_id, database_name, status, trigger, size_bytes, sha256,
                            wrapped_key, storage_key, manifest, created_at, completed_at, expires_at)
       VALUES ($1::uuid, $2, $3::uuid, $4, $5, $6, 'manual', 1, repeat('a', 64), 'sealed', $3::text || '/' || $1::text || '.bulwark-backup',
               '{"tables":[],"tables_total":0,"objects":{}}', now() - interval '40 days',
               CASE WHEN $7::int IS NULL THEN NULL ELSE now() - make_interval(days => $7::int) END,
               now() - make_interval(days => $8::int))`,
      [id, dbId.account_id, dbId.id, dbId.node_id, DB, o.status, o.completedDaysAgo, o.expiresDaysAgo],
    );
    return id;
  };
  const expiredOld = await insert({ status: 'completed', completedDaysAgo: 35, expiresDaysAgo: 5 });
  const expiredFailed = await insert({ status: 'failed', completedDaysAgo: null, expiresDaysAgo: 2 });
  const readByRestore = await insert({ status: 'completed', completedDaysAgo: 34, expiresDaysAgo: 4 });
  const notYet = await insert({ status: 'completed', completedDaysAgo: 3, expiresDaysAgo: -27 });
  await s.db.pool.query(
    `INSERT INTO restores (id, account_id, backup_id, source_database_id, target, status)
     VALUES ($1, $2, $3, $4, 'drill', 'running')`,
    [randomUUID(), dbId.account_id, readByRestore, dbId.id],
  );
  // Another database whose only good backup expired long ago: kept (its newest good one).
  const otherDb = (
    await s.db.pool.query<{ id: string; account_id: string; node_id: string }>(
      `SELECT id, account_id, node_id FROM databases WHERE account_id = $1`,
      [other.accountId],
    )
  ).rows[0]!;
  const lonely = randomUUID();
  await s.db.pool.query(
    `INSERT INTO backups (id, account_id, database_id, node_id, database_name, status, trigger, size_bytes, sha256,
                          wrapped_key, storage_key, manifest, completed_at, expires_at)
     VALUES ($1::uuid, $2, $3::uuid, $4, $5, 'completed', 'manual', 1, repeat('b', 64), 'sealed', $3::text || '/' || $1::text,
             '{"tables":[],"tables_total":0,"objects":{}}', now() - interval '60 days', now() - interval '30 days')`,
    [lonely, otherDb.account_id, otherDb.id, otherDb.node_id, DB],
  );
  // A deleted database's backups simply expire, its newest good one too.
  const goneDb = randomUUID();
  await s.db.pool.query(
    `INSERT INTO databases (id, account_id, node_id, name, status, deleted_at, limits)
     VALUES ($1, $2, $3, 'gone', 'deleted', now() - interval '10 days', '{}')`,
    [goneDb, dbId.account_id, dbId.node_id],
  );
  const gone = randomUUID();
  await s.db.pool.query(
    `INSERT INTO backups (id, account_id, database_id, node_id, database_name, status, trigger, size_bytes, sha256,
                          wrapped_key, storage_key, manifest, completed_at, expires_at)
     VALUES ($1::uuid, $2, $3::uuid, $4, 'gone', 'completed', 'manual', 1, repeat('c', 64), 'sealed',
             $3::text || '/' || $1::text, '{"tables":[],"tables_total":0,"objects":{}}', now() - interval '40 days',
             now() - interval '10 days')`,
    [gone, dbId.account_id, goneDb, dbId.node_id],
  );

  const queued = await sweepExpiredBackups(schedulerDeps());
  assert.equal(queued, 3);
  const hidden = await s.db.pool.query<{ id: string }>(
    `SELECT id FROM backups WHERE deleted_at IS NOT NULL ORDER BY id`,
  );
  assert.deepEqual(hidden.rows.map((r) => r.id).sort(), [expiredOld, expiredFailed, gone].sort());
  for (const id of [readByRestore, notYet, lonely]) {
    const r = await s.db.pool.query('SELECT 1 FROM backups WHERE id = $1 AND deleted_at IS NULL', [id]);
    assert.equal(r.rowCount, 1, id);
  }
  // Hidden from the API at once; a second sweep queues nothing more.
  assert.equal((await api(acme, 'GET', `/v1/databases/${DB}/backups/${expiredOld}`)).statusCode, 404);
  assert.equal(await sweepExpiredBackups(schedulerDeps()), 0);
  // The agent removes the files; then the rows go.
  for (let i = 0; i < 3; i++) {
    const job = await nextJob('backup.delete');
    assert.deepEqual(Object.keys(job.payload).sort(), ['backup_id', 'database_id']);
    assert.equal(await agent.complete(job.id, job.attempt, { deleted: true }), 200);
  }
  const left = await s.db.pool.query('SELECT 1 FROM backups WHERE id = ANY($1::uuid[])', [
    [expiredOld, expiredFailed, gone],
  ]);
  assert.equal(left.rowCount, 0);
  const pruned = await s.db.pool.query(
    `SELECT count(*)::int AS n FROM audit_events WHERE action = 'backup.deleted' AND details->>'reason' = 'retention'`,
  );
  assert.equal(pruned.rows[0].n, 3);
});

test('the daily schedule queues one backup per database and slot; a stale database raises one alert', async () => {
  const { createKeyringFileBox } = await import('../src/server/crypto/keyring-box.ts');
  const deps = { ...schedulerDeps(), box: createKeyringFileBox(s.config.masterKeyFile!) };
  // Today's slot is a minute or two ahead of the databases' ready time, and has passed at `now`.
  const now = new Date(Date.now() + 120_000);
  const slotMinute = now.getUTCHours() * 60 + now.getUTCMinutes();
  const ready = await s.db.pool.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM databases WHERE status = 'ready'`,
  );
  const first = await runScheduledBackups(
    { ...deps, defaults: { ...defaults, schedule_minute: slotMinute } },
    now,
  );
  assert.equal(first, ready.rows[0]!.n);
  assert.equal(
    await runScheduledBackups({ ...deps, defaults: { ...defaults, schedule_minute: slotMinute } }, now),
    0,
  );
  // A database that turns its schedule off is skipped.
  const off = await api(acme, 'PUT', `/v1/databases/${DB}/backup-settings`, {
    enabled: false,
    schedule_time: '03:30',
  });
  assert.equal(off.statusCode, 200, off.body);
  assert.equal(off.json().effective.enabled, false);
  assert.equal(off.json().effective.schedule_time, '03:30');
  assert.equal(off.json().effective.retention_days, 30);
  const later = new Date(now.getTime() + 86_400_000);
  assert.equal(
    await runScheduledBackups({ ...deps, defaults: { ...defaults, schedule_minute: slotMinute } }, later),
    ready.rows[0]!.n - 1,
  );
  await api(acme, 'PUT', `/v1/databases/${DB}/backup-settings`, {});
  const scheduled = await s.db.pool.query(
    `SELECT 1 FROM backups WHERE trigger = 'scheduled' AND scheduled_for IS NOT NULL`,
  );
  assert.ok((scheduled.rowCount ?? 0) >= ready.rows[0]!.n);

  // Freshness: 30 hours on, with no newer good backup, every ready database is stale — once.
  const future = new Date(Date.now() + 30 * 3_600_000);
  const alerts = await checkFreshness(schedulerDeps(), future);
  assert.ok(alerts >= 1);
  assert.equal(await checkFreshness(schedulerDeps(), future), 0);
  const stale = await s.db.pool.query(`SELECT details FROM audit_events WHERE action = 'backup.stale'`);
  assert.equal(stale.rowCount, alerts);
});

test("one database's scheduling failure does not stop the others; it is due again at the next tick", async () => {
  const { createKeyringFileBox } = await import('../src/server/crypto/keyring-box.ts');
  const real = createKeyringFileBox(s.config.masterKeyFile!);
  let failures = 1;
  const flaky = {
    ...real,
    seal(plaintext: string, context: string) {
      if (failures-- > 0) throw new Error('the keyring file is unreadable (simulated)');
      return real.seal(plaintext, context);
    },
  };
  const now = new Date(Date.now() + 3 * 86_400_000);
  const minute = now.getUTCHours() * 60 + now.getUTCMinutes();
  const deps = { ...schedulerDeps(), box: flaky, defaults: { ...defaults, schedule_minute: minute } };
  const ready = (
    await s.db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM databases WHERE status = 'ready'`)
  ).rows[0]!.n;
  assert.ok(ready >= 2);
  assert.equal(await runScheduledBackups(deps, now), ready - 1);
  assert.equal(await runScheduledBackups(deps, now), 1);
  assert.equal(await runScheduledBackups(deps, now), 0);
});

test('a restore drill restores the latest good backup: verified_at on success; on failure an alert', async () => {
  // What earlier tests left queued (scheduled backups) is done first, as an agent would.
  await assert.rejects(nextJob('none.such'));
  const b = (await api(acme, 'POST', `/v1/databases/${DB}/backups`)).json();
  const job = await nextJob('backup.create');
  // With an off-site copy: the server records that it exists (never its key in the API).
  const offsiteKey = `offsite/${b.id}.bulwark-backup`;
  assert.equal(
    await agent.complete(job.id, job.attempt, {
      ...createResult(b.id, '34'.repeat(32)),
      offsite_key: offsiteKey,
    }),
    200,
  );
  const copied = (await api(acme, 'GET', `/v1/databases/${DB}/backups/${b.id}`)).json();
  assert.equal(copied.offsite_copy, true);
  assert.equal(copied.offsite_verified_at, null);
  assert.ok(!JSON.stringify(copied).includes(offsiteKey));
  const objects = createResult(b.id, '').objects;
  // A period far from the others' (each period's drill is due once per database).
  const now = new Date(Date.now() + 400 * 86_400_000);
  assert.ok((await runDrills(schedulerDeps(), now)) >= 1);
  assert.equal(await runDrills(schedulerDeps(), now), 0);
  const drill = await nextJob('backup.drill');
  assert.equal(drill.payload.backup_id, b.id);
  assert.deepEqual((drill.payload.expected as { sha256: string }).sha256, '34'.repeat(32));
  const verifiedAt = new Date().toISOString();
  const ok = {
    backup_id: b.id,
    verified_at: verifiedAt,
    duration_ms: 5,
    verified: true,
    tables_checked: 1,
    rows_checked: 3,
    objects,
    offsite_verified: true,
  };
  const completed = await s.app.inject({
    method: 'POST',
    url: `/v1/agent/jobs/${drill.id}/complete`,
    headers: { authorization: `Bearer ${agent.token}` },
    payload: { attempt: drill.attempt, result: ok },
  });
  assert.equal(completed.statusCode, 200, completed.body);
  const shown = (await api(acme, 'GET', `/v1/databases/${DB}/backups/${b.id}`)).json();
  assert.ok(shown.verified_at);
  assert.ok(shown.offsite_verified_at, 'the drill read the off-site copy too');
  assert.equal(shown.verify_failure, null);
  const drills = (await api(acme, 'GET', `/v1/databases/${DB}/restores`)).json();
  const d = drills.items.find(
    (r: { backup_id: string; target: string }) => r.backup_id === b.id && r.target === 'drill',
  );
  assert.equal(d.status, 'completed');
  assert.equal(d.rows_checked, 3);

  // The next period's drill fails for good: the backup says so, and an alert is raised.
  const next = new Date(now.getTime() + 8 * 86_400_000);
  assert.ok((await runDrills(schedulerDeps(), next)) >= 1);
  const failing = await nextJob('backup.drill');
  await s.db.pool.query('UPDATE jobs SET max_attempts = attempts WHERE id = $1', [failing.id]);
  assert.equal(
    await agent.fail(
      failing.id,
      failing.attempt,
      'backup archive refused: chunk 3 failed authentication',
      false,
    ),
    200,
  );
  const after = (await api(acme, 'GET', `/v1/databases/${DB}/backups/${b.id}`)).json();
  assert.match(after.verify_failure, /chunk 3 failed authentication/);
  const alert = await s.db.pool.query(
    `SELECT outcome FROM audit_events WHERE action = 'backup.drill_failed' AND target_id = $1`,
    [b.id],
  );
  assert.deepEqual(alert.rows, [{ outcome: 'failure' }]);
});

test('restores through the agent API: the new target gets its owner password for the job; failures are recorded', async () => {
  await assert.rejects(nextJob('none.such'));
  const b = (await api(acme, 'POST', `/v1/databases/${DB}/backups`)).json();
  const job = await nextJob('backup.create');
  assert.equal(await agent.complete(job.id, job.attempt, createResult(b.id, '56'.repeat(32))), 200);

  // Into a new database: listed at once, provisioning; the job carries its create payload.
  const r = await api(acme, 'POST', `/v1/databases/${DB}/restore`, {
    backup_id: b.id,
    new_name: 'shop_copy',
  });
  assert.equal(r.statusCode, 202, r.body);
  assert.equal((await api(acme, 'GET', '/v1/databases/shop_copy')).json().status, 'provisioning');
  const restoreJob = await nextJob('backup.restore');
  assert.equal(restoreJob.payload.mode, 'new');
  // Both named by their names on the node: the new target's is generated, never its label.
  const copyPhysical = await physicalName(acme.accountId, 'shop_copy');
  assert.match(copyPhysical, /^bulwark_db_/);
  assert.equal(restoreJob.payload.name, copyPhysical);
  assert.equal((restoreJob.payload.create as { name: string }).name, copyPhysical);
  assert.deepEqual(restoreJob.payload.source, { database_id: job.payload.database_id, name: dbPhysical });
  assert.equal((restoreJob.payload.expected as { sha256: string }).sha256, '56'.repeat(32));
  const secret = await agent.secret(restoreJob.id, restoreJob.attempt);
  assert.equal(secret.status, 200);
  assert.ok(secret.password && secret.password.length >= 32);
  // A second restore of the database waits for this one.
  assert.equal(
    (await api(acme, 'POST', `/v1/databases/${DB}/restore`, { backup_id: b.id, new_name: 'shop_copy2' }))
      .statusCode,
    409,
  );
  await s.db.pool.query('UPDATE jobs SET max_attempts = attempts WHERE id = $1', [restoreJob.id]);
  assert.equal(
    await agent.fail(restoreJob.id, restoreJob.attempt, 'pg_restore: error: out of memory', true),
    200,
  );
  const failed = (await api(acme, 'GET', `/v1/databases/${DB}/restores/${r.json().id}`)).json();
  assert.equal(failed.status, 'failed');
  assert.match(failed.failure_reason, /out of memory/);
  const target = (await api(acme, 'GET', '/v1/databases/shop_copy')).json();
  assert.equal(target.status, 'failed');
  assert.match(target.failure_reason, /out of memory/);

  // In place: the safety backup fails, so nothing is restored (no restore job is ever queued).
  const inPlace = await api(acme, 'POST', `/v1/databases/${DB}/restore`, {
    backup_id: b.id,
    target: 'in_place',
  });
  assert.equal(inPlace.statusCode, 202, inPlace.body);
  const safety = await nextJob('backup.create');
  assert.equal(safety.payload.backup_id, inPlace.json().safety_backup_id);
  await s.db.pool.query('UPDATE jobs SET max_attempts = attempts WHERE id = $1', [safety.id]);
  assert.equal(
    await agent.fail(safety.id, safety.attempt, 'write: ENOSPC: no space left on device', true),
    200,
  );
  const stopped = (await api(acme, 'GET', `/v1/databases/${DB}/restores/${inPlace.json().id}`)).json();
  assert.equal(stopped.status, 'failed');
  assert.match(stopped.failure_reason, /safety backup failed.*ENOSPC/);
  const queued = await s.db.pool.query(
    `SELECT 1 FROM jobs WHERE kind = 'backup.restore' AND status = 'queued'`,
  );
  assert.equal(queued.rowCount, 0);
});

test('an in-place restore is for owners and admins (admin keys), re-authenticated; a download link asks a signed-in user to re-authenticate', async () => {
  const b = (await api(acme, 'POST', `/v1/databases/${DB}/backups`)).json();
  const job = await nextJob('backup.create');
  assert.equal(await agent.complete(job.id, job.attempt, createResult(b.id, 'ef'.repeat(32))), 200);
  const inPlace = { backup_id: b.id, target: 'in_place' };
  // A write key may restore into a new database, never over the existing one.
  const byWriter = await api(writer2, 'POST', `/v1/databases/${DB}/restore`, inPlace);
  assert.equal(byWriter.statusCode, 403, byWriter.body);
  const people = async (role: 'member' | 'admin') => {
    const u = await createTestUser(s, {
      username: `bk-${role}-${randomUUID().slice(0, 8)}`,
      memberships: [{ accountId: acme.accountId, role }],
    });
    const t = await signIn(s, u);
    return { headers: t.headers, sessionId: t.session.id } as unknown as TestKey & { sessionId: string };
  };
  const member = await people('member');
  const byMember = await api(member, 'POST', `/v1/databases/${DB}/restore`, inPlace);
  assert.equal(byMember.statusCode, 403, byMember.body);
  assert.equal(byMember.json().error.code, 'forbidden');
  // An admin whose sign-in is no longer fresh must prove it is them first (nothing is queued).
  const admin = await people('admin');
  await s.db.pool.query("UPDATE sessions SET created_at = now() - interval '1 hour' WHERE id = $1", [
    admin.sessionId,
  ]);
  const stale = await api(admin, 'POST', `/v1/databases/${DB}/restore`, inPlace);
  assert.equal(stale.statusCode, 403, stale.body);
  assert.equal(stale.json().error.code, 'reauth_required');
  const link = await api(admin, 'POST', `/v1/databases/${DB}/backups/${b.id}/download-link`);
  assert.equal(link.statusCode, 403, link.body);
  assert.equal(link.json().error.code, 'reauth_required');
  // A member fresh from signing in gets a link (a download is a writer's, like a reveal).
  assert.equal(
    (await api(member, 'POST', `/v1/databases/${DB}/backups/${b.id}/download-link`)).statusCode,
    200,
  );
});
