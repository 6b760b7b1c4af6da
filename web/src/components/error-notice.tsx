import type { ApiError } from '../api/errors.ts';

/** A failed call, readable: the API's message, its code, and the request id to quote to an operator. */
export function ErrorNotice({ error, title }: { error: ApiError | null; title?: string }) {
  if (!error) return null;
  return (
    <div className="notice notice-error" role="alert">
      {title ? <strong>{title}: </strong> : null}
      <span className="msg">{error.message}</span> <span className="muted">({error.code})</span>
      {error.requestId ? (
        <div className="muted small">
          Request ID: <code>{error.requestId}</code>
        </div>
      ) : null}
    </div>
  );
}
