import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { createTestKey, type TestKey } from '../../../../test/helpers/keys.ts';
import { createTestServer, type TestServer } from '../../../../test/helpers/server.ts';
import { generateToken, hashToken } from '../../../shared/api-key.ts';
import { publicKeysOf } from './audit.checkpoints.ts';
import { exportLines, parseExport, verifyExport } from './audit.export.ts';
import { verifyCheckpoint } from './audit-chain.ts';

const CLI = fileURLToPath(new URL('../../../cli/index.ts', import.meta.url));
const METRICS_TOKEN = 'm'.repeat(20) + 'etrics-token-for-tests-0123456789';
let s: TestServer;
let dataDir: string;
let admin: TestKey;
let other: TestKey;

async function* linesOf(text: string) {
  yield* text.split('\n').filter(Boolean);
}

async function waitChained(): Promise<void> {
  for (let i = 0; i < 400; i++) {
    const r = await s.db.pool.query('SELECT 1 FROM audit_events WHERE seq IS NULL LIMIT 1');
    if (r.rowCount === 0) return;
    await new Promise((res) => setTimeout(res, 5));
  }
  throw new Error('events were not chained within 2 s');
}

let root: string;
before(async () => {
  // Laid out like a `bulwark up` data dir, so the CLI can find the control DB and the keys.
  root = mkdtempSync(path.join(tmpdir(), 'bulwark-audit-http-'));
  dataDir = path.join(root, 'server');
  s = await createTestServer({ dataDir, metricsToken: METRICS_TOKEN });
  mkdirSync(path.join(root, 'secrets'), { mode: 0o700 });
  writeFileSync(path.join(root, 'secrets', 'control-database-url'), `${s.db.url}\n`, { mode: 0o600 });
  admin = await createTestKey(s, { account: 'acme' });
  other = await createTestKey(s, { account: 'other' });
  for (let i = 0; i < 3; i++) {
    await s.audit.recordNow({ action: 'test.seeded', accountId: admin.accountId, targetId: `k${i}` });
  }
  await s.audit.recordNow({
    action: 'test.seeded',
    accountId: other.accountId,
    targetId: 'secret-of-other',
  });
  await waitChained();
});
after(async () => {
  await s.stop();
  rmSync(root, { recursive: true, force: true });
});

test('events are account-scoped, filtered and paginated; admin keys only', async () => {
  const get = (url: string, key: TestKey | null = admin) =>
    s.app.inject({ url, headers: key ? key.headers : {} });
  assert.equal((await get('/v1/audit/events', null)).statusCode, 401);
  const reader = await createTestKey(s, { account: 'acme', level: 'read' });
  assert.equal((await get('/v1/audit/events', reader)).statusCode, 403);

  const all = (await get('/v1/audit/events?action=test.seeded')).json();
  assert.deepEqual(
    all.items.map((e: { target_id: string }) => e.target_id),
    ['k2', 'k1', 'k0'],
  );
  assert.ok(
    all.items.every(
      (e: { account_id: string; chained: boolean }) => e.account_id === admin.accountId && e.chained,
    ),
  );
  const p1 = (await get('/v1/audit/events?action=test.seeded&limit=2')).json();
  assert.equal(p1.items.length, 2);
  const p2 = (await get(`/v1/audit/events?action=test.seeded&limit=2&cursor=${p1.next_cursor}`)).json();
  assert.deepEqual([p2.items.length, p2.items[0].target_id, p2.next_cursor], [1, 'k0', null]);
  assert.equal((await get('/v1/audit/events?cursor=bm9wZQ')).statusCode, 400);
});

test('export, checkpoint, public key and verify over HTTP; the export verifies offline', async () => {
  const cpRes = await s.app.inject({ method: 'POST', url: '/v1/audit/checkpoints', headers: admin.headers });
  assert.equal(cpRes.statusCode, 201);
  const cp = cpRes.json().checkpoint;
  const keys = (await s.app.inject({ url: '/v1/public-key' })).json().keys as {
    key_id: string;
    public_key_pem: string;
  }[];
  assert.equal(keys[0]?.key_id, cp.key_id);
  const byId = new Map(keys.map((k) => [k.key_id, k.public_key_pem]));
  assert.equal(verifyCheckpoint({ ...cp, keyId: cp.key_id }, byId), true);

  const exp = await s.app.inject({ url: '/v1/audit/export', headers: admin.headers });
  assert.equal(exp.statusCode, 200);
  assert.match(String(exp.headers['content-type']), /ndjson/);
  assert.ok(!exp.body.includes('secret-of-other'), "another account's events never leave");
  const r = await verifyExport(await parseExport(linesOf(exp.body)));
  assert.deepEqual([r.ok, r.scope], [true, 'account']);
  // Every chained event of the account: its operator key's creation, k0..k2, maybe the export's own.
  const exported = exp.body.split('\n').filter((l) => l.includes('"type":"event"'));
  assert.equal(r.events, exported.length);
  for (const k of ['k0', 'k1', 'k2', 'account.created']) assert.ok(exp.body.includes(k), k);
  // The export itself was recorded.
  await waitChained();
  const ev = (
    await s.app.inject({ url: '/v1/audit/events?action=audit.exported', headers: admin.headers })
  ).json();
  assert.equal(ev.items[0]?.actor_id, admin.id);

  const v = (await s.app.inject({ url: '/v1/audit/verify', headers: admin.headers })).json();
  assert.deepEqual([v.ok, v.broken_at_seq], [true, null]);
});

test('agent enrollment, token replacement and refusals are recorded', async () => {
  const enroll = (token: string) =>
    s.app.inject({
      method: 'POST',
      url: '/v1/agent/enroll',
      payload: { enrollment_token: token, agent_version: '1.0.0' },
    });
  const issue = async () => {
    const t = generateToken('bwe_');
    await s.db.pool.query(
      "INSERT INTO node_enrollments (token_hash, node_name, expires_at) VALUES ($1, 'n1', now() + interval '5 minutes')",
      [hashToken(t)],
    );
    return t;
  };
  assert.equal((await enroll(generateToken('bwe_'))).statusCode, 401);
  assert.equal((await enroll(await issue())).statusCode, 200);
  assert.equal((await enroll(await issue())).statusCode, 200);
  const hb = await s.app.inject({
    method: 'POST',
    url: '/v1/agent/heartbeat',
    payload: {},
    headers: { authorization: 'Bearer nope' },
  });
  assert.equal(hb.statusCode, 401);
  await waitChained();
  const rows = (
    await s.db.pool.query<{ action: string; outcome: string; reason: string | null; ip: string | null }>(
      `SELECT action, outcome, details->>'reason' AS reason, source_ip AS ip FROM audit_events
        WHERE action LIKE 'agent.%' OR action LIKE 'node.%' ORDER BY seq`,
    )
  ).rows;
  assert.deepEqual(
    rows.map((r) => `${r.action}:${r.outcome}:${r.reason ?? ''}`),
    [
      'agent.enroll:failure:unknown_or_expired_token',
      'agent.enroll:success:',
      'agent.enroll:success:',
      'node.token_replaced:success:',
      'agent.auth:denied:malformed_token',
    ],
  );
  assert.ok(rows.every((r) => r.ip === '127.0.0.1'));
});

test('/metrics needs its own token; series use route patterns', async () => {
  assert.equal((await s.app.inject({ url: '/metrics' })).statusCode, 401);
  const wrong = await s.app.inject({
    url: '/metrics',
    headers: { authorization: `Bearer ${METRICS_TOKEN}x` },
  });
  assert.equal(wrong.statusCode, 401);
  // An API key is not the metrics token.
  assert.equal((await s.app.inject({ url: '/metrics', headers: admin.headers })).statusCode, 401);
  await s.app.inject({ url: '/v1/audit/events?limit=1', headers: admin.headers });
  const ok = await s.app.inject({ url: '/metrics', headers: { authorization: `Bearer ${METRICS_TOKEN}` } });
  assert.equal(ok.statusCode, 200);
  assert.match(ok.headers['content-type'] as string, /^text\/plain; version=0\.0\.4/);
  assert.match(
    ok.body,
    /bulwark_http_requests_total\{method="GET",route="\/v1\/audit\/events",status="200"\} \d+/,
  );
  assert.match(ok.body, /bulwark_auth_failures_total\{kind="metrics_token",reason="wrong"\} [1-9]/);
  assert.match(ok.body, /bulwark_audit_chain_length \d+/);
  assert.match(ok.body, /bulwark_audit_pending_events \d+/);
  assert.match(ok.body, /bulwark_jobs\{status="queued"\} \d+/);
  assert.match(ok.body, /bulwark_agent_heartbeat_age_seconds\{node="n1"\} [\d.]+/);
  assert.ok(!ok.body.includes('limit=1'), 'raw URLs never become labels');
  // Only what exists is measured: backups have real series now (the age of each database's last
  // good backup); approvals and webhooks have none to show.
  assert.ok(!/approval|webhook/.test(ok.body), 'no placeholder series');

  const off = await createTestServer({ dataDir });
  try {
    assert.equal((await off.app.inject({ url: '/metrics' })).statusCode, 404);
  } finally {
    await off.stop();
  }
});

test('`bulwark audit verify --file` checks an operator export offline; a tampered one fails', async () => {
  const lines: string[] = [];
  for await (const l of exportLines(s.db.pool, { accountId: null, publicKeys: publicKeysOf(dataDir) }))
    lines.push(l);
  const dir = mkdtempSync(path.join(tmpdir(), 'bulwark-audit-cli-'));
  try {
    const good = path.join(dir, 'good.jsonl');
    writeFileSync(good, `${lines.join('\n')}\n`);
    const run = (file: string) =>
      spawnSync(process.execPath, [CLI, 'audit', 'verify', '--file', file, '--json'], {
        encoding: 'utf8',
        timeout: 20_000,
      });
    const ok = run(good);
    assert.equal(ok.status, 0, ok.stderr);
    const report = JSON.parse(ok.stdout);
    assert.deepEqual([report.ok, report.complete, report.checkpoints_checked > 0], [true, true, true]);

    // Against the control DB of a data dir, then with one event's column edited.
    const cli = (...args: string[]) =>
      spawnSync(process.execPath, [CLI, 'audit', 'verify', '--data-dir', root, ...args], {
        encoding: 'utf8',
        timeout: 20_000,
      });
    const live = cli('--json');
    assert.equal(live.status, 0, live.stderr + live.stdout);
    await s.db.pool.query("UPDATE audit_events SET source_ip = '10.6.6.6' WHERE seq = 2");
    const edited = cli();
    assert.equal(edited.status, 1);
    assert.match(edited.stdout, /BROKEN at seq 2: content_mismatch/);
    await s.db.pool.query('UPDATE audit_events SET source_ip = NULL WHERE seq = 2');

    const bad = path.join(dir, 'bad.jsonl');
    writeFileSync(bad, `${lines.map((l) => l.replace('\\"k1\\"', '\\"k9\\"')).join('\n')}\n`);
    const broken = run(bad);
    assert.equal(broken.status, 1);
    assert.equal(JSON.parse(broken.stdout).failure.reason, 'hash_mismatch');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('API keys: created, first used, revoked and decoy used are recorded', async () => {
  const post = await s.app.inject({
    method: 'POST',
    url: '/v1/keys',
    headers: admin.headers,
    payload: { name: 'ci', level: 'read' },
  });
  assert.equal(post.statusCode, 201, post.body);
  const created = post.json() as { id: string; key: string };
  const decoyRes = await s.app.inject({
    method: 'POST',
    url: '/v1/keys',
    headers: admin.headers,
    payload: { name: 'canary', level: 'read', decoy: true },
  });
  const decoy = decoyRes.json() as { id: string; key: string };
  assert.equal(
    (await s.app.inject({ url: '/v1/whoami', headers: { authorization: `Bearer ${created.key}` } }))
      .statusCode,
    200,
  );
  assert.equal(
    (await s.app.inject({ url: '/v1/whoami', headers: { authorization: `Bearer ${decoy.key}` } })).statusCode,
    401,
  );
  await s.keyAuth.flushUsage();
  assert.equal(
    (await s.app.inject({ method: 'DELETE', url: `/v1/keys/${created.id}`, headers: admin.headers }))
      .statusCode,
    200,
  );
  await waitChained();
  const rows = (
    await s.db.pool.query<{ action: string; outcome: string; actor_id: string | null; target_id: string }>(
      `SELECT action, outcome, actor_id, target_id FROM audit_events
        WHERE action LIKE 'key.%' AND target_id = ANY($1) ORDER BY seq`,
      [[created.id, decoy.id]],
    )
  ).rows.map(
    (r) =>
      `${r.action}:${r.outcome}:${r.target_id === created.id ? 'ci' : 'canary'}:${r.actor_id === admin.id ? 'admin' : r.actor_id === r.target_id ? 'self' : r.actor_id}`,
  );
  assert.deepEqual(rows.sort(), [
    'key.created:success:canary:admin',
    'key.created:success:ci:admin',
    'key.decoy_used:denied:canary:self',
    'key.first_used:success:ci:self',
    'key.revoked:success:ci:admin',
  ]);
});
