// The audit log's filters, as the dashboard uses them: actor, action, target, outcome and a time
// range, on the listing and on the export alike, bounded; another account's events never match.
// A fully wired server and its real audit chain.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { parseExport, verifyExport } from '../src/server/modules/audit/audit.export.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { waitFor } from './helpers/wait.ts';

let s: TestServer;
let admin: TestKey;
let other: TestKey;
let middle: string;
const ALICE = '11111111-1111-4111-8111-111111111111';
const BOB = '22222222-2222-4222-8222-222222222222';

before(async () => {
  s = await createTestServer();
  admin = await createTestKey(s, { account: 'acme' });
  other = await createTestKey(s, { account: 'other' });
  const rec = (e: {
    action: string;
    actorId: string;
    targetId: string;
    outcome?: 'success' | 'failure' | 'denied';
  }) => s.audit.recordNow({ actorType: 'user', accountId: admin.accountId, targetType: 'database', ...e });
  await rec({ action: 'f.created', actorId: ALICE, targetId: 'db-1' });
  await rec({ action: 'f.created', actorId: BOB, targetId: 'db-2' });
  await new Promise((r) => setTimeout(r, 20));
  middle = new Date().toISOString();
  await new Promise((r) => setTimeout(r, 20));
  await rec({ action: 'f.deleted', actorId: ALICE, targetId: 'db-1', outcome: 'failure' });
  await rec({ action: 'f.deleted', actorId: BOB, targetId: 'db-2', outcome: 'denied' });
  // Another account's event that matches every filter: never shown to acme.
  await s.audit.recordNow({
    action: 'f.deleted',
    actorType: 'user',
    actorId: ALICE,
    accountId: other.accountId,
    targetType: 'database',
    targetId: 'db-1',
    outcome: 'failure',
  });
  await waitFor('the events chained', async () => {
    const r = await s.db.pool.query('SELECT 1 FROM audit_events WHERE seq IS NULL LIMIT 1');
    return r.rowCount === 0;
  });
});
after(() => s?.stop());

const list = async (qs: string, key = admin) => {
  const r = await s.app.inject({ url: `/v1/audit/events?${qs}`, headers: key.headers });
  assert.equal(r.statusCode, 200, r.body);
  return (r.json().items as { action: string; actor_id: string; target_id: string; outcome: string }[])
    .filter((e) => e.action.startsWith('f.'))
    .map((e) => `${e.action}:${e.actor_id === ALICE ? 'alice' : 'bob'}:${e.target_id}:${e.outcome}`);
};

test('the listing filters by actor, action, target, outcome and time, together', async () => {
  assert.deepEqual(await list(`actor=${ALICE}`), [
    'f.deleted:alice:db-1:failure',
    'f.created:alice:db-1:success',
  ]);
  assert.deepEqual(await list('action=f.created'), [
    'f.created:bob:db-2:success',
    'f.created:alice:db-1:success',
  ]);
  assert.deepEqual(await list('target=db-2'), ['f.deleted:bob:db-2:denied', 'f.created:bob:db-2:success']);
  assert.deepEqual(await list('outcome=denied'), ['f.deleted:bob:db-2:denied']);
  assert.deepEqual(await list(`since=${encodeURIComponent(middle)}&action=f.deleted`), [
    'f.deleted:bob:db-2:denied',
    'f.deleted:alice:db-1:failure',
  ]);
  assert.deepEqual(await list(`until=${encodeURIComponent(middle)}&actor=${BOB}`), [
    'f.created:bob:db-2:success',
  ]);
  assert.deepEqual(
    await list(`actor=${ALICE}&outcome=failure&target=db-1&since=${encodeURIComponent(middle)}`),
    ['f.deleted:alice:db-1:failure'],
  );
  // An inverted range matches nothing.
  assert.deepEqual(await list(`since=${encodeURIComponent(middle)}&until=2000-01-01T00:00:00Z`), []);
  // Another account's matching event never shows.
  assert.deepEqual(await list(`actor=${ALICE}&action=f.deleted`, other), ['f.deleted:alice:db-1:failure']);
  assert.deepEqual(await list('action=f.created', other), []);
});

test('filters are bounded and checked', async () => {
  for (const qs of [
    `actor=${'a'.repeat(201)}`,
    `action=${'a'.repeat(101)}`,
    `target=${'a'.repeat(201)}`,
    'outcome=maybe',
    'since=yesterday',
    `since=${'2026-01-01T00:00:00Z'.padEnd(41, '0')}`,
    'action=%0A',
  ]) {
    const r = await s.app.inject({ url: `/v1/audit/events?${qs}`, headers: admin.headers });
    assert.equal(r.statusCode, 400, `${qs.slice(0, 60)}: ${r.body.slice(0, 200)}`);
    const e = await s.app.inject({ url: `/v1/audit/export?${qs}`, headers: admin.headers });
    assert.equal(e.statusCode, 400, `export ${qs.slice(0, 60)}: ${e.body.slice(0, 200)}`);
  }
});

test('the export takes the same filters; what it keeps still verifies', async () => {
  const exp = await s.app.inject({
    url: `/v1/audit/export?actor=${ALICE}&since=${encodeURIComponent(middle)}`,
    headers: admin.headers,
  });
  assert.equal(exp.statusCode, 200, exp.body);
  const lines = exp.body.split('\n').filter(Boolean);
  const header = JSON.parse(lines[0]!);
  assert.equal(header.filter.actorId, ALICE);
  const events = lines.filter((l) => l.includes('"type":"event"'));
  assert.equal(events.length, 1, events.join('\n'));
  assert.match(events[0]!, /f\.deleted/);
  async function* linesOf() {
    yield* lines;
  }
  const verified = await verifyExport(await parseExport(linesOf()));
  assert.deepEqual([verified.ok, verified.events], [true, 1]);
  // Without filters: every chained event of the account (the four seeded, and more).
  const all = await s.app.inject({ url: '/v1/audit/export', headers: admin.headers });
  const allEvents = all.body.split('\n').filter((l) => l.includes('"type":"event"') && l.includes('f.'));
  assert.equal(allEvents.length, 4);
  assert.equal(JSON.parse(all.body.split('\n')[0]!).filter, undefined);
  // The filtered export was recorded with its filter.
  const recorded = await s.db.pool.query<{ details: { filter?: { actor?: string } } }>(
    "SELECT details FROM audit_events WHERE action = 'audit.exported' ORDER BY id",
  );
  assert.equal(recorded.rows[0]?.details.filter?.actor, ALICE);
});
