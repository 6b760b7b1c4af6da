import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { createTestKey, type TestKey } from '../../../../test/helpers/keys.ts';
import { createTestServer, type TestServer } from '../../../../test/helpers/server.ts';

let s: TestServer;
let root: string;
let file: string;
let acme: TestKey;
let globex: TestKey;

async function waitChained(): Promise<void> {
  for (let i = 0; i < 400; i++) {
    const r = await s.db.pool.query('SELECT 1 FROM audit_events WHERE seq IS NULL LIMIT 1');
    if (r.rowCount === 0) return;
    await new Promise((res) => setTimeout(res, 5));
  }
  throw new Error('events were not chained within 2 s');
}

before(async () => {
  root = mkdtempSync(path.join(tmpdir(), 'bulwark-checkpoints-'));
  file = path.join(root, 'checkpoints.jsonl');
  s = await createTestServer({ dataDir: path.join(root, 'server'), auditCheckpointFile: file });
  acme = await createTestKey(s, { account: 'acme' });
  globex = await createTestKey(s, { account: 'globex' });
  await s.audit.recordNow({ action: 'test.seeded', accountId: acme.accountId });
  await waitChained();
});
after(async () => {
  await s.stop();
  rmSync(root, { recursive: true, force: true });
});

const post = (k: TestKey) =>
  s.app.inject({ method: 'POST', url: '/v1/audit/checkpoints', headers: k.headers });
const fileLines = () => (existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : []);
const stored = async () =>
  (
    await s.db.pool.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM audit_checkpoints WHERE kind = 'checkpoint'",
    )
  ).rows[0]!.n;

test('on-demand checkpoints: idempotent per head, audited, limited per account, admins only', async () => {
  const first = await post(acme);
  assert.equal(first.statusCode, 201, first.body);
  const cp = first.json().checkpoint;
  assert.equal(first.json().created, true);
  assert.deepEqual([await stored(), fileLines().length], [1, 1]);

  // Its creation is audited, by the key that asked.
  await waitChained();
  const audited = await s.db.pool.query(
    "SELECT actor_id, account_id, details FROM audit_events WHERE action = 'audit.checkpoint_created'",
  );
  assert.equal(audited.rows.length, 1);
  assert.equal(audited.rows[0].actor_id, acme.id);
  assert.equal(audited.rows[0].account_id, acme.accountId);
  assert.equal(audited.rows[0].details.seq, cp.seq);

  // The head has not moved (its own audit record aside): the same checkpoint, nothing written.
  for (const k of [acme, acme, globex]) {
    const again = await post(k);
    assert.equal(again.statusCode, 200, again.body);
    assert.deepEqual(again.json(), { checkpoint: cp, created: false });
  }
  assert.deepEqual([await stored(), fileLines().length], [1, 1], 'nothing stored or appended');
  const records = await s.db.pool.query(
    "SELECT 1 FROM audit_events WHERE action = 'audit.checkpoint_created'",
  );
  assert.equal(records.rowCount, 1, 'returning the existing checkpoint records nothing');

  // The head moves: a new one for another account, but not a second within the minute for acme.
  await s.audit.recordNow({ action: 'test.seeded', accountId: acme.accountId });
  await waitChained();
  const limited = await post(acme);
  assert.equal(limited.statusCode, 429, limited.body);
  assert.equal(limited.json().error.code, 'rate_limited');
  assert.ok(Number(limited.headers['retry-after']) >= 1);
  assert.deepEqual([await stored(), fileLines().length], [1, 1]);
  const theirs = await post(globex);
  assert.equal(theirs.statusCode, 201, theirs.body);
  assert.ok(BigInt(theirs.json().checkpoint.seq) > BigInt(cp.seq));
  assert.deepEqual([await stored(), fileLines().length], [2, 2]);

  // Tenant admins only: read and write keys cannot sign.
  const reader = await createTestKey(s, { account: 'acme', level: 'write' });
  assert.equal((await post(reader)).statusCode, 403);
});
