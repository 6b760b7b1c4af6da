/**
 * Authentication for the public API: one app-level onRequest hook. Every route under /v1/
 * needs a `Bearer bwk_…` key or a signed-in user's access token (`Bearer <JWT>`) except the agent
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
import { registerPolicy } from './policy.ts';
import type { RateLimitDecision, RateLimiter } from './rate-limit.ts';

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

    const header = req.headers.authorization;
    let reason: AuthFailure | SessionAuthFailure | 'missing';
    let kind = 'api_key';
    if (header === undefined || header === '') reason = 'missing';
    else {
      const m = BEARER.exec(header);
      if (!m) reason = 'malformed';
      else if (deps.sessions && !m[1]!.startsWith('bwk_') && JWT_SHAPE.test(m[1]!)) {
        kind = 'session';
        const account = req.headers[ACCOUNT_HEADER];
        if (account !== undefined && (typeof account !== 'string' || !ACCOUNT_NAME.test(account)))
          throw badRequest('Bulwark-Account must be an account name');
        const result = await deps.sessions.authenticate(m[1]!, ip, account);
        if (result.ok) {
          req.user = result.user;
          if (result.caller) req.caller = result.caller;
          limit(reply, await limiter.hitKey(`user:${result.user.userId}`), 'key');
          return;
        }
        reason = result.reason;
      } else {
        const result = await keys.authenticate(m[1]!, ip);
        if (result.ok) {
          req.caller = result.caller;
          limit(reply, await limiter.hitKey(callerActor(result.caller).id), 'key');
          return;
        }
        reason = result.reason;
      }
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
