/**
 * The relying party's side of the IdP, through openid-client: discovery (once, retried after a
 * failure; a document naming another issuer than the configured one is refused by openid-client),
 * the client configuration (client_secret_basic unless the IdP only takes _post; http only for a
 * loopback issuer; its clock follows ours, so tests move time instead of waiting), and what an
 * openid-client refusal means, as a reason for the audit event and the log line.
 */
import * as client from 'openid-client';
import type { Logger } from 'pino';
import { unavailable } from '../../../shared/errors.ts';
import { isLoopbackHttp } from './oidc.config.ts';

const TIMEOUT_SECONDS = 10;

export type FailReason =
  | 'missing_state'
  | 'unknown_state'
  | 'expired_state'
  | 'browser_mismatch'
  | 'idp_error'
  | 'code_refused'
  | 'wrong_issuer'
  | 'wrong_audience'
  | 'wrong_nonce'
  | 'id_token_expired'
  | 'invalid_response'
  | 'idp_unreachable'
  | 'no_role'
  | 'user_suspended';

export function createOidcClient(deps: {
  config: {
    oidcIssuer?: string | undefined;
    oidcClientId?: string | undefined;
    oidcClientSecret?: string | undefined;
  };
  log: Logger;
  now: () => number;
}) {
  const { config, log, now } = deps;
  let discovered: Promise<client.ServerMetadata> | null = null;
  let configured: { skew: number; config: client.Configuration } | null = null;

  async function serverMetadata(): Promise<client.ServerMetadata> {
    discovered ??= (async () => {
      const issuer = new URL(config.oidcIssuer!);
      const c = await client.discovery(issuer, config.oidcClientId!, config.oidcClientSecret!, undefined, {
        ...(isLoopbackHttp(issuer) ? { execute: [client.allowInsecureRequests] } : {}),
        timeout: TIMEOUT_SECONDS,
      });
      return c.serverMetadata();
    })();
    try {
      return await discovered;
    } catch (err) {
      discovered = null;
      log.warn({ err: (err as Error).message, issuer: config.oidcIssuer }, 'OIDC discovery failed');
      throw unavailable('The identity provider cannot be reached');
    }
  }

  return {
    /** The client, its clock set to ours (one configuration while the clock agrees with Date.now). */
    async configuration(): Promise<client.Configuration> {
      const metadata = await serverMetadata();
      const skew = Math.round((now() - Date.now()) / 1000);
      if (configured?.skew === skew) return configured.config;
      const methods = metadata.token_endpoint_auth_methods_supported;
      const auth =
        methods && !methods.includes('client_secret_basic') && methods.includes('client_secret_post')
          ? client.ClientSecretPost(config.oidcClientSecret!)
          : client.ClientSecretBasic(config.oidcClientSecret!);
      const c = new client.Configuration(metadata, config.oidcClientId!, { [client.clockSkew]: skew }, auth);
      if (isLoopbackHttp(new URL(config.oidcIssuer!))) client.allowInsecureRequests(c);
      c.timeout = TIMEOUT_SECONDS;
      configured = { skew, config: c };
      return c;
    },
  };
}

/** What openid-client's refusal says, as a reason for the audit event and the log line. */
export function classify(
  err: unknown,
  input: { iss?: string | undefined },
  expectedIssuer: string,
): FailReason {
  const e = err as { name?: string; code?: string; cause?: { claim?: unknown; cause?: { claim?: unknown } } };
  if (e?.name === 'ResponseBodyError') return 'code_refused';
  if (e?.name === 'AuthorizationResponseError') return 'idp_error';
  // openid-client wraps oauth4webapi's error (its `cause`), which names the claim in its own `cause`.
  const claim = e?.cause?.claim ?? e?.cause?.cause?.claim;
  if (e?.code === 'OAUTH_JWT_CLAIM_COMPARISON_FAILED') {
    if (claim === 'iss') return 'wrong_issuer';
    if (claim === 'nonce') return 'wrong_nonce';
    if (claim === 'aud' || claim === 'azp') return 'wrong_audience';
    return 'invalid_response';
  }
  if (e?.code === 'OAUTH_JWT_TIMESTAMP_CHECK_FAILED')
    return claim === 'exp' ? 'id_token_expired' : 'invalid_response';
  if (e?.code === 'OAUTH_INVALID_RESPONSE' && input.iss !== undefined && input.iss !== expectedIssuer)
    return 'wrong_issuer';
  if (e?.name === 'TypeError' || e?.code === 'OAUTH_RESPONSE_IS_NOT_JSON') return 'idp_unreachable';
  return 'invalid_response';
}
