/**
 * A small client for the Bulwark REST API, shared by every CLI command that talks to a server
 * (`keys`, `whoami`, `db`, …). `request()` returns the parsed JSON body or throws an ApiError
 * that carries the HTTP status and the API's stable error code.
 *
 * Exit codes of API commands (see `bulwark --help`): 0 ok · 1 error · 2 bad usage or config ·
 * 5 not authenticated or not allowed · 6 not found.
 */
import { randomUUID } from 'node:crypto';

export const EXIT = { ok: 0, error: 1, usage: 2, auth: 5, notFound: 6 } as const;

/** An error the CLI reports in one line and turns into an exit code. */
export class CliError extends Error {
  readonly exitCode: number;
  constructor(message: string, exitCode: number = EXIT.error) {
    super(message);
    this.name = 'CliError';
    this.exitCode = exitCode;
  }
}

export class ApiError extends CliError {
  readonly status: number;
  readonly code: string;
  readonly requestId: string | undefined;
  constructor(status: number, code: string, message: string, requestId?: string) {
    super(message, exitCodeForStatus(status));
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.requestId = requestId;
  }
}

export function exitCodeForStatus(status: number): number {
  if (status === 401 || status === 403) return EXIT.auth;
  if (status === 404) return EXIT.notFound;
  if (status === 400) return EXIT.usage;
  return EXIT.error;
}

export type ApiClient = {
  readonly url: string;
  request<T = unknown>(
    method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE',
    path: string,
    body?: unknown,
    opts?: { idempotencyKey?: string; query?: Record<string, string | number | undefined> },
  ): Promise<T>;
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
  return {
    url: base,
    async request<T>(
      method: string,
      path: string,
      body?: unknown,
      o: { idempotencyKey?: string; query?: Record<string, string | number | undefined> } = {},
    ): Promise<T> {
      const qs = new URLSearchParams();
      for (const [k, v] of Object.entries(o.query ?? {})) if (v !== undefined) qs.set(k, String(v));
      const url = `${base}${path}${qs.size ? `?${qs}` : ''}`;
      const headers: Record<string, string> = {
        authorization: `Bearer ${opts.key}`,
        accept: 'application/json',
      };
      if (body !== undefined) headers['content-type'] = 'application/json';
      if (method === 'POST') headers['idempotency-key'] = o.idempotencyKey ?? randomUUID();
      let res: Response;
      try {
        res = await fetch(url, {
          method,
          headers,
          ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
          signal: AbortSignal.timeout(opts.timeoutMs ?? 30_000),
          redirect: 'error',
        });
      } catch (err) {
        throw new CliError(`cannot reach ${base}: ${(err as Error).message}`, EXIT.error);
      }
      const text = await res.text();
      let parsed: unknown = null;
      try {
        parsed = text ? JSON.parse(text) : null;
      } catch {
        parsed = null;
      }
      if (!res.ok) {
        const e = (parsed as { error?: { code?: unknown; message?: unknown; request_id?: unknown } } | null)
          ?.error;
        throw new ApiError(
          res.status,
          typeof e?.code === 'string' ? e.code : `http_${res.status}`,
          typeof e?.message === 'string' ? e.message : `HTTP ${res.status}`,
          typeof e?.request_id === 'string' ? e.request_id : undefined,
        );
      }
      return parsed as T;
    },
  };
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
          ? { status: e.status, code: e.code, message: e.message, request_id: e.requestId }
          : { message: e.message };
      process.stderr.write(`${JSON.stringify({ error: out })}\n`);
    } else {
      const detail =
        e instanceof ApiError ? ` (${e.code}${e.requestId ? `, request ${e.requestId}` : ''})` : '';
      process.stderr.write(`error: ${e.message}${detail}\n`);
    }
    process.exit(e.exitCode);
  }
}
