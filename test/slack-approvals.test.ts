// Slack approvals (issue 18): a new request is posted (redacted SQL, buttons carrying the id
// only) through a local receiver playing Slack's API; approvals from Slack by linked approvers go
// through the API's rules; unsigned, mis-signed, stale and oversized requests change nothing; the
// link codes are single use and expire. No Slack account: the tests sign what Slack would send.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';
import { slackSignature } from '../src/server/modules/slack/slack.signature.ts';
import { createAccount, enrollFakeAgent } from './helpers/databases.ts';
import { createTestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { waitFor } from './helpers/wait.ts';
import { api, auditOf, expectStatus, type Person, person, readyDatabase } from './requests-helpers.ts';
import {
  buttonPress,
  nowTs,
  postSigned,
  type SlackCall,
  slashCommand,
  startSlackReceiver,
} from './slack-helpers.ts';

const DB = 'ledger';
const TEAM = 'T0ACME';
const OTHER_TEAM = 'T0OTHER';
const SECRET = 'acmesigningsecret0123456789abcdef';
const OTHER_SECRET = 'othersigningsecret0123456789abcd';
const BOT = 'xoxb-acme-test-token';
const SQL =
  "CREATE TABLE audit_copy (id bigint PRIMARY KEY, note text DEFAULT 'hunter2-literal', n int DEFAULT 4242)";

let s: TestServer;
let slack: Awaited<ReturnType<typeof startSlackReceiver>>;
let acme: string;
let http: ReturnType<typeof api>;
let owner: Person;
let requester: Person;
let admin: Person;
let member: Person;
let scoped: Person;
let otherOwner: Person;

const linked = new Map<string, string>(); // person id → Slack user id

async function link(p: Person, slackUser: string, team = TEAM, secret = SECRET) {
  const code = expectStatus(await http.call('POST', '/v1/me/slack-link', p.headers), 200);
  const res = await postSigned(
    s,
    'commands',
    slashCommand({ team, user: slackUser, text: `link ${code.code}` }),
    {
      secret,
    },
  );
  assert.equal(res.statusCode, 200, res.body);
  assert.match(res.json().text, /^Linked/);
  linked.set(p.id, slackUser);
  return code.code as string;
}

const press = (
  who: string,
  action: string,
  value: string,
  o: { team?: string; userTeam?: string; secret?: string } = {},
) =>
  postSigned(
    s,
    'interactions',
    buttonPress({
      team: o.team ?? TEAM,
      user: who,
      action,
      value,
      ...(o.userTeam ? { userTeam: o.userTeam } : {}),
    }),
    { secret: o.secret ?? SECRET },
  );

async function newRequest(): Promise<string> {
  const body = expectStatus(
    await http.create(DB, requester.headers, { sql: SQL, reason: 'a copy for the auditors' }),
    201,
  );
  assert.equal(body.status, 'pending');
  return body.id as string;
}

const callsFor = (method: string, pred: (c: SlackCall) => boolean = () => true) =>
  slack.calls.filter((c) => c.method === method && pred(c));

before(async () => {
  slack = await startSlackReceiver();
  s = await createTestServer({ slackApiUrl: slack.url });
  acme = await createAccount(s, 'acme');
  const other = await createAccount(s, 'other');
  const agent = await enrollFakeAgent(s, 'n1');
  await readyDatabase(s, { id: randomUUID(), accountId: acme, nodeId: agent.nodeId, name: DB });
  await readyDatabase(s, { id: randomUUID(), accountId: acme, nodeId: agent.nodeId, name: 'elsewhere' });
  http = api(s);
  owner = await person(s, acme, 'owner', 'sl');
  requester = await person(s, acme, 'member', 'sl');
  admin = await person(s, acme, 'admin', 'sl');
  member = await person(s, acme, 'member', 'sl');
  scoped = await person(s, acme, 'member', 'sl-scoped');
  // A member granted another database only: this request's database does not exist for them.
  await s.db.pool.query(
    `INSERT INTO membership_databases (account_id, user_id, database_id)
     SELECT $1, $2, id FROM databases WHERE account_id = $1 AND name = 'elsewhere'`,
    [acme, scoped.id],
  );
  otherOwner = await person(s, other, 'owner', 'sl-other');
  const put = (p: Person, body: object) => http.call('PUT', '/v1/integrations/slack', p.headers, body);
  expectStatus(
    await put(owner, {
      enabled: true,
      team_id: TEAM,
      channel_id: 'C0APPROVALS',
      bot_token: BOT,
      signing_secret: SECRET,
    }),
    200,
  );
  expectStatus(
    await put(otherOwner, {
      enabled: true,
      team_id: OTHER_TEAM,
      channel_id: 'C0OTHER',
      bot_token: 'xoxb-other-test-token',
      signing_secret: OTHER_SECRET,
    }),
    200,
  );
  for (const [p, u] of [
    [requester, 'U0REQ'],
    [admin, 'U0ADMIN'],
    [member, 'U0MEMBER'],
    [scoped, 'U0SCOPED'],
  ] as const)
    await link(p, u);
  await link(otherOwner, 'U0OTHEROWNER', OTHER_TEAM, OTHER_SECRET);
});
after(async () => {
  await s?.stop();
  await slack?.close();
});

test('settings: secrets are write-only and sealed at rest; members cannot read or change them', async () => {
  const got = expectStatus(await http.call('GET', '/v1/integrations/slack', owner.headers), 200);
  assert.deepEqual(
    { ...got, updated_at: typeof got.updated_at },
    {
      enabled: true,
      team_id: TEAM,
      channel_id: 'C0APPROVALS',
      bot_token_set: true,
      signing_secret_set: true,
      updated_at: 'string',
    },
  );
  assert.ok(!JSON.stringify(got).includes(BOT) && !JSON.stringify(got).includes(SECRET));
  const row = await s.db.pool.query(
    'SELECT bot_token_sealed, signing_secret_sealed FROM slack_settings WHERE account_id = $1',
    [acme],
  );
  assert.ok(!JSON.stringify(row.rows).includes(BOT) && !JSON.stringify(row.rows).includes(SECRET));
  // One account per Slack workspace: another account cannot claim this team.
  expectStatus(await http.call('PUT', '/v1/integrations/slack', otherOwner.headers, { team_id: TEAM }), 409);
  expectStatus(await http.call('GET', '/v1/integrations/slack', member.headers), 403);
  expectStatus(await http.call('PUT', '/v1/integrations/slack', member.headers, { enabled: false }), 403);
  const audit = await s.db.pool.query(
    "SELECT details FROM audit_events WHERE action = 'slack.settings_changed'",
  );
  assert.ok(audit.rows.length >= 2);
  assert.ok(!JSON.stringify(audit.rows).includes(SECRET) && !JSON.stringify(audit.rows).includes(BOT));
});

test('a new request is posted with its SQL redacted and Approve/Reject buttons carrying its id', async () => {
  const id = await newRequest();
  const post = await waitFor('the request posted to Slack', () =>
    callsFor('chat.postMessage', (c) => JSON.stringify(c.body).includes(id)).at(0),
  );
  assert.equal(post.authorization, `Bearer ${BOT}`);
  assert.equal(post.body.channel, 'C0APPROVALS');
  const text = JSON.stringify(post.body);
  assert.ok(!text.includes('hunter2-literal') && !text.includes('4242'), 'no literal of the SQL leaves');
  assert.match(text, /CREATE TABLE audit_copy/);
  assert.match(text, /DEFAULT \?/);
  assert.match(text, /ddl/);
  assert.match(text, /2 approval\(s\), 1 by an owner or admin/);
  const blocks = post.body.blocks as { type: string; elements?: { action_id: string; value: string }[] }[];
  const actions = blocks.find((b) => b.type === 'actions')!.elements!;
  assert.deepEqual(
    actions.map((e) => [e.action_id, e.value]),
    [
      ['bulwark_approve', id],
      ['bulwark_reject', id],
    ],
  );
});

test('approvals from Slack count like the API; the requester, unlinked users and other workspaces are refused', async () => {
  const id = await newRequest();
  const counted = async () =>
    expectStatus(await http.get(DB, id, requester.headers), 200).approvals_counted as number;

  // The requester themselves: never self-approval.
  let res = await press('U0REQ', 'bulwark_approve', id);
  assert.equal(res.statusCode, 200);
  assert.match(res.json().text, /^Refused: A request cannot be approved by its requester/);
  // An unlinked Slack user: told to link, nothing approved.
  res = await press('U0NOBODY', 'bulwark_approve', id);
  assert.match(res.json().text, /not linked/);
  // A linked user of another workspace in a shared channel is nobody here.
  res = await press('U0OTHEROWNER', 'bulwark_approve', id, { userTeam: OTHER_TEAM });
  assert.match(res.json().text, /not linked/);
  // Another account's workspace (its own signed request): the request is not theirs (404).
  res = await press('U0OTHEROWNER', 'bulwark_approve', id, { team: OTHER_TEAM, secret: OTHER_SECRET });
  assert.match(res.json().text, /Request not found/);
  // A member whose grants do not include this database: not found for them either.
  res = await press('U0SCOPED', 'bulwark_approve', id);
  assert.match(res.json().text, /^Refused: request not found/);
  // Break-glass (or anything else crafted) is no action here.
  res = await press('U0ADMIN', 'bulwark_break_glass', id);
  assert.match(res.json().text, /break-glass is never possible from Slack/);
  assert.equal(await counted(), 0);

  // The unlinked user is told so in Slack, ephemerally.
  await waitFor('the ephemeral "link your account"', () =>
    callsFor('chat.postEphemeral', (c) => c.body.user === 'U0NOBODY').at(0),
  );

  // A linked admin, then a linked member: approved, through the same function (audited via slack).
  res = await press('U0ADMIN', 'bulwark_approve', id);
  assert.match(res.json().text, /Your approval counts \(1 of 2\)/);
  assert.equal(await counted(), 1);
  res = await press('U0MEMBER', 'bulwark_approve', id);
  assert.match(res.json().text, /^Approved/);
  const done = expectStatus(await http.get(DB, id, requester.headers), 200);
  assert.equal(done.status, 'approved');
  assert.deepEqual(
    (done.approvals as { user_id: string }[]).map((a) => a.user_id).sort(),
    [admin.id, member.id].sort(),
  );
  const events = await auditOf(s, 'request.approved', id);
  assert.equal(events.length, 2);
  assert.deepEqual(
    events.map((e) => [e.actor_type, e.actor_id, e.details.via]),
    [
      ['user', admin.id, 'slack'],
      ['user', member.id, 'slack'],
    ],
  );
  // The message is updated with the outcome, without buttons.
  const update = await waitFor('the message updated', () =>
    callsFor('chat.update', (c) => JSON.stringify(c.body).includes('*approved*')).at(-1),
  );
  assert.ok(!JSON.stringify(update.body).includes('bulwark_approve'));
  // An approved request is not approved again (it is no longer pending).
  res = await press('U0ADMIN', 'bulwark_approve', id);
  assert.match(res.json().text, /^Refused: The request is approved/);
  assert.equal((await auditOf(s, 'request.approved', id)).length, 2);
});

test('a suspended person or a removed member cannot approve from Slack', async () => {
  const id = await newRequest();
  await s.db.pool.query("UPDATE users SET status = 'suspended', suspended_at = now() WHERE id = $1", [
    member.id,
  ]);
  try {
    const res = await press('U0MEMBER', 'bulwark_approve', id);
    assert.match(res.json().text, /suspended/);
  } finally {
    await s.db.pool.query("UPDATE users SET status = 'active', suspended_at = NULL WHERE id = $1", [
      member.id,
    ]);
  }
  const removed = await person(s, acme, 'admin', 'sl-removed');
  await link(removed, 'U0REMOVED');
  await s.db.pool.query('DELETE FROM memberships WHERE user_id = $1', [removed.id]);
  const res = await press('U0REMOVED', 'bulwark_approve', id);
  assert.match(res.json().text, /not a member/);
  assert.equal(expectStatus(await http.get(DB, id, requester.headers), 200).approvals_counted, 0);
});

test('unsigned, mis-signed, stale, future and oversized requests are refused and change nothing', async () => {
  const id = await newRequest();
  const form = buttonPress({ team: TEAM, user: 'U0ADMIN', action: 'bulwark_approve', value: id });
  const raw = new URLSearchParams(form).toString();
  const old = String(Math.floor(Date.now() / 1000) - 6 * 60);
  const future = String(Math.floor(Date.now() / 1000) + 6 * 60);
  const cases: [string, Parameters<typeof postSigned>[3]][] = [
    ['wrong secret', { secret: 'notthesecret0123456789abcdefghij' }],
    ['stale timestamp', { secret: SECRET, ts: old }],
    ['future timestamp', { secret: SECRET, ts: future }],
    ['no headers', { secret: SECRET, headers: { 'content-type': 'application/x-www-form-urlencoded' } }],
    [
      'no signature',
      {
        secret: SECRET,
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          'x-slack-request-timestamp': nowTs(),
        },
      },
    ],
    [
      'malformed signature',
      {
        secret: SECRET,
        headers: {
          'content-type': 'application/x-www-form-urlencoded',
          'x-slack-request-timestamp': nowTs(),
          'x-slack-signature': 'v0=zz',
        },
      },
    ],
    // Signed, then one byte changed: the signature covers the exact bytes.
    ['tampered body', { secret: SECRET, raw: raw.replace('U0ADMIN', 'U0ADMIM') }],
  ];
  for (const [what, o] of cases) {
    const res =
      what === 'tampered body'
        ? await (async () => {
            const ts = nowTs();
            return s.app.inject({
              method: 'POST',
              url: '/v1/integrations/slack/interactions',
              headers: {
                'content-type': 'application/x-www-form-urlencoded',
                'x-slack-request-timestamp': ts,
                'x-slack-signature': slackSignature(SECRET, ts, raw),
              },
              payload: o.raw!,
            });
          })()
        : await postSigned(s, 'interactions', form, o);
    assert.equal(res.statusCode, 401, `${what}: ${res.body}`);
  }
  // JSON instead of the form: not Slack.
  const json = await s.app.inject({
    method: 'POST',
    url: '/v1/integrations/slack/interactions',
    headers: {
      'content-type': 'application/json',
      'x-slack-request-timestamp': nowTs(),
      'x-slack-signature': 'v0=00',
    },
    payload: JSON.parse(JSON.stringify(form)),
  });
  assert.equal(json.statusCode, 401, json.body);
  // Over 64 KB: refused before it is read whole.
  const big = { ...form, pad: 'x'.repeat(70 * 1024) };
  const res = await postSigned(s, 'interactions', big, { secret: SECRET });
  assert.equal(res.statusCode, 413, res.body);
  // A command mis-signed: refused as well.
  const cmd = await postSigned(s, 'commands', slashCommand({ team: TEAM, user: 'U0X', text: 'link bwl-x' }), {
    secret: OTHER_SECRET,
  });
  assert.equal(cmd.statusCode, 401);
  const after = expectStatus(await http.get(DB, id, requester.headers), 200);
  assert.equal(after.approvals_counted, 0);
  assert.equal((await auditOf(s, 'request.approved', id)).length, 0);
});

test('link codes: single use, expire after 10 minutes, only for members of the workspace account', async () => {
  const p = await person(s, acme, 'member', 'sl-link');
  const code = expectStatus(await http.call('POST', '/v1/me/slack-link', p.headers), 200);
  assert.match(code.code as string, /^bwl-[a-z2-7]{26}$/);
  const ttl = Date.parse(code.expires_at as string) - Date.now();
  assert.ok(ttl > 9 * 60_000 && ttl <= 10 * 60_000, String(ttl));
  const stored = await s.db.pool.query('SELECT code_hash FROM slack_link_codes WHERE user_id = $1', [p.id]);
  assert.equal(stored.rows.length, 1);
  assert.ok(!stored.rows[0].code_hash.toString('utf8').includes(code.code), 'stored hashed');
  const send = (c: string, user = 'U0LINK', team = TEAM, secret = SECRET) =>
    postSigned(s, 'commands', slashCommand({ team, user, text: `link ${c}` }), { secret });
  assert.match((await send(code.code as string)).json().text, /^Linked/);
  assert.deepEqual(expectStatus(await http.call('GET', '/v1/me/slack-link', p.headers), 200), {
    linked: true,
    slack_user_id: 'U0LINK',
    team_id: TEAM,
  });
  // Used once: a second use (by anyone) links nothing.
  assert.match((await send(code.code as string, 'U0THIEF')).json().text, /unknown, used or expired/);
  // Expired.
  const late = expectStatus(await http.call('POST', '/v1/me/slack-link', p.headers), 200);
  await s.db.pool.query(
    "UPDATE slack_link_codes SET expires_at = now() - interval '1 second' WHERE user_id = $1",
    [p.id],
  );
  assert.match((await send(late.code as string, 'U0LATE')).json().text, /unknown, used or expired/);
  // From another account's workspace: the person is not a member there.
  const foreign = expectStatus(await http.call('POST', '/v1/me/slack-link', p.headers), 200);
  assert.match(
    (await send(foreign.code as string, 'U0FOREIGN', OTHER_TEAM, OTHER_SECRET)).json().text,
    /not a member/,
  );
  // Still linked as before; unlinking ends it (audited).
  const still = expectStatus(await http.call('GET', '/v1/me/slack-link', p.headers), 200);
  assert.equal(still.slack_user_id, 'U0LINK');
  const del = await http.call('DELETE' as 'POST', '/v1/me/slack-link', p.headers);
  assert.equal(del.statusCode, 204, del.body);
  assert.equal(expectStatus(await http.call('GET', '/v1/me/slack-link', p.headers), 200).linked, false);
  const audit = await s.db.pool.query(
    "SELECT action FROM audit_events WHERE actor_id = $1 AND action LIKE 'slack.%' ORDER BY id",
    [p.id],
  );
  assert.deepEqual(
    audit.rows.map((r) => r.action),
    ['slack.linked', 'slack.unlinked'],
  );
});

test('the outbox retries what failed, gives up on what cannot succeed, and posts an edited request again', async () => {
  const row = async (id: string) =>
    (
      await s.db.pool.query(
        "SELECT status, attempts, last_error FROM slack_messages WHERE request_id = $1 AND kind = 'post' ORDER BY id",
        [id],
      )
    ).rows;
  // Slack down twice, then up: sent on the third attempt (each retry made due at once here).
  slack.failNext([503, 500]);
  const id = await newRequest();
  await waitFor(
    'three attempts',
    async () => {
      const [m] = await row(id);
      if (m?.status === 'sent') return m;
      await s.db.pool.query(
        "UPDATE slack_messages SET next_attempt_at = now() WHERE request_id = $1 AND status = 'pending'",
        [id],
      );
      s.slackOutbox.poke();
      return null;
    },
    { everyMs: 50 },
  );
  const [sent] = await row(id);
  assert.deepEqual([sent.status, sent.attempts], ['sent', 3]);
  // A channel Slack does not know: no retry can fix it.
  slack.failNext(['channel_not_found']);
  const lost = await newRequest();
  const dead = await waitFor('a dead message', async () =>
    (await row(lost)).find((m) => m.status === 'dead'),
  );
  assert.deepEqual([dead.attempts, dead.last_error], [1, 'chat.postMessage: channel_not_found']);
  // The requester edits a request back to pending: it is posted again.
  const before = callsFor('chat.postMessage', (c) => JSON.stringify(c.body).includes(id)).length;
  expectStatus(
    await http.call('PUT', `/v1/databases/${DB}/requests/${id}`, requester.headers, {
      sql: 'CREATE TABLE audit_copy2 (id bigint)',
    }),
    200,
  );
  await waitFor(
    'the edited request posted',
    () => callsFor('chat.postMessage', (c) => JSON.stringify(c.body).includes(id)).length > before,
  );
});

test('the Slack app is changed by people only; a new secret, token or workspace needs a step-up and unlinks everyone', async () => {
  const third = await createAccount(s, 'third');
  const key = await createTestKey(s, { account: 'third', level: 'admin' });
  const boss = await person(s, third, 'owner', 'sl-third');
  const mate = await person(s, third, 'member', 'sl-third');
  const put = (body: object) => http.call('PUT', '/v1/integrations/slack', boss.headers, body);
  const stale = (fresh: boolean) =>
    s.db.pool.query(
      `UPDATE sessions SET created_at = now() - ${fresh ? "interval '0 s'" : "interval '1 hour'"} WHERE id = $1`,
      [boss.sessionId],
    );
  // No API key, not even an admin one (whoever sets the signing secret can press as anyone linked).
  for (const [method, body] of [
    ['GET', undefined],
    ['PUT', { signing_secret: 'keysigningsecret0123456789abcdef' }],
    ['DELETE', undefined],
  ] as const) {
    const r = await s.app.inject({
      method,
      url: '/v1/integrations/slack',
      headers: { ...key.headers, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { payload: JSON.stringify(body) } : {}),
    });
    assert.equal(r.statusCode, 403, `${method}: ${r.body}`);
  }
  const secret = 'thirdsigningsecret0123456789abcd';
  expectStatus(await put({ enabled: true, team_id: 'T0THIRD', signing_secret: secret }), 200);
  const linkMate = async (team: string, sec: string) => {
    const code = expectStatus(await http.call('POST', '/v1/me/slack-link', mate.headers), 200).code as string;
    const r = await postSigned(s, 'commands', slashCommand({ team, user: 'U0MATE', text: `link ${code}` }), {
      secret: sec,
    });
    assert.match(r.json().text, /^Linked/, r.body);
  };
  const mateLink = async () => expectStatus(await http.call('GET', '/v1/me/slack-link', mate.headers), 200);
  await linkMate('T0THIRD', secret);

  // A session no longer fresh: the secret, the token and the workspace need "Confirm it's you".
  await stale(false);
  for (const body of [
    { signing_secret: 'staleseTsigningsecret0123456789a' },
    { bot_token: 'xoxb-third-stale-token' },
    { team_id: 'T0ELSEWHERE' },
    { team_id: null },
  ]) {
    const r = await put(body);
    assert.equal(r.statusCode, 403, `${JSON.stringify(body)}: ${r.body}`);
    assert.equal(r.json().error.code, 'reauth_required');
  }
  // The rest does not (the dashboard sends the unchanged team id with every save).
  expectStatus(await put({ enabled: true, team_id: 'T0THIRD', channel_id: 'C0THIRD' }), 200);
  assert.equal((await mateLink()).team_id, 'T0THIRD', 'nothing sensitive changed: still linked');

  // Confirmed: a new signing secret unlinks the workspace's people in the same transaction.
  await stale(true);
  const secret2 = 'thirdsigningsecretTWO0123456789a';
  expectStatus(await put({ signing_secret: secret2 }), 200);
  assert.equal((await mateLink()).linked, false);
  const changed = await s.db.pool.query(
    `SELECT details FROM audit_events WHERE action = 'slack.settings_changed' AND account_id = $1
      ORDER BY id DESC LIMIT 1`,
    [third],
  );
  assert.equal(changed.rows[0].details.links_removed, 1);
  assert.equal(changed.rows[0].details.signing_secret_changed, true);
  assert.ok(!JSON.stringify(changed.rows).includes(secret2));
  // A new bot token alone keeps the links; a different workspace ends them.
  await linkMate('T0THIRD', secret2);
  expectStatus(await put({ bot_token: 'xoxb-third-new-token' }), 200);
  assert.equal((await mateLink()).linked, true);
  expectStatus(await put({ team_id: 'T0THIRDNEW' }), 200);
  assert.equal((await mateLink()).linked, false);
  // The old workspace is nobody's now: its signed requests are refused.
  const old = await postSigned(
    s,
    'commands',
    slashCommand({ team: 'T0THIRD', user: 'U0MATE', text: 'link x' }),
    {
      secret: secret2,
    },
  );
  assert.equal(old.statusCode, 401, old.body);
});

test('a verified form whose fields repeat is refused, and a link is made to the verified workspace only', async () => {
  const p = await person(s, acme, 'member', 'sl-dup');
  const code = expectStatus(await http.call('POST', '/v1/me/slack-link', p.headers), 200).code as string;
  const form = new URLSearchParams(
    slashCommand({ team: TEAM, user: 'U0DUPA', text: `link ${code}` }),
  ).toString();
  for (const extra of ['team_id=T0OTHER', 'user_id=U0DUPB', `text=link%20${code}`]) {
    const r = await postSigned(s, 'commands', {}, { secret: SECRET, raw: `${form}&${extra}` });
    assert.equal(r.statusCode, 200, r.body);
    assert.match(r.json().text, /could not read/, `${extra}: ${r.body}`);
  }
  assert.equal(expectStatus(await http.call('GET', '/v1/me/slack-link', p.headers), 200).linked, false);
  // The code was not spent by the refused forms: the plain one links, to this workspace.
  const ok = await postSigned(
    s,
    'commands',
    slashCommand({ team: TEAM, user: 'U0DUPA', text: `link ${code}` }),
    {
      secret: SECRET,
    },
  );
  assert.match(ok.json().text, /^Linked/, ok.body);
  assert.deepEqual(expectStatus(await http.call('GET', '/v1/me/slack-link', p.headers), 200), {
    linked: true,
    slack_user_id: 'U0DUPA',
    team_id: TEAM,
  });
  // A press with two payloads (the first verified, the second another's): nothing.
  const id = await newRequest();
  const one = new URLSearchParams(
    buttonPress({ team: TEAM, user: 'U0ADMIN', action: 'bulwark_approve', value: id }),
  );
  const r = await postSigned(s, 'interactions', {}, { secret: SECRET, raw: `${one}&${one}` });
  assert.match(r.json().text, /could not read/, r.body);
  assert.equal(expectStatus(await http.get(DB, id, requester.headers), 200).approvals_counted, 0);
});
