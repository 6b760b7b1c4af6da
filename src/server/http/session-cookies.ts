/**
 * The dashboard's session as cookies: the same session a sign-in hands API clients as tokens,
 * kept by the browser where page scripts cannot read it.
 *
 * - `__Host-bulwark_session`: the access token. `__Host-` makes the browser refuse it unless it is
 *   Secure, has Path=/ and no Domain (no sibling host can set or shadow it). Max-Age is the access
 *   token's lifetime: a lapsed cookie is simply not sent, and the next API call is a 401.
 * - `__Host-bulwark_refresh`: the refresh token. `__Host-` too (so Path=/: the browser sends it
 *   with every request, but the server reads it only on POST /v1/auth/refresh and on a cookie-mode
 *   sign-in, where it names the browser's previous session, which is ended). A path-scoped
 *   `__Secure-` cookie would let a sibling host set one with `Domain=` (cookie tossing: a refresh
 *   that fails every time, or signs the browser in to the tosser's session).
 * - `__Host-bulwark_signed_in=1`: no secret, readable by the page: "a session may be here".
 *
 * The first two HttpOnly (no script, hence no XSS, reads them), Secure, SameSite=Strict (no other site's
 * page sends them). Browsers drop Secure cookies from plain http except on loopback, so cookie
 * sessions are refused on a plain-http, non-loopback origin rather than silently failing.
 */
import type { FastifyReply, FastifyRequest } from 'fastify';
import { badRequest } from '../../shared/errors.ts';
import type { Csrf } from './csrf.ts';

export const ACCESS_COOKIE = '__Host-bulwark_session';
export const REFRESH_COOKIE = '__Host-bulwark_refresh';
/** The refresh cookie's name and path before it became `__Host-`: cleared on logout, never read. */
const LEGACY_REFRESH_COOKIE = '__Secure-bulwark_refresh';
const LEGACY_REFRESH_COOKIE_PATH = '/v1/auth/refresh';
/**
 * Not a credential: `1` while the browser holds a session, readable by the page (not HttpOnly) so a
 * signed-out visit shows the sign-in page without a 401 first. Forging it gains nothing (the next
 * API call is a 401); `__Host-` keeps sibling hosts from setting it.
 */
export const SIGNED_IN_COOKIE = '__Host-bulwark_signed_in';

/** What a session cookie's value may be (a JWT, a `bwr_` refresh token): anything else is ignored. */
const COOKIE_VALUE = /^[A-Za-z0-9._-]{1,4096}$/;
/** A Cookie header longer than this is not looked at (Node already caps all headers at 16 KiB). */
const COOKIE_HEADER_MAX = 8192;

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by the auth hook when the session came by cookie (not an Authorization header). */
    viaCookie?: true;
  }
}

/** One cookie's value from a Cookie header; undefined when absent, repeated or malformed. */
export function readCookie(header: string | undefined, name: string): string | undefined {
  if (!header || header.length > COOKIE_HEADER_MAX) return undefined;
  let found: string | undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq <= 0 || part.slice(0, eq).trim() !== name) continue;
    // The same name twice: someone planted a second one (a path- or domain-shadowing cookie).
    if (found !== undefined) return undefined;
    found = part.slice(eq + 1).trim();
  }
  return found !== undefined && COOKIE_VALUE.test(found) ? found : undefined;
}

const LOOPBACK_HOST = /^(localhost|127(\.\d{1,3}){3}|\[::1\])$/i;

/**
 * Refuses a cookie session where the browser would drop Secure cookies: plain http to a host that
 * is not loopback (behind a TLS proxy, `trustProxy` lets X-Forwarded-Proto say https).
 */
export function requireCookieCapableOrigin(req: FastifyRequest): void {
  if (req.protocol === 'https' || LOOPBACK_HOST.test(req.hostname)) return;
  throw badRequest(
    'The dashboard needs https (or a loopback address): browsers drop secure session cookies on plain http. ' +
      'Put a TLS proxy in front (with BULWARK_TRUST_PROXY), or use a bearer token',
  );
}

function cookie(name: string, value: string, path: string, maxAgeSeconds: number, httpOnly = true): string {
  const maxAge = Math.max(0, Math.floor(maxAgeSeconds));
  return `${name}=${value}; Path=${path}; Max-Age=${maxAge};${httpOnly ? ' HttpOnly;' : ''} Secure; SameSite=Strict`;
}

export type CookieSession = {
  accessToken: string;
  accessMaxAgeSeconds: number;
  refreshToken: string;
  refreshMaxAgeSeconds: number;
};

/** Sets both cookies (replacing whatever the browser held: a planted cookie is never adopted). */
export function setSessionCookies(reply: FastifyReply, s: CookieSession): void {
  reply.header('set-cookie', cookie(ACCESS_COOKIE, s.accessToken, '/', s.accessMaxAgeSeconds));
  reply.header('set-cookie', cookie(REFRESH_COOKIE, s.refreshToken, '/', s.refreshMaxAgeSeconds));
  reply.header('set-cookie', cookie(SIGNED_IN_COOKIE, '1', '/', s.refreshMaxAgeSeconds, false));
  reply.header('cache-control', 'no-store');
}

/** Tells the browser to forget the session's cookies (Max-Age=0). */
export function clearSessionCookies(reply: FastifyReply): void {
  reply.header('set-cookie', cookie(ACCESS_COOKIE, '', '/', 0));
  reply.header('set-cookie', cookie(REFRESH_COOKIE, '', '/', 0));
  reply.header('set-cookie', cookie(SIGNED_IN_COOKIE, '', '/', 0, false));
  reply.header('set-cookie', cookie(LEGACY_REFRESH_COOKIE, '', LEGACY_REFRESH_COOKIE_PATH, 0));
}

/** What a cookie-mode sign-in or refresh answers instead of the tokens. */
export type CookieSessionBody = { session: 'cookie'; csrf_token: string; expires_in: number };

type IssuedSession = {
  access_token: string;
  refresh_token: string;
  expires_in: number;
  session: { id: string; expiresAt: Date };
};

/** What a sign-in knows of the request, for the audit of the previous session's end. */
type Client = { sourceIp: string | null; requestId: string | null };

/** The sign-in routes' side of cookie sessions (sign-in, redemption, OIDC, refresh). */
export function createBrowserSessions(deps: {
  csrf: Pick<Csrf, 'token' | 'requireSameSite'>;
  /** Ends the session a refresh token belongs to, if it is live (the sessions module). */
  endSession?: (refreshToken: string, client: Client) => Promise<unknown>;
  now?: () => number;
}) {
  const now = deps.now ?? Date.now;
  const answer = async (reply: FastifyReply, s: IssuedSession): Promise<CookieSessionBody> => {
    setSessionCookies(reply, {
      accessToken: s.access_token,
      accessMaxAgeSeconds: s.expires_in,
      refreshToken: s.refresh_token,
      refreshMaxAgeSeconds: (s.session.expiresAt.getTime() - now()) / 1000,
    });
    return { session: 'cookie', csrf_token: await deps.csrf.token(s.session.id), expires_in: s.expires_in };
  };
  return {
    /** Before a cookie-mode sign-in does any work: a transport that keeps the cookies, and our own page. */
    precheck(req: FastifyRequest): void {
      requireCookieCapableOrigin(req);
      deps.csrf.requireSameSite(req);
    },

    /** Hands a refreshed session to the browser: the cookies set, the body without tokens. */
    answer,

    /**
     * Hands a new session (sign-in, redemption, OIDC) to the browser. A valid refresh cookie that
     * came along is the browser's previous session: it is ended (logged out) first, so a browser
     * holds one session at a time and the replaced one cannot be used by whoever copied it.
     */
    async signIn(req: FastifyRequest, reply: FastifyReply, s: IssuedSession): Promise<CookieSessionBody> {
      const previous = readCookie(req.headers.cookie, REFRESH_COOKIE);
      // Best effort: the new session is already issued, and the browser must get its cookies
      // whatever happens to the old one (it stays revocable from the sessions list).
      if (previous !== undefined && deps.endSession)
        await deps
          .endSession(previous, { sourceIp: req.ip, requestId: String(req.id) })
          .catch((err: Error) =>
            req.log.warn({ err: { message: err.message } }, 'could not end the browser’s previous session'),
          );
      return answer(reply, s);
    },

    clear: clearSessionCookies,
    csrfToken: (sessionId: string) => deps.csrf.token(sessionId),
  };
}

export type BrowserSessions = ReturnType<typeof createBrowserSessions>;
