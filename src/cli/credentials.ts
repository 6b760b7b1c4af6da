/**
 * Where `bulwark login` keeps the server URL and either an API key or a signed-in user's session
 * (username, refresh token, the current access token and its expiry):
 * `$XDG_CONFIG_HOME/bulwark/credentials.json` (or `~/.config/bulwark/credentials.json`), file 0600
 * in a 0700 directory. `BULWARK_URL` and `BULWARK_KEY` override what is stored (for CI, where
 * nothing should be written to disk).
 *
 * A session's access token lives 15 minutes: API commands refresh it when it is about to expire
 * (or was refused), store the rotated refresh token at once, and do so under a lock file, since a
 * refresh token works once and a second use ends the session.
 */
import {
  chmodSync,
  closeSync,
  existsSync,
  mkdirSync,
  openSync,
  readFileSync,
  renameSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { type ApiClient, ApiError, CliError, createApiClient, EXIT, parseServerUrl } from './api-client.ts';
import { cliSetting } from './settings.ts';
import { withStepUp } from './step-up.ts';

export type Credentials = { url: string; key: string };

/** A signed-in user's session as stored (`access_expires_at`: ms since the epoch). */
export type SessionCredentials = {
  url: string;
  username: string;
  refresh_token: string;
  access_token: string;
  access_expires_at: number;
};

/** What the sign-in and refresh routes answer. */
export type IssuedTokens = { access_token: string; refresh_token: string; expires_in: number };

/** Refresh this long before the access token expires (clock skew, slow requests). */
const REFRESH_MARGIN_MS = 60_000;
const LOCK_WAIT_MS = 10_000;
const LOCK_STALE_MS = 30_000;

export function credentialsPath(env: NodeJS.ProcessEnv = process.env): string {
  const base = env.XDG_CONFIG_HOME || path.join(env.HOME || os.homedir(), '.config');
  return path.join(base, 'bulwark', 'credentials.json');
}

type Stored = Partial<Credentials> & Partial<Omit<SessionCredentials, 'url'>>;

function readStored(file: string): Stored {
  if (!existsSync(file)) return {};
  const mode = statSync(file).mode & 0o777;
  if (mode & 0o077) {
    throw new CliError(
      `${file} is readable by others (mode ${mode.toString(8)}); run: chmod 600 ${file}`,
      EXIT.usage,
    );
  }
  try {
    const v = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
    const out: Stored = {};
    for (const k of ['url', 'key', 'username', 'refresh_token', 'access_token'] as const)
      if (typeof v[k] === 'string') out[k] = v[k];
    if (typeof v.access_expires_at === 'number') out.access_expires_at = v.access_expires_at;
    return out;
  } catch {
    throw new CliError(`${file} is not valid JSON; run bulwark login again`, EXIT.usage);
  }
}

/** Environment first, then the stored file; null when there is no URL or no key. */
export function loadCredentials(env: NodeJS.ProcessEnv = process.env): Credentials | null {
  const stored = readStored(credentialsPath(env));
  const url = cliSetting('url', env) || stored.url;
  const key = cliSetting('key', env) || stored.key;
  return url && key ? { url, key } : null;
}

/** A stored session (no API key in the environment or the file); null when there is none. */
export function loadSession(env: NodeJS.ProcessEnv = process.env): SessionCredentials | null {
  if (cliSetting('key', env)) return null;
  const s = readStored(credentialsPath(env));
  if (s.key || !s.url || !s.username || !s.refresh_token || !s.access_token) return null;
  return {
    url: s.url,
    username: s.username,
    refresh_token: s.refresh_token,
    access_token: s.access_token,
    access_expires_at: s.access_expires_at ?? 0,
  };
}

/** Writes atomically: a 0600 temp file renamed over the old one, in a 0700 directory. */
function writeStored(content: Record<string, unknown>, env: NodeJS.ProcessEnv): string {
  const file = credentialsPath(env);
  const dir = path.dirname(file);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(content, null, 2)}\n`, { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
  return file;
}

/** Stores an API key (replacing any stored session). */
export function saveCredentials(c: Credentials, env: NodeJS.ProcessEnv = process.env): string {
  return writeStored({ url: c.url, key: c.key }, env);
}

/** Stores a signed-in user's session (replacing any stored key). */
export function saveSession(s: SessionCredentials, env: NodeJS.ProcessEnv = process.env): string {
  return writeStored({ ...s }, env);
}

/** The session after a sign-in or refresh answered `t`. */
export function sessionFrom(url: string, username: string, t: IssuedTokens): SessionCredentials {
  return {
    url,
    username,
    refresh_token: t.refresh_token,
    access_token: t.access_token,
    access_expires_at: Date.now() + t.expires_in * 1000,
  };
}

/** POST to a route that takes no credentials (sign-in, refresh): the JSON answer or an ApiError. */
export async function postPublic<T>(url: string, route: string, body: unknown): Promise<T> {
  let res: Response;
  let text: string;
  try {
    res = await fetch(`${url}${route}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(30_000),
      redirect: 'error',
    });
    text = await res.text();
  } catch (err) {
    throw new CliError(`cannot reach ${url}: ${(err as Error).message}`, EXIT.error);
  }
  let parsed: unknown = null;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {}
  if (!res.ok) {
    const e = (parsed as { error?: { code?: unknown; message?: unknown; request_id?: unknown } } | null)
      ?.error;
    throw new ApiError(
      res.status,
      typeof e?.code === 'string' ? e.code : `http_${res.status}`,
      typeof e?.message === 'string' ? e.message : `HTTP ${res.status}`,
      { requestId: typeof e?.request_id === 'string' ? e.request_id : undefined },
    );
  }
  return parsed as T;
}

/** Runs `fn` holding `<credentials file>.lock` (created exclusively; a lock older than 30 s is stale). */
async function withCredentialsLock<T>(env: NodeJS.ProcessEnv, fn: () => Promise<T>): Promise<T> {
  const lock = `${credentialsPath(env)}.lock`;
  const until = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      closeSync(openSync(lock, 'wx', 0o600));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      try {
        if (Date.now() - statSync(lock).mtimeMs > LOCK_STALE_MS) unlinkSync(lock);
      } catch {}
      if (Date.now() > until) throw new CliError(`${lock} is held by another bulwark command`, EXIT.error);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  try {
    return await fn();
  } finally {
    try {
      unlinkSync(lock);
    } catch {}
  }
}

/**
 * A fresh access token for the stored session: refreshed (and the rotated refresh token stored)
 * when it is about to expire or `force`. Another command may have refreshed meanwhile: under the
 * lock the file is read again and its newer token used.
 */
async function freshSession(
  held: SessionCredentials,
  env: NodeJS.ProcessEnv,
  force: boolean,
): Promise<SessionCredentials> {
  const usable = (s: SessionCredentials) => s.access_expires_at - Date.now() > REFRESH_MARGIN_MS;
  if (!force && usable(held)) return held;
  return withCredentialsLock(env, async () => {
    const stored = loadSession(env);
    if (stored && stored.refresh_token !== held.refresh_token && usable(stored)) return stored;
    const current = stored ?? held;
    let t: IssuedTokens;
    try {
      t = await postPublic<IssuedTokens>(current.url, '/v1/auth/refresh', {
        refresh_token: current.refresh_token,
      });
    } catch (err) {
      if (err instanceof ApiError && err.status === 401)
        throw new CliError(
          `the session of ${current.username} has ended: run bulwark login again`,
          EXIT.auth,
        );
      throw err;
    }
    const next = sessionFrom(current.url, current.username, t);
    saveSession(next, env);
    return next;
  });
}

/**
 * An API client that sends the session's access token, refreshing it when needed (once on a 401),
 * and re-authenticating the session when the server asks (`reauth_required`: step-up.ts), once.
 */
function sessionClient(first: SessionCredentials, env: NodeJS.ProcessEnv): ApiClient {
  let session = first;
  const url = parseServerUrl(session.url, cliSetting('allowInsecure', env));
  async function attempt<T>(send: (c: ApiClient) => Promise<T>): Promise<T> {
    session = await freshSession(session, env, false);
    try {
      return await send(createApiClient({ url, key: session.access_token }));
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) throw err;
      session = await freshSession(session, env, true);
      return send(createApiClient({ url, key: session.access_token }));
    }
  }
  const plain: Pick<ApiClient, 'request'> = {
    request: (method, p, body, o) => attempt((c) => c.request(method, p, body, o)),
  };
  const call = <T>(send: (c: ApiClient) => Promise<T>) => withStepUp(plain, () => attempt(send));
  return {
    url,
    request: (method, p, body, o) => call((c) => c.request(method, p, body, o)),
    requestText: (method, p, body, o) => call((c) => c.requestText(method, p, body, o)),
    download: (p, o) => attempt((c) => c.download(p, o)),
  };
}

/** An API client for the stored (or environment) credentials; exit 5 when there are none. */
export function clientFromCredentials(env: NodeJS.ProcessEnv = process.env): ApiClient {
  const c = loadCredentials(env);
  if (!c) {
    const session = loadSession(env);
    if (session) return sessionClient(session, env);
    throw new CliError(
      'not logged in: run `bulwark login --url URL --key KEY` (or `--username NAME`) or set BULWARK_URL and BULWARK_KEY',
      EXIT.auth,
    );
  }
  return createApiClient({ url: parseServerUrl(c.url, cliSetting('allowInsecure', env)), key: c.key });
}
