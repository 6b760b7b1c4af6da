/**
 * The dashboard's session cookies as a browser keeps them, for app.inject() tests: reads the
 * Set-Cookie headers of a response exactly as sent (no parsing leniency: the attributes are what
 * the tests assert) and writes the Cookie header a browser would send back.
 */
export const ACCESS = '__Host-bulwark_session';
export const REFRESH = '__Host-bulwark_refresh';
/** Not a credential: tells the page a session may be there (readable by script). */
export const SIGNED_IN = '__Host-bulwark_signed_in';

export type SetCookie = { name: string; value: string; raw: string; attributes: string[] };

/** Every Set-Cookie header of a response, in order. */
export function setCookies(res: { headers: Record<string, unknown> }): SetCookie[] {
  const h = res.headers['set-cookie'];
  const all = h === undefined ? [] : Array.isArray(h) ? h.map(String) : [String(h)];
  return all.map((raw) => {
    const [pair, ...attributes] = raw.split('; ');
    const eq = pair!.indexOf('=');
    return { name: pair!.slice(0, eq), value: pair!.slice(eq + 1), raw, attributes };
  });
}

/** The value a response set for one cookie (throws when it set none, or several). */
export function cookieValue(res: { headers: Record<string, unknown> }, name: string): string {
  const found = setCookies(res).filter((c) => c.name === name);
  if (found.length !== 1) throw new Error(`expected one ${name} cookie, got ${found.length}`);
  return found[0]!.value;
}

/** A browser's session as two cookie values (both Path=/; the server reads the refresh one only to refresh or sign in). */
export type CookieSession = { access: string; refresh: string; csrf: string };

export function sessionFrom(res: { headers: Record<string, unknown>; json(): unknown }): CookieSession {
  return {
    access: cookieValue(res, ACCESS),
    refresh: cookieValue(res, REFRESH),
    csrf: (res.json() as { csrf_token: string }).csrf_token,
  };
}

/** The session cookie alone (a browser sends the refresh cookie too; the API routes ignore it). */
export const apiCookie = (s: Pick<CookieSession, 'access'>) => ({ cookie: `${ACCESS}=${s.access}` });
/** What the browser sends to POST /v1/auth/refresh. */
export const refreshCookie = (s: Pick<CookieSession, 'access' | 'refresh'>) => ({
  cookie: `${ACCESS}=${s.access}; ${REFRESH}=${s.refresh}`,
});
/** The headers the dashboard's own page adds to a write. */
export const pageWrite = (s: CookieSession, origin = 'http://127.0.0.1') => ({
  ...apiCookie(s),
  'x-csrf-token': s.csrf,
  origin,
  'sec-fetch-site': 'same-origin',
  host: new URL(origin).host,
});
