/**
 * Step-up re-authentication for a signed-in CLI session: when the server answers 403
 * `reauth_required` (creating an API key or invites, revealing a password), the person is asked
 * for their password — or a TOTP code, when they have one — without echo (one line of stdin when
 * it is not a terminal), `POST /v1/auth/reauth` opens the session's 5-minute window, and the
 * request is sent once more. API keys are never asked, so this runs only for sessions.
 */
import { type ApiClient, ApiError, CliError, EXIT } from './api-client.ts';
import { createSecretReader } from './prompt.ts';

type SecretReader = { next(question: string, what: string): Promise<string> };

/** The methods a `reauth_required` answer offers (`details.methods`), as far as they can be read. */
export function reauthMethods(err: ApiError): string[] {
  const m = (err.details as { methods?: unknown } | undefined)?.methods;
  return Array.isArray(m) ? m.filter((x): x is string => typeof x === 'string') : [];
}

export const isReauthRequired = (err: unknown): err is ApiError =>
  err instanceof ApiError && err.status === 403 && err.code === 'reauth_required';

/** Asks for the proof the server wants and opens the session's window (throws when it cannot). */
export async function reauthenticate(
  client: Pick<ApiClient, 'request'>,
  err: ApiError,
  reader: SecretReader = createSecretReader(),
): Promise<void> {
  const methods = reauthMethods(err);
  if (!methods.includes('password'))
    throw new CliError(
      'the server asks you to sign in again first (run bulwark login, then retry)',
      EXIT.auth,
    );
  const totp = methods.includes('totp');
  const answer = await reader.next(
    totp ? "Confirm it's you — your password or a TOTP code: " : "Confirm it's you — your password: ",
    'password',
  );
  // Six digits is a TOTP code (a password is never that short).
  const body = totp && /^\d{6}$/.test(answer.trim()) ? { totp_code: answer.trim() } : { password: answer };
  await client.request('POST', '/v1/auth/reauth', body);
}

/** Runs `send`; on `reauth_required`, re-authenticates once and runs it again. */
export async function withStepUp<T>(
  client: Pick<ApiClient, 'request'>,
  send: () => Promise<T>,
  reader?: SecretReader,
): Promise<T> {
  try {
    return await send();
  } catch (err) {
    if (!isReauthRequired(err)) throw err;
    await reauthenticate(client, err, reader);
    return send();
  }
}
