/**
 * Authentication for the public API: one app-level onRequest hook. Every route under /v1/
 * needs a `Bearer bwk_…` key or a signed-in user's access token (`Bearer <JWT>`, or the dashboard's
 * `__Host-bulwark_session` cookie when no Authorization header is sent; a write by cookie must also
 * pass the CSRF checks of csrf.ts) except the agent
 * API (/v1/agent/*, its own tokens), the OpenAPI document and routes declared with
 * `config: { public: true }` (or `operatorToken: true`). A user acts in the account named by `Bulwark-Account` (or their only
 * one); without one, `req.user` is set but not `req.caller`, and account routes answer 403.
 *
 * Runs before the body is read. Order: per-IP failure budget → key format and checksum
 * (no I/O) → cached lookup + constant-time hash check → per-key rate limit. Every failure
 * is the same 401 body; the reason goes only to a fail2ban-friendly log line. Agent tokens
 * have their own per-IP failure budget, consulted only after the token failed.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { badRequest, unauthorized } from '../../shared/errors.ts';
import type { AuthFailure, KeyAuthenticator } from '../modules/keys/keys.authenticator.ts';
import type { ServerMetrics } from '../modules/metrics/server-metrics.ts';
import type { AgentIdentity, NodesService } from '../modules/nodes/nodes.service.ts';
import type { SessionAuthenticator, SessionAuthFailure } from '../modules/sessions/session-auth.ts';
import { JWT_SHAPE } from '../modules/sessions/session-tokens.ts';
import { callerActor } from './caller.ts';
import { type Csrf, SAFE_METHODS } from './csrf.ts';
import { registerPolicy } from './policy.ts';
import type { RateLimitDecision, RateLimiter } from './rate-limit.ts';
import { ACCESS_COOKIE, readCookie } from './session-cookies.ts';

declare module 'fastify' {
  interface FastifyRequest {
    agent?: AgentIdentity;
  }
}

export const AUTH_FAILED_MESSAGE = 'Missing, invalid, expired or revoked API key';

const BEARER = /^Bearer ([^\s]{1,2048})$/;
export const SESSION_FAILED_MESSAGE = 'Missing, invalid, expired or revoked access token';
/** The account a signed-in user acts in on this request (an account name). */
const ACCOUNT_HEADER = 'bulwark-account';
const ACCOUNT_NAME = /^[a-z][a-z0-9_-]{0,62}$/;

/** Routes under /v1 that need no API key (agents have their own tokens, checked below). */
export function isUnauthenticatedRoute(routeUrl: string): boolean {
  return routeUrl.startsWith('/v1/agent/') || routeUrl === '/v1/openapi.json';
}

/** The agent routes that take no agent token (the token is what enrollment hands out). */
const AGENT_OPEN_ROUTES = new Set(['/v1/agent/enroll']);

/** The authenticated agent of this request (set by the auth hook on /v1/agent/* routes). */
export function requireAgent(req: FastifyRequest): AgentIdentity {
  if (!req.agent) throw unauthorized('Invalid agent token');
  return req.agent;
}

/**
 * The credential of a request: the Authorization header's bearer token when the header is sent (it
 * always wins), else the session cookie (`cookieHeader` is passed only when cookie sessions are on).
 */
function presentedCredential(
  header: string | undefined,
  cookieHeader: string | false | undefined,
): { from: 'header' | 'cookie'; token: string } | 'missing' | 'malformed' {
  if (header === undefined) {
    const cookie = cookieHeader ? readCookie(cookieHeader, ACCESS_COOKIE) : undefined;
    return cookie === undefined ? 'missing' : { from: 'cookie', token: cookie };
  }
  if (header === '') return 'missing';
  const m = BEARER.exec(header);
  return m ? { from: 'header', token: m[1]! } : 'malformed';
}

export function registerAuth(
  app: FastifyInstance,
  deps: {
    keys: Pick<KeyAuthenticator, 'authenticate'>;
    /** Signed-in users' access tokens (absent: only keys are accepted). */
    sessions?: Pick<SessionAuthenticator, 'authenticate'>;
    /** Agent tokens: checked here too, before any body is read, under their own per-IP failure budget. */
    nodes: Pick<NodesService, 'authenticateAgent'>;
    limiter: RateLimiter;
    metrics?: Pick<ServerMetrics, 'authFailures' | 'rateLimited'>;
    /** The dashboard's cookie sessions (absent: only Authorization headers are read). */
    browser?: { csrf: Pick<Csrf, 'check'> };
  },
): void {
  const { keys, metrics } = deps;
  const limit = (reply: FastifyReply, d: RateLimitDecision, scope: string) => {
    if (!d.allowed) metrics?.rateLimited.inc({ scope });
    deps.limiter.apply(reply, d);
  };
  const limiter = deps.limiter;

  app.addHook('onRequest', async (req, reply) => {
    const route = req.routeOptions.url;
    // Unknown routes fall through to the 404 handler; non-API pages are not ours.
    if (!route?.startsWith('/v1/')) return;
    const ip = req.ip;
    if (route.startsWith('/v1/agent/')) {
      if (AGENT_OPEN_ROUTES.has(route)) {
        limit(reply, await limiter.hitIp(ip), 'ip');
        return;
      }
      // The agent's own budget, and the token is checked first: a valid agent token is never
      // refused for failures, not even bad agent tokens from its address (the embedded agent
      // shares 127.0.0.1 with local clients; behind an untrusted proxy, everyone shares one IP).
      // Past the budget a bad token costs one indexed lookup, is answered 429 and is not audited.
      const blockedAgent = await limiter.authFailuresExceeded(ip, 'agent');
      const h = req.headers.authorization;
      try {
        req.agent = await deps.nodes.authenticateAgent(
          h?.startsWith('Bearer ') ? h.slice(7).trim() : undefined,
          { sourceIp: ip, requestId: String(req.id), quiet: blockedAgent !== null },
        );
      } catch (err) {
        if (blockedAgent) {
          req.log.warn(`bulwark auth failure ip=${ip} reason=too_many_failures`);
          metrics?.authFailures.inc({ kind: 'agent_token', reason: 'too_many_failures' });
          limit(reply, blockedAgent, 'auth_failures');
        }
        await limiter.recordAuthFailure(ip, 'agent');
        throw err;
      }
      return;
    }
    if (isUnauthenticatedRoute(route)) return;
    const config = req.routeOptions.config;
    if (config?.public || config?.operatorToken) {
      limit(reply, await limiter.hitIp(ip), 'ip');
      return;
    }

    const blocked = await limiter.authFailuresExceeded(ip);
    if (blocked) {
      req.log.warn(`bulwark auth failure ip=${ip} reason=too_many_failures`);
      metrics?.authFailures.inc({ kind: 'api_key', reason: 'too_many_failures' });
      limit(reply, blocked, 'auth_failures');
    }

    const presented = presentedCredential(
      req.headers.authorization,
      // Only an access token travels in the cookie: never looked at without sessions (an API key there is no key).
      deps.browser && deps.sessions && req.headers.cookie,
    );
    let reason: AuthFailure | SessionAuthFailure | 'missing' | 'malformed';
    let kind = 'api_key';
    if (typeof presented === 'string') reason = presented;
    else if (
      deps.sessions &&
      (presented.from === 'cookie' ||
        (!presented.token.startsWith('bwk_') && JWT_SHAPE.test(presented.token)))
    ) {
      kind = 'session';
      const account = req.headers[ACCOUNT_HEADER];
      if (account !== undefined && (typeof account !== 'string' || !ACCOUNT_NAME.test(account)))
        throw badRequest('Bulwark-Account must be an account name');
      const result = await deps.sessions.authenticate(presented.token, ip, account);
      if (result.ok) {
        if (presented.from === 'cookie') {
          req.viaCookie = true;
          // The browser sends the cookie by itself: a write must prove it came from our own page.
          if (!SAFE_METHODS.has(req.method)) await deps.browser!.csrf.check(req, result.user.sessionId);
        }
        req.user = result.user;
        if (result.caller) req.caller = result.caller;
        limit(reply, await limiter.hitKey(`user:${result.user.userId}`), 'key');
        return;
      }
      reason = result.reason;
    } else {
      const result = await keys.authenticate(presented.token, ip);
      if (result.ok) {
        req.caller = result.caller;
        limit(reply, await limiter.hitKey(callerActor(result.caller).id), 'key');
        return;
      }
      reason = result.reason;
    }
    await limiter.recordAuthFailure(ip);
    metrics?.authFailures.inc({ kind, reason });
    req.log.warn(`bulwark auth failure ip=${ip} reason=${reason}`);
    reply.header('www-authenticate', 'Bearer');
    throw unauthorized(kind === 'session' ? SESSION_FAILED_MESSAGE : AUTH_FAILED_MESSAGE);
  });
  // Then the policy table (after the hook above: it needs the caller).
  registerPolicy(app);
}
