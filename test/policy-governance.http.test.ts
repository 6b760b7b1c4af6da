// The governance policy as code over HTTP (issue 14): PUT /v1/policy validates with the shared
// parser and stores a new version (audited), GET /v1/policy and /v1/policy/versions read them back,
// owners/admins/admin keys only, never a database-scoped caller; what a scoped caller may read;
// and preflight answers with the applied policy's deciding rule.
import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import { activePolicy } from '../src/server/modules/policies/policies.repo.ts';
import { createAccount, enrollFakeAgent } from './helpers/databases.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { createTestUser, signIn } from './helpers/session-users.ts';
import { type Person, person, readyDatabase } from './requests-helpers.ts';

const EXAMPLE = readFileSync(new URL('../docs/examples/policy.yaml', import.meta.url), 'utf8');

let s: TestServer;
let acme: string;
let admin: TestKey;

before(async () => {
  s = await createTestServer();
  acme = await createAccount(s, 'acme');
  await createAccount(s, 'other');
  admin = await createTestKey(s, { account: 'acme' });
});
after(() => s?.stop());

const put = (headers: Record<string, string>, source: string) =>
  s.app.inject({ method: 'PUT', url: '/v1/policy', headers, payload: { source } });
const get = (headers: Record<string, string>, url = '/v1/policy') => s.app.inject({ url, headers });

test('no policy: version 0, the built-in rules decide', async () => {
  const res = await get(admin.headers);
  assert.equal(res.statusCode, 200, res.body);
  assert.deepEqual(res.json(), {
    version: 0,
    source: null,
    source_sha256: null,
    applied_at: null,
    applied_by: null,
    policy: null,
  });
  assert.deepEqual(await activePolicy(s.db.pool, acme), { version: 0, policy: null });
});

test('a valid file becomes version 1: readable back, audited with its SHA-256', async () => {
  const res = await put(admin.headers, EXAMPLE);
  assert.equal(res.statusCode, 200, res.body);
  const body = res.json();
  const sha = createHash('sha256').update(EXAMPLE).digest('hex');
  assert.equal(body.version, 1);
  assert.equal(body.source, EXAMPLE);
  assert.equal(body.source_sha256, sha);
  assert.deepEqual(body.applied_by, { kind: 'key', id: admin.id, name: body.applied_by.name });
  assert.equal(body.policy.databases.shop.environment, 'production');
  assert.equal(body.policy.defaults.approval_lifetime_s, 86_400);
  assert.deepEqual((await get(admin.headers)).json(), body);

  const active = await activePolicy(s.db.pool, acme);
  assert.equal(active.version, 1);
  assert.equal(active.policy?.environments?.['production']?.classes?.ddl?.approvals, 2);

  const events = await s.db.pool.query(
    `SELECT actor_type, actor_id, target_id, details FROM audit_events
      WHERE action = 'policy.applied' AND account_id = $1`,
    [acme],
  );
  assert.equal(events.rowCount, 1);
  assert.deepEqual(events.rows[0], {
    actor_type: 'key',
    actor_id: admin.id,
    target_id: '1',
    details: { version: 1, source_sha256: sha, bytes: Buffer.byteLength(EXAMPLE) },
  });
});

test('an invalid file is a 400 policy_invalid with every error, and stores nothing', async () => {
  const bad =
    'version: 1\ndefaults:\n  max_executions: 0\ndatabases:\n  shop:\n    environment: prod\n    nope: 1\n';
  const res = await put(admin.headers, bad);
  assert.equal(res.statusCode, 400, res.body);
  const err = res.json().error;
  assert.equal(err.code, 'policy_invalid');
  assert.deepEqual(
    err.details.errors.map((e: { line: number; field: string }) => [e.line, e.field]),
    [
      [3, 'defaults.max_executions'],
      [6, 'databases.shop.environment'],
      [7, 'databases.shop.nope'],
    ],
  );
  assert.equal((await get(admin.headers)).json().version, 1);
  const tooBig = await put(admin.headers, `version: 1\n${'#'.repeat(300 * 1024)}\n`);
  assert.equal(tooBig.statusCode, 400);
  assert.equal((await activePolicy(s.db.pool, acme)).version, 1);
});

test('each apply is a new version; the list is newest first and bounded', async () => {
  for (const n of [2, 3, 4]) {
    const res = await put(admin.headers, `version: 1\ndefaults:\n  max_executions: ${n}\n`);
    assert.equal(res.json().version, n);
  }
  const list = await get(admin.headers, '/v1/policy/versions?limit=2');
  assert.equal(list.statusCode, 200, list.body);
  assert.deepEqual(
    list.json().items.map((v: { version: number }) => v.version),
    [4, 3],
  );
  const older = await get(admin.headers, '/v1/policy/versions?before=3');
  assert.deepEqual(
    older.json().items.map((v: { version: number }) => v.version),
    [2, 1],
  );
  assert.equal((await get(admin.headers, '/v1/policy/versions?limit=101')).statusCode, 400);
  assert.equal((await activePolicy(s.db.pool, acme)).policy?.defaults?.max_executions, 4);
});

test('concurrent applies get consecutive versions', async () => {
  const before = (await activePolicy(s.db.pool, acme)).version;
  const answers = await Promise.all(
    Array.from({ length: 6 }, (_, i) =>
      put(admin.headers, `version: 1\ndefaults:\n  max_executions: ${i + 1}\n`),
    ),
  );
  const versions = answers.map((r) => r.json().version as number).sort((a, b) => a - b);
  assert.deepEqual(
    versions,
    Array.from({ length: 6 }, (_, i) => before + i + 1),
  );
});

test('who may apply: owners, admins, admin keys of the whole account; users need step-up', async () => {
  const valid = 'version: 1\n';
  const user = async (name: string, role: 'owner' | 'admin' | 'member' | 'viewer') =>
    signIn(s, await createTestUser(s, { username: name, memberships: [{ accountId: acme, role }] }));
  const owner = await user('pol-owner', 'owner');
  const member = await user('pol-member', 'member');
  const viewer = await user('pol-viewer', 'viewer');
  const writeKey = await createTestKey(s, { account: 'acme', level: 'write' });
  const scopedAdmin = await createTestKey(s, { account: 'acme', databases: ['shop'] });

  const ok = await put(owner.headers, valid);
  assert.equal(ok.statusCode, 200, ok.body);
  assert.equal(ok.json().applied_by.kind, 'user');
  for (const [who, headers] of [
    ['member', member.headers],
    ['viewer', viewer.headers],
    ['write key', writeKey.headers],
    ['database-scoped admin key', scopedAdmin.headers],
  ] as const) {
    const res = await put(headers, valid);
    assert.equal(res.statusCode, 403, `${who}: ${res.body}`);
    assert.equal(res.json().error.code, 'forbidden', who);
  }
  // Everyone in the account may read it; another account sees its own (none).
  for (const h of [member.headers, viewer.headers, writeKey.headers])
    assert.equal((await get(h)).json().version, ok.json().version);
  const stranger = await createTestKey(s, { account: 'other' });
  assert.equal((await get(stranger.headers)).json().version, 0);

  // A session whose sign-in is older than the step-up window (no local password): asked first.
  await s.db.pool.query(
    `UPDATE sessions SET created_at = now() - interval '11 minutes'
      WHERE user_id = (SELECT id FROM users WHERE username = 'pol-owner')`,
  );
  const stale = await put(owner.headers, valid);
  assert.equal(stale.statusCode, 403, stale.body);
  assert.equal(stale.json().error.code, 'reauth_required');
  // An invalid file is reported without asking (nothing would be applied).
  assert.equal((await put(owner.headers, 'version: 3\n')).json().error.code, 'policy_invalid');
});

test('a database-scoped caller reads only its part of the policy, without the file', async () => {
  const res = await put(admin.headers, EXAMPLE);
  assert.equal(res.statusCode, 200);
  const scoped = await createTestKey(s, { account: 'acme', level: 'read', databases: ['shop'] });
  const view = await get(scoped.headers);
  assert.equal(view.statusCode, 200, view.body);
  const body = view.json();
  assert.equal(body.source, null);
  assert.equal(body.applied_by, null);
  assert.equal(body.version, res.json().version);
  assert.deepEqual(Object.keys(body.policy.databases), ['shop']);
  assert.deepEqual(Object.keys(body.policy.environments), ['production']);
  assert.ok(body.policy.defaults);
  const versions = await get(scoped.headers, '/v1/policy/versions');
  assert.equal(versions.statusCode, 200);
  assert.ok(versions.json().items.every((v: { applied_by: unknown }) => v.applied_by === null));
});

test('preflight answers with the applied policy: the deciding rule, its approvals, who may ask', async () => {
  const agent = await enrollFakeAgent(s, 'policy-node');
  await readyDatabase(s, { id: randomUUID(), accountId: acme, nodeId: agent.nodeId, name: 'ledger' });
  const member = await person(s, acme, 'member', 'pf');
  const viewer = await person(s, acme, 'viewer', 'pf');
  const preflight = async (who: Person, sql: string) => {
    const res = await s.app.inject({
      method: 'POST',
      url: '/v1/databases/ledger/requests/preflight',
      headers: who.headers,
      payload: { sql, dry_run: false },
    });
    assert.equal(res.statusCode, 200, res.body);
    return res.json().policy;
  };
  const write = 'UPDATE accounts SET balance = 0 WHERE id = 1';
  // The example names no "ledger": the defaults' write rule decides (1 approval).
  const active = (await activePolicy(s.db.pool, acme)).version;
  assert.deepEqual(await preflight(member, write), {
    version: active,
    rule: 'defaults.classes.write',
    why: "policy defaults: write requests need 1 approval (never the requester's own)",
    environment: null,
    approvals_required: 1,
    admin_approvals_required: 0,
    allowed: true,
  });
  const applied = await put(
    admin.headers,
    [
      'version: 1',
      'environments:',
      '  finance:',
      '    classes:',
      '      write: { requesters: [owner, admin, member], approvals: 3, admin_approvals: 2 }',
      '      read: { requesters: [owner, admin] }',
      'databases:',
      '  ledger:',
      '    environment: finance',
      '',
    ].join('\n'),
  );
  assert.equal(applied.statusCode, 200, applied.body);
  const after = await preflight(member, write);
  assert.deepEqual(after, {
    version: active + 1,
    rule: 'environments.finance.classes.write',
    why: "policy environments.finance: write requests need 3 approvals, 2 of them by an owner or admin (never the requester's own)",
    environment: 'finance',
    approvals_required: 3,
    admin_approvals_required: 2,
    allowed: true,
  });
  const read = await preflight(viewer, 'SELECT 1');
  assert.equal(read.allowed, false);
  assert.match(read.why, /read requests may be made by owner, admin, not by a viewer/);
  // The request itself is refused the same way.
  const refused = await s.app.inject({
    method: 'POST',
    url: '/v1/databases/ledger/requests',
    headers: viewer.headers,
    payload: { sql: 'SELECT 1', reason: 'look' },
  });
  assert.equal(refused.statusCode, 403, refused.body);
  assert.equal(refused.json().error.code, 'policy_denied');
});
