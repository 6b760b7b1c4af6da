/**
 * A real OpenID Provider (oidc-provider) on a loopback port, for sign-in tests: one confidential
 * client (client_secret_basic or _post, PKCE required), accounts given by the test with the
 * claims they carry, and a driver that plays the browser through the provider's own login page
 * (its development interactions) with plain HTTP requests. Consent is implied for the client
 * (a first-party client), so a sign-in is: authorization request → login form → code.
 *
 * `startTamperedDiscovery` serves a discovery document that claims an issuer of its own while
 * every endpoint is another provider's: what a hijacked or mistyped discovery looks like.
 */

import { generateKeyPairSync } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import Provider from 'oidc-provider';

export type TestAccount = { groups?: string[]; email?: string; name?: string };

export type TestOidcProvider = {
  issuer: string;
  clientId: string;
  clientSecret: string;
  /** Lifetime of the ID tokens it mints from now on (seconds). */
  setIdTokenTtl(seconds: number): void;
  /**
   * Plays the browser from an authorization URL: follows the provider's redirects, signs in as
   * `account` on its login page, and returns the URL the provider sends the browser back to
   * (the client's redirect URI with `code`, `state` and `iss`, or an `error`).
   */
  authorize(authorizationUrl: string, account: string): Promise<URL>;
  close(): Promise<void>;
};

const MAX_STEPS = 10;

async function listen(server: http.Server): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function close(server: http.Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

export async function startOidcProvider(opts: {
  redirectUri: string;
  accounts: Record<string, TestAccount>;
  clientId?: string;
  clientSecret?: string;
}): Promise<TestOidcProvider> {
  const clientId = opts.clientId ?? 'bulwark-test';
  const clientSecret = opts.clientSecret ?? 'test-client-secret-0123456789abcdef';
  let idTokenTtl = 300;
  let handler: http.RequestListener = (_req, res) => res.writeHead(503).end();
  const server = http.createServer((req, res) => handler(req, res));
  const issuer = await listen(server);
  const signingJwk = {
    ...generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey.export({ format: 'jwk' }),
    use: 'sig',
    kid: 'test-signing-key',
  };
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: clientId,
        client_secret: clientSecret,
        redirect_uris: [opts.redirectUri],
        grant_types: ['authorization_code'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    pkce: { required: () => true },
    // Claims of the granted scopes go into the ID token itself (what IdPs configured with a
    // groups mapper do), not only to the userinfo endpoint.
    conformIdTokenClaims: false,
    claims: { openid: ['sub', 'groups'], email: ['email'], profile: ['name'] },
    ttl: {
      IdToken: () => idTokenTtl,
      AccessToken: () => 300,
      AuthorizationCode: () => 60,
      Interaction: () => 300,
      Session: () => 300,
      Grant: () => 300,
    },
    cookies: { keys: ['test-cookie-key-0123456789abcdef'] },
    jwks: { keys: [signingJwk] },
    features: { devInteractions: { enabled: true } },
    // First-party client: the grant of the requested scopes is implied, no consent page.
    async loadExistingGrant(ctx) {
      const accountId = ctx.oidc.session?.accountId;
      const client = ctx.oidc.client;
      if (!accountId || !client) return undefined;
      const grant = new ctx.oidc.provider.Grant({ clientId: client.clientId, accountId });
      grant.addOIDCScope(String(ctx.oidc.params?.scope ?? 'openid'));
      await grant.save();
      return grant;
    },
    async findAccount(_ctx, sub) {
      const account = opts.accounts[sub];
      if (!account) return undefined;
      return {
        accountId: sub,
        async claims() {
          return {
            sub,
            ...(account.groups ? { groups: account.groups } : {}),
            ...(account.email ? { email: account.email } : {}),
            ...(account.name ? { name: account.name } : {}),
          };
        },
      };
    },
  });
  // The provider's own warnings about development settings are expected here.
  provider.on('server_error', () => {});
  handler = provider.callback();

  async function authorize(authorizationUrl: string, account: string): Promise<URL> {
    const jar = new Map<string, string>();
    const cookieHeader = () => [...jar].map(([k, v]) => `${k}=${v}`).join('; ');
    const keep = (res: Response) => {
      for (const line of res.headers.getSetCookie()) {
        const [pair] = line.split(';');
        const eq = pair!.indexOf('=');
        const name = pair!.slice(0, eq).trim();
        const value = pair!.slice(eq + 1).trim();
        if (value === '' || /expires=Thu, 01 Jan 1970/i.test(line)) jar.delete(name);
        else jar.set(name, value);
      }
    };
    let url = new URL(authorizationUrl);
    for (let step = 0; step < MAX_STEPS; step++) {
      if (url.href.startsWith(opts.redirectUri)) return url;
      let res: Response;
      if (url.pathname.startsWith('/interaction/')) {
        res = await fetch(url, {
          method: 'POST',
          redirect: 'manual',
          headers: { cookie: cookieHeader(), 'content-type': 'application/x-www-form-urlencoded' },
          body: new URLSearchParams({ prompt: 'login', login: account, password: 'any' }),
        });
      } else {
        res = await fetch(url, { redirect: 'manual', headers: { cookie: cookieHeader() } });
      }
      keep(res);
      const location = res.headers.get('location');
      if (res.status < 300 || res.status >= 400 || !location) {
        throw new Error(
          `provider answered ${res.status} at ${url.pathname}: ${(await res.text()).slice(0, 300)}`,
        );
      }
      await res.body?.cancel();
      url = new URL(location, url);
    }
    throw new Error(`no redirect back to the client after ${MAX_STEPS} steps`);
  }

  return {
    issuer,
    clientId,
    clientSecret,
    setIdTokenTtl(seconds) {
      idTokenTtl = seconds;
    },
    authorize,
    close: () => close(server),
  };
}

/**
 * A discovery document at an address of its own that names itself as the issuer, while its
 * endpoints and keys are `of`'s. `issParameter: false` also hides that the provider sends `iss`
 * in its redirects, so the ID token's own `iss` is the check left.
 */
export async function startTamperedDiscovery(
  of: TestOidcProvider,
  opts: { issParameter: boolean; claimedIssuer?: string },
): Promise<{ issuer: string; close(): Promise<void> }> {
  const upstream = (await (await fetch(`${of.issuer}/.well-known/openid-configuration`)).json()) as Record<
    string,
    unknown
  >;
  let self = '';
  const server = http.createServer((req, res) => {
    if (req.url !== '/.well-known/openid-configuration') return void res.writeHead(404).end();
    const doc: Record<string, unknown> = { ...upstream, issuer: opts.claimedIssuer ?? self };
    if (!opts.issParameter) delete doc.authorization_response_iss_parameter_supported;
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(doc));
  });
  self = await listen(server);
  return { issuer: self, close: () => close(server) };
}
