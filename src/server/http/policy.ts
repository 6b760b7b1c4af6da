/**
 * Who may do what: one table, role × action, for signed-in users and API keys alike. Every /v1
 * route declares what it is in its route config — `action: '<action>'`, `public: true`,
 * `agentToken: true` (the agent API, its own tokens) or `operatorToken: true` (host operator
 * routes) — and one hook of the auth plugin enforces the table after authentication, before the
 * body is read (registerPolicy). A /v1 route without a declaration cannot be registered.
 *
 * What the table does not decide stays with the services: which objects the caller sees (another
 * account's object, or a database outside a database-scoped caller's grants, is a 404), the
 * explorer grant of a key (checked after the database is found, and audited), and rules about
 * the object itself (whom an owner may suspend, which role an invite may carry).
 */
import type { FastifyInstance, FastifyRequest, RouteOptions } from 'fastify';
import { forbidden, unauthorized } from '../../shared/errors.ts';
import type { Caller, MembershipRole, Permission } from './caller.ts';

export type Rule = {
  /** Account members with these roles may (acting in the account: `Bulwark-Account`). */
  roles: readonly MembershipRole[];
  /** The lowest API key level that may; null: no API key may. */
  key: Permission | null;
  /** A database-scoped caller (a key limited to some databases, a member with database grants) may. */
  scoped: boolean;
  /** A signed-in platform admin may, in any account or none. */
  platform?: boolean;
  /**
   * A key below admin also needs this grant. The service checks it once the object is found (an
   * out-of-scope database stays a 404, and the refusal is audited with what was tried).
   */
  keyGrant?: 'explorer';
  /** Only this kind of caller, whatever its role: the signed-in user's own routes, or the calling key's. */
  only?: 'user' | 'key';
};

const ALL: readonly MembershipRole[] = ['owner', 'admin', 'member', 'viewer'];
const WRITERS: readonly MembershipRole[] = ['owner', 'admin', 'member'];
const ADMINS: readonly MembershipRole[] = ['owner', 'admin'];

/** The table. docs/api.md ("Authorization") shows it; test/authz-matrix.test.ts holds every route to it. */
export const POLICY = {
  'databases.list': { roles: ALL, key: 'read', scoped: true },
  'databases.read': { roles: ALL, key: 'read', scoped: true },
  'databases.create': { roles: WRITERS, key: 'write', scoped: false },
  'databases.delete': { roles: WRITERS, key: 'write', scoped: true },
  'databases.limits': { roles: WRITERS, key: 'write', scoped: true },
  'databases.reveal': { roles: WRITERS, key: 'write', scoped: true },
  'databases.rotate': { roles: WRITERS, key: 'write', scoped: true },
  // A move changes where the database lives and freezes its writes meanwhile (ADR 0031).
  'databases.move': { roles: ADMINS, key: 'admin', scoped: false },
  // Whether the account takes an attached database a node offered (ADR 0031): an account decision.
  'databases.attach': { roles: ADMINS, key: 'admin', scoped: false },
  'allowlist.write': { roles: WRITERS, key: 'write', scoped: true },
  'explorer.query': { roles: ADMINS, key: 'read', scoped: true, keyGrant: 'explorer' },
  'jobs.read': { roles: ALL, key: 'read', scoped: true },
  // Backups (issue 15): anyone in the account sees them; writers take, restore and delete them. A
  // download is the whole database's data: writers, as for revealing the owner's password.
  'backups.read': { roles: ALL, key: 'read', scoped: true },
  'backups.create': { roles: WRITERS, key: 'write', scoped: true },
  'backups.delete': { roles: WRITERS, key: 'write', scoped: true },
  'backups.restore': { roles: WRITERS, key: 'write', scoped: true },
  'backups.download': { roles: WRITERS, key: 'write', scoped: true },
  'backups.settings': { roles: WRITERS, key: 'write', scoped: true },
  'backups.account_settings': { roles: ADMINS, key: 'admin', scoped: false },
  // Governed requests: who may ask for which class, approve, or break glass is the governance
  // policy's (the service). Approvals are people's only: the service refuses an API key with 403
  // policy_denied once the request is found (an unknown or another account's request is a 404).
  'requests.create': { roles: ALL, key: 'write', scoped: true },
  'requests.read': { roles: ALL, key: 'read', scoped: true },
  // Approving or rejecting authorises a change: viewers (read-only people) neither approve nor veto.
  'requests.approve': { roles: WRITERS, key: 'read', scoped: true },
  'requests.execute': { roles: ALL, key: 'write', scoped: true },
  'requests.cancel': { roles: ALL, key: 'write', scoped: true },
  // A database-scoped admin key manages only the keys it created, within its databases. A user of
  // any role creates keys up to their own role (viewer: read, member: write, owner/admin: admin).
  'keys.create': { roles: ALL, key: 'admin', scoped: true },
  'keys.read': { roles: ADMINS, key: 'admin', scoped: true },
  'keys.revoke': { roles: ADMINS, key: 'admin', scoped: true },
  'keys.whoami': { roles: [], key: 'read', scoped: true, only: 'key' },
  'audit.read': { roles: ADMINS, key: 'admin', scoped: false },
  'audit.export': { roles: ADMINS, key: 'admin', scoped: false },
  'audit.checkpoint': { roles: ADMINS, key: 'admin', scoped: false },
  // The account's governance policy: anyone may read it (a database-scoped caller only its part);
  // applying one is account-wide, by owners, admins and admin keys of the whole account.
  'policy.read': { roles: ALL, key: 'read', scoped: true },
  'policy.write': { roles: ADMINS, key: 'admin', scoped: false },
  'invites.create': { roles: ADMINS, key: 'admin', scoped: false, platform: true },
  'invites.read': { roles: ADMINS, key: 'admin', scoped: false, platform: true },
  'invites.revoke': { roles: ADMINS, key: 'admin', scoped: false, platform: true },
  'users.read': { roles: ADMINS, key: null, scoped: false, platform: true },
  'users.suspend': { roles: ['owner'], key: null, scoped: false, platform: true },
  // Whom and to what role: the service (owners any member; admins members and viewers, up to admin).
  'members.manage': { roles: ADMINS, key: null, scoped: false, platform: true },
  'sessions.read': { roles: ADMINS, key: null, scoped: false, platform: true },
  'sessions.revoke': { roles: ADMINS, key: null, scoped: false, platform: true },
  // Nodes span every tenant on them: signed-in platform admins only, never an account's key.
  'nodes.read': { roles: [], key: null, scoped: false, platform: true },
  'nodes.drift': { roles: [], key: null, scoped: false, platform: true },
  'nodes.enroll': { roles: [], key: null, scoped: false, platform: true },
  'nodes.cordon': { roles: [], key: null, scoped: false, platform: true },
  'nodes.decommission': { roles: [], key: null, scoped: false, platform: true },
  'nodes.drain': { roles: [], key: null, scoped: false, platform: true },
  // Slack approvals (issue 18): the account's Slack app, by owners, admins and admin keys of the whole account.
  'slack.manage': { roles: ADMINS, key: null, scoped: false },
  // Webhooks (issue 18) are account-wide (every database's events): read by owners, admins and
  // members (their URLs may carry tokens, so not viewers) and write keys; managed by owners, admins
  // and admin keys of the whole account.
  'webhooks.read': { roles: WRITERS, key: 'write', scoped: false },
  'webhooks.manage': { roles: ADMINS, key: 'admin', scoped: false },
  'me.read': { roles: [], key: null, scoped: true, only: 'user' },
  'me.write': { roles: [], key: null, scoped: true, only: 'user' },
  'me.logout': { roles: [], key: null, scoped: true, only: 'user' },
} as const satisfies Record<string, Rule>;

type Action = keyof typeof POLICY;

declare module 'fastify' {
  interface FastifyContextConfig {
    /** What the route does, as named in the policy table. */
    action?: Action;
    /** Open to anyone (rate limited per address). */
    public?: boolean;
    /** The agent API: agent tokens, checked by the auth plugin. */
    agentToken?: boolean;
    /** Host operator routes: the operator token, checked by the route. */
    operatorToken?: boolean;
  }
}

type RouteConfig = { action?: unknown; public?: unknown; agentToken?: unknown; operatorToken?: unknown };

const isAction = (a: unknown): a is Action => typeof a === 'string' && Object.hasOwn(POLICY, a);

/**
 * Why a route's declaration is wrong, or null when it is right: exactly one of `action` (one of the
 * table), `public`, `agentToken` (only and every /v1/agent/* route) or `operatorToken`.
 */
function declarationProblem(url: string, config: RouteConfig | undefined): string | null {
  if (!url.startsWith('/v1/') || url === '/v1/openapi.json') return null;
  const c = config ?? {};
  const declared = [
    c.action !== undefined,
    c.public === true,
    c.agentToken === true,
    c.operatorToken === true,
  ];
  const n = declared.filter(Boolean).length;
  if (n !== 1)
    return `${url}: declare exactly one of action, public, agentToken, operatorToken in the route config (found ${n})`;
  if (c.action !== undefined && !isAction(c.action)) return `${url}: unknown action ${String(c.action)}`;
  if ((c.agentToken === true) !== url.startsWith('/v1/agent/'))
    return `${url}: agentToken routes are exactly the /v1/agent/ routes`;
  return null;
}

export type RouteAction = { method: string; url: string; action: Action };
const ACTIONS = Symbol('bulwark.routeActions');

/** The action of every route that declared one (tests hold each route to the table). */
export function routeActions(app: FastifyInstance): RouteAction[] {
  return (app as unknown as { [ACTIONS]?: RouteAction[] })[ACTIONS] ?? [];
}

const RANK: Record<Permission, number> = { read: 1, write: 2, admin: 3 };

/** May this caller (account caller, or a signed-in user acting in no account) do this? */
function allows(
  rule: Rule,
  who: { caller: Caller | null; user: { platformAdmin: boolean } | null },
): boolean {
  const { caller, user } = who;
  if (rule.only === 'user') return user !== null;
  if (rule.only === 'key') return caller?.kind === 'key';
  if (rule.platform && user?.platformAdmin) return true;
  if (!caller) return false;
  if (caller.databases !== null && !rule.scoped) return false;
  if (caller.kind === 'key') return rule.key !== null && RANK[caller.level] >= RANK[rule.key];
  return rule.roles.includes(caller.role);
}

/** The OpenAPI security requirements of a rule: API keys first when they may, then signed-in users. */
function securityOf(rule: Rule): Record<string, string[]>[] {
  const keys = rule.only === 'key' || (rule.only === undefined && rule.key !== null);
  const users = rule.only === 'user' || (rule.only === undefined && (rule.roles.length > 0 || rule.platform));
  return [...(keys ? [{ apiKey: [] }] : []), ...(users ? [{ userSession: [] }] : [])];
}

function enforce(req: FastifyRequest, action: Action): void {
  const rule: Rule = POLICY[action];
  const caller = req.caller ?? null;
  const user = req.user ?? null;
  if (!caller && !user) throw unauthorized();
  if (allows(rule, { caller, user })) return;
  if (rule.only === 'user') throw forbidden('This needs a signed-in user, not an API key');
  if (rule.only === 'key') throw forbidden('This describes an API key; signed-in users use GET /v1/me');
  if (!caller) throw forbidden(user?.accountProblem ?? 'You are not a member of this account');
  if (caller.databases !== null && !rule.scoped) throw forbidden('A database-scoped caller cannot do this');
  if (caller.kind === 'key')
    throw forbidden(
      rule.key === null
        ? 'API keys cannot do this; sign in as a user'
        : `This needs a key with ${rule.key} permission`,
    );
  throw forbidden(`Your role (${caller.role}) does not allow ${action}`);
}

/**
 * Refuses a /v1 route without a declaration when it is registered (so the app does not start),
 * and enforces the table after authentication — call right after the authentication hook, so
 * that a refusal comes before the body is read or validated.
 */
export function registerPolicy(app: FastifyInstance): void {
  const declared: RouteAction[] = [];
  app.decorate(ACTIONS, declared);
  app.addHook('onRoute', (r: RouteOptions) => {
    const config = r.config as RouteConfig | undefined;
    const problem = declarationProblem(r.url, config);
    if (problem) throw new Error(`route without an authorization policy: ${problem}`);
    if (isAction(config?.action))
      for (const method of [r.method].flat())
        if (method !== 'HEAD') declared.push({ method, url: r.url, action: config.action });
    // The API document names the credentials the table accepts (the OpenAPI plugin reads it later).
    if (isAction(config?.action)) r.schema = { ...r.schema, security: securityOf(POLICY[config.action]) };
  });
  app.addHook('onRequest', async (req) => {
    const action = req.routeOptions.config?.action;
    if (action !== undefined) enforce(req, action);
  });
}
