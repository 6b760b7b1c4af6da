/**
 * One error type with a stable code, an HTTP status and a message that is safe to show.
 * The global error handler maps these; anything else becomes a generic 500.
 */
export class AppError extends Error {
  readonly code: string;
  readonly status: number;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: string, status: number, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = 'AppError';
    this.code = code;
    this.status = status;
    this.details = details;
  }
}

export const badRequest = (message: string, details?: Record<string, unknown>) =>
  new AppError('bad_request', 400, message, details);
export const unauthorized = (message = 'Authentication required') =>
  new AppError('unauthorized', 401, message);
export const forbidden = (message = 'Not allowed') => new AppError('forbidden', 403, message);
export const notFound = (what = 'Resource') => new AppError('not_found', 404, `${what} not found`);
export const conflict = (message: string) => new AppError('conflict', 409, message);
export const unavailable = (message: string) => new AppError('unavailable', 503, message);
/** An agent completed a job with a result its kind's schema refuses: the job is failed, never stored. */
export const invalidJobResult = (message: string, details?: Record<string, unknown>) =>
  new AppError('invalid_job_result', 422, message, details);

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
      return badRequest('Invalid value');
    case '57014':
      return new AppError('timeout', 504, 'The operation timed out');
    case '40001':
    case '40P01':
      return new AppError('retry', 503, 'Conflict with a concurrent change; retry');
    default:
      return undefined;
  }
}

/** The stable error codes the API can return (documented in docs/api.md). */
export const ERROR_CODES = [
  'bad_request',
  'validation_failed',
  'unauthorized',
  'forbidden',
  'not_found',
  'conflict',
  'capacity_exceeded',
  'invalid_job_result',
  'payload_too_large',
  'rate_limited',
  'timeout',
  'retry',
  'unavailable',
  'internal',
] as const;
