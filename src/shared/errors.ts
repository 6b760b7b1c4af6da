/**
 * The error catalog: every code the API returns, with its HTTP status, in one table. `AppError`
 * is built only from a code (its status looked up here), the global error handler and the
 * OpenAPI error responses read it, and `errors.test.ts` checks `docs/api.md`'s table against it.
 *
 * `status` is the code's status; `also` lists the other statuses the code is answered with today,
 * where one meaning ("the request itself is unusable") comes with the status HTTP has for the
 * particular case. Clients depend on code and status, so both are kept as they are.
 */
export const ERROR_CATALOG = {
  /** Also: 405 a method Fastify refuses, 408 a request that took too long to arrive, 412/416 a static
   * file's failed precondition or range, 414 an over-long path parameter, 415 an unsupported content
   * type, 431 request headers over Node's size limit. */
  bad_request: { status: 400, also: [405, 408, 412, 414, 415, 416, 431] },
  validation_failed: { status: 400 },
  query_refused: { status: 400 },
  /** A webhook URL the SSRF rules refuse (`details.reason`): a scheme, user-info, a port, or an address it resolves to. */
  destination_refused: { status: 400 },
  query_failed: { status: 400 },
  unauthorized: { status: 401 },
  /** Sign-in: unknown user, wrong password or code, or a suspended user — one answer for all. */
  invalid_credentials: { status: 401 },
  /** Sign-in: the password was right and the user has TOTP; send `totp_code`. */
  totp_required: { status: 401 },
  /** A new password the policy refuses (`details.reason`). */
  weak_password: { status: 400 },
  forbidden: { status: 403 },
  /** Revealing a password: a signed-in user must prove themselves again (`details.methods`). */
  reauth_required: { status: 403 },
  /** Revealing a password: the password or code given to re-authenticate is wrong (audited). */
  reauth_failed: { status: 403 },
  /** A write authenticated by the session cookie without the session's X-CSRF-Token, or from another site. */
  csrf_failed: { status: 403 },
  not_found: { status: 404 },
  conflict: { status: 409 },
  capacity_exceeded: { status: 409 },
  /** A governed request in a state that does not allow this (already decided, expired, not approved…: `details.status`). */
  invalid_state: { status: 409 },
  /** Governed requests: the policy does not allow this requester, class or approver (`details.rule`, `details.why`). */
  policy_denied: { status: 403 },
  /** A policy file that does not validate (`details.errors`: line, column, field, message). */
  policy_invalid: { status: 400 },
  /** The agent refused to run a request (`details.reason`: a token or local-config refusal); nothing ran. */
  execution_refused: { status: 502 },
  payload_too_large: { status: 413 },
  invalid_job_result: { status: 422 },
  /** Redeeming an invite: the code is used, expired or unknown, or the username is taken — one answer for all. */
  invalid_invite: { status: 400 },
  upgrade_required: { status: 426 },
  rate_limited: { status: 429 },
  /** The client went away before its explorer query finished (nginx's "client closed request"). */
  cancelled: { status: 499 },
  internal: { status: 500 },
  retry: { status: 503 },
  unavailable: { status: 503 },
  timeout: { status: 504 },
} as const satisfies Record<string, { status: number; also?: readonly number[] }>;

type Catalog = typeof ERROR_CATALOG;
export type ErrorCode = keyof Catalog;
/** The statuses a code may be answered with: its own, and the alternatives the catalog lists. */
export type ErrorStatus<C extends ErrorCode> =
  | Catalog[C]['status']
  | (Catalog[C] extends { also: readonly (infer S)[] } ? S : never);

/** The stable error codes the API can return (documented in docs/api.md). */
export const ERROR_CODES = Object.keys(ERROR_CATALOG) as ErrorCode[];

/** Every status a code may be answered with, its own first. */
export function errorStatuses(code: ErrorCode): readonly number[] {
  const entry: { status: number; also?: readonly number[] } = ERROR_CATALOG[code];
  return [entry.status, ...(entry.also ?? [])];
}

/**
 * One error type with a stable code, an HTTP status and a message that is safe to show.
 * The global error handler maps these; anything else becomes a generic 500. The status is the
 * code's own from the catalog, or (`status`) one of the alternatives the catalog lists for it.
 */
export class AppError<C extends ErrorCode = ErrorCode> extends Error {
  readonly code: C;
  readonly status: ErrorStatus<C>;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: C, message: string, details?: Record<string, unknown>, status?: ErrorStatus<C> & number) {
    super(message);
    if (status !== undefined && !errorStatuses(code).includes(status))
      throw new Error(`${status} is not a status of error code ${code}`);
    this.name = 'AppError';
    this.code = code;
    this.status = status ?? (ERROR_CATALOG[code].status as ErrorStatus<C>);
    this.details = details;
  }
}

export const badRequest = (message: string, details?: Record<string, unknown>) =>
  new AppError('bad_request', message, details);
export const unauthorized = (message = 'Authentication required') => new AppError('unauthorized', message);
export const forbidden = (message = 'Not allowed') => new AppError('forbidden', message);
export const notFound = (what = 'Resource') => new AppError('not_found', `${what} not found`);
export const conflict = (message: string) => new AppError('conflict', message);
export const unavailable = (message: string) => new AppError('unavailable', message);
/** An agent completed a job with a result its kind's schema refuses: the job is failed, never stored. */
export const invalidJobResult = (message: string, details?: Record<string, unknown>) =>
  new AppError('invalid_job_result', message, details);

/** Postgres SQLSTATE → API error, in one place. Returns undefined for codes we do not map. */
export function fromPgError(err: unknown): AppError | undefined {
  const code = typeof err === 'object' && err !== null ? (err as { code?: unknown }).code : undefined;
  switch (code) {
    case '23505':
      return conflict('Already exists');
    case '23503':
      return conflict('Refers to something that does not exist or is still in use');
    case '23514':
    case '22P02':
    case '22001':
    case '22021': // a character the database encoding cannot hold (U+0000 in text)
    case '22P05': // untranslatable character (U+0000 in jsonb)
      return badRequest('Invalid value');
    case '57014':
      return new AppError('timeout', 'The operation timed out');
    case '40001':
    case '40P01':
      return new AppError('retry', 'Conflict with a concurrent change; retry');
    default:
      return undefined;
  }
}
