/**
 * A browser's cookie session against a real server, driven by fetch: the cookies a sign-in set,
 * the CSRF token it handed out, and requests carrying them as the dashboard's own page would
 * (Origin and Sec-Fetch-Site of this origin) or as another site's page would.
 */

export type Answer = {
  status: number;
  // biome-ignore lint/suspicious/noExplicitAny: answers are read as loosely as inject().json()
  json: any;
  text: string;
  headers: Headers;
  cookies: Record<string, string>;
};

export const ACCESS = '__Host-bulwark_session';

function setCookies(res: Response): Record<string, string> {
  const out: Record<string, string> = {};
  for (const c of res.headers.getSetCookie()) {
    const pair = c.split(';', 1)[0]!;
    const eq = pair.indexOf('=');
    out[pair.slice(0, eq)] = pair.slice(eq + 1);
  }
  return out;
}

export async function call(
  base: string,
  method: string,
  path: string,
  opts: { body?: unknown; raw?: string; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const json = opts.body !== undefined;
  const res = await fetch(base + path, {
    method,
    headers: { ...(json ? { 'content-type': 'application/json' } : {}), ...opts.headers },
    body: opts.raw ?? (json ? JSON.stringify(opts.body) : undefined),
    redirect: 'manual',
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = JSON.parse(text);
  } catch {}
  return { status: res.status, json: parsed, text, headers: res.headers, cookies: setCookies(res) };
}

export type CookieClient = {
  access: string;
  /** Every cookie the sign-in set, by name (the refresh cookie among them). */
  cookies: Record<string, string>;
  csrf: string;
  /** A GET with the session cookie. */
  get(path: string, headers?: Record<string, string>): Promise<Answer>;
  /** A write from the dashboard's own page: cookie, X-CSRF-Token, same-origin Origin. */
  write(method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<Answer>;
};

function client(base: string, cookies: Record<string, string>, csrf: string): CookieClient {
  const access = cookies[ACCESS]!;
  const cookie = { cookie: `${ACCESS}=${access}` };
  return {
    access,
    cookies,
    csrf,
    get: (path, headers = {}) => call(base, 'GET', path, { headers: { ...cookie, ...headers } }),
    write: (method, path, body, headers = {}) =>
      call(base, method, path, {
        body,
        headers: {
          ...cookie,
          'x-csrf-token': csrf,
          origin: base,
          'sec-fetch-site': 'same-origin',
          ...headers,
        },
      }),
  };
}

/** Redeems an invite with `session: "cookie"` (signed in at once). */
export async function redeemCookie(base: string, code: string, username: string, password: string) {
  const r = await call(base, 'POST', '/v1/auth/invites/redeem', {
    body: { code, username, password, session: 'cookie' },
    headers: { origin: base },
  });
  if (r.status !== 201) throw new Error(`redeem ${username}: ${r.status} ${r.text}`);
  return client(base, r.cookies, r.json.csrf_token);
}

/** A cookie sign-in with username and password. */
export async function loginCookie(base: string, username: string, password: string) {
  const r = await call(base, 'POST', '/v1/auth/login', {
    body: { username, password, session: 'cookie' },
    headers: { origin: base },
  });
  if (r.status !== 200) throw new Error(`login ${username}: ${r.status} ${r.text}`);
  return client(base, r.cookies, r.json.csrf_token);
}
