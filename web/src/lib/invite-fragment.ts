import { ApiError } from '../api/errors.ts';

/**
 * The invite code arrives in the URL fragment (`/#invite=<code>`), which no server log sees. It is
 * read once at start, kept in memory, and removed from the address bar and history.
 */
let code: string | null = null;

export function takeInviteFragment(): boolean {
  const m = /^#invite=([^&\s]{1,600})$/.exec(window.location.hash);
  if (!m) return false;
  try {
    code = decodeURIComponent(m[1] ?? '').slice(0, 200);
  } catch {
    code = null;
  }
  window.history.replaceState(null, '', '/invite');
  return true;
}

export function pendingInviteCode(): string {
  return code ?? '';
}

const OIDC_MESSAGES: Record<string, string> = {
  unauthorized: 'The identity provider did not sign you in.',
  forbidden: 'Your identity has no role here, or the account is suspended.',
  unavailable: 'The identity provider could not be reached. Try again shortly.',
  not_found: 'Single sign-on is not configured on this server.',
  bad_request: 'The sign-in attempt was not valid (expired or replayed). Start again.',
};
let oidcError: ApiError | null = null;

/** A failed single sign-on comes back as `/#oidc_error=<code>&request_id=<id>`. */
export function takeOidcFragment(): void {
  if (!window.location.hash.startsWith('#oidc_error=')) return;
  const p = new URLSearchParams(window.location.hash.slice(1));
  const code = (p.get('oidc_error') ?? 'unauthorized').slice(0, 40);
  const requestId = p.get('request_id')?.slice(0, 64) ?? null;
  oidcError = new ApiError(0, code, OIDC_MESSAGES[code] ?? 'Single sign-on failed.', requestId);
  window.history.replaceState(null, '', '/sign-in');
}

export function takenOidcError(): ApiError | null {
  return oidcError;
}
