// The role × route matrix: every /v1 route of the fully wired app, taken from the app's own route
// table, against every kind of caller, on the real control database. Each answer must be what the
// policy table says: refused (403) when the role or key level may not, 401 without credentials or
// for a suspended user, 404 for another account's object, and otherwise anything but 401/403.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { after, before, test } from 'node:test';
import Fastify from 'fastify';
import { registeredRoutes } from '../src/server/app.ts';
import type { MembershipRole, Permission } from '../src/server/http/caller.ts';
import {
  POLICY,
  type RouteAction,
  type Rule,
  registerPolicy,
  routeActions,
} from '../src/server/http/policy.ts';
import { createAccount, enrollFakeAgent } from './helpers/databases.ts';
import { createTestKey } from './helpers/keys.ts';
import { createTestServer, type TestServer } from './helpers/server.ts';
import { createTestUser, signIn } from './helpers/session-users.ts';

type Who =
  | { kind: 'anonymous' | 'suspended' }
  | {
      kind: 'user';
      role: MembershipRole | null;
      platformAdmin: boolean;
      otherAccount: boolean;
      scoped?: boolean;
    }
  | { kind: 'key'; level: Permission; scoped: boolean; explorer: boolean };
type Caller = { name: string; who: Who; headers: Record<string, string> };

let s: TestServer;
const callers: Caller[] = [];
/** What each path parameter names: an object of account acme (another account's, to `other`). */
const params: Record<string, string> = {};
const bodies: Record<string, object> = {};

const DB = 'matrixdb';

before(async () => {
  s = await createTestServer();
  const acme = await createAccount(s, 'acme');
  const other = await createAccount(s, 'other');
  await enrollFakeAgent(s, 'matrix-node');
  const admin = await createTestKey(s, { account: 'acme' });
  const created = await s.app.inject({
    method: 'POST',
    url: '/v1/databases',
    headers: admin.headers,
    payload: { name: DB },
  });
  assert.equal(created.statusCode, 202, created.body);
  const limits = await s.app.inject({ url: `/v1/databases/${DB}/limits`, headers: admin.headers });
  assert.equal(limits.statusCode, 200, limits.body);
  const jobs = await s.app.inject({ url: '/v1/jobs', headers: admin.headers });
  // A completed backup of the database and a restore of it (no agent runs here): the objects of
  // the backup routes' :id.
  const backupId = randomUUID();
  const restoreId = randomUUID();
  await s.db.pool.query(
    `INSERT INTO backups (id, account_id, database_id, node_id, database_name, status, trigger, size_bytes,
                          sha256, wrapped_key, storage_key, manifest, completed_at)
     SELECT $1::uuid, account_id, id, node_id, name, 'completed', 'manual', 1, repeat('a', 64), 'sealed',
            id::text || '/' || $1::text || '.bulwark-backup', $3, now()
       FROM databases WHERE name = $2`,
    [backupId, DB, { tables: [], tables_total: 0, objects: {} }],
  );
  await s.db.pool.query(
    `INSERT INTO restores (id, account_id, backup_id, source_database_id, target_database_id, target, status)
     SELECT $1, account_id, id, database_id, database_id, 'in_place', 'completed' FROM backups WHERE id = $2`,
    [restoreId, backupId],
  );
  const victimKey = await createTestKey(s, { account: 'acme', level: 'read' });
  // A webhook of acme (to a refused address: nothing is ever sent) and a dead delivery of it.
  const webhookId = randomUUID();
  const deliveryId = randomUUID();
  await s.db.pool.query(
    `INSERT INTO webhooks (id, account_id, url, events, secret_sealed, secret_hint)
     SELECT $1, id, 'http://192.0.2.1/', '{*}', 'sealed', 'abcd' FROM accounts WHERE name = 'acme'`,
    [webhookId],
  );
  await s.db.pool.query(
    `INSERT INTO webhook_deliveries (id, webhook_id, account_id, event_id, event_type, payload, status, attempts, max_attempts)
     SELECT $1, id, account_id, 'evt_t1', 'webhook.test', '{}', 'dead', 1, 1 FROM webhooks WHERE id = $2`,
    [deliveryId, webhookId],
  );

  const user = async (
    name: string,
    role: MembershipRole | null,
    o: { platformAdmin?: boolean; account?: string } = {},
  ) =>
    createTestUser(s, {
      username: name,
      platformAdmin: o.platformAdmin ?? false,
      memberships: role ? [{ accountId: o.account ?? acme, role }] : [],
    });
  const target = await user('target', 'member');
  const targetSession = await signIn(s, target);
  const targetSessionId = JSON.parse(
    Buffer.from(targetSession.access_token.split('.')[1]!, 'base64url').toString(),
  ).jti as string;
  const owner = await user('owner', 'owner');
  const invite = await s.app.inject({
    method: 'POST',
    url: '/v1/invites',
    headers: (await signIn(s, owner)).headers,
    payload: { count: 1, role: 'viewer' },
  });
  assert.equal(invite.statusCode, 201, invite.body);

  Object.assign(params, {
    name: DB,
    cidr: '10.0.0.0%2F8',
    jobId: String(jobs.json().items[0].id),
    keyId: victimKey.id,
    inviteId: invite.json().invites[0].id,
    userId: target.id,
    sessionId: targetSessionId,
    // No such node: the drift check answers 404 to whoever may ask (a real one waits on its agent).
    nodeId: randomUUID(),
    backupId,
    restoreId,
    // No such request: the allowed callers get a 404 (the table is enforced before the lookup).
    requestId: randomUUID(),
    webhookId,
    deliveryId,
  });
  Object.assign(bodies, {
    [`DELETE /v1/databases/:name`]: { confirm: DB },
    [`PUT /v1/databases/:name/allowlist`]: { entries: [] },
    [`POST /v1/databases/:name/allowlist`]: { cidr: '10.0.0.0/8' },
    [`PUT /v1/databases/:name/limits`]: limits.json(),
    // No such node: the allowed callers get 404 (or 409: the database is still provisioning here).
    [`POST /v1/databases/:name/move`]: { node: 'no-such-node' },
    // The matrix's database is hosted: the allowed callers get 409 (nothing to accept or reject).
    [`POST /v1/databases/:name/attachment/reject`]: { confirm: DB },
    [`POST /v1/databases/:name/explorer/query`]: { sql: 'SELECT 1' },
    // A new node's enrollment token: the platform admin gets one (201), nothing else happens.
    [`POST /v1/nodes/enrollments`]: { name: 'matrix-node' },
    // In place: a safety backup is queued first (nothing runs here); the callers after it get 409.
    [`POST /v1/databases/:name/restore`]: { backup_id: backupId, target: 'in_place' },
    [`PUT /v1/backup-settings`]: {},
    [`PUT /v1/databases/:name/backup-settings`]: {},
    [`POST /v1/databases/:name/requests`]: { sql: 'CREATE TABLE matrix_t (i int)', reason: 'matrix' },
    [`POST /v1/databases/:name/requests/preflight`]: { sql: 'SELECT 1' },
    [`PUT /v1/databases/:name/requests/:id`]: { sql: 'CREATE TABLE matrix_u (i int)' },
    [`POST /v1/databases/:name/requests/:id/reject`]: { comment: 'no' },
    // A file that does not validate: the allowed callers get 400 policy_invalid and nothing is applied.
    [`PUT /v1/policy`]: { source: 'version: 2\n' },
    // Refused by the SSRF rules: the allowed callers get 400 and nothing is created.
    [`POST /v1/webhooks`]: { url: 'http://127.0.0.1/', events: ['*'] },
    [`PATCH /v1/webhooks/:id`]: { description: 'matrix' },
    [`POST /v1/webhooks/:id/rotate-secret`]: { overlap_s: 0 },
    // The target is a member already: the allowed callers change nothing.
    [`PUT /v1/users/:id/role`]: { role: 'member' },
  });

  const bearer = (t: string) => ({ authorization: `Bearer ${t}` });
  const add = async (name: string, who: Who, u?: { id: string }, token?: string) =>
    callers.push({ name, who, headers: u ? (await signIn(s, u)).headers : token ? bearer(token) : {} });
  const person = { platformAdmin: false, otherAccount: false };
  await add('owner', { kind: 'user', role: 'owner', ...person }, owner);
  for (const role of ['admin', 'member', 'viewer'] as const)
    await add(role, { kind: 'user', role, ...person }, await user(`a-${role}`, role));
  // A member with a database grant: database-scoped, like a key limited to some databases.
  const granted = await user('granted', 'member');
  await s.db.pool.query(
    `INSERT INTO membership_databases (account_id, user_id, database_id)
     SELECT account_id, $2, id FROM databases WHERE account_id = $1 AND name = $3`,
    [acme, granted.id, DB],
  );
  await add(
    'member with a database grant',
    { kind: 'user', role: 'member', ...person, scoped: true },
    granted,
  );
  await add(
    'platform admin',
    { kind: 'user', role: null, platformAdmin: true, otherAccount: false },
    await user('root', null, { platformAdmin: true }),
  );
  await add(
    'other account owner',
    { kind: 'user', role: 'owner', platformAdmin: false, otherAccount: true },
    await user('stranger', 'owner', { account: other }),
  );
  const suspended = await user('gone', 'owner');
  await add('suspended', { kind: 'suspended' }, suspended);
  await s.db.pool.query(`UPDATE users SET status = 'suspended', suspended_at = now() WHERE id = $1`, [
    suspended.id,
  ]);
  await add('anonymous', { kind: 'anonymous' });
  for (const level of ['read', 'write', 'admin'] as const)
    await add(
      `${level} key`,
      { kind: 'key', level, scoped: false, explorer: level === 'admin' },
      undefined,
      (await createTestKey(s, { account: 'acme', level })).key,
    );
  await add(
    'read key with the explorer',
    { kind: 'key', level: 'read', scoped: false, explorer: true },
    undefined,
    (await createTestKey(s, { account: 'acme', level: 'read', explorer: true })).key,
  );
  await add(
    'database-scoped admin key',
    { kind: 'key', level: 'admin', scoped: true, explorer: true },
    undefined,
    (await createTestKey(s, { account: 'acme', databases: [DB] })).key,
  );
});
after(() => s?.stop());

const RANK: Record<Permission, number> = { read: 1, write: 2, admin: 3 };

/** The table, read independently of the server's enforcement: may this caller do it? */
function tableAllows(rule: Rule, who: Who): boolean {
  if (who.kind === 'anonymous' || who.kind === 'suspended') return false;
  if (rule.only) return rule.only === who.kind;
  if (who.kind === 'key')
    return (
      rule.key !== null &&
      RANK[who.level] >= RANK[rule.key] &&
      (rule.scoped || !who.scoped) &&
      (rule.keyGrant !== 'explorer' || who.level === 'admin' || who.explorer)
    );
  if (who.kind !== 'user') return false;
  if (who.platformAdmin && rule.platform) return true;
  if (who.scoped && !rule.scoped) return false;
  return who.role !== null && rule.roles.includes(who.role);
}

/** The URL with each parameter replaced by an object of account acme. */
function urlOf(r: RouteAction): string {
  return r.url.replace(/:([a-z]+)/gi, (_m, p: string) => {
    const key = p === 'id' ? idParam(r.url) : p;
    const v = params[key];
    assert.ok(v, `no fixture for :${p} of ${r.url}: add one to the matrix`);
    return v;
  });
}
function idParam(url: string): string {
  if (url.startsWith('/v1/jobs/')) return 'jobId';
  if (url.startsWith('/v1/keys/')) return 'keyId';
  if (url.startsWith('/v1/invites/')) return 'inviteId';
  if (url.startsWith('/v1/users/')) return 'userId';
  if (url.startsWith('/v1/sessions/')) return 'sessionId';
  if (url.startsWith('/v1/nodes/')) return 'nodeId';
  if (url.startsWith('/v1/databases/:name/backups/')) return 'backupId';
  if (url.startsWith('/v1/databases/:name/restores/')) return 'restoreId';
  if (url.startsWith('/v1/webhooks/')) return 'webhookId';
  if (url.includes('/requests/')) return 'requestId';
  return `id of ${url}`;
}

test('every /v1 route declares how it is authorized, and the table knows every action', async () => {
  const declared = new Set(routeActions(s.app).map((r) => `${r.method} ${r.url}`));
  const undeclared = registeredRoutes(s.app).filter((r) => {
    if (!r.url.startsWith('/v1/') || r.url === '/v1/openapi.json' || r.url.startsWith('/v1/agent/'))
      return false;
    return !declared.has(`${r.method} ${r.url}`);
  });
  // The rest are public or operator routes: few, and named here so that a new one is a decision.
  assert.deepEqual(undeclared.map((r) => `${r.method} ${r.url}`).sort(), [
    'GET /v1/auth/oidc/callback',
    'GET /v1/auth/oidc/start',
    'GET /v1/auth/providers',
    'GET /v1/nodes/:id/drift',
    'GET /v1/public-key',
    'POST /v1/auth/invites/redeem',
    'POST /v1/auth/login',
    'POST /v1/auth/refresh',
    'POST /v1/integrations/slack/commands',
    'POST /v1/integrations/slack/interactions',
  ]);
  for (const r of routeActions(s.app)) assert.ok(Object.hasOwn(POLICY, r.action), r.action);
  // The public ones are open to anyone; the operator route refuses anyone without its token.
  for (const r of undeclared) {
    const res = await s.app.inject({ method: r.method as 'GET', url: r.url.replace(':id', params.userId!) });
    if (r.url === '/v1/nodes/:id/drift')
      assert.ok([401, 404].includes(res.statusCode), `${r.url}: ${res.statusCode}`);
    // A refresh carries its own credential (the refresh token, in the body or the cookie): without one it is a 401.
    else if (r.url === '/v1/auth/refresh')
      assert.ok([400, 401].includes(res.statusCode), `${r.url}: ${res.statusCode}`);
    // Slack's requests carry their own credential (the signature): unsigned, a 401.
    else if (r.url.startsWith('/v1/integrations/slack/'))
      assert.equal(res.statusCode, 401, `${r.url}: ${res.statusCode}`);
    else
      assert.ok(res.statusCode !== 401 && res.statusCode !== 403, `${r.method} ${r.url}: ${res.statusCode}`);
  }
});

test('a /v1 route without a declared action cannot be registered', () => {
  const app = Fastify();
  registerPolicy(app);
  app.get('/v1/declared', { config: { action: 'databases.list' } }, async () => ({}));
  app.get('/not-api', async () => ({}));
  assert.throws(
    () => app.get('/v1/forgotten', async () => ({})),
    /route without an authorization policy: \/v1\/forgotten/,
  );
  assert.throws(
    () => app.get('/v1/agent/x', { config: { public: true } }, async () => ({})),
    /agentToken routes are exactly/,
  );
  assert.throws(
    () => app.get('/v1/typo', { config: { action: 'databases.lsit' as 'databases.list' } }, async () => ({})),
    /unknown action/,
  );
});

/**
 * Rules a service adds on top of the table for the body sent here, by route: the callers it refuses
 * (403) although the table lets them reach it, and why. Each is a decision, named here.
 */
const SERVICE_REFUSALS: Record<string, { callers: readonly string[]; why: string }> = {
  'POST /v1/databases/:name/restore': {
    callers: ['member', 'member with a database grant', 'write key'],
    why: 'an in-place restore replaces the data: owners and admins (admin keys) only, as for a DROP',
  },
};

test('role × route: every caller gets what the policy table says', async () => {
  // Removing the target member leaves them absent (404) to the routes after it: near the end.
  // Logout ends the caller's session: last.
  const late = (r: RouteAction) =>
    r.action === 'me.logout' ? 2 : r.method === 'DELETE' && r.url === '/v1/users/:id/membership' ? 1 : 0;
  const routes = routeActions(s.app).sort((a, b) => late(a) - late(b));
  assert.ok(routes.length >= 30, `only ${routes.length} routes with an action`);
  const wrong: string[] = [];
  let checked = 0;
  for (const r of routes) {
    const rule: Rule = POLICY[r.action];
    const url = urlOf(r);
    const hasObject = url !== r.url;
    const body = bodies[`${r.method} ${r.url}`];
    for (const c of callers) {
      const res = await s.app.inject({
        method: r.method as 'GET',
        url,
        headers: { ...c.headers, ...(body ? { 'content-type': 'application/json' } : {}) },
        ...(body ? { payload: JSON.stringify(body) } : {}),
      });
      checked++;
      const got = res.statusCode;
      let expect: string;
      let ok: boolean;
      if (c.who.kind === 'anonymous' || c.who.kind === 'suspended') {
        expect = '401';
        ok = got === 401;
      } else if (!tableAllows(rule, c.who)) {
        expect = '403';
        ok = got === 403;
      } else if (c.who.kind === 'user' && c.who.otherAccount && hasObject && !rule.only) {
        expect = '404';
        ok = got === 404;
      } else if (SERVICE_REFUSALS[`${r.method} ${r.url}`]?.callers.includes(c.name)) {
        expect = `403 (${SERVICE_REFUSALS[`${r.method} ${r.url}`]?.why})`;
        ok = got === 403;
      } else {
        expect = 'not 401/403';
        ok = got !== 401 && got !== 403 && got < 500;
      }
      if (!ok)
        wrong.push(
          `${r.method} ${r.url} [${r.action}] as ${c.name}: ${got}, expected ${expect}: ${res.body.slice(0, 160)}`,
        );
    }
  }
  assert.deepEqual(wrong, [], `${wrong.length} of ${checked} answers disagree with the table`);
});

/** The table as docs/api.md shows it, one row per action (the routes from the app itself). */
function policyRows(routes: RouteAction[]): string[] {
  const yes = (b: boolean | undefined) => (b ? '✓' : '–');
  return Object.entries(POLICY as Record<string, Rule>).map(([action, rule]) => {
    const on = routes.filter((r) => r.action === action).map((r) => `\`${r.method} ${r.url}\``);
    const role = (x: MembershipRole) =>
      rule.only === 'user' ? '✓' : rule.only ? '–' : yes(rule.roles.includes(x));
    const key =
      rule.only === 'user' || rule.key === null
        ? '–'
        : `${rule.key}${rule.key === 'admin' ? '' : '+'}${rule.keyGrant ? ` (${rule.keyGrant} grant below admin)` : ''}`;
    const platform = rule.only === 'user' ? '✓' : rule.only ? '–' : yes(rule.platform);
    const cells = [
      `\`${action}\``,
      on.join(', '),
      role('owner'),
      role('admin'),
      role('member'),
      role('viewer'),
    ];
    return `| ${[...cells, platform, key, yes(rule.scoped)].join(' | ')} |`;
  });
}

test('docs/api.md shows the policy table as it is', () => {
  const doc = readFileSync(new URL('../docs/api.md', import.meta.url), 'utf8');
  const missing = policyRows(routeActions(s.app)).filter((row) => !doc.includes(row));
  assert.deepEqual(missing, [], 'rows of docs/api.md "Authorization" to write (or rewrite) as shown');
});
