/**
 * The few parts of oidc-provider (which ships no types) the test identity provider uses.
 */
declare module 'oidc-provider' {
  import type { RequestListener } from 'node:http';

  type Grant = {
    addOIDCScope(scope: string): void;
    save(): Promise<string>;
  };

  type Ctx = {
    oidc: {
      session?: { accountId?: string };
      client?: { clientId: string };
      params?: Record<string, unknown>;
      provider: { Grant: new (init: { clientId: string; accountId: string }) => Grant };
    };
  };

  type Account = {
    accountId: string;
    claims(): Promise<Record<string, unknown>>;
  };

  type Configuration = {
    clients: Record<string, unknown>[];
    pkce?: { required(): boolean };
    conformIdTokenClaims?: boolean;
    claims?: Record<string, string[]>;
    ttl?: Record<string, () => number>;
    cookies?: { keys: string[] };
    jwks?: { keys: Record<string, unknown>[] };
    features?: Record<string, { enabled: boolean }>;
    loadExistingGrant?(ctx: Ctx): Promise<Grant | undefined>;
    findAccount?(ctx: Ctx, sub: string): Promise<Account | undefined>;
  };

  export default class Provider {
    constructor(issuer: string, configuration: Configuration);
    callback(): RequestListener;
    on(event: string, listener: (...args: unknown[]) => void): this;
  }
}
