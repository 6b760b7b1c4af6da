/**
 * The OIDC settings' rules, used by the server's config schema (config.ts): URLs are https, or
 * http on a loopback address only (a test IdP, or one on the same host); the role map's entries
 * are `claim value=account:role`; an issuer needs a client id, a client secret and a redirect URL
 * (or a public URL to derive it from).
 */
import type { z } from 'zod';

export type OidcRole = 'owner' | 'admin' | 'member' | 'viewer';
export type OidcRoleMapping = { value: string; account: string; role: OidcRole };

export const OIDC_URL_RULE = 'must be an https:// URL (http:// only on a loopback address)';
const OIDC_CALLBACK_PATH = '/v1/auth/oidc/callback';

const LOOPBACK_HOSTS = new Set(['127.0.0.1', '[::1]', 'localhost']);

/** An http URL whose host is a loopback address (openid-client refuses http unless allowed). */
export function isLoopbackHttp(url: URL): boolean {
  return (
    url.protocol === 'http:' &&
    (LOOPBACK_HOSTS.has(url.hostname) || /^127\.\d+\.\d+\.\d+$/.test(url.hostname))
  );
}

export function secureOrLoopback(value: string): boolean {
  try {
    const url = new URL(value);
    if (url.username || url.password || url.hash) return false;
    return url.protocol === 'https:' || isLoopbackHttp(url);
  } catch {
    return false;
  }
}

const ROLES = new Set<string>(['owner', 'admin', 'member', 'viewer']);
const ACCOUNT_NAME = /^[a-z][a-z0-9_-]{0,62}$/;

/** `claim value=account:role` → a mapping (the value is everything before the last `=`). */
export function parseOidcRoleMapping(entry: string, ctx: z.RefinementCtx): OidcRoleMapping {
  const eq = entry.lastIndexOf('=');
  const value = entry.slice(0, eq).trim();
  const [account, role, ...rest] = entry
    .slice(eq + 1)
    .trim()
    .split(':');
  if (
    eq < 1 ||
    !value ||
    value.length > 200 ||
    rest.length ||
    !account ||
    !ACCOUNT_NAME.test(account) ||
    !role ||
    !ROLES.has(role)
  ) {
    ctx.addIssue({
      code: 'custom',
      message: `"${entry.slice(0, 80)}" must be "claim value=account:role" (role: owner, admin, member or viewer)`,
    });
    return { value: '', account: '', role: 'viewer' };
  }
  return { value, account, role: role as OidcRole };
}

type OidcSettings = {
  publicUrl?: string | undefined;
  oidcIssuer?: string | undefined;
  oidcClientId?: string | undefined;
  oidcClientSecret?: string | undefined;
  oidcRedirectUrl?: string | undefined;
  oidcScopes: string[];
};

export function checkOidcSettings(c: OidcSettings, ctx: z.RefinementCtx): void {
  const set = [c.oidcClientId, c.oidcClientSecret, c.oidcRedirectUrl].some((v) => v !== undefined);
  if (!c.oidcIssuer) {
    if (set)
      ctx.addIssue({
        code: 'custom',
        path: ['oidcIssuer'],
        message: 'the other OIDC settings need an issuer',
      });
    return;
  }
  if (!c.oidcClientId)
    ctx.addIssue({ code: 'custom', path: ['oidcClientId'], message: 'required with oidcIssuer' });
  if (!c.oidcClientSecret)
    ctx.addIssue({ code: 'custom', path: ['oidcClientSecret'], message: 'required with oidcIssuer' });
  if (!c.oidcRedirectUrl && !c.publicUrl)
    ctx.addIssue({
      code: 'custom',
      path: ['oidcRedirectUrl'],
      message: 'required with oidcIssuer when publicUrl is not set',
    });
  if (!c.oidcRedirectUrl && c.publicUrl && !secureOrLoopback(c.publicUrl))
    ctx.addIssue({
      code: 'custom',
      path: ['publicUrl'],
      message: `as the OIDC redirect base, ${OIDC_URL_RULE}`,
    });
  if (!c.oidcScopes.includes('openid'))
    ctx.addIssue({ code: 'custom', path: ['oidcScopes'], message: 'must include openid' });
}

/** The callback URL the IdP sends the browser back to. */
export function oidcRedirectUrl(c: {
  publicUrl?: string | undefined;
  oidcRedirectUrl?: string | undefined;
}): string {
  if (c.oidcRedirectUrl) return c.oidcRedirectUrl;
  return `${(c.publicUrl ?? '').replace(/\/+$/, '')}${OIDC_CALLBACK_PATH}`;
}
