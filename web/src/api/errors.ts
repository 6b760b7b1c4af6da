/** A failed API call, as the person sees it: the API's message, its code and the request id. */
export class ApiError extends Error {
  readonly status: number;
  readonly code: string;
  readonly requestId: string | null;
  readonly details: unknown;

  constructor(status: number, code: string, message: string, requestId: string | null, details?: unknown) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.requestId = requestId;
    this.details = details;
  }
}

type ErrorBody = { error?: { code?: unknown; message?: unknown; request_id?: unknown; details?: unknown } };

/** Builds the error from an answer's body (the API's `{error: {...}}` shape) or its status alone. */
export function apiErrorFrom(response: Response | undefined, body: unknown): ApiError {
  const e = (body as ErrorBody | null)?.error;
  const status = response?.status ?? 0;
  const requestId =
    typeof e?.request_id === 'string' ? e.request_id : (response?.headers.get('x-request-id') ?? null);
  if (e && typeof e.message === 'string' && typeof e.code === 'string')
    return new ApiError(status, e.code, e.message, requestId, e.details);
  return new ApiError(status, `http_${status}`, `The server answered ${status || 'nothing'}.`, requestId);
}

export function asApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof DOMException && err.name === 'AbortError')
    return new ApiError(0, 'aborted', 'The request was cancelled.', null);
  return new ApiError(
    0,
    'network',
    'The server could not be reached. Check your connection and retry.',
    null,
  );
}
