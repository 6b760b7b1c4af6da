/**
 * The typed API client. The session lives in HttpOnly cookies the script never sees; what the
 * script holds is the session's CSRF token (sent as X-CSRF-Token on every state-changing request)
 * and the account the person acts in (Bulwark-Account). A 401 gets one cookie refresh, then the
 * request is retried once; if the refresh fails, the app goes to sign-in.
 */
import createClient from 'openapi-fetch';
import { apiErrorFrom, asApiError } from './errors.ts';
import type { paths } from './schema';

const SAFE = new Set(['GET', 'HEAD', 'OPTIONS']);
/** Answers of these paths are about signing in: a 401 from them is the answer, not an expiry. */
const AUTH_PATHS = ['/v1/auth/login', '/v1/auth/refresh', '/v1/auth/logout', '/v1/auth/invites/redeem'];

let csrfToken: string | null = null;
let account: string | null = null;
let refreshing: Promise<boolean> | null = null;
let onSessionEnded: () => void = () => {};

export const session = {
  setCsrfToken(token: string | null) {
    csrfToken = token;
  },
  setAccount(name: string | null) {
    account = name;
  },
  onEnded(fn: () => void) {
    onSessionEnded = fn;
  },
};

function decorate(req: Request): Request {
  if (!SAFE.has(req.method) && csrfToken) req.headers.set('x-csrf-token', csrfToken);
  if (account) req.headers.set('bulwark-account', account);
  return req;
}

/** One refresh at a time, shared by every request that saw a 401 meanwhile. */
function refreshSession(): Promise<boolean> {
  refreshing ??= (async () => {
    try {
      const headers: Record<string, string> = { 'content-type': 'application/json' };
      if (csrfToken) headers['x-csrf-token'] = csrfToken;
      const res = await fetch('/v1/auth/refresh', { method: 'POST', headers, body: '{}' });
      if (!res.ok) return false;
      const body = (await res.json().catch(() => ({}))) as { csrf_token?: unknown };
      if (typeof body.csrf_token === 'string') csrfToken = body.csrf_token;
      return true;
    } catch {
      return false;
    } finally {
      setTimeout(() => {
        refreshing = null;
      }, 0);
    }
  })();
  return refreshing;
}

async function bulwarkFetch(req: Request): Promise<Response> {
  const path = new URL(req.url).pathname;
  const again = req.clone();
  const res = await fetch(decorate(req));
  if (res.status !== 401 || AUTH_PATHS.includes(path)) return res;
  if (await refreshSession()) {
    const retried = await fetch(decorate(again));
    if (retried.status !== 401) return retried;
  }
  onSessionEnded();
  return res;
}

export const api = createClient<paths>({ baseUrl: '', fetch: bulwarkFetch });

type Result<T> = { data?: T; error?: unknown; response: Response };

/** The data of a successful call, or an ApiError carrying the API's message and request id. */
export async function call<T>(pending: Promise<Result<T>>): Promise<T> {
  let r: Result<T>;
  try {
    r = await pending;
  } catch (err) {
    throw asApiError(err);
  }
  if (r.error !== undefined || !r.response.ok) throw apiErrorFrom(r.response, r.error);
  return r.data as T;
}

/** A raw request through the same session handling (downloads: CSV, audit export). */
export async function download(url: string, init: RequestInit, fallbackName: string): Promise<void> {
  let res: Response;
  try {
    res = await bulwarkFetch(new Request(new URL(url, window.location.origin), init));
  } catch (err) {
    throw asApiError(err);
  }
  if (!res.ok) throw apiErrorFrom(res, await res.json().catch(() => null));
  const blob = await res.blob();
  const disposition = res.headers.get('content-disposition') ?? '';
  const name = /filename="([^"]+)"/.exec(disposition)?.[1] ?? fallbackName;
  const href = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = href;
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 10_000);
}
