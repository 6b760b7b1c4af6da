import { type ApiClient, ApiError, CliError, EXIT } from '../api-client.ts';
import { createSecretReader } from '../prompt.ts';

/** The methods a `reauth_required` answer offers (`details.methods`), as far as they can be read. */
function methodsOf(err: ApiError): string[] {
  const m = (err.details as { methods?: unknown } | undefined)?.methods;
  return Array.isArray(m) ? m.filter((x): x is string => typeof x === 'string') : [];
}

/**
 * `POST …/credentials/reveal`. A signed-in user whom the server asks to re-authenticate
 * (`reauth_required`) is prompted for their password (without echo; one line of stdin when it is
 * not a terminal) and the request is sent again with it; an API key is never asked.
 */
export async function revealPassword(client: ApiClient, name: string): Promise<{ password: string }> {
  const path = `/v1/databases/${name}/credentials/reveal`;
  try {
    return await client.request<{ password: string }>('POST', path);
  } catch (err) {
    if (!(err instanceof ApiError && err.code === 'reauth_required')) throw err;
    if (!methodsOf(err).includes('password'))
      throw new CliError(
        'the server asks you to sign in again before revealing a password (bulwark login)',
        EXIT.auth,
      );
  }
  const password = await createSecretReader().next(
    'Your password (to reveal the database password): ',
    'password',
  );
  return client.request<{ password: string }>('POST', path, { password });
}
