/**
 * Cross-site request forgery defences for requests the browser authenticates by itself (the
 * session cookie). Two independent checks, both on every state-changing request by cookie:
 *
 * 1. The site: a browser says where a request comes from (`Sec-Fetch-Site`, `Origin`); anything
 *    but this origin is refused. Clients that send neither (curl with a cookie) rely on check 2.
 * 2. The token: `X-CSRF-Token` must be the session's token, HMAC-SHA256(install secret,
 *    "csrf\n" + session id), compared in constant time. Another site's page cannot read it (it is
 *    only in same-origin response bodies) nor send the header cross-origin without a CORS
 *    preflight, which this server never grants. It is bound to the session: a token of another
 *    session (or of a logged-out one) is refused, and it survives refreshes (same session).
 *
 * Bearer requests are not checked: a browser never adds an Authorization header by itself.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { AppError } from '../../shared/errors.ts';

export const CSRF_HEADER = 'x-csrf-token';
const TOKEN_SHAPE = /^[A-Za-z0-9_-]{43}$/;
/** Methods that change nothing (and are never checked). */
export const SAFE_METHODS: ReadonlySet<string> = new Set(['GET', 'HEAD', 'OPTIONS']);

type CsrfReason = 'cross_site' | 'foreign_origin' | 'missing_token' | 'wrong_token';

export type CsrfDeps = {
  /** The install secret that keys the tokens (32 bytes, shared by every replica). */
  key: () => Promise<Buffer>;
  /** BULWARK_PUBLIC_URL: its origin is this server's, whatever the Host header says (behind a proxy). */
  publicUrl?: string | undefined;
};

export function createCsrf(deps: CsrfDeps) {
  const publicOrigin = deps.publicUrl ? new URL(deps.publicUrl).origin : null;

  async function expected(sessionId: string): Promise<Buffer> {
    return createHmac('sha256', await deps.key())
      .update(`csrf\n${sessionId}`)
      .digest();
  }

  function refuse(req: FastifyRequest, reason: CsrfReason): never {
    req.log.warn(`bulwark csrf failure ip=${req.ip} reason=${reason}`);
    throw new AppError(
      'csrf_failed',
      reason === 'cross_site' || reason === 'foreign_origin'
        ? 'This request came from another site'
        : 'Missing or wrong X-CSRF-Token for this session: read csrf_token from GET /v1/me',
    );
  }

  /** Why this request is not from this server's own pages, or null when it may be. */
  function siteProblem(req: FastifyRequest): CsrfReason | null {
    const site = req.headers['sec-fetch-site'];
    if (site !== undefined && site !== 'same-origin') return 'cross_site';
    const origin = req.headers.origin;
    if (origin === undefined) return null;
    if (typeof origin !== 'string' || origin.length > 2048) return 'foreign_origin';
    if (publicOrigin !== null && origin === publicOrigin) return null;
    let host: string;
    try {
      const u = new URL(origin);
      if (u.protocol !== 'https:' && u.protocol !== 'http:') return 'foreign_origin';
      host = u.host;
    } catch {
      return 'foreign_origin'; // includes "null" (sandboxed frames, data: URLs)
    }
    // req.host: the Host header, or X-Forwarded-Host from a trusted proxy (BULWARK_TRUST_PROXY).
    return host === req.host ? null : 'foreign_origin';
  }

  return {
    /** The session's token (the same for the whole session, across refreshes). */
    async token(sessionId: string): Promise<string> {
      return (await expected(sessionId)).toString('base64url');
    },

    /** For the sign-in routes in cookie mode: refuses a request another site's page sent. */
    requireSameSite(req: FastifyRequest): void {
      const problem = siteProblem(req);
      if (problem) refuse(req, problem);
    },

    /** A state-changing request authenticated by the cookie of this session: site, then token. */
    async check(req: FastifyRequest, sessionId: string): Promise<void> {
      const problem = siteProblem(req);
      if (problem) refuse(req, problem);
      const given = req.headers[CSRF_HEADER];
      if (typeof given !== 'string' || given === '') refuse(req, 'missing_token');
      // The text as issued, compared as text: fixed lengths on both sides (the shape is checked
      // first, 43 characters against 43), and no second spelling of the same bytes (base64url's last
      // character has two spare bits a decoder would ignore).
      const want = Buffer.from((await expected(sessionId)).toString('base64url'), 'ascii');
      const got = TOKEN_SHAPE.test(given) ? Buffer.from(given, 'ascii') : null;
      if (got === null || got.length !== want.length || !timingSafeEqual(got, want))
        refuse(req, 'wrong_token');
    },
  };
}

export type Csrf = ReturnType<typeof createCsrf>;
