// Webhooks end to end on a real server and control database, with real HTTP receivers on
// 127.0.0.2 (allowed by BULWARK_WEBHOOK_ALLOWED_HOSTS): the routes and who may use them, events
// delivered from committed audit events, the signature checked with the snippet of docs/api.md,
// no secret in any payload, rotation, retries ending dead, redeliver, auto-disable.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { pathToFileURL } from 'node:url';
import { insertOutboxEvent } from '../src/server/modules/requests/requests.deliveries.repo.ts';
import { backoffMs } from '../src/server/modules/webhooks/webhooks.worker.ts';
import { createAccount, enrollFakeAgent } from './helpers/databases.ts';
import { createTestKey, type TestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { createTestUser, signIn } from './helpers/session-users.ts';
import { waitFor } from './helpers/wait.ts';
import { type Receiver, startReceiver } from './helpers/webhook-receiver.ts';

type Verify = (rawBody: string, header: string, secret: string, toleranceS?: number) => boolean;

let s: TestServer;
let admin: TestKey;
let receiver: Receiver;
let verify: Verify;
const tmp = mkdtempSync(path.join(tmpdir(), 'bulwark-webhooks-'));

/** The verification snippet, exactly as docs/api.md shows it. */
async function loadSnippet(): Promise<Verify> {
  const doc = readFileSync(new URL('../docs/api.md', import.meta.url), 'utf8');
  const m = /<!-- webhook-verify:start -->\s*```js\n([\s\S]*?)```\s*<!-- webhook-verify:end -->/.exec(doc);
  assert.ok(m, 'docs/api.md has the verification snippet between its markers');
  const file = path.join(tmp, 'verify.mjs');
  writeFileSync(file, m[1]!);
  const mod = (await import(pathToFileURL(file).href)) as { verifyBulwarkSignature: Verify };
  return mod.verifyBulwarkSignature;
}

before(async () => {
  s = await createTestServer({
    webhookAllowedHosts: ['127.0.0.2'],
    webhookRetryBaseMs: 50,
    webhookRetryMaxMs: 200,
    webhookMaxAttempts: 4,
    webhookDisableAfterSeconds: 2,
    webhookTimeoutMs: 3_000,
    webhookPollMs: 100,
  });
  await s.keyAuth.listenerReady();
  admin = await createTestKey(s, { account: 'acme' });
  receiver = await startReceiver('127.0.0.2');
  verify = await loadSnippet();
});
after(async () => {
  await receiver?.close();
  await s?.stop();
  rmSync(tmp, { recursive: true, force: true });
});

// biome-ignore lint/suspicious/noExplicitAny: JSON answers read field by field
type Json = Record<string, any>;

async function call(
  method: 'GET' | 'POST' | 'PATCH' | 'DELETE',
  url: string,
  headers: object,
  payload?: object,
) {
  return s.app.inject({
    method,
    url,
    headers: headers as Record<string, string>,
    ...(payload ? { payload } : {}),
  });
}

async function createHook(body: object, headers: object = admin.headers): Promise<Json> {
  const r = await call('POST', '/v1/webhooks', headers, body);
  assert.equal(r.statusCode, 201, r.body);
  return r.json();
}

async function getDelivery(hookId: string, deliveryId: string): Promise<Json> {
  const r = await call('GET', `/v1/webhooks/${hookId}/deliveries/${deliveryId}`, admin.headers);
  assert.equal(r.statusCode, 200, r.body);
  return r.json();
}

async function waitDelivery(hookId: string, deliveryId: string, status: string, timeoutMs = 15_000) {
  return waitFor(
    `delivery ${deliveryId} ${status}`,
    async () => {
      const d = await getDelivery(hookId, deliveryId);
      return d.status === status ? d : null;
    },
    { timeoutMs, everyMs: 50 },
  );
}

test('create shows the secret once; list, show, patch, delete; bounds; another account sees 404', async () => {
  const made = await createHook({
    url: receiver.url('/crud'),
    events: ['database.*', 'key.created'],
    description: 'ops',
  });
  assert.match(made.secret, /^whsec_[A-Za-z0-9_-]{43}$/);
  assert.equal(made.secret_hint, made.secret.slice(-4));
  assert.equal(made.enabled, true);
  assert.equal(made.last_delivery, null);
  const stored = await s.db.pool.query('SELECT * FROM webhooks WHERE id = $1', [made.id]);
  assert.ok(!JSON.stringify(stored.rows).includes(made.secret.slice(6)), 'the secret is stored sealed');

  const shown = await call('GET', `/v1/webhooks/${made.id}`, admin.headers);
  assert.equal(shown.statusCode, 200);
  assert.equal(shown.json().secret, undefined);
  const listed = (await call('GET', '/v1/webhooks', admin.headers)).json();
  assert.ok(listed.items.some((w: Json) => w.id === made.id));

  const patched = await call('PATCH', `/v1/webhooks/${made.id}`, admin.headers, {
    events: ['*'],
    description: null,
  });
  assert.equal(patched.statusCode, 200, patched.body);
  assert.deepEqual(patched.json().events, ['*']);
  assert.equal(patched.json().description, null);

  for (const bad of [
    { url: receiver.url(), events: ['nope.created'] },
    { url: receiver.url(), events: [] },
    { url: receiver.url(), events: Array.from({ length: 65 }, () => '*') },
    { url: `${receiver.url()}?${'a'.repeat(2050)}`, events: ['*'] },
    { url: receiver.url(), events: ['*'], description: 'x'.repeat(501) },
    { url: receiver.url(), events: ['*'], extra: 1 },
  ]) {
    const r = await call('POST', '/v1/webhooks', admin.headers, bad);
    assert.equal(r.statusCode, 400, `${JSON.stringify(bad).slice(0, 80)}: ${r.body}`);
  }
  const types = (await call('GET', '/v1/webhooks/event-types', admin.headers)).json();
  for (const t of [
    'database.created',
    'database.ready',
    'credentials.rotated',
    'request.pending',
    'request.approved',
    'backup.failed',
    'backup.stale',
    'break_glass.used',
  ])
    assert.ok(
      types.items.some((i: Json) => i.type === t),
      t,
    );

  // Another account: every route on this webhook is a 404, the same answer as a missing one.
  const stranger = await createTestKey(s, { account: 'other' });
  for (const [method, url, body] of [
    ['GET', `/v1/webhooks/${made.id}`],
    ['PATCH', `/v1/webhooks/${made.id}`, { enabled: false }],
    ['POST', `/v1/webhooks/${made.id}/rotate-secret`, {}],
    ['POST', `/v1/webhooks/${made.id}/test`],
    ['GET', `/v1/webhooks/${made.id}/deliveries`],
    ['DELETE', `/v1/webhooks/${made.id}`],
  ] as const) {
    const r = await call(method, url, stranger.headers, body);
    assert.equal(r.statusCode, 404, `${method} ${url}: ${r.body}`);
  }
  assert.ok(
    !(await call('GET', '/v1/webhooks', stranger.headers)).json().items.some((w: Json) => w.id === made.id),
  );

  assert.equal((await call('DELETE', `/v1/webhooks/${made.id}`, admin.headers)).statusCode, 204);
  assert.equal((await call('GET', `/v1/webhooks/${made.id}`, admin.headers)).statusCode, 404);
});

test('who may: owners and admins manage, members and write keys read, viewers and read keys neither', async () => {
  const acme = admin.accountId;
  const person = async (role: 'owner' | 'admin' | 'member' | 'viewer') =>
    (
      await signIn(
        s,
        await createTestUser(s, { username: `wh-${role}`, memberships: [{ accountId: acme, role }] }),
      )
    ).headers;
  const hook = await createHook({ url: receiver.url('/who'), events: ['key.*'] });
  const cases: [string, object, boolean, boolean][] = [
    ['owner', await person('owner'), true, true],
    ['admin', await person('admin'), true, true],
    ['member', await person('member'), true, false],
    ['viewer', await person('viewer'), false, false],
    ['write key', (await createTestKey(s, { account: 'acme', level: 'write' })).headers, true, false],
    ['read key', (await createTestKey(s, { account: 'acme', level: 'read' })).headers, false, false],
  ];
  for (const [who, headers, read, manage] of cases) {
    const r = await call('GET', `/v1/webhooks/${hook.id}`, headers);
    assert.equal(r.statusCode, read ? 200 : 403, `${who} read: ${r.body}`);
    const p = await call('PATCH', `/v1/webhooks/${hook.id}`, headers, { description: who });
    assert.equal(p.statusCode, manage ? 200 : 403, `${who} manage: ${p.body}`);
  }
  await call('DELETE', `/v1/webhooks/${hook.id}`, admin.headers);
});

test('events are delivered signed; the documented snippet verifies them; no secret in any payload', async () => {
  const hook = await createHook({ url: receiver.url('/all'), events: ['*'] });
  const before = receiver.received.length;
  // An API key created through the API: its key.created event must not carry the key.
  const made = await call('POST', '/v1/keys', admin.headers, { name: 'webhook probe', level: 'read' });
  assert.equal(made.statusCode, 201, made.body);
  const token = made.json().key as string;
  const got = await waitFor(
    'the key.created delivery',
    () => receiver.received.slice(before).find((r) => r.headers['bulwark-event'] === 'key.created'),
    { timeoutMs: 15_000 },
  );
  assert.equal(got.headers['content-type'], 'application/json');
  assert.match(String(got.headers['user-agent']), /^Bulwark-Webhooks\//);
  const body = JSON.parse(got.body);
  assert.equal(body.type, 'key.created');
  assert.match(body.id, /^evt_a\d+$/);
  assert.equal(body.account_id, admin.accountId);
  assert.equal(body.data.target.id, made.json().id);
  assert.ok(!got.body.includes(token) && !got.body.includes(token.slice(4)), 'the key is not in the payload');

  const header = String(got.headers['bulwark-signature']);
  assert.match(header, /^t=\d+,v1=[0-9a-f]{64}$/);
  assert.equal(verify(got.body, header, hook.secret), true, 'valid signature passes');
  assert.equal(verify(got.body, header, 'whsec_wrong'), false, 'a wrong secret fails');
  assert.equal(verify(`${got.body} `, header, hook.secret), false, 'a changed body fails');
  const old = Math.floor(Date.now() / 1000) - 600;
  const stale = `t=${old},v1=${createHmac('sha256', hook.secret).update(`${old}.${got.body}`).digest('hex')}`;
  assert.equal(verify(got.body, stale, hook.secret), false, 'a stale timestamp fails');

  // The delivery log has it, with the exact body sent.
  const id = String(got.headers['bulwark-delivery']);
  const d = await waitDelivery(hook.id, id, 'succeeded');
  assert.equal(d.payload, got.body);
  assert.equal(d.last_status_code, 200);
  assert.equal(d.attempts, 1);

  // A database: its password (handed to the node for the job) never reaches a payload.
  const agent = await enrollFakeAgent(s, 'webhook-node');
  const created = await call('POST', '/v1/databases', admin.headers, { name: 'hookdb' });
  assert.equal(created.statusCode, 202, created.body);
  const job = await waitFor('the create job', () => agent.poll());
  const secret = await agent.secret(job.id, job.attempt);
  assert.equal(secret.status, 200);
  assert.equal(await agent.complete(job.id, job.attempt, {}), 200);
  const ready = await waitFor(
    'the database.ready delivery',
    () => receiver.received.find((r) => r.headers['bulwark-event'] === 'database.ready'),
    { timeoutMs: 15_000 },
  );
  assert.equal(JSON.parse(ready.body).data.details.name, 'hookdb');
  assert.ok(receiver.received.some((r) => r.headers['bulwark-event'] === 'database.created'));
  for (const r of receiver.received) {
    assert.ok(!r.body.includes(secret.password!), 'no database password in any payload');
    assert.ok(!r.body.includes(token.slice(4)), 'no API key in any payload');
  }
  // SQL in payloads is redacted: a governed request's literals never leave.
  const req = await call('POST', '/v1/databases/hookdb/requests', admin.headers, {
    sql: "UPDATE accounts_t SET note = 'hunter2-literal' WHERE id = 4242",
    reason: 'webhook redaction',
  });
  assert.equal(req.statusCode, 201, req.body);
  const reqEvent = await waitFor(
    'a request event',
    () => receiver.received.find((r) => String(r.headers['bulwark-event']).startsWith('request.')),
    { timeoutMs: 15_000 },
  );
  assert.ok(!reqEvent.body.includes('hunter2-literal') && !reqEvent.body.includes('4242'), reqEvent.body);
  assert.match(JSON.parse(reqEvent.body).data.details.sql, /\?/);
  await call('DELETE', `/v1/webhooks/${hook.id}`, admin.headers);
});

test('rotation: both secrets sign during the overlap; without one only the new', async () => {
  const hook = await createHook({ url: receiver.url('/rotate'), events: ['webhook.test'] });
  const rotated = await call('POST', `/v1/webhooks/${hook.id}/rotate-secret`, admin.headers, {
    overlap_s: 3600,
  });
  assert.equal(rotated.statusCode, 200, rotated.body);
  const next = rotated.json();
  assert.notEqual(next.secret, hook.secret);
  assert.ok(next.previous_secret_expires_at);
  const t = await call('POST', `/v1/webhooks/${hook.id}/test`, admin.headers);
  assert.equal(t.statusCode, 202, t.body);
  const got = await waitFor('the test delivery', () =>
    receiver.received.find((r) => r.headers['bulwark-delivery'] === t.json().delivery_id),
  );
  const header = String(got.headers['bulwark-signature']);
  assert.match(header, /^t=\d+,v1=[0-9a-f]{64},v1=[0-9a-f]{64}$/);
  assert.equal(verify(got.body, header, next.secret), true, 'the new secret verifies');
  assert.equal(verify(got.body, header, hook.secret), true, 'the old secret verifies during the overlap');

  const again = (
    await call('POST', `/v1/webhooks/${hook.id}/rotate-secret`, admin.headers, { overlap_s: 0 })
  ).json();
  assert.equal(again.previous_secret_expires_at, null);
  const t2 = (await call('POST', `/v1/webhooks/${hook.id}/test`, admin.headers)).json();
  const got2 = await waitFor('the second test delivery', () =>
    receiver.received.find((r) => r.headers['bulwark-delivery'] === t2.delivery_id),
  );
  assert.match(String(got2.headers['bulwark-signature']), /^t=\d+,v1=[0-9a-f]{64}$/);
  assert.equal(verify(got2.body, String(got2.headers['bulwark-signature']), again.secret), true);
  assert.equal(verify(got2.body, String(got2.headers['bulwark-signature']), next.secret), false);
  await call('DELETE', `/v1/webhooks/${hook.id}`, admin.headers);
});

test('backoff: the ceiling doubles per attempt up to the cap; the wait is random below it', () => {
  const top = () => 0.999_999;
  assert.deepEqual(
    [1, 2, 3, 4, 5, 6].map((n) => backoffMs(n, 100, 1_000, top)),
    [99, 199, 399, 799, 999, 999],
  );
  assert.equal(
    backoffMs(3, 100, 1_000, () => 0),
    0,
  );
});

test('failures are retried until dead (same delivery id), a redirect is not followed, redeliver sends again', async () => {
  const failing = await startReceiver('127.0.0.2');
  try {
    failing.answerWith(() => 500);
    const hook = await createHook({ url: failing.url('/fail'), events: ['webhook.test'] });
    const t = (await call('POST', `/v1/webhooks/${hook.id}/test`, admin.headers)).json();
    const dead = await waitDelivery(hook.id, t.delivery_id, 'dead');
    assert.equal(dead.attempts, 4);
    assert.equal(dead.max_attempts, 4);
    assert.equal(dead.last_status_code, 500);
    assert.equal(dead.response_body.length, 1024, 'the first 1 KB of the answer is kept');
    assert.equal(dead.next_attempt_at, null);
    const tries = failing.received.filter((r) => r.headers['bulwark-delivery'] === t.delivery_id);
    assert.equal(tries.length, 4, 'every attempt reached the receiver with the same delivery id');
    assert.ok(
      tries.every((r) => r.body === tries[0]!.body),
      'the same body each time',
    );

    const listed = (
      await call('GET', `/v1/webhooks/${hook.id}/deliveries?status=dead`, admin.headers)
    ).json();
    assert.ok(listed.items.some((d: Json) => d.id === t.delivery_id));
    assert.equal(listed.items[0].payload, undefined, 'the list leaves the body out');

    // A redirect is a failure, never followed.
    failing.answerWith(() => 302);
    const r = (await call('POST', `/v1/webhooks/${hook.id}/test`, admin.headers)).json();
    const redirected = await waitFor('a redirect failure', async () => {
      const d = await getDelivery(hook.id, r.delivery_id);
      return d.attempts >= 1 && d.status !== 'pending' ? d : null;
    });
    assert.equal(redirected.last_status_code, 302);
    assert.match(redirected.last_error, /redirect/);

    failing.answerWith(() => 204);
    const again = await call(
      'POST',
      `/v1/webhooks/${hook.id}/deliveries/${t.delivery_id}/redeliver`,
      admin.headers,
    );
    assert.equal(again.statusCode, 202, again.body);
    const ok = await waitDelivery(hook.id, again.json().delivery_id, 'succeeded');
    assert.equal(ok.event_id, dead.event_id);
    assert.equal(ok.payload, dead.payload);
    const shown = (await call('GET', `/v1/webhooks/${hook.id}`, admin.headers)).json();
    assert.equal(shown.last_delivery.status, 'succeeded');
    assert.equal(shown.consecutive_failures, 0);
    await call('DELETE', `/v1/webhooks/${hook.id}`, admin.headers);
  } finally {
    await failing.close();
  }
});

test('a webhook failing continuously past the period is disabled and audited; re-enabling clears it', async () => {
  const failing = await startReceiver('127.0.0.2');
  try {
    failing.answerWith(() => 503);
    const hook = await createHook({ url: failing.url('/down'), events: ['webhook.test'] });
    const disabled = await waitFor(
      'the webhook disabled',
      async () => {
        await call('POST', `/v1/webhooks/${hook.id}/test`, admin.headers);
        await new Promise((r) => setTimeout(r, 300));
        const w = (await call('GET', `/v1/webhooks/${hook.id}`, admin.headers)).json();
        return w.enabled ? null : w;
      },
      { timeoutMs: 20_000, everyMs: 10 },
    );
    assert.match(disabled.disabled_reason, /failed since/);
    assert.ok(disabled.consecutive_failures >= 2);
    const audited = await s.db.pool.query(
      `SELECT outcome FROM audit_events WHERE action = 'webhook.disabled' AND target_id = $1`,
      [hook.id],
    );
    assert.equal(audited.rowCount, 1);
    const enabled = await call('PATCH', `/v1/webhooks/${hook.id}`, admin.headers, { enabled: true });
    assert.equal(enabled.statusCode, 200);
    assert.equal(enabled.json().enabled, true);
    assert.equal(enabled.json().disabled_reason, null);
    assert.equal(enabled.json().consecutive_failures, 0);
    await call('DELETE', `/v1/webhooks/${hook.id}`, admin.headers);
  } finally {
    await failing.close();
  }
});

test('at most the configured number of webhooks per account', async () => {
  const acct = await createAccount(s, 'manyhooks');
  void acct;
  const key = await createTestKey(s, { account: 'manyhooks' });
  for (let i = 0; i < 25; i++) await createHook({ url: receiver.url(`/n${i}`), events: ['*'] }, key.headers);
  const r = await call('POST', '/v1/webhooks', key.headers, { url: receiver.url('/n25'), events: ['*'] });
  assert.equal(r.statusCode, 409, r.body);
});

test('deleting webhooks while their deliveries are being recorded never deadlocks', async () => {
  const failing = await startReceiver('127.0.0.2');
  try {
    failing.answerWith(() => 500);
    for (let round = 0; round < 3; round++) {
      const hooks = await Promise.all(
        Array.from({ length: 4 }, (_, i) =>
          createHook({ url: failing.url(`/gone${round}-${i}`), events: ['webhook.test'] }),
        ),
      );
      for (const h of hooks)
        for (let i = 0; i < 3; i++) await call('POST', `/v1/webhooks/${h.id}/test`, admin.headers);
      // Attempts are in flight (or being recorded) now: delete them all at once.
      await waitFor('attempts under way', () => failing.received.length > round * 12);
      const deleted = await Promise.all(
        hooks.map((h) => call('DELETE', `/v1/webhooks/${h.id}`, admin.headers)),
      );
      assert.deepEqual(
        deleted.map((r) => r.statusCode),
        [204, 204, 204, 204],
        deleted.map((r) => r.body).join(' '),
      );
    }
  } finally {
    await failing.close();
  }
});

test('finished deliveries past the retention are pruned; pending ones, recent ones and redelivered originals stay', async () => {
  const hook = await createHook({ url: receiver.url('/retention'), events: ['webhook.test'] });
  const send = async () =>
    (await call('POST', `/v1/webhooks/${hook.id}/test`, admin.headers)).json().delivery_id;
  const [old, original, recent] = [await send(), await send(), await send()];
  for (const id of [old, original, recent]) await waitDelivery(hook.id, id, 'succeeded');
  const again = await call('POST', `/v1/webhooks/${hook.id}/deliveries/${original}/redeliver`, admin.headers);
  assert.equal(again.statusCode, 202, again.body);
  const redelivered = again.json().delivery_id;
  await waitDelivery(hook.id, redelivered, 'succeeded');
  // Made pending again after its attempt (due in an hour: the worker leaves it alone).
  const pending = await send();
  await waitDelivery(hook.id, pending, 'succeeded');
  const age = (ids: string[], days: number) =>
    s.db.pool.query(
      `UPDATE webhook_deliveries SET created_at = now() - $2::int * interval '1 day',
              status = CASE WHEN id = $3 THEN 'pending' ELSE status END,
              next_attempt_at = CASE WHEN id = $3 THEN now() + interval '1 hour' ELSE next_attempt_at END
        WHERE id = ANY($1::uuid[])`,
      [ids, days, pending],
    );
  await age([old, original, pending], s.config.webhookDeliveryRetentionDays + 1);
  await age([recent, redelivered], s.config.webhookDeliveryRetentionDays - 1);
  assert.equal(await s.webhooks.prune(), 1, 'only the old finished delivery nothing refers to');
  assert.equal(
    (await call('GET', `/v1/webhooks/${hook.id}/deliveries/${old}`, admin.headers)).statusCode,
    404,
  );
  for (const id of [original, recent, redelivered, pending]) await getDelivery(hook.id, id);
  // Once its redelivery is past the retention too, both go (the redelivery first, then the original).
  await age([redelivered], s.config.webhookDeliveryRetentionDays + 1);
  assert.equal(await s.webhooks.prune(), 1);
  assert.equal(await s.webhooks.prune(), 1);
  for (const id of [original, redelivered])
    assert.equal(
      (await call('GET', `/v1/webhooks/${hook.id}/deliveries/${id}`, admin.headers)).statusCode,
      404,
    );
  for (const id of [recent, pending]) await getDelivery(hook.id, id);
  await call('DELETE', `/v1/webhooks/${hook.id}`, admin.headers);
});

test('an event_outbox alert is delivered once with a stable id, and the row is marked taken', async () => {
  const hook = await createHook({ url: receiver.url('/outbox'), events: ['backup.*', 'break_glass.used'] });
  const id = await insertOutboxEvent(s.db.pool, {
    accountId: admin.accountId,
    kind: 'request.break_glass',
    payload: { request_id: 'r1', reason: 'outage', sql: "DELETE FROM t WHERE note = 'private-literal'" },
  });
  const got = await waitFor('the break_glass.used delivery', () =>
    receiver.received.find((r) => r.headers['bulwark-event'] === 'break_glass.used'),
  );
  const body = JSON.parse(got.body);
  assert.equal(body.id, `evt_o${id}`);
  assert.equal(body.data.reason, 'outage');
  assert.ok(!got.body.includes('private-literal'), 'SQL in an outbox payload is redacted too');
  const row = await s.db.pool.query('SELECT delivered_at FROM event_outbox WHERE id = $1', [id]);
  assert.ok(row.rows[0].delivered_at, 'the outbox row is marked taken');
  // Another account's alert never reaches this account's webhook.
  const other = await createTestKey(s, { account: 'outbox-other' });
  await insertOutboxEvent(s.db.pool, {
    accountId: other.accountId,
    kind: 'backup.stale',
    payload: { database: 'x' },
  });
  await s.webhooks.dispatcher.flush();
  await s.webhooks.worker.runOnce();
  assert.equal(receiver.received.filter((r) => r.headers['bulwark-event'] === 'backup.stale').length, 0);
  assert.equal(receiver.received.filter((r) => r.headers['bulwark-event'] === 'break_glass.used').length, 1);
  await call('DELETE', `/v1/webhooks/${hook.id}`, admin.headers);
});
