import type { ApiClient } from '../api-client.ts';

/**
 * `POST …/credentials/reveal`. A signed-in user whom the server asks to re-authenticate
 * (`reauth_required`) is prompted by the session client itself (step-up.ts: the password, or a
 * TOTP code) and the request is sent again; an API key is never asked.
 */
export async function revealPassword(client: ApiClient, name: string): Promise<{ password: string }> {
  return client.request<{ password: string }>('POST', `/v1/databases/${name}/credentials/reveal`);
}
