import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  callerFor,
  createAccount,
  enrollFakeAgent,
  type FakeAgent,
} from '../../../../test/helpers/databases.ts';
import { createTestServer, type TestServer } from '../../../../test/helpers/server.ts';
import { AppError } from '../../../shared/errors.ts';
import { SCRAM_VERIFIER_PATTERN } from '../../../shared/scram.ts';
import { loadServerConfig } from '../../config.ts';
import { physicalName } from './databases.repo.ts';

let s: TestServer;
let n2: FakeAgent;
let acme: string;
let other: string;
before(async () => {
  s = await createTestServer();
  await enrollFakeAgent(s, 'n1');
  n2 = await enrollFakeAgent(s, 'n2');
  acme = await createAccount(s, 'acme');
  other = await createAccount(s, 'other');
});
after(() => s.stop());

const status = async (p: Promise<unknown>): Promise<number> => {
  try {
    await p;
    return 200;
  } catch (err) {
    if (err instanceof AppError) return err.status;
    throw err;
  }
};

const count = async (sql: string, params: unknown[] = []) =>
  (await s.db.pool.query<{ n: number }>(`SELECT count(*)::int AS n FROM ${sql}`, params)).rows[0]!.n;

test('create: provisioning row + create job in one go, placed on the emptiest node; no clear password stored', async () => {
  const w = callerFor(acme);
  const a = await s.databases.create(w, { name: 'shop_a' });
  assert.equal(a.status, 'provisioning');
  const b = await s.databases.create(w, { name: 'shop_b' });
  assert.notEqual(a.node_name, b.node_name, 'the second database goes to the other, emptier node');
  const c = await s.databases.create(w, { name: 'shop_c', node: 'n1' });
  assert.equal(c.node_name, 'n1');

  const job = await s.db.pool.query(
    "SELECT payload, account_id, node_id FROM jobs WHERE kind = 'database.create' AND payload->>'database_id' = $1",
    [a.id],
  );
  assert.equal(job.rowCount, 1);
  const payload = job.rows[0].payload;
  // Made under a generated name on the node, never the label (ADR 0039); a spare may serve it.
  assert.match(payload.name, /^bulwark_db_p_[0-9a-f]{16}$/);
  assert.equal(payload.generated_name, true);
  assert.match(payload.verifier, SCRAM_VERIFIER_PATTERN);
  assert.deepEqual(payload.allowlist, [
    { cidr: '127.0.0.1/32', expires_at: null },
    { cidr: '::1/128', expires_at: null },
  ]);
  assert.equal(job.rows[0].account_id, acme);
  assert.equal(job.rows[0].node_id, a.node_id);

  const { password } = await s.databases.reveal(w, 'shop_a');
  assert.match(password, /^[A-Za-z0-9_-]{43}$/);
  const leaks = await count('jobs WHERE payload::text LIKE $1 OR coalesce(result::text, $2) LIKE $1', [
    `%${password}%`,
    '',
  ]);
  assert.equal(leaks, 0, 'the password is in no job row');
  const audited = await s.db.pool.query(
    'SELECT action, actor_id, target_id, details::text AS details FROM audit_events WHERE target_id = $1 ORDER BY id',
    [a.id],
  );
  assert.deepEqual(
    audited.rows.map((r) => r.action),
    ['database.created', 'database.credentials_revealed'],
  );
  assert.equal(audited.rows[0].actor_id, w.keyId);
  assert.ok(!audited.rows.some((r) => r.details.includes(password)), 'no password in the audit log');
  const row = (await s.db.pool.query('SELECT password_sealed FROM databases WHERE id = $1', [a.id])).rows[0];
  assert.match(row.password_sealed, /^v1\.k1\./);
  assert.ok(!row.password_sealed.includes(password));
});

test('hostile and reserved names are 400 and create nothing', async () => {
  const before = [await count('databases'), await count('jobs')];
  const w = callerFor(acme);
  for (const name of [
    'a;drop',
    '"x"',
    'a'.repeat(64),
    'аdmin', // Cyrillic а
    '../etc',
    'Upper',
    '1abc',
    '',
    'a b',
    'postgres',
    'template1',
    'pg_x',
    'bulwark_x',
  ]) {
    assert.equal(await status(s.databases.create(w, { name })), 400, name);
    assert.equal(await status(s.databases.get(w, name)), 400, name);
  }
  assert.deepEqual([await count('databases'), await count('jobs')], before);
});

test("a name taken in the account is 409; another account's name on the node is no answer: each a generated name there", async () => {
  const w = callerFor(acme);
  const mine = await s.databases.create(w, { name: 'dup', node: 'n1' });
  assert.match(physicalName(mine), /^bulwark_db_p_[0-9a-f]{16}$/);
  assert.equal(await status(s.databases.create(w, { name: 'dup' })), 409);
  // Labels are unique per account only (migration 0038): the other account gets its 'dup' on the
  // same node; every new database has a generated name there (ADR 0039), so nothing differs.
  const o = callerFor(other);
  const theirs = await s.databases.create(o, { name: 'dup', node: 'n1' });
  assert.equal(theirs.node_name, 'n1');
  assert.equal(theirs.name, 'dup');
  assert.match(physicalName(theirs), /^bulwark_db_p_[0-9a-f]{16}$/);
  assert.notEqual(physicalName(theirs), physicalName(mine));
  const job = await s.db.pool.query<{ name: string }>(
    "SELECT payload->>'name' AS name FROM jobs WHERE kind = 'database.create' AND payload->>'database_id' = $1",
    [theirs.id],
  );
  assert.equal(job.rows[0]!.name, physicalName(theirs), 'the agent makes it under its name there');
  assert.equal((await s.databases.connection(o, 'dup')).database, physicalName(theirs));
  assert.equal(await status(s.databases.create(o, { name: 'dup' })), 409);
  assert.equal(await status(s.databases.create(o, { name: 'nope', node: 'n9' })), 409); // unknown node: the one answer a key gets
});

test('levels and scope: read cannot write, scoped keys cannot create and see only theirs, tenants are 404 to each other', async () => {
  const w = callerFor(acme);
  await s.databases.create(w, { name: 'scoped_a' });
  await s.databases.create(w, { name: 'scoped_b' });
  const r = callerFor(acme, 'read');
  assert.equal(await status(s.databases.create(r, { name: 'r1' })), 403);
  assert.equal(await status(s.databases.reveal(r, 'scoped_a')), 403);
  assert.equal(await status(s.databases.rotate(r, 'scoped_a')), 403);
  assert.equal(await status(s.databases.remove(r, 'scoped_a', 'scoped_a')), 403);
  assert.equal(await status(s.databases.connection(r, 'scoped_a')), 200);

  const scoped = callerFor(acme, 'admin', ['scoped_a']);
  assert.equal(await status(s.databases.create(scoped, { name: 'new_one' })), 403);
  assert.equal(await status(s.databases.get(scoped, 'scoped_b')), 404);
  assert.equal(await status(s.databases.reveal(scoped, 'scoped_b')), 404);
  const page = await s.databases.list(scoped, { after: null, limit: 50 });
  assert.deepEqual(
    page.items.map((d) => d.name),
    ['scoped_a'],
  );

  const o = callerFor(other, 'admin');
  for (const op of [
    () => s.databases.get(o, 'scoped_a'),
    () => s.databases.reveal(o, 'scoped_a'),
    () => s.databases.connection(o, 'scoped_a'),
    () => s.databases.rotate(o, 'scoped_a'),
    () => s.databases.remove(o, 'scoped_a', 'scoped_a'),
    () => s.databases.getAllowlist(o, 'scoped_a'),
    () =>
      s.databases.putLimits(o, 'scoped_a', {
        owner_connection_limit: 1,
        reader_connection_limit: 1,
        statement_timeout_ms: 0,
        idle_in_transaction_timeout_ms: 0,
      }),
  ]) {
    assert.equal(await status(op()), 404);
  }
  assert.ok(
    !(await s.databases.list(o, { after: null, limit: 50 })).items.some((d) => d.name.startsWith('scoped')),
  );
});

test('cursor pagination walks every database once', async () => {
  const acct = await createAccount(s, 'pager');
  const w = callerFor(acct);
  for (let i = 0; i < 5; i++) await s.databases.create(w, { name: `page_${i}` });
  const seen: string[] = [];
  let after = null;
  for (let i = 0; i < 10; i++) {
    const page = await s.databases.list(w, { after, limit: 2 });
    seen.push(...page.items.map((d) => d.name));
    if (!page.next_cursor) break;
    after = JSON.parse(Buffer.from(page.next_cursor, 'base64url').toString()) as [number, string];
    after = { ts: after[0], id: after[1] };
  }
  assert.deepEqual(seen.sort(), ['page_0', 'page_1', 'page_2', 'page_3', 'page_4']);
});

test('connection info names the pooler and the owner, never a password', async () => {
  const w = callerFor(acme);
  const d = await s.databases.create(w, { name: 'conn_db' });
  const c = await s.databases.connection(w, 'conn_db');
  // Its name on the node (generated, ADR 0039), never the label.
  const physical = physicalName(d);
  assert.match(physical, /^bulwark_db_p_[0-9a-f]{16}$/);
  assert.deepEqual(c, {
    host: '127.0.0.1',
    port: 6432,
    user: `${physical}_owner`,
    database: physical,
    sslmode: 'require',
    uri: `postgresql://${physical}_owner@127.0.0.1:6432/${physical}?sslmode=require`,
  });
});

test('allowlist: validated, de-duplicated, bounded, expiry in the future; expired entries are not shown', async () => {
  const w = callerFor(acme);
  await s.databases.create(w, { name: 'allow_db' });
  const soon = new Date(Date.now() + 3_600_000).toISOString();
  const later = new Date(Date.now() + 7_200_000).toISOString();
  const entries = await s.databases.putAllowlist(w, 'allow_db', [
    { cidr: '203.0.113.7/32', expires_at: soon, note: 'laptop' },
    { cidr: '203.0.113.7/32', expires_at: later },
    { cidr: '2001:DB8::/32' },
  ]);
  assert.deepEqual(entries, [
    { cidr: '203.0.113.7/32', expires_at: later, note: null },
    { cidr: '2001:db8::/32', expires_at: null, note: null },
  ]);
  const job = await s.db.pool.query(
    "SELECT payload FROM jobs WHERE kind = 'database.allowlist' AND payload->>'name' = 'allow_db'",
  );
  assert.deepEqual(job.rows[0].payload.allowlist, [
    { cidr: '203.0.113.7/32', expires_at: later },
    { cidr: '2001:db8::/32', expires_at: null },
  ]);
  for (const bad of [
    [{ cidr: '300.1.1.1/32' }],
    [{ cidr: '10.0.0.0/33' }],
    [{ cidr: '10.0.0.1' }],
    [{ cidr: '10.0.0.0/8', expires_at: new Date(Date.now() - 1000).toISOString() }],
  ]) {
    assert.equal(await status(s.databases.putAllowlist(w, 'allow_db', bad)), 400, JSON.stringify(bad));
  }
  await s.db.pool.query(
    `UPDATE databases SET allowlist = jsonb_set(allowlist, '{0,expires_at}', to_jsonb((now() - interval '1 minute')::text))
      WHERE name = 'allow_db'`,
  );
  assert.deepEqual(
    (await s.databases.getAllowlist(w, 'allow_db')).map((e) => e.cidr),
    ['2001:db8::/32'],
  );
});

test('per-entry allowlist edits: expired entries count as missing and are left to the sweeper; only live databases', async () => {
  const w = callerFor(acme);
  await s.databases.create(w, { name: 'entry_db' });
  await s.databases.putAllowlist(w, 'entry_db', [{ cidr: '203.0.113.1/32' }, { cidr: '203.0.113.2/32' }]);
  await s.db.pool.query(
    `UPDATE databases SET allowlist = jsonb_set(allowlist, '{0,expires_at}', to_jsonb((now() - interval '1 minute')::text))
      WHERE name = 'entry_db'`,
  );
  assert.equal(await status(s.databases.removeAllowlistEntry(w, 'entry_db', '203.0.113.1/32')), 404);
  const added = await s.databases.addAllowlistEntry(w, 'entry_db', { cidr: '2001:DB8::/32', note: 'v6' });
  assert.deepEqual(added, [
    { cidr: '203.0.113.2/32', expires_at: null, note: null },
    { cidr: '2001:db8::/32', expires_at: null, note: 'v6' },
  ]);
  const stored = await s.db.pool.query("SELECT allowlist FROM databases WHERE name = 'entry_db'");
  assert.deepEqual(
    stored.rows[0].allowlist.map((e: { cidr: string }) => e.cidr),
    ['203.0.113.2/32', '2001:db8::/32', '203.0.113.1/32'],
    'the expired entry stays in the row for the sweeper, which records its expiry',
  );
  const jobs = async () =>
    (await s.db.pool.query("SELECT count(*)::int AS n FROM jobs WHERE kind = 'database.allowlist'")).rows[0]
      .n;
  const before = await jobs();
  await s.databases.addAllowlistEntry(w, 'entry_db', { cidr: '2001:0db8::/32', note: 'v6' });
  assert.equal(await jobs(), before, 'the same entry (another spelling) added again changes nothing');
  // An entry stored in an older, non-canonical spelling is still found by its canonical one.
  await s.db.pool.query(
    `UPDATE databases SET allowlist = allowlist || '[{"cidr": "10.0.0.1/8", "expires_at": null, "note": null}]'::jsonb
      WHERE name = 'entry_db'`,
  );
  const left = await s.databases.removeAllowlistEntry(w, 'entry_db', '10.0.0.0/8');
  assert.ok(!left.some((e) => e.cidr.startsWith('10.')), JSON.stringify(left));
  assert.equal(
    await status(s.databases.addAllowlistEntry(callerFor(other), 'entry_db', { cidr: '10.0.0.0/8' })),
    404,
  );
  assert.equal(
    await status(s.databases.addAllowlistEntry(callerFor(acme, 'read'), 'entry_db', { cidr: '10.0.0.0/8' })),
    403,
  );
  await s.databases.remove(w, 'entry_db', 'entry_db');
  assert.equal(await status(s.databases.addAllowlistEntry(w, 'entry_db', { cidr: '10.0.0.0/8' })), 409);
  assert.equal(await status(s.databases.removeAllowlistEntry(w, 'entry_db', '203.0.113.2/32')), 409);
});

test('delete needs the name repeated; a failed, then finished, delete frees the name', async () => {
  const w = callerFor(acme);
  const d = await s.databases.create(w, { name: 'gone_db', node: 'n2' });
  assert.equal(await status(s.databases.remove(w, 'gone_db', 'gone')), 400);
  assert.equal((await s.databases.get(w, 'gone_db')).status, 'provisioning');
  const deleting = await s.databases.remove(w, 'gone_db', 'gone_db');
  assert.equal(deleting.status, 'deleting');
  assert.equal((await s.databases.remove(w, 'gone_db', 'gone_db')).status, 'deleting', 'idempotent');
  assert.equal(
    await count("jobs WHERE kind = 'database.delete' AND payload->>'database_id' = $1", [d.id]),
    1,
  );

  // n2 runs its queue: the create (succeeds, but the database is already being deleted), then the delete.
  for (let i = 0; i < 20; i++) {
    const job = await n2.poll();
    if (!job) break;
    if (job.kind === 'database.delete' && job.payload.database_id === d.id) {
      assert.equal(await n2.complete(job.id, job.attempt, { dropped: true }), 200);
    } else {
      assert.equal(await n2.complete(job.id, job.attempt, {}), 200);
    }
  }
  assert.equal(await status(s.databases.get(w, 'gone_db')), 404);
  const row = (
    await s.db.pool.query('SELECT status, password_sealed, deleted_at FROM databases WHERE id = $1', [d.id])
  ).rows[0];
  assert.equal(row.status, 'deleted');
  assert.equal(row.password_sealed, null, 'the sealed password goes with the database');
  assert.ok(row.deleted_at);
  const again = await s.databases.create(w, { name: 'gone_db', node: 'n2' });
  assert.equal(again.status, 'provisioning');
});

test('server config: default allowlist and pooler address come from the environment, validated', () => {
  const base = {
    BULWARK_DATABASE_URL: 'postgres://bulwark_server:s3cr3t-Long-Value@127.0.0.1:5433/bulwark',
    BULWARK_SERVER_DATA_DIR: '/var/lib/bulwark/server',
  };
  const dflt = loadServerConfig({ env: base });
  assert.ok(dflt.ok);
  if (dflt.ok) {
    assert.deepEqual(dflt.config.defaultAllowlist, ['127.0.0.1/32', '::1/128']);
    assert.equal(dflt.config.poolerPort, 6432);
    assert.equal(dflt.config.masterKeyFile, undefined);
  }
  const set = loadServerConfig({
    env: {
      ...base,
      BULWARK_DEFAULT_ALLOWLIST: '10.0.0.0/8, 2001:db8::/32',
      BULWARK_POOLER_PUBLIC_HOST: 'db.example.com',
      BULWARK_POOLER_SSLMODE: 'require',
      BULWARK_MASTER_KEY_FILE: '/etc/bulwark/keyring.json',
    },
  });
  assert.ok(set.ok);
  if (set.ok) assert.deepEqual(set.config.defaultAllowlist, ['10.0.0.0/8', '2001:db8::/32']);
  const bad = loadServerConfig({
    env: { ...base, BULWARK_DEFAULT_ALLOWLIST: '10.0.0.0/8,not-a-cidr', BULWARK_POOLER_SSLMODE: 'maybe' },
  });
  assert.equal(bad.ok, false);
  if (!bad.ok)
    assert.match(
      bad.errors.join('\n'),
      /defaultAllowlist\.1[\s\S]*poolerSslmode|poolerSslmode[\s\S]*defaultAllowlist/,
    );
});
