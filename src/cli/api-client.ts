/**
 * A small client for the Bulwark REST API, shared by every CLI command that talks to a server
 * (`keys`, `whoami`, `db`, …). `request()` returns the parsed JSON body or throws an ApiError
 * that carries the HTTP status and the API's stable error code.
 *
 * Exit codes of API commands (see `bulwark --help`): 0 ok · 1 error · 2 bad usage or config ·
 * 5 not authenticated or not allowed · 6 not found · 7 a `--wait` ended in a final state where the
 * change did not take effect (the reason on stderr) · 8 a `--wait` timed out before a final state.
 */
import { randomUUID } from 'node:crypto';
import { terminalSafe } from './output.ts';

export const EXIT = { ok: 0, error: 1, usage: 2, auth: 5, notFound: 6, notApplied: 7, timeout: 8 } as const;

/**
 * An error the CLI reports in one line and turns into an exit code. `context`: lines printed under
 * that line in human output (e.g. the SQL with a caret under the position of the problem).
 */
export class CliError extends Error {
  readonly exitCode: number;
  readonly context: string | undefined;
  constructor(message: string, exitCode: number = EXIT.error, context?: string) {
    super(message);
    this.name = 'CliError';
    this.exitCode = exitCode;
    this.context = context;
  }
}

export class ApiError extends CliError {
  readonly status: number;
  readonly code: string;
  readonly requestId: string | undefined;
  /** The error's `details` as the API sent them (e.g. `{sqlstate, position}`), unchecked. */
  readonly details: unknown;
  constructor(
    status: number,
    code: string,
    message: string,
    o: { requestId?: string | undefined; details?: unknown; context?: string | undefined } = {},
  ) {
    super(message, exitCodeForStatus(status), o.context);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.requestId = o.requestId;
    this.details = o.details;
  }
}

export function exitCodeForStatus(status: number): number {
  if (status === 401 || status === 403) return EXIT.auth;
  if (status === 404) return EXIT.notFound;
  if (status === 400) return EXIT.usage;
  return EXIT.error;
}

type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
/** `timeoutMs`: how long to wait for the answer (default: the client's, 30 s). */
type RequestOptions = {
  idempotencyKey?: string;
  query?: Record<string, string | number | undefined>;
  timeoutMs?: number;
};

export type ApiClient = {
  readonly url: string;
  request<T = unknown>(method: Method, path: string, body?: unknown, opts?: RequestOptions): Promise<T>;
  /** The same, for an answer that is not JSON (e.g. CSV): the body as text, sent with `Accept: accept`. */
  requestText(
    method: Method,
    path: string,
    body: unknown,
    opts: RequestOptions & { accept: string },
  ): Promise<string>;
  /**
   * A GET whose answer is streamed (a backup download): the successful response, its body unread;
   * an ApiError otherwise. `signal` bounds it (no timeout of its own: large bodies take long).
   */
  download(path: string, opts: { signal?: AbortSignal }): Promise<Response>;
};

const LOOPBACK = new Set(['localhost', '127.0.0.1', '[::1]', '::1']);

/** The server URL, normalised; plain http only to loopback (keys must not cross a network in clear). */
export function parseServerUrl(raw: string, allowInsecure = false): string {
  let u: URL;
  try {
    u = new URL(raw);
  } catch {
    throw new CliError(`not a URL: ${raw}`, EXIT.usage);
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:')
    throw new CliError('the server URL must be https://', EXIT.usage);
  if (u.username || u.password || u.search || u.hash)
    throw new CliError('the server URL must be a plain origin', EXIT.usage);
  if (u.protocol === 'http:' && !LOOPBACK.has(u.hostname) && !allowInsecure) {
    throw new CliError(
      'refusing to send an API key over plain http to a non-loopback host (use https)',
      EXIT.usage,
    );
  }
  return u.toString().replace(/\/+$/, '');
}

export function createApiClient(opts: { url: string; key: string; timeoutMs?: number }): ApiClient {
  const base = opts.url.replace(/\/+$/, '');
  /** The body of a successful answer as text; an ApiError (with the API's code and details) otherwise. */
  const send = async (
    method: Method,
    path: string,
    body: unknown,
    o: RequestOptions & { accept?: string },
  ): Promise<string> => {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(o.query ?? {})) if (v !== undefined) qs.set(k, String(v));
    const url = `${base}${path}${qs.size ? `?${qs}` : ''}`;
    const headers: Record<string, string> = {
      authorization: `Bearer ${opts.key}`,
      accept: o.accept ?? 'application/json',
    };
    if (body !== undefined) headers['content-type'] = 'application/json';
    if (method === 'POST') headers['idempotency-key'] = o.idempotencyKey ?? randomUUID();
    let res: Response;
    let text: string;
    try {
      res = await fetch(url, {
        method,
        headers,
        ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(o.timeoutMs ?? opts.timeoutMs ?? 30_000),
        redirect: 'error',
      });
      text = await res.text();
    } catch (err) {
      throw new CliError(`cannot reach ${base}: ${(err as Error).message}`, EXIT.error);
    }
    if (!res.ok) {
      const e = (
        parseJson(text) as {
          error?: { code?: unknown; message?: unknown; request_id?: unknown; details?: unknown };
        } | null
      )?.error;
      throw new ApiError(
        res.status,
        typeof e?.code === 'string' ? e.code : `http_${res.status}`,
        typeof e?.message === 'string' ? e.message : `HTTP ${res.status}`,
        { requestId: typeof e?.request_id === 'string' ? e.request_id : undefined, details: e?.details },
      );
    }
    return text;
  };
  return {
    url: base,
    async request<T>(method: Method, path: string, body?: unknown, o: RequestOptions = {}): Promise<T> {
      return parseJson(await send(method, path, body, o)) as T;
    },
    requestText: (method, path, body, o) => send(method, path, body, o),
    async download(path, o) {
      let res: Response;
      try {
        res = await fetch(`${base}${path}`, {
          headers: { authorization: `Bearer ${opts.key}`, accept: 'application/octet-stream' },
          redirect: 'error',
          ...(o.signal ? { signal: o.signal } : {}),
        });
      } catch (err) {
        throw new CliError(`cannot reach ${base}: ${(err as Error).message}`, EXIT.error);
      }
      if (res.ok) return res;
      const e = (parseJson(await res.text()) as { error?: { code?: unknown; message?: unknown } } | null)
        ?.error;
      throw new ApiError(
        res.status,
        typeof e?.code === 'string' ? e.code : `http_${res.status}`,
        typeof e?.message === 'string' ? e.message : `HTTP ${res.status}`,
      );
    },
  };
}

function parseJson(text: string): unknown {
  try {
    return text ? JSON.parse(text) : null;
  } catch {
    return null;
  }
}

/**
 * Runs a command body: prints a failure in one line on stderr (`--json`: a JSON error object)
 * and exits with its code. Never prints the API key.
 */
export async function runCommand(json: boolean | undefined, fn: () => Promise<void>): Promise<never> {
  try {
    await fn();
    process.exit(EXIT.ok);
  } catch (err) {
    const e = err instanceof CliError ? err : new CliError((err as Error).message ?? String(err));
    if (json) {
      const out =
        e instanceof ApiError
          ? {
              status: e.status,
              code: e.code,
              message: e.message,
              request_id: e.requestId,
              ...(e.details === undefined ? {} : { details: e.details }),
            }
          : { message: e.message };
      process.stderr.write(`${JSON.stringify({ error: out })}\n`);
    } else {
      // Messages may quote what a user or a database wrote: no raw control characters to the terminal.
      const detail =
        e instanceof ApiError
          ? ` (${terminalSafe(e.code)}${e.requestId ? `, request ${terminalSafe(e.requestId)}` : ''})`
          : '';
      process.stderr.write(
        `error: ${terminalSafe(e.message)}${detail}\n${e.context ? `${e.context}\n` : ''}`,
      );
    }
    process.exit(e.exitCode);
  }
}
